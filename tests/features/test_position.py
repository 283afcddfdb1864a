"""Position features against the margin formulas, by hand."""

import numpy as np
import pandas as pd
import pytest

from liqrisk.features.margin import bankruptcy_price, equity, liquidation_price, maintenance_margin
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
