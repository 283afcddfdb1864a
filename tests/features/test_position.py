"""Position features against the margin formulas, by hand."""

import numpy as np
import pandas as pd
import pytest

from liqrisk.features.margin import (
    bankruptcy_price,
    equity,
    liquidation_price,
    maintenance_margin,
    replay_units,
)
from liqrisk.features.position import POSITION_FEATURES, account_position_features


def book(rows):
    base = {"margin_mode": "cross", "amount": 0.0, "tier": 0, "sigma_d": 0.02, "liquidity": 1e6}
    return pd.DataFrame([{**base, **r} for r in rows])


@pytest.mark.parametrize("side", [1, -1])
def test_single_position_distances_are_the_liquidation_and_bankruptcy_prices(side):
    # C=100, q=10, e=100, P=100, m=1%: E=100, MM=10; long L=(1000-100)/(10*0.99)=90.909..., B=90
    rows = book([{"account": 0, "collateral": 100.0, "side": side, "qty": 10.0, "entry_price": 100.0,
                  "price": 100.0, "mmr": 0.01}])
    out = account_position_features(rows, horizon=pd.Timedelta("24h")).iloc[0]
    L = liquidation_price(side, 10.0, 100.0, 100.0, 0.01, 0.0)
    B = bankruptcy_price(side, 10.0, 100.0, 100.0)
    assert out["dist_liq_pct"] == pytest.approx(abs(100.0 - L) / 100.0)
    assert out["dist_bankrupt_pct"] == pytest.approx(abs(100.0 - B) / 100.0) == pytest.approx(0.1)
    assert out["dist_liq_sigma"] == pytest.approx(out["dist_liq_pct"] / 0.02)  # H = 1 day
    assert out["leverage"] == pytest.approx(10.0)
    assert out["margin_ratio"] == pytest.approx(10.0 / 100.0)
    assert out["net_exposure"] == side


def test_horizon_scales_sigma_distance_by_square_root_of_days():
    rows = book([{"account": 0, "collateral": 100.0, "side": 1, "qty": 10.0, "entry_price": 100.0,
                  "price": 100.0, "mmr": 0.01}])
    day = account_position_features(rows, horizon=pd.Timedelta("1D"))["dist_liq_sigma"].iloc[0]
    week = account_position_features(rows, horizon=pd.Timedelta("4D"))["dist_liq_sigma"].iloc[0]
    assert week == pytest.approx(day / 2.0)


def test_cross_distance_is_the_uniform_adverse_move_that_meets_maintenance():
    rows = book([
        {"account": 7, "collateral": 500.0, "side": 1, "qty": 2.0, "entry_price": 1000.0, "price": 1100.0, "mmr": 0.02, "amount": 5.0},
        {"account": 7, "collateral": 500.0, "side": -1, "qty": 30.0, "entry_price": 50.0, "price": 52.0, "mmr": 0.05},
    ])
    d = account_position_features(rows, horizon=pd.Timedelta("24h")).loc[7, "dist_liq_pct"]
    side, qty, entry = rows["side"].to_numpy(), rows["qty"].to_numpy(), rows["entry_price"].to_numpy()
    moved = rows["price"].to_numpy() * (1 - side * d)  # every position moves against the account by d
    e = 500.0 + np.sum(equity(0.0, side, qty, entry, moved))
    mm = np.sum(maintenance_margin(qty, moved, rows["mmr"].to_numpy(), rows["amount"].to_numpy()))
    assert e == pytest.approx(mm)


def test_isolated_account_is_as_weak_as_its_weakest_position():
    rows = book([
        {"account": 1, "margin_mode": "isolated", "collateral": 100.0, "side": 1, "qty": 10.0, "entry_price": 100.0, "price": 100.0, "mmr": 0.01},
        {"account": 1, "margin_mode": "isolated", "collateral": 20.0, "side": -1, "qty": 10.0, "entry_price": 100.0, "price": 100.0, "mmr": 0.01},
    ])
    out = account_position_features(rows, horizon=pd.Timedelta("24h")).loc[1]
    assert out["dist_bankrupt_pct"] == pytest.approx(20.0 / 1000.0)  # the 50x short
    assert out["leverage"] == pytest.approx(2000.0 / 120.0)
    assert out["n_positions"] == 2 and out["isolated"] == 1.0 and out["concentration"] == pytest.approx(0.5)
    assert set(out.index) == set(POSITION_FEATURES)


# --- the array implementation against the frame-based one it replaced ------------------------


def pandas_reference(
    positions: pd.DataFrame, *, horizon: pd.Timedelta
) -> pd.DataFrame:
    """The frame-based definition the arrays replaced (kept as the oracle)."""
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


def random_books(seed: int, n_accounts: int = 400) -> pd.DataFrame:
    """Cross and isolated accounts of 1-4 positions, with unpriced (NaN) positions, zero and
    negative equity, mixed tiers and missing liquidity."""
    rng = np.random.default_rng(seed)
    rows = []
    for account in rng.permutation(10 * n_accounts)[:n_accounts]:
        mode = "isolated" if rng.random() < 0.4 else "cross"
        collateral = float(rng.choice([0.0, -5.0, *rng.lognormal(6, 1, 6)]))
        for _ in range(int(rng.integers(1, 5))):
            entry = float(rng.lognormal(3, 1))
            rows.append({
                "account": int(account), "margin_mode": mode,
                "collateral": float(rng.lognormal(4, 1)) if mode == "isolated" else collateral,
                "side": int(rng.choice([1, -1])), "qty": float(rng.lognormal(1, 1)), "entry_price": entry,
                "price": np.nan if rng.random() < 0.05 else entry * float(rng.lognormal(0, 0.2)),
                "mmr": float(rng.choice([0.004, 0.01, 0.05, 0.25])), "amount": float(rng.choice([0.0, 1.5])),
                "tier": int(rng.integers(0, 4)),
                "sigma_d": np.nan if rng.random() < 0.05 else float(rng.lognormal(-4, 0.5)),
                "liquidity": float(rng.choice([np.nan, 0.0, 1e6, 3e8])),
            })
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_arrays_agree_with_the_frame_definition(seed):
    rows = random_books(seed)
    got = account_position_features(rows, horizon=pd.Timedelta("7D"))
    want = pandas_reference(rows, horizon=pd.Timedelta("7D"))
    assert list(got.index) == list(want.index) and list(got.columns) == list(want.columns)
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-12, atol=0.0)
