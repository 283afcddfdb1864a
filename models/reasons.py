"""Reasons behind a score in a risk officer's words: the features that pushed an account's
log-odds most, from the model's exact contributions (:meth:`RiskModel.contributions`).

A contribution is in log-odds of the *uncalibrated* classifier: positive pushes towards the
event (riskier), negative away from it. The contributions of a row and the ``bias`` sum to its
raw log-odds, so the reasons are an exact decomposition, not a post-hoc guess.
"""

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from liqrisk.models.bundle import BIAS

# Every model input (``liqrisk.models.train.FEATURES``) in words; a test checks none is missing.
REASON_WORDS: dict[str, str] = {
    # the account
    "leverage": "leverage (gross position value / collateral)",
    "margin_ratio": "margin ratio (maintenance margin / equity)",
    "dist_liq_pct": "price move that triggers liquidation, as a share of price",
    "dist_bankrupt_pct": "price move that wipes out the equity, as a share of price",
    "dist_liq_sigma": "distance to liquidation in volatility units",
    "dist_bankrupt_sigma": "distance to bankruptcy in volatility units",
    "notional_to_liquidity": "position size against the market's daily traded value",
    "log_notional": "size of the positions (gross value, log scale)",
    "mmr": "maintenance margin rate of the positions",
    "tier": "maintenance margin tier (larger positions, higher tiers)",
    "isolated": "isolated margin (each position on its own collateral)",
    "n_positions": "number of positions",
    "concentration": "share of the largest position in the account",
    "net_exposure": "net direction of the account (all long +1, all short -1)",
    "upnl_to_collateral": "unrealised profit or loss against collateral",
    # volatility
    "vol_1d": "volatility over the last day",
    "vol_7d": "volatility over the last week",
    "vol_30d": "volatility over the last 30 days",
    "vol_1y": "volatility over the last year",
    "vol_ewma_1d": "volatility, weighted to the last day",
    "vol_ewma_rm": "volatility, weighted to the last weeks (RiskMetrics)",
    "vol_ratio_1d_30d": "volatility today against the last 30 days",
    "vol_ratio_7d_1y": "volatility this week against the last year",
    "vol_7d_pct_1y": "how high this week's volatility ranks in the last year",
    # jumps
    "jump_share_7d": "share of last week's price variation that came in jumps",
    "jump_share_30d": "share of the last 30 days' price variation that came in jumps",
    "max_abs_ret_1d": "largest single-bar price move in the last day",
    "max_abs_ret_7d": "largest single-bar price move in the last week",
    "max_abs_ret_30d": "largest single-bar price move in the last 30 days",
    "kurt_30d": "fat tails of price moves over the last 30 days (kurtosis)",
    "top_share_30d": "share of the last 30 days' variation from its single largest move",
    # gaps and closures
    "gap_count_90d": "number of market closures or outages in 90 days",
    "gap_count_1y": "number of market closures or outages in a year",
    "gap_mean_abs_90d": "average price jump across a closure (weekend/overnight) in 90 days",
    "gap_mean_abs_1y": "average price jump across a closure (weekend/overnight) in a year",
    "gap_max_abs_90d": "largest weekend/overnight gap in 90 days",
    "gap_max_abs_1y": "largest weekend/overnight gap in a year",
    "last_bar_age_h": "hours since the last price update",
    "closed_now": "market closed now",
    "next_closure_in_h": "hours until the market next closes",
    "next_closure_len_h": "length of the next market closure in hours",
    "never_closes": "market trades around the clock",
    "bar_hours": "length of the price bars in hours",
    # liquidity
    "notional_30d": "market's daily traded value over the last 30 days",
    "amihud_30d": "price impact per traded value over 30 days (illiquidity)",
    "volume_missing": "no traded volume reported (quotes or mark prices only)",
    # trend
    "ret_1d": "price change over the last day",
    "ret_7d": "price change over the last week",
    "ret_30d": "price change over the last 30 days",
    "drawdown_30d": "fall from the 30-day high",
    "drawdown_1y": "fall from the one-year high",
    "ma_dist_7d": "price against its 7-day average, in volatility units",
    "ma_dist_30d": "price against its 30-day average, in volatility units",
    # structural first-passage probabilities
    "fp_liq_1h": "chance the price reaches the liquidation price within 1 hour (random-walk model)",
    "fp_bankrupt_1h": "chance the price reaches the bankruptcy price within 1 hour (random-walk model)",
    "fp_liq_24h": "chance the price reaches the liquidation price within 24 hours (random-walk model)",
    "fp_bankrupt_24h": "chance the price reaches the bankruptcy price within 24 hours (random-walk model)",
    "fp_liq_7d": "chance the price reaches the liquidation price within 7 days (random-walk model)",
    "fp_bankrupt_7d": "chance the price reaches the bankruptcy price within 7 days (random-walk model)",
    # the market
    "asset_class": "asset class (crypto, FX, equity, commodity, index)",
}


def top_reasons(contributions: pd.DataFrame, values: pd.DataFrame, *, k: int) -> list[list[dict[str, Any]]]:
    """Per row, the ``k`` features with the largest ``|contribution|`` (``BIAS`` excluded), largest
    first: ``feature``, ``description`` (:data:`REASON_WORDS`), ``contribution`` (log-odds) and
    ``value`` (the model's input: a float, a text for ``asset_class``, None where missing).

    ``values`` is the model's input frame (``model_frame``) on the same rows.
    """
    names = contributions.columns.tolist()
    where = _positions(values, [c for c in names if c != BIAS])
    return ranked_reasons(
        contributions.to_numpy(dtype=float),
        names,
        lambda i, feature: values.iat[i, where[feature]],
        k=k,
    )


def ranked_reasons(
    pushes: np.ndarray, names: Sequence[str], value: Callable[[int, str], Any], *, k: int
) -> list[list[dict[str, Any]]]:
    """:func:`top_reasons` from arrays: ``pushes`` (rows x ``names``, :data:`BIAS` among them),
    and ``value(row, feature)``, the model's input of a row (read for the reasons given only)."""
    kept = [i for i, c in enumerate(names) if c != BIAS]
    features = [names[i] for i in kept]
    push = np.asarray(pushes, dtype=float)[:, kept]
    k = min(k, len(features))
    if k <= 0 or len(push) == 0:
        return [[] for _ in range(len(push))]
    order = np.argsort(-np.abs(push), axis=1, kind="stable")[:, :k]
    out = []
    for i, picks in enumerate(order.tolist()):
        out.append(
            [
                {
                    "feature": features[j],
                    "description": REASON_WORDS.get(features[j], features[j]),
                    "contribution": float(push[i, j]),
                    "value": _plain(value(i, features[j])),
                }
                for j in picks
            ]
        )
    return out


def _positions(values: pd.DataFrame, features: list[str]) -> dict[str, int]:
    """Column position of each feature in ``values``; ``KeyError`` naming any it lacks."""
    position = {c: i for i, c in enumerate(values.columns.tolist())}
    missing = [c for c in features if c not in position]
    if missing:
        raise KeyError(f"top_reasons: values lack column(s) {missing}")
    return {c: position[c] for c in features}


def _plain(value: Any) -> float | str | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, str):
        return value
    number = float(value)
    return number if np.isfinite(number) else None
