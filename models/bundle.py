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
from liqrisk.models.shortfall import Severity, expected_shortfall, exposure
from liqrisk.models.train import CATEGORICAL, INPUTS, model_frame, uncalibrated

EVENTS: tuple[str, ...] = ("liquidated", "negative")
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
        missing = [f"{e}_{h}" for h in self.horizons for e in EVENTS if f"{e}_{h}" not in self.classifiers]
        missing += [f"severity {h}" for h in self.horizons if h not in self.severity]
        if missing:
            raise ValueError(f"RiskModel: missing {missing}")

    @property
    def outputs(self) -> tuple[str, ...]:
        """Column names of :meth:`predict`, in order."""
        return tuple(
            f"{name}_{h}" for h in self.horizons for name in ("p_liquidated", "p_negative", "expected_shortfall")
        )

    def predict(self, table: pd.DataFrame, *, frame: pd.DataFrame | None = None) -> pd.DataFrame:
        """Per row of ``table`` (the dataset's feature columns): ``p_liquidated_{h}``,
        ``p_negative_{h}`` and ``expected_shortfall_{h}`` for every horizon, coherent as the
        module docstring says. ``frame`` is ``model_frame(table)`` when the caller has it."""
        X = model_frame(table) if frame is None else frame
        matrix = lightgbm_matrix(X)
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

    def set_threads(self, n: int) -> None:
        """Predict with ``n`` threads in every LightGBM model (classifiers and severity).

        Outputs do not change (each row is predicted on its own). A service wants 1: with more,
        OpenMP's start-up costs milliseconds per call (8 ms per LightGBM call for one row on two
        cores, against 0.1 ms with one), and concurrent requests use the cores anyway.
        """
        for classifier in self.classifiers.values():
            for fitted in (uncalibrated(classifier), *(c.estimator for c in classifier.calibrated_classifiers_)):
                inner = getattr(fitted, "estimator", fitted)  # FrozenEstimator(model) -> model
                if isinstance(inner, lgb.LGBMModel):
                    inner.set_params(n_jobs=n)
        for severity in self.severity.values():
            if severity.regressor is not None:
                severity.regressor.set_params(n_jobs=n)

    def _proba(self, label: str, X: pd.DataFrame, matrix: np.ndarray | None = None) -> np.ndarray:
        """The calibrated P(event): straight from the LightGBM booster and the fitted calibrators
        where the classifier allows it (:func:`calibrated_lightgbm`), else scikit-learn's
        ``predict_proba``. Both give the same numbers; the first skips the per-call conversion
        of the frame (milliseconds a call, which a service answering one account pays nine
        times)."""
        classifier = self.classifiers[label]
        if matrix is not None:
            fast = calibrated_lightgbm(classifier, X, matrix)
            if fast is not None:
                return fast
        return classifier.predict_proba(X)[:, 1]

    def _severity(self, horizon: str, X: pd.DataFrame, matrix: np.ndarray | None = None) -> np.ndarray:
        severity = self.severity[horizon]
        booster = _booster(severity.regressor, X) if isinstance(severity.regressor, lgb.LGBMRegressor) else None
        if matrix is None or booster is None:
            return severity.predict(X)
        # LGBMRegressor.predict: the booster's output (identity link for objective="regression")
        return np.exp(booster.predict(matrix, num_threads=_threads(severity.regressor))) * severity.smearing


def lightgbm_matrix(X: pd.DataFrame) -> np.ndarray:
    """``X`` as LightGBM's pandas path hands it to the booster: float64, each category column as
    its codes with NaN for a missing value (``lightgbm.basic._data_from_pandas``)."""
    columns = {}
    for name, column in X.items():
        if isinstance(column.dtype, pd.CategoricalDtype):
            codes = column.cat.codes.to_numpy(dtype=np.float64)
            codes[codes == -1] = np.nan
            columns[name] = codes
        else:
            columns[name] = column.to_numpy(dtype=np.float64)
    return np.column_stack(list(columns.values())) if columns else np.zeros((len(X), 0))


def calibrated_lightgbm(classifier: CalibratedClassifierCV, X: pd.DataFrame, matrix: np.ndarray) -> np.ndarray | None:
    """``classifier.predict_proba(X)[:, 1]`` computed from the booster's raw score on ``matrix``
    (:func:`lightgbm_matrix` of ``X``) and the fitted binary sigmoid or isotonic calibrators,
    as scikit-learn's ``_CalibratedClassifier.predict_proba`` and ``CalibratedClassifierCV``
    combine them. None where the classifier is anything else (then use ``predict_proba``)."""
    total = np.zeros(len(matrix))
    for calibrated in classifier.calibrated_classifiers_:
        model = getattr(calibrated.estimator, "estimator", calibrated.estimator)  # FrozenEstimator
        if (
            calibrated.method not in ("sigmoid", "isotonic")
            or len(calibrated.classes) != 2
            or len(calibrated.calibrators) != 1
            or not isinstance(model, lgb.LGBMClassifier)
            or list(model.classes_) != list(calibrated.classes)
        ):
            return None
        booster = _booster(model, X)
        if booster is None:
            return None
        raw = booster.predict(matrix, raw_score=True, num_threads=_threads(model))
        p = np.asarray(calibrated.calibrators[0].predict(raw), dtype=np.float64)
        p[(1.0 < p) & (p <= 1.0 + 1e-5)] = 1.0  # as scikit-learn clips a probability a hair above 1
        total += p
    return total / len(classifier.calibrated_classifiers_)


def _booster(model: lgb.LGBMModel, X: pd.DataFrame) -> lgb.Booster | None:
    """The fitted booster, if it reads ``X``'s columns in order with the same categories."""
    booster = model.booster_
    if booster.feature_name() != [str(c) for c in X.columns]:
        return None
    categories = [list(d.categories) for d in X.dtypes if isinstance(d, pd.CategoricalDtype)]
    if (booster.pandas_categorical or []) != categories:
        return None
    return booster


def _threads(model: lgb.LGBMModel) -> int:
    n = model.n_jobs
    return n if isinstance(n, int) and n > 0 else 0  # 0: OpenMP's default


def contributions(model: object, X: pd.DataFrame) -> pd.DataFrame | None:
    """Exact per-feature contributions to the log-odds of ``model`` on :func:`model_frame` rows.

    LightGBM: TreeSHAP (``pred_contrib``). The logistic pipeline: ``coef × transformed value``,
    summed back onto the input feature (its scaled value, its missing indicator, the one-hot
    columns of ``asset_class``), with the intercept as :data:`BIAS`. Other models: None.
    """
    if isinstance(model, lgb.LGBMClassifier):
        booster = _booster(model, X)  # the booster on the matrix the frame becomes: the same numbers, faster
        values = (
            model.predict(X, pred_contrib=True)
            if booster is None
            else booster.predict(lightgbm_matrix(X), pred_contrib=True, num_threads=_threads(model))
        )
        return pd.DataFrame(values, columns=[*X.columns, BIAS], index=X.index)
    if isinstance(model, Pipeline) and isinstance(model[-1], LogisticRegression):
        prep, logit = model[:-1], model[-1]
        terms = np.asarray(prep.transform(X), dtype=float) * logit.coef_[0]
        owner = [_input_feature(name, X.columns) for name in prep.get_feature_names_out()]
        out = pd.DataFrame(terms, columns=owner, index=X.index).T.groupby(level=0, sort=False).sum().T
        return out.reindex(columns=list(X.columns), fill_value=0.0).assign(**{BIAS: float(logit.intercept_[0])})
    return None


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

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return self.model.predict(pd.DataFrame(model_input))


def requirements() -> list[str]:
    """pip requirements of the logged model, pinned to the versions it was trained with (listing
    them saves MLflow's slow inference, and ``liqrisk`` itself must be installed to load it)."""
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("liqrisk", "lightgbm", "scikit-learn", "pandas", "numpy", "mlflow")]


def input_example(table: pd.DataFrame, n: int = 2) -> pd.DataFrame:
    """``n`` rows of the model's input as a caller sends it: feature columns, numbers as
    float64 (so a NaN at inference never breaks the signature), ``asset_class`` as text."""
    rows = table.loc[table.index[:n], list(INPUTS)].copy()
    numeric = [c for c in INPUTS if c != CATEGORICAL]
    rows[numeric] = rows[numeric].astype("float64").replace([np.inf, -np.inf], np.nan)
    rows[CATEGORICAL] = rows[CATEGORICAL].astype(str)
    return rows.reset_index(drop=True)
