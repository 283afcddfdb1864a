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


def account_position_features(
    positions: pd.DataFrame, *, horizon: pd.Timedelta
) -> pd.DataFrame:
    """One row of ``POSITION_FEATURES`` per account (index: ``account``, in order of appearance).

    Parameters
    ----------
    positions : DataFrame
        One row per position with ``account, margin_mode, collateral`` (the account's
        for cross, the position's own for isolated), ``side, qty, entry_price`` and,
        known at as_of (``liqrisk.features.replay.position_state``): ``price`` (last
        complete close), ``mmr, amount, tier`` (the tier at as_of), ``sigma_d``
        (daily volatility) and ``liquidity`` (daily traded notional, or depth_notional).
    horizon : Timedelta
    """
    isolated = (positions["margin_mode"] == "isolated").to_numpy()
    unit = replay_units(positions["account"].to_numpy(), isolated)
    side = positions["side"].to_numpy(dtype=float)
    qty = positions["qty"].to_numpy(dtype=float)
    price = positions["price"].to_numpy(dtype=float)
    mmr = positions["mmr"].to_numpy(dtype=float)
    notional = qty * np.abs(price)
    pnl = side * qty * (price - positions["entry_price"].to_numpy(dtype=float))
    maintenance = mmr * notional - positions["amount"].to_numpy(dtype=float)
    hdays = horizon / pd.Timedelta(days=1)

    frame = pd.DataFrame(
        {
            "account": positions["account"].to_numpy(),
            "unit": unit,
            "collateral": positions["collateral"].to_numpy(dtype=float),
            "notional": notional,
            "signed": side * notional,
            "pnl": pnl,
            "maintenance": maintenance,
            "adverse": notional * (1.0 - side * mmr),
            "weighted_mmr": mmr * notional,
            "weighted_sigma": positions["sigma_d"].to_numpy(dtype=float) * notional,
            "liquidity": positions["liquidity"].to_numpy(dtype=float),
            "tier": positions["tier"].to_numpy(),
            "isolated": isolated.astype(float),
        }
    )
    units = frame.groupby("unit", sort=False).agg(
        account=("account", "first"),
        collateral=("collateral", "first"),
        notional=("notional", "sum"),
        pnl=("pnl", "sum"),
        maintenance=("maintenance", "sum"),
        adverse=("adverse", "sum"),
        weighted_sigma=("weighted_sigma", "sum"),
    )
    equity = units["collateral"] + units["pnl"]
    units["dist_liq"] = (equity - units["maintenance"]) / units["adverse"]
    units["dist_bankrupt"] = equity / units["notional"]
    units["sigma"] = units["weighted_sigma"] / units["notional"]
    scale = units["sigma"] * np.sqrt(hdays)
    units["dist_liq_sigma"] = units["dist_liq"] / scale
    units["dist_bankrupt_sigma"] = units["dist_bankrupt"] / scale

    by_account = frame.groupby("account", sort=False)
    weakest = units.groupby("account", sort=False)
    gross = by_account["notional"].sum()
    collateral = units.groupby("account", sort=False)["collateral"].sum()
    equity_total = collateral + by_account["pnl"].sum()
    maintenance_total = by_account["maintenance"].sum()
    out = pd.DataFrame(
        {
            "leverage": gross / collateral.where(collateral > 0),
            "margin_ratio": np.where(equity_total > 0, maintenance_total / equity_total.where(equity_total > 0), np.inf),
            "dist_liq_pct": weakest["dist_liq"].min(),
            "dist_bankrupt_pct": weakest["dist_bankrupt"].min(),
            "dist_liq_sigma": weakest["dist_liq_sigma"].min(),
            "dist_bankrupt_sigma": weakest["dist_bankrupt_sigma"].min(),
            "notional_to_liquidity": (frame["notional"] / frame["liquidity"]).groupby(frame["account"], sort=False).max(),
            "log_notional": np.log10(gross.where(gross > 0)),
            "mmr": by_account["weighted_mmr"].sum() / gross.where(gross > 0),
            "tier": by_account["tier"].max(),
            "isolated": by_account["isolated"].first(),
            "n_positions": by_account.size(),
            "concentration": by_account["notional"].max() / gross.where(gross > 0),
            "net_exposure": by_account["signed"].sum() / gross.where(gross > 0),
            "upnl_to_collateral": by_account["pnl"].sum() / collateral.where(collateral > 0),
        }
    )
    out.index.name = "account"
    return out.astype({"n_positions": "int64", "tier": "int64"})
