"""Point-in-time volatility of one symbol's bars: realised, EWMA and the volatility regime.

Scale: every volatility here is **per square root of a calendar day**,
``sqrt(sum r^2 / sum dt)`` with ``r`` the bars' log close-to-close returns and ``dt``
the calendar days each return spans (closures included, see
``liqrisk.features._windows``). A random walk sampled in 5-minute, 1-hour, 4-hour or
daily bars gives the same number; multiply by ``sqrt(365)`` for an annual figure
and by ``sqrt(H / 1 day)`` for a horizon ``H``. For a market that closes, the
return across a closure carries the closure's variance, so the figure is per
calendar day, not per trading day (a stock's per-trading-day vol is about
``vol * sqrt(365 / 252)``). Returns are not demeaned (realised variance).

Row ``i`` of every output is what is known when bar ``i`` completes
(``ts[i] + bar_length``), from bars ``0..i`` only. Prices <= 0 leave the returns
that touch them NaN; they drop out of sums and of the time they span.
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
    return_days,
    symbol_bars,
    window_count,
    window_rank,
    window_start,
    window_sum,
)

VOL_WINDOWS: dict[str, pd.Timedelta] = {"1d": DAY, "7d": 7 * DAY, "30d": 30 * DAY, "1y": 365 * DAY}
FAST_HALF_LIFE = DAY
# RiskMetrics' lambda = 0.94 per day is a half-life of ln(0.5) / ln(0.94) = 11.2 days.
RISKMETRICS_HALF_LIFE = pd.Timedelta(days=float(np.log(0.5) / np.log(0.94))).as_unit("us")
PERCENTILE_WINDOW = 365 * DAY

VOLATILITY_FEATURES: dict[str, str] = {
    **{
        f"vol_{name}": f"realised volatility of the last {name} per sqrt(calendar day): sqrt(sum r^2 / days)"
        for name in VOL_WINDOWS
    },
    "vol_ewma_1d": "EWMA volatility per sqrt(day), weights halving every 1 day of calendar time",
    "vol_ewma_rm": "EWMA volatility per sqrt(day), half-life 11.2 days (RiskMetrics lambda 0.94/day)",
    "vol_ratio_1d_30d": "volatility regime: vol_1d / vol_30d",
    "vol_ratio_7d_1y": "volatility regime: vol_7d / vol_1y",
    "vol_7d_pct_1y": "percentile (0, 1] of vol_7d among its values at the bars of the past year",
}


def realised_vol(
    bars: pd.DataFrame, *, window: pd.Timedelta, bar_length: pd.Timedelta
) -> pd.Series:
    """Realised volatility per sqrt(calendar day) over the trailing ``window``, per bar.

    Row ``i`` uses the returns of the bars lying wholly in ``[done[i] - window, done[i]]``
    (``done = ts + bar_length``): ``sqrt(sum r^2 / sum dt)``.

    Parameters
    ----------
    bars : DataFrame
        One symbol, sorted by ``ts`` (bar open, datetime64 UTC), with ``close``.
    window, bar_length : Timedelta

    Returns
    -------
    Series of float aligned with ``bars``
        NaN until the history covers ``window`` or where the window has no valid return.
    """
    b = symbol_bars(bars, bar_length)
    r, dt = log_returns(b.close), return_days(b.done)
    return pd.Series(_realised_vol(b, r, dt, as_us(window)), index=bars.index)


def ewma_vol(bars: pd.DataFrame, *, half_life: pd.Timedelta, bar_length: pd.Timedelta) -> pd.Series:
    """EWMA volatility per sqrt(calendar day); weights halve every ``half_life`` of calendar time.

    ``sqrt(sum w r^2 / sum w dt)`` with ``w = 0.5 ** ((done[i] - done[k]) / half_life)``
    over bars ``k <= i``: the time-decayed version of :func:`realised_vol`, so one
    half-life means the same for any bar length (RiskMetrics' 0.94 per bar does not).

    Returns
    -------
    Series of float aligned with ``bars``
        NaN until the history spans one half-life.
    """
    b = symbol_bars(bars, bar_length)
    r, dt = log_returns(b.close), return_days(b.done)
    return pd.Series(_ewma_vol(b, r, dt, as_us(half_life)), index=bars.index)


def volatility_features(bars: pd.DataFrame, *, bar_length: pd.Timedelta) -> pd.DataFrame:
    """Every column of ``VOLATILITY_FEATURES`` for one symbol's bars (row ``i``: known at its end).

    Parameters
    ----------
    bars : DataFrame
        One symbol, sorted by ``ts`` (bar open, datetime64 UTC), with ``close``.
    bar_length : Timedelta

    Returns
    -------
    DataFrame aligned with ``bars``, float64 columns in ``VOLATILITY_FEATURES`` order.
    """
    b = symbol_bars(bars, bar_length)
    r, dt = log_returns(b.close), return_days(b.done)
    out = {f"vol_{name}": _realised_vol(b, r, dt, as_us(w)) for name, w in VOL_WINDOWS.items()}
    out["vol_ewma_1d"] = _ewma_vol(b, r, dt, as_us(FAST_HALF_LIFE))
    out["vol_ewma_rm"] = _ewma_vol(b, r, dt, as_us(RISKMETRICS_HALF_LIFE))
    out["vol_ratio_1d_30d"] = ratio(out["vol_1d"], out["vol_30d"])
    out["vol_ratio_7d_1y"] = ratio(out["vol_7d"], out["vol_1y"])
    out["vol_7d_pct_1y"] = _trailing_percentile(b, out["vol_7d"], as_us(PERCENTILE_WINDOW))
    return pd.DataFrame(out, index=bars.index, columns=list(VOLATILITY_FEATURES))


def _trailing_percentile(b: SymbolBars, x: np.ndarray, window_us: int) -> np.ndarray:
    """Percentile of ``x[i]`` in its window; NaN until ``x`` has been defined for a whole window."""
    finite = np.isfinite(x)
    if not finite.any():
        return np.full(len(x), np.nan)
    pct = window_rank(x, window_start(b, window_us))
    return mask(pct, finite & (b.ts[np.argmax(finite)] <= b.done - window_us))


def _realised_vol(b: SymbolBars, r: np.ndarray, dt: np.ndarray, window_us: int) -> np.ndarray:
    valid = np.isfinite(r)
    start = window_start(b, window_us)
    variance = ratio(window_sum(r * r, start), window_sum(np.where(valid, dt, 0.0), start))
    return mask(np.sqrt(variance), covered(b, window_us) & (window_count(valid, start) > 0))


def _ewma_vol(b: SymbolBars, r: np.ndarray, dt: np.ndarray, half_life_us: int) -> np.ndarray:
    if len(r) == 0:
        return np.zeros(0)
    valid = np.isfinite(r)
    ewm = {
        "times": pd.DatetimeIndex(b.done.astype("datetime64[us]")),
        "halflife": pd.Timedelta(half_life_us, unit="us"),
    }
    num = pd.Series(np.where(valid, r * r, 0.0)).ewm(**ewm).mean().to_numpy()
    den = pd.Series(np.where(valid, dt, 0.0)).ewm(**ewm).mean().to_numpy()
    return mask(np.sqrt(ratio(num, den)), b.done - b.done[0] >= half_life_us)
