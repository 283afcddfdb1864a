import numpy as np
import pandas as pd

from liqrisk.models.shortfall import (
    MIN_SEVERITY_EVENTS,
    expected_shortfall,
    exposure,
    fit_severity,
    loss_ratio,
)


def test_exposure_is_gross_notional_and_zero_where_unknown() -> None:
    table = pd.DataFrame({"log_notional": [3.0, np.nan, 0.0]})
    np.testing.assert_allclose(exposure(table), [1000.0, 0.0, 1.0])


def test_loss_ratio_guards_zero_notional() -> None:
    np.testing.assert_allclose(loss_ratio(np.array([5.0, 3.0]), np.array([100.0, 0.0])), [0.05, 0.0])


def test_few_events_give_their_mean_ratio() -> None:
    n = 200
    X = pd.DataFrame({"a": np.arange(n, dtype=float)})
    negative = np.zeros(n, dtype=bool)
    negative[:3] = True
    shortfall = np.where(negative, [10.0, 20.0, 30.0] + [0.0] * (n - 3), 0.0)
    severity = fit_severity(X, shortfall, np.full(n, 100.0), negative, seed=0)
    assert severity.regressor is None and severity.n_events == 3
    np.testing.assert_allclose(severity.predict(X), 0.2)


def test_severity_follows_the_feature_that_drives_it(seed: int = 3) -> None:
    rng = np.random.default_rng(seed)
    n = 4000
    X = pd.DataFrame({"gap": rng.uniform(0, 1, n), "noise": rng.normal(size=n)})
    negative = rng.random(n) < 0.2
    notional = rng.lognormal(8, 1, n)
    ratio = 0.01 + 0.2 * X["gap"].to_numpy()
    severity = fit_severity(X, np.where(negative, ratio * notional, 0.0), notional, negative, seed=seed)
    assert severity.n_events >= MIN_SEVERITY_EVENTS and severity.regressor is not None
    pred = severity.predict(pd.DataFrame({"gap": [0.05, 0.95], "noise": [0.0, 0.0]}))
    np.testing.assert_allclose(pred, [0.02, 0.20], atol=0.02)


def test_expected_shortfall_is_pd_lgd_ead() -> None:
    np.testing.assert_allclose(
        expected_shortfall(np.array([0.1, 0.5]), np.array([0.2, 0.0]), np.array([1000.0, 50.0])), [20.0, 0.0]
    )


def test_fitted_severity_is_positive_where_training_rows_were_rare(seed: int = 5) -> None:
    rng = np.random.default_rng(seed)
    n = 3000
    X = pd.DataFrame({"cls": np.r_[np.zeros(n - 5), np.ones(5)], "noise": rng.normal(size=n)})
    negative = np.r_[rng.random(n - 5) < 0.1, np.ones(5, dtype=bool)]
    notional = np.full(n, 1000.0)
    shortfall = np.where(negative, notional * np.where(X["cls"] == 1, 1e-5, 0.05), 0.0)
    pred = fit_severity(X, shortfall, notional, negative, seed=seed).predict(X)
    assert (pred > 0).all()
