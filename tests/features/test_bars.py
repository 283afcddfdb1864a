"""The bars checks on timestamps no bar can have: years outside ``FIRST_YEAR``-``LAST_YEAR``
(UTC) are a bad row named by row, symbol and field, in every form a ``ts`` can come in (text,
Python datetimes, ``datetime64`` of any unit, with or without a zone), never a crash.

The bars file loader's own cases (CSV, Parquet, lenient mode) are in tests/pipelines/test_bars.py.
"""

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from liqrisk.features.bars import FIRST_YEAR, LAST_YEAR, check_bars
from liqrisk.features.errors import InputError

GOOD_TS = "2024-01-01T00:00:00Z"
FIRST = pd.Timestamp(f"{FIRST_YEAR}-01-01", tz="UTC")
END = pd.Timestamp(f"{LAST_YEAR + 1}-01-01", tz="UTC")  # the first instant out of range


def two_bars(ts: object) -> pd.DataFrame:
    """ETHUSDT at ``2024-01-01`` (row 0) and BTCUSDT at ``ts`` (row 1): ``ts`` is a column of
    two values (text, datetimes or ``datetime64``) whose second is the one under test."""
    return pd.DataFrame(
        {
            "symbol": ["ETHUSDT", "BTCUSDT"],
            "ts": ts,
            "open": [1.0, 1.0],
            "high": [2.0, 2.0],
            "low": [0.5, 0.5],
            "close": [1.0, 1.0],
            "volume": [10.0, 10.0],
        }
    )


def datetime64(values: list[int], unit: str, tz: str | None = None) -> pd.Series:
    """``values`` (counts of ``unit`` since the epoch) as a ``datetime64[unit]`` column."""
    ts = pd.Series(np.array(values, dtype=f"datetime64[{unit}]"))
    return ts if tz is None else ts.dt.tz_localize("UTC").dt.tz_convert(tz)


GOOD_S = int(pd.Timestamp(GOOD_TS).timestamp())
OUT_OF_RANGE = {
    "text-year-1": [GOOD_TS, "0001-01-01T00:00:00Z"],
    "text-year-1-offset-to-year-0": [GOOD_TS, "0001-01-01T00:00:00+00:01"],
    "text-year-9999": [GOOD_TS, "9999-12-31T23:00:00Z"],
    "text-offset-to-year-10000": [GOOD_TS, "9999-12-31T23:59:59-23:59"],
    "text-just-before": [GOOD_TS, "1899-12-31T23:59:59.999999Z"],
    "text-offset-past-the-end": [GOOD_TS, f"{LAST_YEAR}-12-31T23:30:00-01:00"],
    "datetime-year-1": [datetime(2024, 1, 1, tzinfo=UTC), datetime(1, 1, 1, tzinfo=UTC)],
    "datetime-mixed-offsets": [
        datetime(2024, 1, 1, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=timezone(timedelta(minutes=1))),
    ],
    "us-naive-year-9999": datetime64([GOOD_S * 10**6, 253402297199 * 10**6], "us"),
    "s-1e12": datetime64([GOOD_S, 10**12], "s"),
    "s-1e15-beyond-us": datetime64([GOOD_S, 10**15], "s"),
    "s-negative-1e15": datetime64([GOOD_S, -(10**15)], "s"),
    "ms-1e15-tokyo": datetime64([GOOD_S * 1000, 10**15], "ms", tz="Asia/Tokyo"),
    "ns-earliest-1677": datetime64([GOOD_S * 10**9, np.iinfo(np.int64).min + 1], "ns", tz="UTC"),
}


@pytest.mark.parametrize("checks", ["full", "contract"])
@pytest.mark.parametrize("ts", list(OUT_OF_RANGE.values()), ids=list(OUT_OF_RANGE))
def test_a_ts_outside_the_years_is_a_bad_row_named_by_row_symbol_and_field(
    ts: object, checks: str
) -> None:
    with pytest.raises(InputError) as caught:
        check_bars(two_bars(ts), checks=checks)
    message = str(caught.value)
    assert message.startswith("bars: ts out of range at row 1, symbol=BTCUSDT, ts="), message
    assert "field ts: ts=" in message, message
    assert f"outside the years {FIRST_YEAR} to {LAST_YEAR} (UTC)" in message, message
    assert "1 row(s) with this problem" in message, message


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        (
            "0001-01-01T00:00:00+00:01",
            "ts=0000-12-31T23:59:00Z, field ts: ts='0001-01-01T00:00:00+00:01'",
        ),
        (
            np.datetime64(10**15, "s"),
            "ts=31690708-07-05T01:46:40Z, field ts: ts=31690708-07-05T01:46:40Z",
        ),
    ],
    ids=["text", "datetime64"],
)
def test_the_message_gives_the_ts_in_utc_and_as_given(given: object, shown: str) -> None:
    good = GOOD_TS if isinstance(given, str) else np.datetime64(GOOD_S, "s")
    with pytest.raises(InputError, match="ts out of range") as caught:
        check_bars(two_bars(pd.Series([good, given])))
    assert shown in str(caught.value)


@pytest.mark.parametrize(
    "ts",
    [
        FIRST,
        END - pd.Timedelta(microseconds=1),
        pd.Timestamp(f"{FIRST_YEAR}-01-01T01:00:00+01:00"),  # the first instant, given in +01:00
    ],
    ids=["first-instant", "last-microsecond", "first-instant-with-offset"],
)
def test_the_first_and_last_instants_of_the_years_are_bars(ts: pd.Timestamp) -> None:
    text = ts.isoformat()
    checked = check_bars(two_bars([GOOD_TS, text]))
    assert ts in set(checked.bars["ts"])


def test_out_of_range_rows_are_counted_and_not_taken_for_duplicates() -> None:
    frame = pd.concat([two_bars([GOOD_TS, "0001-01-01T00:00:00Z"])] * 2, ignore_index=True)
    frame.loc[2, "ts"] = "2024-01-01T01:00:00Z"  # ETHUSDT's second bar is fine
    with pytest.raises(InputError) as caught:
        check_bars(frame)
    message = str(caught.value)
    assert message.startswith("bars: ts out of range at row 1,"), message
    assert "2 row(s) with this problem" in message and "duplicate" not in message, message


@given(seconds=st.integers(min_value=-(2**62) // 10**6, max_value=(2**62) // 10**6))
def test_any_datetime64_seconds_is_a_bar_or_a_named_error(seconds: int) -> None:
    ts = datetime64([GOOD_S, seconds], "s", tz="UTC")
    inside = FIRST.timestamp() <= seconds < END.timestamp()
    try:
        checked = check_bars(two_bars(ts))
    except InputError as exc:
        assert not inside and "ts out of range at row 1" in str(exc)
    else:
        assert inside
        assert str(checked.bars["ts"].dtype) == "datetime64[us, UTC]"
        assert pd.Timestamp(seconds, unit="s", tz="UTC") in set(checked.bars["ts"])


@given(
    moment=st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    offset_minutes=st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59),
)
def test_any_iso_text_is_a_bar_or_a_named_error(moment: datetime, offset_minutes: int) -> None:
    given_ts = moment.replace(tzinfo=timezone(timedelta(minutes=offset_minutes)))
    utc = given_ts.astimezone(UTC)  # within 1..9999: the day of margin keeps it there
    inside = FIRST <= pd.Timestamp(utc) < END
    try:
        checked = check_bars(two_bars([GOOD_TS, given_ts.isoformat()]))
    except InputError as exc:
        assert not inside and "ts out of range at row 1" in str(exc)
    else:
        assert inside
        assert pd.Timestamp(utc) in set(checked.bars["ts"])
