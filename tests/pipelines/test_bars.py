"""The bars loader: every kind of malformed bar is named (file, row, symbol, field), lenient
mode quarantines exactly the bad rows, and every timestamp form ends as us UTC.

The clean frame is two symbols of eight hourly bars each (AAA rows 0-7, BBB rows 8-15),
written as CSV (ISO 8601 text) or Parquet; each case breaks one row of it.
"""

import gzip
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from liqrisk.features.errors import InputError
from liqrisk.features.schema import Bars
from liqrisk.pipelines.bars import BadRowsError, bar_lengths, default_rejects_path, read_bars

DATA = Path(__file__).resolve().parents[2] / "data"
NOT_BARS = {"crypto_funding_8h.parquet"}  # funding rates: symbol, ts, funding_rate
START = pd.Timestamp("2024-01-01T00:00:00Z")


def clean_bars() -> pd.DataFrame:
    frames = []
    for symbol, base in (("AAA", 100.0), ("BBB", 50.0)):
        close = base + np.arange(8.0)
        frames.append(
            pd.DataFrame(
                {
                    "symbol": symbol,
                    "ts": pd.date_range(START, periods=8, freq="h", unit="us"),
                    "open": close - 0.5,
                    "high": close + 1.0,
                    "low": close - 1.0,
                    "close": close,
                    "volume": 10.0,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def write(frame: pd.DataFrame, directory: Path, fmt: str, name: str = "bars") -> Path:
    path = directory / f"{name}.{fmt}"
    if fmt == "parquet":
        frame.to_parquet(path, index=False)
    else:
        text = frame.copy()
        if pd.api.types.is_datetime64_any_dtype(text["ts"]):
            text["ts"] = text["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        text.to_csv(path, index=False)
    return path


def as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """ts as ISO text, so a case can put any string in a cell (Parquet then stores text)."""
    out = frame.astype({col: object for col in frame.columns})
    out["ts"] = frame["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return out


# ------------------------------------------------------------------ malformed rows

Breaker = Callable[[pd.DataFrame], pd.DataFrame]


def _set(row: int, **values) -> Breaker:
    def breaker(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        for col, value in values.items():
            frame.loc[row, col] = value
        return frame

    return breaker


def _text_set(row: int, **values) -> Breaker:
    def breaker(frame: pd.DataFrame) -> pd.DataFrame:
        frame = as_text(frame)
        for col, value in values.items():
            frame.loc[row, col] = value
        return frame

    return breaker


def _seconds_since_epoch(row: int, seconds: int) -> Breaker:
    """ts in whole seconds (Parquet keeps the unit), ``seconds`` after the epoch at ``row``."""

    def breaker(frame: pd.DataFrame) -> pd.DataFrame:
        ts = frame["ts"].dt.tz_localize(None).to_numpy().astype("datetime64[s]")
        ts[row] = np.datetime64(seconds, "s")
        return frame.assign(ts=pd.Series(ts).dt.tz_localize("UTC"))

    return breaker


def _duplicate(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[4, "ts"] = frame.loc[3, "ts"]  # AAA rows 3 and 4 share a ts
    return frame


YEAR_0 = "0001-01-01T00:00+00:01"  # a minute before year 1 in UTC: no bar can be that old
# (id, breaker, row, symbol, field, problem, formats)
MALFORMED = [
    ("missing-close", _set(3, close=math.nan), 3, "AAA", "close", "missing price", "both"),
    ("missing-open", _set(10, open=math.nan), 10, "BBB", "open", "missing price", "both"),
    ("infinite-high", _set(3, high=math.inf), 3, "AAA", "high", "non-finite price", "both"),
    ("duplicate", _duplicate, 3, "AAA", "ts", "duplicate (symbol, ts)", "both"),
    ("high-below-low", _set(5, high=103.0, low=106.0), 5, "AAA", "high", "high < low", "both"),
    ("high-below-open", _set(5, open=107.0), 5, "AAA", "high", "high < max(open, close)", "both"),
    ("low-above-close", _set(12, low=54.5, open=55.0), 12, "BBB", "low", "low > min(open, close)", "both"),
    ("zero-price", _set(9, low=0.0), 9, "BBB", "low", "non-positive price", "both"),
    ("negative-price", _set(9, low=-1.0, open=-0.5), 9, "BBB", "open", "non-positive price", "both"),
    ("negative-volume", _set(6, volume=-5.0), 6, "AAA", "volume", "negative volume", "both"),
    ("unparseable-ts", _text_set(7, ts="2024-01-01T07:99:00Z"), 7, "AAA", "ts", "unparseable ts", "both"),
    ("missing-ts", _text_set(7, ts=""), 7, "AAA", "ts", "missing ts", "both"),
    ("year-0", _text_set(7, ts=YEAR_0), 7, "AAA", "ts", "ts out of range", "both"),
    ("1e12-s-ts", _seconds_since_epoch(7, 10**12), 7, "AAA", "ts", "ts out of range", "parquet"),
    ("missing-symbol", _text_set(2, symbol=""), 2, "<missing>", "symbol", "missing symbol", "both"),
    ("unparseable-price", _text_set(4, close="1O4.0"), 4, "AAA", "close", "unparseable price", "csv"),
    ("unparseable-volume", _text_set(4, volume="ten"), 4, "AAA", "volume", "unparseable volume", "csv"),
]
CASES = [
    pytest.param(breaker, row, symbol, field, problem, fmt, id=f"{case}-{fmt}")
    for case, breaker, row, symbol, field, problem, formats in MALFORMED
    for fmt in ("csv", "parquet")
    if formats in ("both", fmt)
]


@pytest.mark.parametrize(("breaker", "row", "symbol", "field", "problem", "fmt"), CASES)
def test_malformed_row_is_named(tmp_path, breaker, row, symbol, field, problem, fmt):
    path = write(breaker(clean_bars()), tmp_path, fmt)
    with pytest.raises(BadRowsError) as caught:
        read_bars(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: {problem} at row {row}"), message
    assert f"symbol={symbol}," in message, message
    assert f"field {field}:" in message, message
    assert ("line" in message) == (fmt == "csv"), message
    if fmt == "csv":
        assert f"(line {row + 2})" in message, message
    if problem != "duplicate (symbol, ts)":
        assert "1 row(s) with this problem" in message, message


@pytest.mark.parametrize(("breaker", "row", "symbol", "field", "problem", "fmt"), CASES)
def test_lenient_rejects_exactly_the_bad_rows(tmp_path, breaker, row, symbol, field, problem, fmt):
    broken = breaker(clean_bars())
    path = write(broken, tmp_path, fmt)
    bad = {3, 4} if problem == "duplicate (symbol, ts)" else {row}
    out = tmp_path / "out" / "rejects.csv"

    load = read_bars(path, lenient=True, rejects_path=out)

    assert load.rejects_path == out
    written = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert set(written["row"].astype(int)) == bad
    assert set(load.rejects["row"]) == bad
    assert set(load.rejects["problem"]) == {problem}
    assert all(set(cell.split("; ")) == {problem} for cell in written["problem"])
    assert written["symbol"].tolist() == [str(broken.loc[r, "symbol"]) for r in sorted(bad)]
    assert any(note.startswith(f"{len(bad)} row(s) rejected: {len(bad)} {problem}") for note in load.notes)

    expected = clean_bars().drop(index=sorted(bad)).reset_index(drop=True)
    expected["symbol"] = expected["symbol"].astype("category")
    pd.testing.assert_frame_equal(load.bars, expected)


def test_strict_error_counts_rows_and_problems(tmp_path):
    frame = clean_bars()
    frame.loc[[1, 9], "close"] = math.nan
    frame.loc[5, ["high", "low"]] = [103.0, 106.0]
    path = write(frame, tmp_path, "parquet")
    with pytest.raises(InputError) as caught:
        read_bars(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: missing price at row 1, symbol=AAA, ts=2024-01-01T01:00:00Z")
    assert "2 row(s) with this problem" in message
    assert message.endswith("in all 3 problem(s) in 3 row(s): 2 missing price, 1 high < low")


def test_duplicate_names_both_rows(tmp_path):
    path = write(_duplicate(clean_bars()), tmp_path, "csv")
    with pytest.raises(InputError, match=r"row 3 \(line 5\).*also at row 4 \(line 6\)"):
        read_bars(path)


def test_lenient_row_with_several_problems_is_one_line(tmp_path):
    frame = clean_bars()
    frame.loc[5, ["low", "close"]] = [0.0, 110.0]  # high < max(open, close), non-positive
    frame.loc[11, "volume"] = -1.0
    path = write(frame, tmp_path, "csv")
    load = read_bars(path, lenient=True, rejects_path=tmp_path / "r.csv")
    written = pd.read_csv(tmp_path / "r.csv", dtype=str, keep_default_na=False)
    assert written["row"].tolist() == ["5", "11"]
    assert written["line"].tolist() == ["7", "13"]
    assert written.loc[0, "problem"] == "high < max(open, close); non-positive price"
    assert written.loc[0, "field"] == "high; low"
    assert written.loc[0, "close"] == "110.0"  # the original values
    assert len(load.rejects) == 3 and len(load.bars) == 14


def test_lenient_default_rejects_file_is_in_the_current_directory(tmp_path, monkeypatch):
    source = tmp_path / "in"
    source.mkdir()
    path = write(_set(3, close=math.nan)(clean_bars()), source, "csv")
    gz = source / "bars.csv.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)

    load = read_bars(gz, lenient=True)

    assert default_rejects_path(gz) == work / "bars.rejects.csv"
    assert load.rejects_path == work / "bars.rejects.csv" and load.rejects_path.exists()
    assert not (source / "bars.rejects.csv").exists()


# ------------------------------------------------------------------ contract mode


def test_contract_mode_keeps_what_the_contract_allows(tmp_path):
    frame = clean_bars()
    frame.loc[2, "open"] = 200.0  # high < max(open, close)
    frame.loc[3, "low"] = 103.5  # low > min(open, close)
    frame.loc[9, "low"] = -1.0  # non-positive
    frame.loc[10, "volume"] = -3.0
    path = write(frame, tmp_path, "parquet")
    with pytest.raises(InputError):
        read_bars(path)

    load = read_bars(path, checks="contract")

    assert len(load.bars) == 16 and load.rejects.empty
    assert load.bars.loc[2, "open"] == 200.0 and load.bars.loc[10, "volume"] == -3.0
    assert load.notes == [
        "1 row(s) with high < max(open, close) kept (AAA)",
        "1 row(s) with low > min(open, close) kept (AAA)",
        "1 row(s) with non-positive price kept (BBB)",
        "1 row(s) with negative volume kept (BBB)",
    ]


@pytest.mark.parametrize(
    "breaker",
    [_duplicate, _set(3, close=math.nan), _set(3, high=math.inf), _set(5, high=103.0, low=106.0)],
    ids=["duplicate", "missing-price", "infinite-price", "high-below-low"],
)
def test_contract_mode_rejects_what_the_contract_forbids(tmp_path, breaker):
    path = write(breaker(clean_bars()), tmp_path, "csv")
    with pytest.raises(BadRowsError, match=r"bars\.csv: .* at row [345] \(line [567]\), symbol=AAA"):
        read_bars(path, checks="contract")


def test_contract_mode_sets_unusable_volume_to_nan(tmp_path):
    frame = as_text(clean_bars())
    frame.loc[4, "volume"] = "n/a?"
    frame.loc[5, "volume"] = "inf"
    load = read_bars(write(frame, tmp_path, "csv"), checks="contract")
    assert load.bars["volume"].isna().tolist() == [i in (4, 5) for i in range(16)]
    assert "1 row(s) with unparseable volume: volume set to NaN (AAA)" in load.notes
    assert "1 row(s) with non-finite volume: volume set to NaN (AAA)" in load.notes


# ------------------------------------------------------------------ negative prices


def test_negative_prices_only_for_negative_ok_symbols(tmp_path):
    frame = clean_bars()
    frame.loc[1, ["low", "close"]] = [-40.0, -37.6]
    frame.loc[1, "open"] = -20.0
    frame.loc[9, "low"] = -1.0
    path = write(frame, tmp_path, "parquet")

    with pytest.raises(InputError, match="row 9, symbol=BBB"):
        read_bars(path, negative_ok=["AAA"])
    load = read_bars(path, negative_ok=["AAA", "BBB"])
    assert load.bars.loc[1, "close"] == -37.6
    assert read_bars(path, negative_ok="AAA", lenient=True, rejects_path=tmp_path / "r.csv").rejects[
        "row"
    ].tolist() == [9]


# ------------------------------------------------------------------ timestamps


def _expected_ts() -> pd.Series:
    return pd.Series(pd.date_range(START, periods=8, freq="h", unit="us"), name="ts")


@pytest.mark.parametrize(
    "ts",
    [
        pd.Series(pd.date_range("2024-01-01", periods=8, freq="h", unit="us")),  # naive = UTC
        pd.Series(pd.date_range(START, periods=8, freq="h", unit="ns")),
        pd.Series(pd.date_range(START, periods=8, freq="h", unit="ms")),
        pd.Series(pd.date_range(START, periods=8, freq="h", unit="ns").tz_convert("Europe/Berlin")),
        pd.Series(pd.date_range("2024-01-01", periods=8, freq="h", unit="ns")),  # naive ns
    ],
    ids=["naive-us", "utc-ns", "utc-ms", "berlin-ns", "naive-ns"],
)
def test_parquet_timestamps_become_us_utc(tmp_path, ts):
    frame = clean_bars().iloc[:8]
    frame["ts"] = ts
    load = read_bars(write(frame, tmp_path, "parquet"))
    assert str(load.bars["ts"].dtype) == "datetime64[us, UTC]"
    pd.testing.assert_series_equal(load.bars["ts"], _expected_ts())


@pytest.mark.parametrize(
    ("texts", "naive"),
    [
        ([f"2024-01-01T{h:02d}:00:00Z" for h in range(8)], 0),
        ([f"2024-01-01 {h:02d}:00:00+00:00" for h in range(8)], 0),
        ([f"2024-01-01T{h:02d}:00:00" for h in range(8)], 8),
        ([f"2024-01-01T{h + 2:02d}:00:00+02:00" for h in range(8)], 0),
        (["2024-01-01T00:00Z", "2024-01-01 01:00", "2024-01-01T02:00:00.000000+00:00"]
         + [f"2024-01-01T{h:02d}:00:00Z" for h in range(3, 8)], 1),
    ],
    ids=["zulu", "plus-zero", "naive", "plus-two", "mixed"],
)
def test_csv_timestamps_become_us_utc(tmp_path, texts, naive):
    frame = as_text(clean_bars().iloc[:8])
    frame["ts"] = texts
    load = read_bars(write(frame, tmp_path, "csv"))
    pd.testing.assert_series_equal(load.bars["ts"], _expected_ts())
    naive_notes = [n for n in load.notes if "without a UTC offset" in n]
    assert naive_notes == ([f"{naive} ts without a UTC offset: taken as UTC"] if naive else [])


# ------------------------------------------------------------------ shape of the output


def test_output_is_normalised_and_sorted(tmp_path):
    frame = clean_bars().iloc[::-1].reset_index(drop=True)  # BBB first, newest first
    load = read_bars(write(frame, tmp_path, "csv"))
    Bars.validate(load.bars)
    assert load.bars["symbol"].dtype == "category"
    assert list(load.bars["symbol"].cat.categories) == ["AAA", "BBB"]
    assert load.bars["ts"].is_monotonic_increasing is False  # two symbols
    assert load.bars.groupby("symbol", observed=True)["ts"].apply(lambda s: s.is_monotonic_increasing).all()
    assert load.bars["symbol"].tolist() == ["AAA"] * 8 + ["BBB"] * 8
    assert list(load.bars.index) == list(range(16))
    assert "input was not sorted: sorted by (symbol, ts)" in load.notes


def test_missing_volume_column_is_nan_with_a_note(tmp_path):
    load = read_bars(write(clean_bars().drop(columns="volume"), tmp_path, "csv"))
    assert load.bars["volume"].isna().all() and load.bars["volume"].dtype == np.float64
    assert "no volume column: volume set to NaN" in load.notes


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_missing_required_column_names_file_and_column(tmp_path, fmt):
    path = write(clean_bars().drop(columns="low").rename(columns={"high": "High"}), tmp_path, fmt)
    with pytest.raises(InputError) as caught:
        read_bars(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: missing required columns high, low")
    assert "'High' for 'high'" in message


def test_blank_csv_lines_keep_line_numbers(tmp_path):
    path = write(_set(5, close=math.nan)(clean_bars()), tmp_path, "csv")
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:3] + [""] + lines[3:]) + "\n")  # blank line 4: row 2
    with pytest.raises(InputError, match=r"missing price at row 6 \(line 8\), symbol=AAA"):
        read_bars(path)
    load = read_bars(path, lenient=True, rejects_path=tmp_path / "r.csv")
    assert len(load.bars) == 15 and "1 blank line(s) skipped" in load.notes


def test_extra_columns_are_ignored_with_a_note(tmp_path):
    load = read_bars(write(clean_bars().assign(venue="x"), tmp_path, "parquet"))
    assert list(load.bars.columns) == ["symbol", "ts", "open", "high", "low", "close", "volume"]
    assert load.notes == ["ignored columns: venue"]


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "bars.json"
    path.write_text("{}")
    with pytest.raises(InputError, match=r"bars\.json: unsupported file type"):
        read_bars(path)


def test_bar_lengths_per_symbol(tmp_path):
    frame = clean_bars()
    frame = frame[(frame["symbol"] == "AAA") | (frame.index == 8)]  # BBB: one bar
    lengths = bar_lengths(read_bars(write(frame, tmp_path, "parquet")).bars)
    assert lengths == {"AAA": pd.Timedelta("1h"), "BBB": None}


# ------------------------------------------------------------------ the bundled data


def test_every_bundled_bars_file_loads_strictly():
    files = sorted(p for p in DATA.glob("*.parquet") if p.name not in NOT_BARS)
    assert len(files) >= 12
    for path in files:
        load = read_bars(path, negative_ok=["CL=F"])
        assert len(load.bars) > 0 and load.rejects.empty, path
        assert load.notes == [], (path, load.notes)
    with pytest.raises(InputError, match="CL=F"):
        read_bars(DATA / "commodity_1d.parquet")
    with pytest.raises(InputError, match="missing required columns open, high, low, close"):
        read_bars(DATA / "crypto_funding_8h.parquet")
