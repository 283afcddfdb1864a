"""Shared pieces of the point-in-time tests of the market features (not a test module).

- seeded synthetic bars on a chosen calendar (24/7, FX-like 24/5, weekdays only);
- ``future_edit``: a hypothesis strategy for what to do to the bars that complete
  after ``as_of`` (alter some, remove some, add some), and :func:`apply_edit`;
- :func:`known_row`: the row of a per-bar feature frame that is known at ``as_of``.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

HYPOTHESIS = settings(
    max_examples=20,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def bars_on(
    ts: pd.DatetimeIndex, *, seed: int, symbol: str = "X", daily_sigma: float = 0.02
) -> pd.DataFrame:
    """A seeded random walk on the given bar opens (calendar-time variance), OHLCV consistent."""
    rng = np.random.default_rng(seed)
    ts = pd.DatetimeIndex(ts).as_unit("us")
    days = np.diff(ts.asi8, prepend=ts.asi8[0]) / 86_400_000_000
    close = 100 * np.exp(np.cumsum(rng.normal(0, daily_sigma * np.sqrt(days))))
    open_ = np.r_[close[0], close[:-1]] * np.exp(rng.normal(0, 0.002, len(ts)))
    spread = np.abs(rng.normal(0, 0.004, len(ts)))
    return pd.DataFrame(
        {
            "symbol": pd.Categorical([symbol] * len(ts)),
            "ts": pd.Series(ts),
            "open": open_,
            "high": np.maximum(open_, close) * (1 + spread),
            "low": np.minimum(open_, close) * (1 - spread),
            "close": close,
            "volume": rng.lognormal(3, 0.5, len(ts)),
        }
    )


def calendar(start: str, end: str, freq: str, kind: str) -> pd.DatetimeIndex:
    """Bar opens: ``24/7``; ``fx`` (closed Friday 20:00 to Sunday 20:00 UTC); ``weekdays``."""
    ts = pd.date_range(start, end, freq=freq, tz="UTC", unit="us", inclusive="left")
    if kind == "24/7":
        return ts
    if kind == "weekdays":
        return ts[ts.day_of_week < 5]
    weekend = (
        ((ts.day_of_week == 4) & (ts.hour >= 20))
        | (ts.day_of_week == 5)
        | ((ts.day_of_week == 6) & (ts.hour < 20))
    )
    return ts[~weekend]


def known_row(bars: pd.DataFrame, as_of: pd.Timestamp, bar_length: pd.Timedelta) -> int:
    """Position of the last bar complete at or before ``as_of`` (-1 if none)."""
    return int(((bars["ts"] + bar_length) <= as_of).sum()) - 1  # bars are sorted


@dataclass(frozen=True)
class Edit:
    """What to do to the bars that complete after as_of."""

    kind: str  # "alter", "remove" or "add"
    cut: float  # as_of at this fraction of the bars ...
    inside: float  # ... plus this fraction of a bar length (0: exactly at a bar's end)
    share: float  # share of the future bars touched
    factor: float  # price factor for "alter" and "add"
    seed: int


@st.composite
def future_edit(draw, *, min_cut: float = 0.55) -> Edit:
    return Edit(
        kind=draw(st.sampled_from(["alter", "remove", "add"])),
        cut=draw(st.floats(min_cut, 0.97)),
        inside=draw(st.sampled_from([0.0, 0.5, 0.99])),
        share=draw(st.floats(0.05, 1.0)),
        factor=draw(st.sampled_from([-1.0, 0.1, 3.0, 25.0])),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


def as_of_for(bars: pd.DataFrame, edit: Edit, bar_length: pd.Timedelta) -> pd.Timestamp:
    """``as_of`` at ``edit.cut`` of the history, ``edit.inside`` of a bar after that bar's end."""
    k = int(edit.cut * (len(bars) - 1))
    return bars["ts"].iloc[k] + bar_length * (1 + edit.inside)


def apply_edit(
    bars: pd.DataFrame, as_of: pd.Timestamp, bar_length: pd.Timedelta, edit: Edit
) -> pd.DataFrame:
    """``bars`` with the edit applied to (or bars added among) those completing after ``as_of``."""
    rng = np.random.default_rng(edit.seed)
    future = (bars["ts"] + bar_length > as_of).to_numpy()
    touched = future & (rng.random(len(bars)) < edit.share)
    if edit.kind == "remove":
        return bars[~touched]
    if edit.kind == "alter":
        out = bars.copy()
        for column in ("open", "high", "low", "close"):
            out.loc[touched, column] = out.loc[touched, column] * edit.factor
        if edit.factor < 0:  # keep high >= low
            out.loc[touched, ["high", "low"]] = out.loc[touched, ["low", "high"]].to_numpy()
        out.loc[touched, "volume"] = out.loc[touched, "volume"] * abs(edit.factor)
        return out
    return _add_bars(bars, as_of, bar_length, edit, rng)


def _add_bars(
    bars: pd.DataFrame,
    as_of: pd.Timestamp,
    bar_length: pd.Timedelta,
    edit: Edit,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """New bars on the free slots of the bar grid that complete after ``as_of`` (closures, past the end)."""
    first = bars["ts"].iloc[0]
    end = bars["ts"].iloc[-1] + 30 * bar_length
    grid = pd.date_range(first, end, freq=bar_length, unit="us")
    free = grid[(grid + bar_length > as_of) & ~grid.isin(pd.DatetimeIndex(bars["ts"]))]
    new_ts = free[rng.random(len(free)) < edit.share]
    if len(new_ts) == 0:
        new_ts = free[:1]
    price = float(bars["close"].iloc[-1]) * edit.factor
    low, high = sorted((price, price * 1.01))
    added = pd.DataFrame(
        {
            "symbol": pd.Categorical(
                [bars["symbol"].iloc[0]] * len(new_ts), categories=bars["symbol"].cat.categories
            ),
            "ts": pd.Series(new_ts),
            "open": price,
            "high": high,
            "low": low,
            "close": price,
            "volume": 1e6,
        }
    )
    return (
        pd.concat([bars, added], ignore_index=True)
        .sort_values("ts", kind="stable")
        .reset_index(drop=True)
    )


def assert_prefix_unchanged(before: pd.DataFrame, after: pd.DataFrame, upto: int) -> None:
    """Rows ``0..upto`` (the bars complete at as_of) are identical, NaN included."""
    pd.testing.assert_frame_equal(
        before.iloc[: upto + 1].reset_index(drop=True),
        after.iloc[: upto + 1].reset_index(drop=True),
        check_exact=True,
    )


def shock_from(bars: pd.DataFrame, k: int, factor: float = 3.0) -> pd.DataFrame:
    """Bars ``k`` onwards with prices (and volume) times ``factor``."""
    out = bars.copy()
    later = np.arange(len(bars)) >= k
    for column in ("open", "high", "low", "close", "volume"):
        out.loc[later, column] = out.loc[later, column] * factor
    return out


def assert_future_edit_changes_nothing(family, bars: pd.DataFrame, bar_length: pd.Timedelta, edit: "Edit") -> None:
    """``family(bars, bar_length=...)`` rows known at the edit's as_of are the same after the edit."""
    as_of = as_of_for(bars, edit, bar_length)
    before = family(bars, bar_length=bar_length)
    after = family(apply_edit(bars, as_of, bar_length, edit), bar_length=bar_length)
    assert_prefix_unchanged(before, after, known_row(bars, as_of, bar_length))
