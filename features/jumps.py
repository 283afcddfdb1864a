"""Point-in-time jump and tail measures of one symbol's bar log returns.

- Jump share: ``max(0, 1 - BV / RV)`` with realised variance ``RV = sum r^2`` and
  bipower variation ``BV = (pi / 2) * n / (n - 1) * sum |r[k]| |r[k-1]|`` over the
  ``n`` returns of the window (Barndorff-Nielsen & Shephard 2004); pairs need both
  returns inside the window. Continuous moves give ``BV ~ RV``; a jump raises RV
  alone. With prices <= 0 (NaN returns) the ``n / (n - 1)`` becomes
  ``n_valid / n_pairs``.
- Largest ``|r|`` of one bar over a window: a per-bar figure, so it grows with the
  bar length (the join adds ``bar_hours`` so a model can tell 5m from 1d).
- Sample excess kurtosis ``G2`` (the adjusted Fisher-Pearson estimator of pandas,
  Excel and ``scipy.stats.kurtosis(bias=False)``) of the returns over 30 days.
- Top share: the largest ``r^2`` over ``sum r^2`` in 30 days (how much of the
  month's variance came from its single worst bar).

Windows are calendar time (``liqrisk.features._windows``); row ``i`` is known when
bar ``i`` completes and uses bars ``0..i`` only. NaN until the history covers the
window, or when it holds fewer than ``MIN_RETURNS`` valid returns (jump share and
kurtosis) or none (largest return).
"""

import numpy as np
import pandas as pd

from liqrisk.features._windows import (
    DAY,
    SymbolBars,
    as_us,
    covered,
    log_returns,
    mask,
    ratio,
    symbol_bars,
    window_count,
    window_max,
    window_start,
    window_sum,
)

JUMP_SHARE_WINDOWS: dict[str, pd.Timedelta] = {"7d": 7 * DAY, "30d": 30 * DAY}
MAX_RETURN_WINDOWS: dict[str, pd.Timedelta] = {"1d": DAY, "7d": 7 * DAY, "30d": 30 * DAY}
TAIL_WINDOW = 30 * DAY
MIN_RETURNS = 5

JUMP_FEATURES: dict[str, str] = {
    **{
        f"jump_share_{name}": f"share of the last {name}'s variance from jumps: max(0, 1 - bipower / realised)"
        for name in JUMP_SHARE_WINDOWS
    },
    **{
        f"max_abs_ret_{name}": f"largest |log return| of one bar over the last {name}"
        for name in MAX_RETURN_WINDOWS
    },
    "kurt_30d": "sample excess kurtosis (G2) of the bar log returns over the last 30 days",
    "top_share_30d": "largest squared bar return / sum of squared returns over the last 30 days",
}


def jump_share(bars: pd.DataFrame, *, window: pd.Timedelta, bar_length: pd.Timedelta) -> pd.Series:
    """``max(0, 1 - BV / RV)`` over the trailing ``window`` (see the module docstring), per bar.

    Parameters
    ----------
    bars : DataFrame
        One symbol, sorted by ``ts`` (bar open, datetime64 UTC), with ``close``.
    window, bar_length : Timedelta

    Returns
    -------
    Series of float in [0, 1) aligned with ``bars``; NaN until the history covers
    ``window``, with fewer than ``MIN_RETURNS`` valid returns, or where ``RV = 0``.
    """
    b = symbol_bars(bars, bar_length)
    return pd.Series(_jump_share(b, log_returns(b.close), as_us(window)), index=bars.index)


def excess_kurtosis(
    bars: pd.DataFrame, *, window: pd.Timedelta, bar_length: pd.Timedelta
) -> pd.Series:
    """Sample excess kurtosis ``G2`` of the returns of the bars in the trailing ``window``.

    NaN until the history covers ``window``, with fewer than ``MIN_RETURNS`` valid
    returns, or when they are all equal.
    """
    b = symbol_bars(bars, bar_length)
    return pd.Series(_kurtosis(b, log_returns(b.close), as_us(window)), index=bars.index)


def jump_features(bars: pd.DataFrame, *, bar_length: pd.Timedelta) -> pd.DataFrame:
    """Every column of ``JUMP_FEATURES`` for one symbol's bars (row ``i``: known at its end).

    Returns
    -------
    DataFrame aligned with ``bars``, float64 columns in ``JUMP_FEATURES`` order.
    """
    b = symbol_bars(bars, bar_length)
    r = log_returns(b.close)
    out = {f"jump_share_{n}": _jump_share(b, r, as_us(w)) for n, w in JUMP_SHARE_WINDOWS.items()}
    for name, window in MAX_RETURN_WINDOWS.items():
        w = as_us(window)
        start = window_start(b, w)
        enough = covered(b, w) & (window_count(np.isfinite(r), start) > 0)
        out[f"max_abs_ret_{name}"] = mask(window_max(np.abs(r), start), enough)
    w = as_us(TAIL_WINDOW)
    out["kurt_30d"] = _kurtosis(b, r, w)
    start = window_start(b, w)
    top = ratio(window_max(r * r, start), window_sum(r * r, start))
    out["top_share_30d"] = mask(top, covered(b, w))
    return pd.DataFrame(out, index=bars.index, columns=list(JUMP_FEATURES))


def _jump_share(b: SymbolBars, r: np.ndarray, window_us: int) -> np.ndarray:
    start = window_start(b, window_us)
    valid = np.isfinite(r)
    pair = np.full(len(r), np.nan)
    pair[1:] = np.abs(r[1:]) * np.abs(r[:-1])
    n = window_count(valid, start)
    pairs_start = np.minimum(start + 1, np.arange(1, len(r) + 1))  # both returns inside the window
    n_pairs = window_count(np.isfinite(pair), pairs_start)
    bipower = (
        np.pi / 2 * window_sum(pair, pairs_start) * ratio(n.astype(float), n_pairs.astype(float))
    )
    share = np.maximum(0.0, 1.0 - ratio(bipower, window_sum(r * r, start)))
    return mask(share, covered(b, window_us) & (n >= MIN_RETURNS))


def _kurtosis(b: SymbolBars, r: np.ndarray, window_us: int) -> np.ndarray:
    start = window_start(b, window_us)
    n = window_count(np.isfinite(r), start).astype(float)
    s1, s2, s3, s4 = (window_sum(r**p, start) for p in (1, 2, 3, 4))
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = s1 / n
        d2 = s2 - n * mean**2  # sum of squared deviations
        d4 = s4 - 4 * mean * s3 + 6 * mean**2 * s2 - 3 * n * mean**4
        g2 = (n + 1) * n * (n - 1) / ((n - 2) * (n - 3)) * d4 / d2**2 - 3 * (n - 1) ** 2 / (
            (n - 2) * (n - 3)
        )
    scale = s2 / np.maximum(n, 1)
    ok = covered(b, window_us) & (n >= MIN_RETURNS) & (d2 > 1e-12 * n * scale)
    return mask(g2, ok & np.isfinite(g2))
