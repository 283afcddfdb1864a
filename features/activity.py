"""Point-in-time liquidity features of one symbol's bars: traded notional and Amihud illiquidity.

(``liquidity.py`` holds the contract's impact inputs; these are model features.)

- ``notional_30d``: ``sum(close * volume)`` over the bars of the last 30 days with
  a volume above 0, divided by the number of UTC dates (of ``ts``) with bars in the
  window: the same convention as the contract's ``V_d``. In the quote currency per
  unit of volume: for futures, contracts times price (no contract multiplier).
- ``amihud_30d``: the mean, over the complete UTC days of the last 30 days, of
  ``|daily return| / daily notional``, times 1e6 (return per million of notional).
  A day's close is its last bar's close; a day is complete once a bar of it ends at
  or after the next midnight, or a bar of a later day has completed. Daily returns
  are simple, from the previous day with bars, and NaN where either close is <= 0.
  Needs ``MIN_DAYS`` such days, else NaN.
- ``volume_missing``: 1 when no bar of the window has a volume (FX quotes, mark
  prices: the two values above are then NaN), else 0. Defined from the first bar.

Row ``i`` is known when bar ``i`` completes and uses bars ``0..i`` only; values
other than ``volume_missing`` are NaN until the history covers 30 days.
"""

import numpy as np
import pandas as pd

from liqrisk.features._windows import (
    DAY,
    as_us,
    covered,
    mask,
    ratio,
    symbol_bars,
    window_count,
    window_start,
    window_sum,
)
from liqrisk.features.market import US_PER_DAY

ACTIVITY_WINDOW = 30 * DAY
MIN_DAYS = 3
PER_MILLION = 1e6

ACTIVITY_FEATURES: dict[str, str] = {
    "notional_30d": "mean daily traded notional sum(close * volume) over the last 30 days' days with bars",
    "amihud_30d": "Amihud illiquidity: mean |daily return| / daily notional over 30 days, x1e6",
    "volume_missing": "1 if no bar of the last 30 days has a volume (FX, mark prices), else 0",
}


def activity_features(bars: pd.DataFrame, *, bar_length: pd.Timedelta) -> pd.DataFrame:
    """Every column of ``ACTIVITY_FEATURES`` for one symbol's bars (row ``i``: known at its end).

    Parameters
    ----------
    bars : DataFrame
        One symbol, sorted by ``ts`` (bar open, datetime64 UTC), with ``close`` and
        ``volume`` (NaN where missing; a missing column means no volume).
    bar_length : Timedelta

    Returns
    -------
    DataFrame aligned with ``bars``, float64 columns in ``ACTIVITY_FEATURES`` order.
    """
    b = symbol_bars(bars, bar_length)
    w = as_us(ACTIVITY_WINDOW)
    start, seen = window_start(b, w), covered(b, w)
    traded = b.volume > 0  # NaN compares False: a missing volume adds nothing
    notional = np.where(traded, b.close * np.where(traded, b.volume, 0.0), 0.0)
    date = np.floor_divide(b.ts, US_PER_DAY)
    day = np.cumsum(np.r_[True, date[1:] != date[:-1]]) - 1 if len(b) else np.zeros(0, np.int64)
    missing = window_count(traded, start) == 0
    first = np.minimum(start, np.arange(len(b)))  # a window shorter than a bar holds no bar
    days = (day - day[first] + 1).astype(float)
    per_day = mask(window_sum(notional, start) / np.maximum(days, 1.0), seen & ~missing)
    out = {
        "notional_30d": per_day,
        "amihud_30d": mask(_amihud(b.done, date, day, b.close, notional, w), seen & ~missing),
        "volume_missing": missing.astype(float),
    }
    return pd.DataFrame(out, index=bars.index, columns=list(ACTIVITY_FEATURES))


def _amihud(
    done: np.ndarray,
    date: np.ndarray,
    day: np.ndarray,
    close: np.ndarray,
    notional: np.ndarray,
    window_us: int,
) -> np.ndarray:
    """Mean over the window's complete days of ``|r_day| / notional_day``, x1e6 (module docstring)."""
    if len(done) == 0:
        return np.zeros(0)
    last_of_day = np.r_[day[1:] != day[:-1], True]
    day_close = close[last_of_day]
    day_notional = np.bincount(day, weights=notional)
    day_end = (date[last_of_day] + 1) * US_PER_DAY
    prev = np.r_[np.nan, day_close[:-1]]
    with np.errstate(divide="ignore", invalid="ignore"):
        move = np.where((prev > 0) & (day_close > 0), np.abs(day_close / prev - 1.0), np.nan)
    illiquidity = ratio(move, day_notional) * PER_MILLION

    # last complete day at each bar
    complete = np.where(done >= (date + 1) * US_PER_DAY, day, day - 1)
    # first day ending inside the window
    first = np.searchsorted(day_end, done - window_us, side="right")
    valid = np.isfinite(illiquidity)
    cum = np.r_[0.0, np.cumsum(np.where(valid, illiquidity, 0.0))]
    cum_n = np.r_[0, np.cumsum(valid)]
    upper = np.maximum(complete + 1, first)
    n = cum_n[upper] - cum_n[first]
    return np.where(n >= MIN_DAYS, (cum[upper] - cum[first]) / np.maximum(n, 1), np.nan)
