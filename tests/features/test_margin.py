"""Margin formulas: worked examples by hand, and the identities that define them."""

import numpy as np
import pytest

from liqrisk.features.margin import (
    bankruptcy_price,
    cross_equity,
    cross_maintenance_margin,
    equity,
    is_liquidatable,
    liquidation_price,
    maintenance_margin,
    margin_ratio,
    replay_units,
    tier_of,
)

# One row per worked example: side, qty, entry, collateral, mmr, amount -> L, B.
EXAMPLES = [
    # long 1 BTC @ 10,000 with 1,000 collateral, Binance tier 1 (0.4%, amount 0):
    # L = (10,000 - 1,000 - 0) / (1 * (1 - 0.004)) = 9,036.1446 ; B = 10,000 - 1,000 = 9,000
    (1, 1.0, 10_000.0, 1_000.0, 0.004, 0.0, 9_000.0 / 0.996, 9_000.0),
    # short 1 BTC @ 10,000, same: L = (-10,000 - 1,000) / (1 * (-1 - 0.004)) = 10,956.17 ; B = 11,000
    (-1, 1.0, 10_000.0, 1_000.0, 0.004, 0.0, 11_000.0 / 1.004, 11_000.0),
    # long 100 BTC @ 30,000 (3M notional, Binance 2021 tier 3: 1%, amount 1,300), 150,000 collateral:
    # L = (3,000,000 - 150,000 - 1,300) / (100 * 0.99) = 28,775.76 ; B = 30,000 - 1,500 = 28,500
    (1, 100.0, 30_000.0, 150_000.0, 0.01, 1_300.0, 2_848_700.0 / 99.0, 28_500.0),
    # short 100,000 EURCHF @ 1.2010 with 4,000 collateral (30:1), ESMA 1/60:
    # L = (-120,100 - 4,000) / (100,000 * (-1 - 1/60)) = 1.22065... ; B = 1.2010 + 0.04 = 1.2410
    (-1, 100_000.0, 1.2010, 4_000.0, 1 / 60, 0.0, 124_100.0 / (100_000.0 * (1 + 1 / 60)), 1.2410),
]


@pytest.mark.parametrize("side, qty, entry, collateral, mmr, amount, want_l, want_b", EXAMPLES)
def test_liquidation_and_bankruptcy_prices_by_hand(side, qty, entry, collateral, mmr, amount, want_l, want_b):
    assert liquidation_price(side, qty, entry, collateral, mmr, amount) == pytest.approx(want_l, rel=1e-12)
    assert bankruptcy_price(side, qty, entry, collateral) == pytest.approx(want_b, rel=1e-12)


def test_prices_are_where_equity_meets_maintenance_and_zero_vectorised():
    rng = np.random.default_rng(0)
    n = 1000
    side = rng.choice([-1, 1], n)
    qty, entry = rng.uniform(0.1, 50, n), rng.uniform(1, 1000, n)
    collateral = qty * entry / rng.uniform(1, 100, n)
    mmr, amount = rng.uniform(0.001, 0.1, n), rng.uniform(0, 10, n)
    L = liquidation_price(side, qty, entry, collateral, mmr, amount)
    B = bankruptcy_price(side, qty, entry, collateral)
    np.testing.assert_allclose(equity(collateral, side, qty, entry, L), maintenance_margin(qty, L, mmr, amount), rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(equity(collateral, side, qty, entry, B), 0.0, atol=1e-6)
    # one tick on the safe side of L is not liquidatable, one tick beyond is
    tick = side * 1e-6 * entry
    assert not is_liquidatable(equity(collateral, side, qty, entry, L + tick), maintenance_margin(qty, L + tick, mmr, amount)).any()
    assert is_liquidatable(equity(collateral, side, qty, entry, L - tick), maintenance_margin(qty, L - tick, mmr, amount)).all()


def test_margin_ratio_is_infinite_once_equity_is_gone():
    np.testing.assert_array_equal(margin_ratio([10.0, 10.0, 10.0], [100.0, 0.0, -5.0]), [0.1, np.inf, np.inf])


def test_tier_is_the_first_cap_at_or_above_the_notional():
    caps = [50_000.0, 250_000.0, np.inf]
    np.testing.assert_array_equal(tier_of([0.0, 50_000.0, 50_000.01, 1e12], caps), [0, 0, 1, 2])
    assert tier_of([300.0], [100.0, 200.0])[0] == 2  # above the last cap: the caller's error


def test_cross_sums_per_account_and_units():
    account = np.array([0, 0, 1])
    # account 0: C=100, long 1 @ 100 now 90 (-10), short 2 @ 50 now 45 (+10) -> E = 100
    e = cross_equity([100.0, 10.0], [1, -1, 1], [1.0, 2.0, 1.0], [100.0, 50.0, 10.0], [90.0, 45.0, 11.0], account)
    np.testing.assert_allclose(e, [100.0, 11.0])
    mm = cross_maintenance_margin([1.0, 2.0, 1.0], [90.0, 45.0, 11.0], [0.01, 0.02, 0.1], [0.0, 0.5, 0.0], account, 2)
    np.testing.assert_allclose(mm, [0.9 + 1.8 - 0.5, 1.1])
    np.testing.assert_array_equal(replay_units([0, 0, 1, 1, 2], [False, False, True, True, False]), [0, 0, 1, 2, 3])
