"""Baselines the models must beat: the platforms' rules and the structural first-passage model.

Every function takes the dataset table (one row per account snapshot,
``liqrisk.pipelines.build``) and returns a frame on the same index, so every
baseline is scored on the same rows as the models. Higher scores mean riskier.
Nothing here is fitted: each baseline uses only the row's own point-in-time
features.

- :func:`margin_ratio_rule`: score = ``margin_ratio`` (``MM / E``), warning at
  ``MR >= threshold``.
- :func:`leverage_rule`: score = ``leverage / cap`` of the row's asset class,
  warning above 1.
- :func:`structural_baseline`: probability that the price touches the liquidation
  and the bankruptcy price within the horizon under a driftless Brownian motion in
  log price (closed form, :func:`first_passage_probability`).
- :func:`fat_tail_baseline`: the same with a Student-t horizon return whose
  kurtosis comes from ``kurt_30d`` (:func:`fat_tail_first_passage_probability`).

Conventions of the structural models
------------------------------------
Log price ``X_t = ln S_t`` follows ``X_t = X_0 + σ W_t``: **zero drift in log
price** (so the price itself drifts up at ``σ²/2``; over a day at σ = 2% that is a
shift of ``σ√T/2 = 1%`` of one standard deviation, far below the estimation error
of σ). Zero log drift makes up and down barriers symmetric and the reflection
principle exact: ``P(max_{t≤T} |adverse| ≥ b) = 2 Φ(−b / (σ √T))``.

σ is per √(calendar day) (``liqrisk.features.volatility``) and the horizon is in
calendar days, so ``σ √T`` is the horizon's standard deviation of log price.

The position features give the adverse move ``d`` as a fraction of price for both
sides. A long is hit when the price falls by ``d``: log-distance ``ln(1/(1−d))``
(``d ≥ 1`` is a barrier at price ≤ 0, never touched). A short is hit when the
price rises by ``d``: log-distance ``ln(1+d)``. The dataset carries no side, so
the side is read from ``net_exposure``: short where it is < 0, long otherwise
(including fully hedged accounts and NaN). This is an approximation for cross
accounts with both sides (their "uniform adverse move" moves longs down and
shorts up together) and for isolated accounts, whose distance is that of their
weakest position while ``net_exposure`` is the account's. The volatility is that
of the row's anchor ``symbol``.
"""

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy import special, stats

from liqrisk.features.instrument_defaults import ESMA_INITIAL_MARGIN, REG_T_INITIAL_MARGIN

# Binance Futures sends its margin-call notification at a margin ratio
# (maintenance margin / margin balance, the dataset's ``margin_ratio``) of 80%.
DEFAULT_MR_THRESHOLD = 0.8

# Leverage caps per asset class: the most leverage a regulated venue lets a retail
# account open, as 1 / initial margin. Above it, losses (or a top-up of exposure)
# have pushed an account past what it could open today.
# - crypto 20x: the cap Binance Futures set for new accounts in July 2021 (the
#   ESMA CFD cap of 2x is far below how crypto perpetuals are traded).
# - fx 30x, index 20x, commodity 10x: ESMA's retail CFD initial margins for major
#   currency pairs, major indices and commodities other than gold.
# - equity 2x: Regulation T's 50% initial margin.
DEFAULT_LEVERAGE_CAPS: Mapping[str, float] = {
    "crypto": 20.0,
    "fx": 1.0 / ESMA_INITIAL_MARGIN["major_fx"],
    "index": 1.0 / ESMA_INITIAL_MARGIN["major_index"],
    "commodity": 1.0 / ESMA_INITIAL_MARGIN["commodity"],
    "equity": 1.0 / REG_T_INITIAL_MARGIN,
}

# RiskMetrics EWMA (half-life 11.2 days): reacts within days, yet is defined from a
# few weeks of bars, so it is rarely NaN.
DEFAULT_SIGMA_COLUMN = "vol_ewma_rm"


def margin_ratio_rule(
    table: pd.DataFrame, *, threshold: float = DEFAULT_MR_THRESHOLD
) -> pd.DataFrame:
    """The margin-ratio rule: score = ``margin_ratio``, warning at ``margin_ratio >= threshold``.

    Parameters
    ----------
    table : DataFrame
        The dataset, with ``margin_ratio`` (``MM / E``, inf where ``E <= 0``).
    threshold : float
        Warning level (default 0.8, Binance Futures' margin call).

    Returns
    -------
    DataFrame on ``table.index``
        ``score`` (float; the margin ratio, with inf replaced by the largest float so
        metric libraries accept it while it still ranks first; NaN stays NaN) and
        ``warn`` (bool; False where the margin ratio is NaN). Sweeping ``threshold``
        over ``score`` traces the rule's whole curve.
    """
    ratio = table["margin_ratio"].astype("float64")
    return pd.DataFrame(
        {"score": _finite_ceiling(ratio), "warn": margin_ratio_warning(ratio, threshold=threshold)},
        index=table.index,
    )


def margin_ratio_warning(
    margin_ratio: pd.Series | np.ndarray, *, threshold: float = DEFAULT_MR_THRESHOLD
) -> pd.Series | np.ndarray:
    """True where ``margin_ratio >= threshold`` (inf, i.e. ``E <= 0``, warns; NaN does not);
    a Series for a Series, an array for an array."""
    return (margin_ratio >= threshold).astype(bool)


def leverage_rule(
    table: pd.DataFrame, *, caps: Mapping[str, float] = DEFAULT_LEVERAGE_CAPS
) -> pd.DataFrame:
    """The leverage rule: score = ``leverage / caps[asset_class]``, warning where it exceeds 1.

    Parameters
    ----------
    table : DataFrame
        The dataset, with ``leverage`` (gross notional / collateral) and ``asset_class``.
    caps : Mapping of asset class to leverage cap
        Defaults in ``DEFAULT_LEVERAGE_CAPS`` (crypto 20x, fx 30x, index 20x,
        commodity 10x, equity 2x; sources beside it).

    Returns
    -------
    DataFrame on ``table.index``
        ``score`` (float; NaN where leverage is NaN or the asset class has no cap) and
        ``warn`` (bool; ``score > 1``, False where the score is NaN).
    """
    score = leverage_score(
        table["leverage"].to_numpy(dtype=np.float64, na_value=np.nan),
        table["asset_class"].to_numpy(dtype=object),
        caps=caps,
    )
    return pd.DataFrame({"score": score, "warn": score > 1.0}, index=table.index)


def leverage_score(
    leverage: np.ndarray, asset_class: np.ndarray, *, caps: Mapping[str, float] = DEFAULT_LEVERAGE_CAPS
) -> NDArray[np.float64]:
    """:func:`leverage_rule`'s score on arrays: ``leverage / caps[asset_class]`` (NaN without a cap)."""
    cap = np.array([caps.get(c, np.nan) for c in asset_class], dtype=np.float64)
    return np.asarray(leverage, dtype=np.float64) / cap


def log_barrier(distance: ArrayLike, *, short: ArrayLike = False) -> NDArray[np.float64]:
    """Log-distance to a barrier an adverse move ``distance`` (fraction of price) away.

    ``ln(1/(1−d))`` for a long (price falls; inf for ``d >= 1``), ``ln(1+d)`` for a
    short (price rises). NaN stays NaN; ``d <= 0`` gives a barrier ``<= 0``.
    """
    d = np.asarray(distance, dtype=float)
    is_short = np.asarray(short, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        down = np.where(d < 1.0, -np.log1p(-np.minimum(d, 1.0)), np.inf)
        up = np.log1p(np.maximum(d, -1.0))
    out = np.where(is_short, up, down)
    return np.where(np.isnan(d), np.nan, out)


def first_passage_probability(
    distance: ArrayLike, sigma: ArrayLike, horizon_days: ArrayLike, *, short: ArrayLike = False
) -> NDArray[np.float64]:
    """P(the price touches a barrier ``distance`` away within ``horizon_days``), driftless.

    ``2 Φ(−b / (σ √T))`` with ``b = log_barrier(distance, short=short)``: the
    reflection principle for ``ln S_t = ln S_0 + σ W_t`` (zero drift in log price),
    continuously monitored. Inputs broadcast.

    Parameters
    ----------
    distance : array-like
        Adverse move as a fraction of price (``dist_liq_pct``, ``dist_bankrupt_pct``).
    sigma : array-like
        Volatility of log price per √(calendar day).
    horizon_days : array-like
        Horizon ``T`` in calendar days.
    short : array-like of bool
        True where the adverse move is upward.

    Returns
    -------
    ndarray of float in [0, 1]
        NaN distance → NaN; ``d <= 0`` (already at or past the barrier) → 1 whatever
        σ; otherwise NaN σ or T → NaN; ``σ √T = 0`` → 0; a long with ``d >= 1`` → 0.
    """
    return _first_passage_beyond(log_barrier(distance, short=short), sigma, horizon_days)


def _first_passage_beyond(b: NDArray[np.float64], sigma: ArrayLike, horizon_days: ArrayLike) -> NDArray[np.float64]:
    """:func:`first_passage_probability` of the log-distance ``b`` (:func:`log_barrier`)."""
    scale = np.asarray(sigma, dtype=float) * np.sqrt(np.asarray(horizon_days, dtype=float))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = b / scale  # b > 0, scale = 0 → inf → probability 0
    return _clean(b, scale, special.erfc(z / np.sqrt(2.0)))


def fat_tail_first_passage_probability(
    distance: ArrayLike,
    sigma: ArrayLike,
    horizon_days: ArrayLike,
    *,
    excess_kurtosis: ArrayLike,
    bar_hours: ArrayLike,
    short: ArrayLike = False,
) -> NDArray[np.float64]:
    """Fat-tailed :func:`first_passage_probability`: ``min(1, 2 P(X_T ≥ b))``, ``X_T`` Student-t.

    ``X_T`` has the Gaussian's variance ``(σ √T)²`` and the excess kurtosis of a sum of
    the horizon's i.i.d. bar returns: ``κ_T = κ_bar · bar_hours / (24 T)`` (kurtosis of
    a sum of ``n`` i.i.d. terms is ``κ / n``). A unit-variance Student-t with
    ``ν = 4 + 6 / κ_T`` degrees of freedom has exactly that kurtosis. The factor 2 is
    the reflection principle, exact for the Gaussian and, for symmetric Lévy
    processes with jumps, an approximation (Lévy's inequality makes it an upper bound
    of ``P(max ≥ b)`` for symmetric increments). With ``κ_T <= 0`` or NaN it is the
    Gaussian formula. Edge cases as :func:`first_passage_probability`.

    Parameters
    ----------
    excess_kurtosis : array-like
        Excess kurtosis of one bar's log return (``kurt_30d``).
    bar_hours : array-like
        Length of those bars in hours (``bar_hours``).
    distance, sigma, horizon_days, short
        As :func:`first_passage_probability`.
    """
    return _fat_tail_first_passage_beyond(
        log_barrier(distance, short=short),
        sigma,
        horizon_days,
        excess_kurtosis=excess_kurtosis,
        bar_hours=bar_hours,
    )


def _fat_tail_first_passage_beyond(
    b: NDArray[np.float64],
    sigma: ArrayLike,
    horizon_days: ArrayLike,
    *,
    excess_kurtosis: ArrayLike,
    bar_hours: ArrayLike,
) -> NDArray[np.float64]:
    """:func:`fat_tail_first_passage_probability` of the log-distance ``b`` (:func:`log_barrier`)."""
    horizon = np.asarray(horizon_days, dtype=float)
    scale = np.asarray(sigma, dtype=float) * np.sqrt(horizon)
    bars_per_horizon = 24.0 * horizon / np.asarray(bar_hours, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        kurtosis = np.asarray(excess_kurtosis, dtype=float) / bars_per_horizon
        tail = _unit_variance_tail(b / scale, kurtosis)
    return _clean(b, scale, np.minimum(1.0, 2.0 * tail))


def _unit_variance_tail(
    z: NDArray[np.float64], kurtosis: NDArray[np.float64]
) -> NDArray[np.float64]:
    # P(Z >= z) for a unit-variance Student-t of excess kurtosis 6 / (nu - 4); Gaussian where
    # the kurtosis is <= 0 or NaN. A unit-variance t is t_nu * sqrt((nu - 2) / nu).
    fat = kurtosis > 0
    nu = 4.0 + 6.0 / np.where(fat, kurtosis, 1.0)
    student = stats.t.sf(z * np.sqrt(nu / (nu - 2.0)), nu)
    return np.where(fat, student, 0.5 * special.erfc(z / np.sqrt(2.0)))


def structural_baseline(
    table: pd.DataFrame, *, horizon: pd.Timedelta, sigma_column: str = DEFAULT_SIGMA_COLUMN
) -> pd.DataFrame:
    """P(touch the liquidation price) and P(touch the bankruptcy price) within ``horizon``.

    :func:`first_passage_probability` on ``dist_liq_pct`` and ``dist_bankrupt_pct``,
    with ``sigma_column`` (per √day; default ``vol_ewma_rm``) and the side from
    ``net_exposure`` (short where < 0; see the module docstring).

    Returns
    -------
    DataFrame on ``table.index`` with float columns ``p_liq`` and ``p_bankrupt``.
    """
    return _structural(table, horizon=horizon, sigma_column=sigma_column, fat_tails=False)


def fat_tail_baseline(
    table: pd.DataFrame, *, horizon: pd.Timedelta, sigma_column: str = DEFAULT_SIGMA_COLUMN
) -> pd.DataFrame:
    """:func:`structural_baseline` with Student-t tails from ``kurt_30d`` and ``bar_hours``.

    See :func:`fat_tail_first_passage_probability`. Columns ``p_liq`` and ``p_bankrupt``.
    """
    return _structural(table, horizon=horizon, sigma_column=sigma_column, fat_tails=True)


def _structural(
    table: pd.DataFrame, *, horizon: pd.Timedelta, sigma_column: str, fat_tails: bool
) -> pd.DataFrame:
    needed = ["dist_liq_pct", "dist_bankrupt_pct", "net_exposure", sigma_column]
    needed += ["kurt_30d", "bar_hours"] if fat_tails else []
    columns = {c: table[c].to_numpy(dtype=float) for c in dict.fromkeys(needed)}
    p_liq, p_bankrupt = structural_probabilities(
        columns, horizon=horizon, sigma_column=sigma_column, fat_tails=fat_tails
    )
    return pd.DataFrame({"p_liq": p_liq, "p_bankrupt": p_bankrupt}, index=table.index)


def structural_probabilities(
    columns: Mapping[str, NDArray[np.float64]],
    *,
    horizon: pd.Timedelta,
    sigma_column: str = DEFAULT_SIGMA_COLUMN,
    fat_tails: bool = False,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(P(touch liquidation), P(touch bankruptcy)) of :func:`structural_baseline` (or, with
    ``fat_tails``, :func:`fat_tail_baseline`) from the feature columns as float arrays."""
    return structural_probabilities_by_horizon(
        columns, horizons=(horizon,), sigma_column=sigma_column, fat_tails=fat_tails
    )[0]


def structural_probabilities_by_horizon(
    columns: Mapping[str, NDArray[np.float64]],
    *,
    horizons: Sequence[pd.Timedelta],
    sigma_column: str = DEFAULT_SIGMA_COLUMN,
    fat_tails: bool = False,
) -> list[tuple[NDArray[np.float64], NDArray[np.float64]]]:
    """:func:`structural_probabilities` at each of ``horizons``, in order. The barriers do not
    depend on the horizon, so they are computed once (for one account, most of the cost)."""
    sigma = columns[sigma_column]
    short = columns["net_exposure"] < 0  # NaN compares False: long
    barriers = [log_barrier(columns[c], short=short) for c in ("dist_liq_pct", "dist_bankrupt_pct")]

    def probability(b: NDArray[np.float64], days: float) -> NDArray[np.float64]:
        if not fat_tails:
            return _first_passage_beyond(b, sigma, days)
        return _fat_tail_first_passage_beyond(
            b, sigma, days, excess_kurtosis=columns["kurt_30d"], bar_hours=columns["bar_hours"]
        )

    out = []
    for horizon in horizons:
        days = _days(horizon)
        p_liq, p_bankrupt = (probability(b, days) for b in barriers)
        out.append((p_liq, p_bankrupt))
    return out


@functools.lru_cache(maxsize=64)
def _days(horizon: Any) -> float:
    """A horizon in days (remembered: two Timedelta calls cost more than one account's probabilities)."""
    return pd.Timedelta(horizon) / pd.Timedelta(days=1)


def _clean(
    barrier: NDArray[np.float64], scale: NDArray[np.float64], p: NDArray[np.float64]
) -> NDArray[np.float64]:
    # order matters: unknown distance -> NaN; a touched barrier is certain even with σ unknown
    p = np.where(np.isnan(scale), np.nan, p)
    p = np.where(barrier <= 0, 1.0, p)
    return np.where(np.isnan(barrier), np.nan, p).astype(float)


def _finite_ceiling(values: pd.Series) -> pd.Series:
    return values.where(values != np.inf, np.finfo(np.float64).max)
