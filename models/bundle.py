"""The served model: every horizon's calibrated classifiers and severity in one object, and its
MLflow ``pyfunc`` face.

One registered version holds everything the service needs for an account, so moving the
``champion`` alias swaps all horizons at once and never serves a mix of two versions.

Probabilities are made coherent at predict time, because the outcomes are nested by the
contract: ending below zero requires a liquidation, and an event within 1h is an event
within 24h. Separately calibrated classifiers can break that order by a little (two
sigmoid fits on different rows), so ``P(liquidated) >= P(negative)`` and each probability
is non-decreasing in the horizon (a running maximum over sorted horizons). Expected
shortfall is PD × LGD × EAD (:mod:`liqrisk.models.shortfall`).
"""

import functools
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import mlflow.pyfunc
import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from liqrisk.features.durations import parse_duration
from liqrisk.models.fastpath import (
    calibrated_probability,
    fitted_booster,
    lightgbm_matrix,
    logistic_design,
    threads,
)
from liqrisk.models.shortfall import Severity, expected_shortfall, exposure
from liqrisk.models.train import CATEGORICAL, INPUTS, model_frame, uncalibrated

EVENTS: tuple[str, ...] = ("liquidated", "negative")
EXPLAINED_KINDS: tuple[str, ...] = (
    "lightgbm",
    "logistic",
)  # kinds :func:`contributions` explains exactly
BIAS = "bias"


@dataclass
class RiskModel:
    """Calibrated classifiers per ``f"{event}_{horizon}"`` (``kinds`` names each one's model kind,
    e.g. ``"lightgbm"``) and a :class:`Severity` per horizon."""

    horizons: tuple[str, ...]
    classifiers: dict[str, CalibratedClassifierCV]
    severity: dict[str, Severity]
    kinds: dict[str, str]
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.horizons = tuple(sorted(self.horizons, key=parse_duration))
        missing = [
            f"{e}_{h}" for h in self.horizons for e in EVENTS if f"{e}_{h}" not in self.classifiers
        ]
        missing += [f"severity {h}" for h in self.horizons if h not in self.severity]
        if missing:
            raise ValueError(f"RiskModel: missing {missing}")

    @property
    def outputs(self) -> tuple[str, ...]:
        """Column names of :meth:`predict`, in order."""
        return tuple(
            f"{name}_{h}"
            for h in self.horizons
            for name in ("p_liquidated", "p_negative", "expected_shortfall")
        )

    def predict(
        self,
        table: pd.DataFrame,
        *,
        frame: pd.DataFrame | None = None,
        matrix: np.ndarray | None = None,
    ) -> pd.DataFrame:
        """Per row of ``table`` (the dataset's feature columns): ``p_liquidated_{h}``,
        ``p_negative_{h}`` and ``expected_shortfall_{h}`` for every horizon, coherent as the
        module docstring says. ``frame`` is ``model_frame(table)`` and ``matrix`` its
        ``lightgbm_matrix``, when the caller has them."""
        X = model_frame(table) if frame is None else frame
        matrix = lightgbm_matrix(X) if matrix is None else matrix
        notional = exposure(table)
        p_liq = np.column_stack([self._proba(f"liquidated_{h}", X, matrix) for h in self.horizons])
        p_neg = np.column_stack([self._proba(f"negative_{h}", X, matrix) for h in self.horizons])
        p_neg = np.maximum.accumulate(p_neg, axis=1)
        p_liq = np.maximum.accumulate(np.maximum(p_liq, p_neg), axis=1)
        out: dict[str, np.ndarray] = {}
        for k, h in enumerate(self.horizons):
            out[f"p_liquidated_{h}"] = p_liq[:, k]
            out[f"p_negative_{h}"] = p_neg[:, k]
            out[f"expected_shortfall_{h}"] = expected_shortfall(
                p_neg[:, k], self._severity(h, X, matrix), notional
            )
        return pd.DataFrame(out, index=table.index)

    def contributions(self, table: pd.DataFrame, label: str) -> pd.DataFrame | None:
        """Each feature's push on ``label``'s log-odds (uncalibrated classifier), plus :data:`BIAS`;
        the row sums are the raw log-odds. None for a model kind without exact contributions."""
        return contributions(uncalibrated(self.classifiers[label]), model_frame(table))

    def explained_label(self, preferred: str) -> str | None:
        """The label whose reasons to give: ``preferred`` if its model kind has exact
        contributions (:data:`EXPLAINED_KINDS`), else the same event at the nearest horizon
        that has them, else any label that has them; None if no classifier has them."""
        if self.kinds.get(preferred) in EXPLAINED_KINDS:
            return preferred
        event, horizon = preferred.rsplit("_", 1)
        wanted = parse_duration(horizon)
        candidates = sorted(
            (label for label, kind in self.kinds.items() if kind in EXPLAINED_KINDS),
            key=lambda label: (
                not label.startswith(f"{event}_"),
                abs(parse_duration(label.rsplit("_", 1)[1]) - wanted),
                label,
            ),
        )
        return candidates[0] if candidates else None

    def set_threads(self, n: int) -> None:
        """Predict with ``n`` threads in every LightGBM model (classifiers and severity).

        Outputs do not change (each row is predicted on its own). A service wants 1: with more,
        OpenMP's start-up costs milliseconds per call (8 ms per LightGBM call for one row on two
        cores, against 0.1 ms with one), and concurrent requests use the cores anyway.
        """
        for classifier in self.classifiers.values():
            for fitted in (
                uncalibrated(classifier),
                *(c.estimator for c in classifier.calibrated_classifiers_),
            ):
                inner = getattr(fitted, "estimator", fitted)  # FrozenEstimator(model) -> model
                if isinstance(inner, lgb.LGBMModel):
                    inner.set_params(n_jobs=n)
        for severity in self.severity.values():
            if severity.regressor is not None:
                severity.regressor.set_params(n_jobs=n)

    def _proba(self, label: str, X: pd.DataFrame, matrix: np.ndarray | None = None) -> np.ndarray:
        """The calibrated P(event): from the fitted parts where :mod:`liqrisk.models.fastpath`
        knows the model, else scikit-learn's ``predict_proba``. Both give the same numbers; the
        first skips milliseconds of per-call checks, which a service answering one account
        would pay for every classifier."""
        classifier = self.classifiers[label]
        if matrix is not None:
            fast = calibrated_probability(classifier, X, matrix)
            if fast is not None:
                return fast
        return classifier.predict_proba(X)[:, 1]

    def _severity(
        self, horizon: str, X: pd.DataFrame, matrix: np.ndarray | None = None
    ) -> np.ndarray:
        severity = self.severity[horizon]
        booster = (
            fitted_booster(severity.regressor, X)
            if isinstance(severity.regressor, lgb.LGBMRegressor)
            else None
        )
        if matrix is None or booster is None:
            return severity.predict(X)
        # LGBMRegressor.predict: the booster's output (identity link for objective="regression")
        return (
            np.exp(booster.predict(matrix, num_threads=threads(severity.regressor)))
            * severity.smearing
        )


def contributions(
    model: object, X: pd.DataFrame, matrix: np.ndarray | None = None
) -> pd.DataFrame | None:
    """Exact per-feature contributions to the log-odds of ``model`` on :func:`model_frame` rows
    (``matrix``: their :func:`lightgbm_matrix`, when the caller has it).

    LightGBM: TreeSHAP (``pred_contrib``). The logistic pipeline: ``coef × transformed value``,
    summed back onto the input feature (its scaled value, its missing indicator, the one-hot
    columns of ``asset_class``), with the intercept as :data:`BIAS`. Other models: None.
    """
    matrix = lightgbm_matrix(X) if matrix is None else matrix
    if isinstance(model, lgb.LGBMClassifier):
        booster = fitted_booster(
            model, X
        )  # the booster on the matrix the frame becomes: the same numbers, faster
        values = (
            model.predict(X, pred_contrib=True)
            if booster is None
            else booster.predict(matrix, pred_contrib=True, num_threads=threads(model))
        )
        return pd.DataFrame(values, columns=[*X.columns, BIAS], index=X.index)
    if isinstance(model, Pipeline) and isinstance(model[-1], LogisticRegression):
        prep, logit = model[:-1], model[-1]
        design = logistic_design(model, X, matrix)
        design = np.asarray(prep.transform(X), dtype=float) if design is None else design
        owners = _owners(tuple(prep.get_feature_names_out()), tuple(X.columns))
        pushes = np.zeros((len(X.columns) + 1, len(X)))
        np.add.at(pushes, owners, (design * logit.coef_[0]).T)
        pushes[-1] = float(logit.intercept_[0])
        return pd.DataFrame(pushes.T, columns=[*X.columns, BIAS], index=X.index)
    return None


@functools.cache
def _owners(transformed: tuple[str, ...], inputs: tuple[str, ...]) -> np.ndarray:
    """Position in ``inputs`` of the input feature behind each transformed column."""
    columns = pd.Index(inputs)
    return np.array(
        [columns.get_loc(_input_feature(name, columns)) for name in transformed], dtype=np.intp
    )


def _input_feature(transformed: str, inputs: pd.Index) -> str:
    # "num__leverage", "num__missingindicator_leverage", "cat__asset_class_crypto" -> the input column
    name = transformed.split("__", 1)[1].removeprefix("missingindicator_")
    if name in inputs:
        return name
    return next(c for c in inputs if name.startswith(f"{c}_"))


class RiskModelPyfunc(mlflow.pyfunc.PythonModel):
    """:class:`RiskModel` as an MLflow ``pyfunc``: a DataFrame of features in, :meth:`RiskModel.predict` out."""

    def __init__(self, model: RiskModel) -> None:
        self.model = model

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        return self.model.predict(pd.DataFrame(model_input))


def requirements() -> list[str]:
    """pip requirements of the logged model, pinned to the versions it was trained with (listing
    them saves MLflow's slow inference, and ``liqrisk`` itself must be installed to load it)."""
    from importlib.metadata import version

    return [
        f"{p}=={version(p)}"
        for p in ("liqrisk", "lightgbm", "scikit-learn", "pandas", "numpy", "mlflow")
    ]


def input_example(table: pd.DataFrame, n: int = 2) -> pd.DataFrame:
    """``n`` rows of the model's input as a caller sends it: feature columns, numbers as
    float64 (so a NaN at inference never breaks the signature), ``asset_class`` as text."""
    rows = table.loc[table.index[:n], list(INPUTS)].copy()
    numeric = [c for c in INPUTS if c != CATEGORICAL]
    rows[numeric] = rows[numeric].astype("float64").replace([np.inf, -np.inf], np.nan)
    rows[CATEGORICAL] = rows[CATEGORICAL].astype(str)
    return rows.reset_index(drop=True)
