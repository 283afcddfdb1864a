import math

import numpy as np
import pandas as pd
import pytest

from liqrisk.models.baselines import (
    DEFAULT_LEVERAGE_CAPS,
    fat_tail_baseline,
    fat_tail_first_passage_probability,
    first_passage_probability,
    leverage_rule,
    margin_ratio_rule,
    structural_baseline,
    structural_probabilities,
    structural_probabilities_by_horizon,
)


@pytest.fixture(params=[0, 1, 20240611])
def seed(request: pytest.FixtureRequest) -> int:
    return request.param


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


# (d, sigma per sqrt(day), T days, short, expected): b = ln(1/(1-d)) long, ln(1+d) short
@pytest.mark.parametrize(
    ("d", "sigma", "days", "short", "expected"),
    [
        (0.1, 0.05, 1.0, False, 0.03509935336994152),  # z = ln(1/0.9) / 0.05 = 2.10721
        (0.1, 0.05, 1.0, True, 0.05662379586660804),  # z = ln(1.1) / 0.05 = 1.90620
        (0.02, 0.03, 1 / 24, True, 2 * _phi(-math.log(1.02) / (0.03 * math.sqrt(1 / 24)))),
        (0.3, 0.02, 7.0, False, 2 * _phi(-math.log(1 / 0.7) / (0.02 * math.sqrt(7.0)))),
    ],
)
def test_first_passage_matches_hand_value(
    d: float, sigma: float, days: float, short: bool, expected: float
) -> None:
    p = first_passage_probability(d, sigma, days, short=short)
    assert p == pytest.approx(expected, rel=1e-12)


def test_first_passage_edge_cases() -> None:
    d = np.array([0.0, -0.05, 0.1, 0.1, 0.1, np.nan, 1.0, 1.5, 0.0])
    sigma = np.array([0.02, np.nan, 0.0, np.nan, 0.02, 0.02, 0.02, 0.02, 0.0])
    p = first_passage_probability(d, sigma, 1.0)
    expected = [1.0, 1.0, 0.0, np.nan, p[4], np.nan, 0.0, 0.0, 1.0]
    np.testing.assert_array_equal(p, expected)
    assert 0.0 < p[4] < 1.0
    assert first_passage_probability(1.5, 0.5, 1.0, short=True) > 0.0  # a short can lose 150%
    assert first_passage_probability(0.1, 0.02, 0.0) == 0.0


def test_first_passage_is_monotone() -> None:
    d = np.linspace(0.001, 0.3, 200)  # up to 7 sigma: no underflow to 0
    for short in (False, True):
        by_distance = first_passage_probability(d, 0.05, 1.0, short=short)
        assert np.all(np.diff(by_distance) < 0)
    sigma = np.linspace(0.01, 0.2, 200)
    assert np.all(np.diff(first_passage_probability(0.1, sigma, 1.0)) > 0)
    days = np.linspace(0.05, 30.0, 200)
    assert np.all(np.diff(first_passage_probability(0.1, 0.02, days)) > 0)
    # the same fraction is closer in log terms upward than downward
    up, down = (first_passage_probability(0.2, 0.05, 1.0, short=s) for s in (True, False))
    assert up > down


@pytest.mark.parametrize(("d", "short"), [(0.05, False), (0.1, False), (0.05, True), (0.12, True)])
def test_first_passage_matches_monte_carlo(seed: int, d: float, short: bool) -> None:
    """Simulate the driftless log-price walk and count paths whose price touches S0·(1∓d).

    Discrete monitoring misses crossings between steps (biased low by about
    0.58·σ√Δt in barrier terms), so each step adds the Brownian-bridge crossing
    probability exp(−2 (b−x_k)(b−x_{k+1}) / (σ²Δt)) given its endpoints. The
    per-path estimate 1 − Π(1 − p_k) is then exact in expectation for any step
    count, and the tolerance is 5 Monte Carlo standard errors.
    """
    sigma, days, n_paths, n_steps = 0.04, 1.0, 20_000, 64
    rng = np.random.default_rng(seed)
    dt = days / n_steps
    steps = rng.normal(0.0, sigma * math.sqrt(dt), size=(n_paths, n_steps))
    x = np.concatenate([np.zeros((n_paths, 1)), np.cumsum(steps, axis=1)], axis=1)  # ln(S/S0)
    # distance left to the barrier: price ≥ S0(1+d) for a short, ≤ S0(1-d) for a long
    gap = (math.log(1.0 + d) - x) if short else (x - math.log(1.0 - d))
    touched = (gap <= 0).any(axis=1)
    a, b = np.maximum(gap[:, :-1], 0.0), np.maximum(gap[:, 1:], 0.0)
    no_cross = np.prod(1.0 - np.exp(-2.0 * a * b / (sigma**2 * dt)), axis=1)
    per_path = np.where(touched, 1.0, 1.0 - no_cross)

    estimate, se = per_path.mean(), per_path.std(ddof=1) / math.sqrt(n_paths)
    exact = first_passage_probability(d, sigma, days, short=short)
    assert abs(estimate - exact) < 5 * se + 1e-4
    missed = per_path - touched  # crossings between steps that the discrete walk misses
    assert missed.min() >= 0.0 and missed.mean() > 0.0


def test_fat_tail_reduces_to_gaussian_without_excess_kurtosis() -> None:
    d = np.array([0.01, 0.05, 0.2])
    gauss = first_passage_probability(d, 0.03, 1.0)
    for kurt in (0.0, -1.0, np.nan):
        fat = fat_tail_first_passage_probability(d, 0.03, 1.0, excess_kurtosis=kurt, bar_hours=1.0)
        np.testing.assert_allclose(fat, gauss, rtol=1e-12)


def test_fat_tail_fattens_far_tails_and_fades_with_horizon() -> None:
    far = 0.15  # 5 sigma at sigma 3%/sqrt(day), one day
    kw = {"excess_kurtosis": 30.0, "bar_hours": 1.0}
    fat = fat_tail_first_passage_probability(far, 0.03, 1.0, **kw)
    assert fat > 10 * first_passage_probability(far, 0.03, 1.0)
    # sums of more bars are closer to Gaussian: the ratio to the Gaussian falls with the horizon
    ratio = [
        fat_tail_first_passage_probability(far * math.sqrt(t), 0.03, t, **kw)
        / first_passage_probability(far * math.sqrt(t), 0.03, t)
        for t in (1.0, 7.0)
    ]
    assert ratio[0] > ratio[1] > 1.0
    p = fat_tail_first_passage_probability(np.linspace(0.001, 0.9, 100), 0.03, 1.0, **kw)
    assert np.all(np.diff(p) <= 0) and np.all((p >= 0) & (p <= 1))
    assert fat_tail_first_passage_probability(0.0, np.nan, 1.0, **kw) == 1.0


@pytest.fixture
def table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "asset_class": pd.Categorical(
                ["crypto", "fx", "equity", "index", "commodity", "other"]
            ),
            "leverage": [40.0, 15.0, 2.0, np.nan, 12.0, 3.0],
            "margin_ratio": [0.85, 0.8, 0.1, np.inf, np.nan, 0.5],
            "dist_liq_pct": [0.02, 0.03, 0.4, 0.0, 0.1, 0.05],
            "dist_bankrupt_pct": [0.025, 0.04, 0.5, 0.01, 0.12, 0.06],
            "net_exposure": [1.0, -1.0, 0.2, 0.0, np.nan, -0.3],
            "vol_ewma_rm": [0.04, 0.006, 0.02, 0.01, np.nan, 0.02],
            "kurt_30d": [10.0, 3.0, 0.5, 2.0, 1.0, np.nan],
            "bar_hours": [1.0, 1.0, 24.0, 1.0, 1.0, 1.0],
        },
        index=pd.Index([10, 11, 12, 13, 14, 15], name="row"),
    )


def test_margin_ratio_rule_on_hand_table(table: pd.DataFrame) -> None:
    out = margin_ratio_rule(table)
    assert out.index.equals(table.index)
    assert out["warn"].tolist() == [True, True, False, True, False, False]
    np.testing.assert_array_equal(out["score"], [0.85, 0.8, 0.1, np.finfo(float).max, np.nan, 0.5])
    stricter = margin_ratio_rule(table, threshold=0.9)["warn"]
    assert stricter.tolist() == [False, False, False, True, False, False]


def test_leverage_rule_on_hand_table(table: pd.DataFrame) -> None:
    out = leverage_rule(table)
    assert DEFAULT_LEVERAGE_CAPS["fx"] == pytest.approx(30.0)
    assert DEFAULT_LEVERAGE_CAPS["equity"] == 2.0
    np.testing.assert_allclose(out["score"], [2.0, 0.5, 1.0, np.nan, 1.2, np.nan])
    # exactly at the cap is no warning
    assert out["warn"].tolist() == [True, False, False, False, True, False]
    custom = leverage_rule(table, caps={"crypto": 50.0, "other": 2.0})
    np.testing.assert_allclose(custom["score"], [0.8, np.nan, np.nan, np.nan, np.nan, 1.5])


def test_structural_baseline_on_hand_table(table: pd.DataFrame) -> None:
    out = structural_baseline(table, horizon=pd.Timedelta(hours=24))
    assert out.index.equals(table.index) and list(out.columns) == ["p_liq", "p_bankrupt"]
    long_liq = 2 * _phi(-math.log(1 / 0.98) / 0.04)
    short_liq = 2 * _phi(-math.log(1.03) / 0.006)
    assert out.loc[10, "p_liq"] == pytest.approx(long_liq, rel=1e-12)
    assert out.loc[11, "p_liq"] == pytest.approx(short_liq, rel=1e-9)
    assert out.loc[13, "p_liq"] == 1.0  # at the barrier already
    assert np.isnan(out.loc[14, "p_liq"])  # no volatility
    # bankruptcy lies beyond liquidation
    assert (out["p_liq"].dropna() >= out["p_bankrupt"].dropna()).all()
    hour = structural_baseline(table, horizon=pd.Timedelta(hours=1))
    assert (hour["p_liq"].dropna() <= out["p_liq"].dropna()).all()


def test_fat_tail_baseline_on_hand_table(table: pd.DataFrame) -> None:
    horizon = pd.Timedelta(hours=24)
    fat = fat_tail_baseline(table, horizon=horizon)
    gauss = structural_baseline(table, horizon=horizon)
    assert fat.index.equals(table.index) and list(fat.columns) == ["p_liq", "p_bankrupt"]
    assert fat.loc[15, "p_liq"] == pytest.approx(gauss.loc[15, "p_liq"])  # no kurtosis: Gaussian
    assert fat.loc[13, "p_liq"] == 1.0 and np.isnan(fat.loc[14, "p_liq"])
    assert fat.loc[11, "p_liq"] > gauss.loc[11, "p_liq"]  # 4.9 sigma away: the tail is fatter


@pytest.mark.parametrize("fat_tails", [False, True])
def test_probabilities_by_horizon_are_each_horizons_own(table: pd.DataFrame, fat_tails: bool) -> None:
    columns = {c: table[c].to_numpy(dtype=float) for c in table.columns if c != "asset_class"}
    horizons = [pd.Timedelta(hours=1), pd.Timedelta(hours=24), pd.Timedelta(days=7)]
    together = structural_probabilities_by_horizon(columns, horizons=horizons, fat_tails=fat_tails)
    for horizon, pair in zip(horizons, together, strict=True):
        alone = structural_probabilities(columns, horizon=horizon, fat_tails=fat_tails)
        for got, expected in zip(pair, alone, strict=True):
            np.testing.assert_array_equal(got, expected)
        first_passage = fat_tail_first_passage_probability if fat_tails else first_passage_probability
        kw = {"excess_kurtosis": columns["kurt_30d"], "bar_hours": columns["bar_hours"]} if fat_tails else {}
        days = horizon / pd.Timedelta(days=1)
        short = columns["net_exposure"] < 0
        np.testing.assert_array_equal(
            pair[0], first_passage(columns["dist_liq_pct"], columns["vol_ewma_rm"], days, short=short, **kw)
        )
