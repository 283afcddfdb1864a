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

    def predict(self, table: pd.DataFrame) -> pd.DataFrame:
        """Per row of ``table`` (the dataset's feature columns): ``p_liquidated_{h}``,
        ``p_negative_{h}`` and ``expected_shortfall_{h}`` for every horizon, coherent as the
        module docstring says."""
        X = model_frame(table)
        notional = exposure(table)
        p_liq = np.column_stack([self._proba(f"liquidated_{h}", X) for h in self.horizons])
        p_neg = np.column_stack([self._proba(f"negative_{h}", X) for h in self.horizons])
        p_neg = np.maximum.accumulate(p_neg, axis=1)
        p_liq = np.maximum.accumulate(np.maximum(p_liq, p_neg), axis=1)
        out: dict[str, np.ndarray] = {}
        for k, h in enumerate(self.horizons):
            out[f"p_liquidated_{h}"] = p_liq[:, k]
            out[f"p_negative_{h}"] = p_neg[:, k]
            out[f"expected_shortfall_{h}"] = expected_shortfall(
                p_neg[:, k], self.severity[h].predict(X), notional
            )
        return pd.DataFrame(out, index=table.index)

    def contributions(self, table: pd.DataFrame, label: str) -> pd.DataFrame | None:
        """Each feature's push on ``label``'s log-odds (uncalibrated classifier), plus :data:`BIAS`;
        the row sums are the raw log-odds. None for a model kind without exact contributions."""
        return contributions(uncalibrated(self.classifiers[label]), model_frame(table))

    def _proba(self, label: str, X: pd.DataFrame) -> np.ndarray:
        return self.classifiers[label].predict_proba(X)[:, 1]


def contributions(model: object, X: pd.DataFrame) -> pd.DataFrame | None:
    """Exact per-feature contributions to the log-odds of ``model`` on :func:`model_frame` rows.

    LightGBM: TreeSHAP (``pred_contrib``). The logistic pipeline: ``coef × transformed value``,
    summed back onto the input feature (its scaled value, its missing indicator, the one-hot
    columns of ``asset_class``), with the intercept as :data:`BIAS`. Other models: None.
    """
    if isinstance(model, lgb.LGBMClassifier):
        return pd.DataFrame(model.predict(X, pred_contrib=True), columns=[*X.columns, BIAS], index=X.index)
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
