"""Position features: how close each account is to liquidation and bankruptcy at ``as_of``.

All prices are the last close complete at or before ``as_of`` (the engine's own
``last_close``), so nothing here sees a later bar. An account is one snapshot:
cross accounts pool their positions; isolated accounts are described by their
weakest position (the smallest distance) and their totals.

Distances are the uniform adverse move, as a fraction of price, that brings the
account to ``E = MM`` (liquidation) or ``E = 0`` (bankruptcy). For a single
position they are exactly ``|P − L| / P`` and ``|P − B| / P``; for a cross account,
every position moves against it by the same fraction. In volatility units they are
divided by ``σ·√H`` (σ per √day, H in days).
"""

import numpy as np
import pandas as pd

from liqrisk.features.margin import replay_units

POSITION_FEATURES: dict[str, str] = {
    "leverage": "gross notional at as_of / collateral",
    "margin_ratio": "MM / E at as_of (inf where E <= 0)",
    "dist_liq_pct": "uniform adverse move that triggers E <= MM, fraction of price",
    "dist_bankrupt_pct": "uniform adverse move that takes E to 0, fraction of price",
    "dist_liq_sigma": "dist_liq_pct / (sigma_daily * sqrt(horizon_days))",
    "dist_bankrupt_sigma": "dist_bankrupt_pct / (sigma_daily * sqrt(horizon_days))",
    "notional_to_liquidity": "gross notional / daily traded notional (or depth_notional)",
    "log_notional": "log10 of gross notional at as_of",
    "mmr": "notional-weighted maintenance margin rate of the tiers",
    "tier": "highest tier index among the positions (0 = first tier)",
    "isolated": "1 for isolated margin, 0 for cross",
    "n_positions": "number of positions",
    "concentration": "largest position's share of gross notional",
    "net_exposure": "net signed notional / gross notional (+1 all long, -1 all short)",
    "upnl_to_collateral": "unrealised P&L / collateral",
}


def account_position_features(positions: pd.DataFrame, *, horizon: pd.Timedelta) -> pd.DataFrame:
    """One row of ``POSITION_FEATURES`` per account (index: ``account``, in order of appearance).

    Parameters
    ----------
    positions : DataFrame
        One row per position, the rows of an account together, with ``account, margin_mode,
        collateral`` (the account's for cross, the position's own for isolated), ``side, qty,
        entry_price`` and, known at as_of (``liqrisk.features.replay.position_state``):
        ``price`` (last complete close), ``mmr, amount, tier`` (the tier at as_of), ``sigma_d``
        (daily volatility) and ``liquidity`` (daily traded notional, or depth_notional).
    horizon : Timedelta
    """
    columns = (
        "side",
        "qty",
        "price",
        "entry_price",
        "mmr",
        "amount",
        "collateral",
        "sigma_d",
        "liquidity",
    )
    values = {c: positions[c].to_numpy(dtype=float) for c in columns}
    account = positions["account"].to_numpy()
    out = position_feature_arrays(
        account=account,
        isolated=is_isolated(positions["margin_mode"]),
        tier=positions["tier"].to_numpy(dtype=np.int64),
        horizon_days=horizon / pd.Timedelta(days=1),
        **values,
    )
    index = pd.Index(account[group_starts(account)], name="account")
    return pd.DataFrame(out, index=index)


def is_isolated(margin_mode: pd.Series | np.ndarray) -> np.ndarray:
    """``margin_mode == "isolated"`` per row, as a bool array (compared as plain objects: on text
    held by pyarrow a pandas comparison costs more than the features of one account)."""
    return np.asarray(np.asarray(margin_mode, dtype=object) == "isolated", dtype=bool)


def group_starts(codes: np.ndarray) -> np.ndarray:
    """First row of each run of equal ``codes`` (the rows of a group must be together)."""
    n = len(codes)
    if not n:
        return np.zeros(0, dtype=np.intp)
    first = np.empty(n, dtype=bool)  # (np.r_ costs more than the comparison for a few rows)
    first[0] = True
    np.not_equal(codes[1:], codes[:-1], out=first[1:])
    return np.flatnonzero(first)


def position_feature_arrays(
    *,
    account: np.ndarray,
    isolated: np.ndarray,
    side: np.ndarray,
    qty: np.ndarray,
    price: np.ndarray,
    entry_price: np.ndarray,
    mmr: np.ndarray,
    amount: np.ndarray,
    tier: np.ndarray,
    collateral: np.ndarray,
    sigma_d: np.ndarray,
    liquidity: np.ndarray,
    horizon_days: float,
) -> dict[str, np.ndarray]:
    """:func:`account_position_features` on plain arrays (one per position, the rows of an
    account together): ``POSITION_FEATURES`` per account, in order of appearance.

    Arrays rather than a frame because the scoring service computes these for one account
    per request, where a frame's per-operation cost would be most of the answer's time.
    A cross account pools its positions into one replay unit; an isolated account has a
    unit per position, and is as close to liquidation as its nearest unit.
    """
    starts = group_starts(account)
    n = len(account)
    if n == 0:
        return {name: np.zeros(0) for name in POSITION_FEATURES}
    unit_starts = group_starts(replay_units(account, isolated))
    accounts_of_units = group_starts(account[unit_starts])  # each account's first unit
    notional = qty * np.abs(price)
    pnl = side * qty * (price - entry_price)
    maintenance = mmr * notional - amount

    def unit_sum(x: np.ndarray) -> np.ndarray:  # NaN skipped, as pandas sums (an unpriced position)
        return np.add.reduceat(np.where(np.isnan(x), 0.0, x), unit_starts)

    def account_sum(x: np.ndarray) -> np.ndarray:
        return np.add.reduceat(np.where(np.isnan(x), 0.0, x), starts)

    def weakest(
        x: np.ndarray,
    ) -> np.ndarray:  # per account, the smallest over its units; NaN skipped
        return np.fmin.reduceat(x, accounts_of_units)

    unit_notional = unit_sum(notional)
    unit_equity = collateral[unit_starts] + unit_sum(pnl)
    with np.errstate(divide="ignore", invalid="ignore"):
        dist_liq = (unit_equity - unit_sum(maintenance)) / unit_sum(notional * (1.0 - side * mmr))
        dist_bankrupt = unit_equity / unit_notional
        scale = unit_sum(sigma_d * notional) / unit_notional * np.sqrt(horizon_days)
        gross = account_sum(notional)
        held = np.add.reduceat(collateral[unit_starts], accounts_of_units)
        equity_total = held + account_sum(pnl)
        positive_gross = np.where(gross > 0, gross, np.nan)
        positive_held = np.where(held > 0, held, np.nan)
        return {
            "leverage": gross / positive_held,
            "margin_ratio": np.where(
                equity_total > 0, account_sum(maintenance) / equity_total, np.inf
            ),
            "dist_liq_pct": weakest(dist_liq),
            "dist_bankrupt_pct": weakest(dist_bankrupt),
            "dist_liq_sigma": weakest(dist_liq / scale),
            "dist_bankrupt_sigma": weakest(dist_bankrupt / scale),
            "notional_to_liquidity": np.fmax.reduceat(notional / liquidity, starts),
            "log_notional": np.log10(positive_gross),
            "mmr": account_sum(mmr * notional) / positive_gross,
            "tier": np.maximum.reduceat(tier.astype(np.int64), starts),
            "isolated": isolated[starts].astype(float),
            "n_positions": np.diff(np.r_[starts, n]).astype(np.int64),
            "concentration": np.fmax.reduceat(notional, starts) / positive_gross,
            "net_exposure": account_sum(side * notional) / positive_gross,
            "upnl_to_collateral": account_sum(pnl) / positive_held,
        }
