"""Trailing calendar-time windows over one symbol's bars (helpers of the bar-level features).

Bar ``i`` is known when it completes, at ``done[i] = ts[i] + bar_length``. The window
of length ``W`` ending at bar ``i`` holds the bars that lie wholly inside
``[done[i] - W, done[i]]`` (``ts[k] >= done[i] - W``), as the liquidation contract's
30-day impact window does (``liqrisk.features.liquidity``): on a regular grid that is
``W / bar_length`` bars. The log return ``r[k] = ln(close[k] / close[k-1])`` belongs
to bar ``k`` and spans ``dt[k] = done[k] - done[k-1]`` of calendar time (closures
included). Every helper is causal: row ``i`` uses rows ``0..i`` only.

Windows are calendar time, not a number of bars, so that a 30-day window means the
same for a market open 24/7 (crypto), 24/5 (FX) or 6.5 h a weekday (stocks), and for
5-minute and daily bars alike. A windowed value is NaN until the symbol's history
covers the whole window (``ts[0] <= done[i] - W``).
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.api.indexers import BaseIndexer

from liqrisk.features.market import US_PER_DAY, to_us

DAY = pd.Timedelta(days=1)
US = pd.Timedelta(microseconds=1)


@dataclass(frozen=True)
class SymbolBars:
    """One symbol's bars as flat arrays; times are int64 microseconds (UTC)."""

    ts: np.ndarray
    done: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    bar_us: int

    def __len__(self) -> int:
        return len(self.ts)


def symbol_bars(bars: pd.DataFrame, bar_length: pd.Timedelta) -> SymbolBars:
    """Arrays of one symbol's bars (sorted by ``ts``); ``volume`` is NaN when absent."""
    ts = to_us(bars["ts"])
    bar_us = as_us(bar_length)
    volume = bars["volume"] if "volume" in bars else pd.Series(np.nan, index=bars.index)
    return SymbolBars(
        ts=ts,
        done=ts + bar_us,
        open=bars["open"].to_numpy(dtype=np.float64),
        high=bars["high"].to_numpy(dtype=np.float64),
        low=bars["low"].to_numpy(dtype=np.float64),
        close=bars["close"].to_numpy(dtype=np.float64),
        volume=volume.to_numpy(dtype=np.float64),
        bar_us=bar_us,
    )


def as_us(duration: pd.Timedelta) -> int:
    """A duration as integer microseconds."""
    return int(pd.Timedelta(duration) // US)


def log_returns(close: np.ndarray) -> np.ndarray:
    """``ln(close[k] / close[k-1])``; NaN for the first bar and wherever either close is <= 0."""
    out = np.full(len(close), np.nan)
    if len(close) > 1:
        prev, now = close[:-1], close[1:]
        ok = (prev > 0) & (now > 0)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            out[1:] = np.where(ok, np.log(now / prev), np.nan)
    return out


def return_days(done: np.ndarray) -> np.ndarray:
    """Calendar time each bar's return spans, in days (``done[k] - done[k-1]``); NaN for bar 0."""
    out = np.full(len(done), np.nan)
    out[1:] = np.diff(done) / US_PER_DAY
    return out


def window_start(b: SymbolBars, window_us: int) -> np.ndarray:
    """First bar of each bar's window: the first ``k`` with ``ts[k] >= done[i] - W``."""
    return np.searchsorted(b.ts, b.done - window_us, side="left")


def covered(b: SymbolBars, window_us: int) -> np.ndarray:
    """Whether the history reaches back over the whole window ending at each bar."""
    if len(b) == 0:
        return np.zeros(0, bool)
    return b.ts[0] <= b.done - window_us


def window_sum(x: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Sum of ``x[start[i]..i]`` (NaN counts as 0)."""
    cum = np.concatenate([[0.0], np.cumsum(np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0))])
    return cum[np.arange(1, len(x) + 1)] - cum[start]


def window_count(valid: np.ndarray, start: np.ndarray) -> np.ndarray:
    """How many of ``valid[start[i]..i]`` are true."""
    cum = np.concatenate([[0], np.cumsum(valid, dtype=np.int64)])
    return cum[np.arange(1, len(valid) + 1)] - cum[start]


def window_max(x: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Largest non-NaN ``x[start[i]..i]`` (NaN if none)."""
    if len(x) == 0:
        return np.zeros(0)
    return _rolling(x, start).max().to_numpy(dtype=np.float64)


def window_rank(x: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Percentile rank (0, 1] of ``x[i]`` among the non-NaN ``x[start[i]..i]`` (ties: average rank)."""
    if len(x) == 0:
        return np.zeros(0)
    return _rolling(x, start).rank(pct=True).to_numpy(dtype=np.float64)


class _Bounds(BaseIndexer):
    """pandas rolling over given windows ``[start[i], i]``."""

    def get_window_bounds(
        self, num_values=0, min_periods=None, center=None, closed=None, step=None
    ):
        return self.start, np.arange(1, num_values + 1, dtype=np.int64)


def _rolling(x: np.ndarray, start: np.ndarray) -> "pd.api.typing.Rolling":
    bounds = _Bounds(start=np.asarray(start, dtype=np.int64))
    return pd.Series(x).rolling(bounds, min_periods=1)


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` where ``den > 0`` and both are finite, else NaN (no inf leaks out)."""
    ok = np.isfinite(num) & np.isfinite(den) & (den > 0)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=ok)
    return out


def mask(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``values`` where ``keep``, else NaN."""
    return np.where(keep, values, np.nan)


def value_before(x: np.ndarray, done: np.ndarray, window_us: int) -> np.ndarray:
    """``x`` at the last bar complete at or before ``done[i] - W`` (NaN if none)."""
    j = np.searchsorted(done, done - window_us, side="right") - 1
    return np.where(j >= 0, x[np.maximum(j, 0)], np.nan)
