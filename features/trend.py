"""Point-in-time trend and drawdown of one symbol's bars.

- ``ret_<w>``: ``ln(close[i] / close[j])`` with ``j`` the last bar complete at or
  before ``done[i] - w`` (NaN if there is none, or where either close is <= 0).
- ``drawdown_<w>``: ``close[i] / max(high over the window) - 1`` (<= 0; below -1
  only if the close itself went negative). NaN where that high is <= 0.
- ``ma_dist_<w>``: ``ln(close[i] / mean close over the window)`` in units of the
  window's volatility, ``vol_30d * sqrt(w in days)`` (``vol_30d`` from
  ``liqrisk.features.volatility``, per sqrt(day)).

Windows are calendar time (``liqrisk.features._windows``): the bars lying wholly in
``[done[i] - w, done[i]]``. Row ``i`` is known when bar ``i`` completes and uses
bars ``0..i`` only; NaN until the history covers the window.
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
    value_before,
    window_count,
    window_max,
    window_start,
    window_sum,
)
from liqrisk.features.volatility import realised_vol

RETURN_WINDOWS: dict[str, pd.Timedelta] = {"1d": DAY, "7d": 7 * DAY, "30d": 30 * DAY}
DRAWDOWN_WINDOWS: dict[str, pd.Timedelta] = {"30d": 30 * DAY, "1y": 365 * DAY}
MA_WINDOWS: dict[str, pd.Timedelta] = {"7d": 7 * DAY, "30d": 30 * DAY}

TREND_FEATURES: dict[str, str] = {
    **{f"ret_{n}": f"log return of the close over the last {n}" for n in RETURN_WINDOWS},
    **{f"drawdown_{n}": f"close / highest high of the last {n} - 1" for n in DRAWDOWN_WINDOWS},
    **{
        f"ma_dist_{n}": f"ln(close / mean close of the last {n}) / (vol_30d * sqrt({n} in days))"
        for n in MA_WINDOWS
    },
}


def trend_features(bars: pd.DataFrame, *, bar_length: pd.Timedelta) -> pd.DataFrame:
    """Every column of ``TREND_FEATURES`` for one symbol's bars (row ``i``: known at its end).

    Parameters
    ----------
    bars : DataFrame
        One symbol, sorted by ``ts`` (bar open, datetime64 UTC), with ``high``, ``close``.
    bar_length : Timedelta

    Returns
    -------
    DataFrame aligned with ``bars``, float64 columns in ``TREND_FEATURES`` order.
    """
    b = symbol_bars(bars, bar_length)
    out: dict[str, np.ndarray] = {}
    for name, window in RETURN_WINDOWS.items():
        then = value_before(b.close, b.done, as_us(window))
        out[f"ret_{name}"] = _log_ratio(b.close, then)
    for name, window in DRAWDOWN_WINDOWS.items():
        w = as_us(window)
        high = window_max(b.high, window_start(b, w))
        out[f"drawdown_{name}"] = mask(ratio(b.close, high) - 1.0, covered(b, w))
    vol = realised_vol(bars, window=30 * DAY, bar_length=bar_length).to_numpy()
    for name, window in MA_WINDOWS.items():
        w = as_us(window)
        start = window_start(b, w)
        average = ratio(window_sum(b.close, start), window_count(np.isfinite(b.close), start))
        scale = vol * np.sqrt(window / DAY)
        out[f"ma_dist_{name}"] = mask(ratio(_log_ratio(b.close, average), scale), covered(b, w))
    return pd.DataFrame(out, index=bars.index, columns=list(TREND_FEATURES))


def _log_ratio(now: np.ndarray, then: np.ndarray) -> np.ndarray:
    """``ln(now / then)``, NaN unless both are > 0 (no inf from prices at or below zero)."""
    ok = (now > 0) & (then > 0)
    out = np.full(len(now), np.nan)
    np.log(now / np.where(ok, then, 1.0), out=out, where=ok)
    return out
