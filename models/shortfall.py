"""Expected shortfall (bad debt) within a horizon, as credit risk writes it: PD × LGD × EAD.

- **PD** is the calibrated P(negative within H) of the classifier.
- **EAD** (exposure) is the account's gross notional at as_of, ``10 ** log_notional``.
- **LGD** (severity) is E[shortfall / gross notional | negative], learnt by a LightGBM
  regressor on the rows that did end below zero. The ratio, not the dollars, is the
  target: dollars span many orders of magnitude between a retail FX account and a whale
  on a perpetual, and a tree fitted on dollars spends its splits on account size, which
  EAD already carries. The ratio itself spans 1e-6 (a fill just past the bankruptcy
  price) to 1 and more (WTI below zero), so the regressor fits its logarithm and the
  prediction is ``exp(fit) × smearing`` (Duan's estimator, the mean of ``exp(residual)``
  on the training rows), which is positive everywhere: a fit on the raw ratio predicts
  zero or less for classes with few events, and a zero severity would hide an account
  from every dollar ranking. With fewer than :data:`MIN_SEVERITY_EVENTS` below-zero rows
  the severity is their mean ratio (a constant), which is all such data can support.

Ranking accounts by expected shortfall rather than by probability is what puts the
bad-debt *dollars* at the top of an alert list: a 2% chance of losing 5% of a large book
matters more than a 5% chance of losing 1% of a small one.
"""

from collections.abc import Mapping
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

MIN_SEVERITY_EVENTS = 50
MIN_RATIO = 1e-9  # floor of the loss ratio before the log (a shortfall of 0 on a negative row is rounding)


@dataclass(frozen=True)
class Severity:
    """E[shortfall / gross notional | negative]: a fitted regressor, or a constant when events were few."""

    regressor: lgb.LGBMRegressor | None
    constant: float
    n_events: int
    smearing: float = 1.0

    def predict(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Severity per row of the model frame ``X`` (> 0 when fitted); a constant severity
        takes any rows (the model matrix, say)."""
        if self.regressor is None:
            return np.full(len(X), self.constant)
        return np.exp(self.regressor.predict(X)) * self.smearing


def exposure(table: Mapping[str, ArrayLike]) -> np.ndarray:
    """Gross notional at as_of (EAD), from the ``log_notional`` column of a frame or a mapping
    of columns; 0 where unknown."""
    return np.nan_to_num(10.0 ** np.asarray(table["log_notional"], dtype=float), nan=0.0)


def loss_ratio(shortfall: np.ndarray, notional: np.ndarray) -> np.ndarray:
    """Shortfall per unit of gross notional (0 where the notional is 0)."""
    notional = np.asarray(notional, dtype=float)
    return np.divide(
        np.asarray(shortfall, dtype=float), notional, out=np.zeros(len(notional)), where=notional > 0
    )


def fit_severity(
    X: pd.DataFrame, shortfall: np.ndarray, notional: np.ndarray, negative: np.ndarray, *, seed: int, n_jobs: int = 2
) -> Severity:
    """Fit :class:`Severity` on the rows where ``negative`` is True.

    A small, heavily regularised LightGBM (at most 200 trees, 15 leaves, 20 rows a leaf):
    below-zero rows number in the hundreds, and severity mostly follows the few features
    that set how far past the bankruptcy price a close lands (impact, gap size).
    """
    negative = np.asarray(negative, dtype=bool)
    ratio = loss_ratio(shortfall, notional)[negative]
    n_events = int(negative.sum())
    constant = float(ratio.mean()) if n_events else 0.0
    if n_events < MIN_SEVERITY_EVENTS:
        return Severity(regressor=None, constant=constant, n_events=n_events)
    regressor = lgb.LGBMRegressor(
        objective="regression",
        n_estimators=200,
        learning_rate=0.05,
        num_leaves=15,
        min_child_samples=20,
        reg_lambda=1.0,
        random_state=seed,
        deterministic=True,
        force_row_wise=True,
        n_jobs=n_jobs,
        verbose=-1,
    )
    target = np.log(np.maximum(ratio, MIN_RATIO))
    regressor.fit(X.loc[negative], target)
    smearing = float(np.mean(np.exp(target - regressor.predict(X.loc[negative]))))
    return Severity(regressor=regressor, constant=constant, n_events=n_events, smearing=smearing)


def expected_shortfall(p_negative: np.ndarray, severity: np.ndarray, notional: np.ndarray) -> np.ndarray:
    """PD × LGD × EAD in the account's currency."""
    return np.asarray(p_negative, dtype=float) * np.asarray(severity, dtype=float) * np.asarray(notional, dtype=float)
