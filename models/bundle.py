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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import mlflow.pyfunc
import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from liqrisk.features.durations import parse_duration
from liqrisk.models import booster_rows
from liqrisk.models.fastpath import (
    Layout,
    calibrated_probability,
    column_index,
    design_owners,
    fitted_booster,
    hist_gb_plan,
    lightgbm_matrix,
    logistic_plan,
    threads,
)
from liqrisk.models.shortfall import Severity, expected_shortfall, exposure
from liqrisk.models.train import (
    CATEGORICAL,
    INPUTS,
    MODEL_LAYOUT,
    frame_of_matrix,
    model_frame,
    model_inputs,
    uncalibrated,
)

EVENTS: tuple[str, ...] = ("liquidated", "negative")
EXPLAINED_KINDS: tuple[str, ...] = (
    "lightgbm",
    "hist_gb",
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
        inputs: tuple[pd.DataFrame, np.ndarray] | None = None,
    ) -> pd.DataFrame:
        """Per row of ``table`` (the dataset's feature columns): ``p_liquidated_{h}``,
        ``p_negative_{h}`` and ``expected_shortfall_{h}`` for every horizon, coherent as the
        module docstring says. ``inputs`` is ``model_inputs(table)``, when the caller has it."""
        X, matrix = model_inputs(table) if inputs is None else inputs
        values = self.predict_values(matrix, exposure(table), frame=X)
        return pd.DataFrame(values, columns=column_index(self.outputs), index=table.index)

    def predict_values(
        self, matrix: np.ndarray, notional: np.ndarray, *, frame: pd.DataFrame | None = None
    ) -> np.ndarray:
        """:meth:`predict`'s values, rows x :attr:`outputs`, from the rows' model matrix
        (``model_inputs``, ``model_matrix``) and gross notional (``exposure``). ``frame`` is
        the matrix's model frame, if the caller has it: only a model without a fast path reads
        it (built from the matrix when needed)."""

        @functools.cache
        def X() -> pd.DataFrame:
            return frame_of_matrix(matrix, pd.RangeIndex(len(matrix))) if frame is None else frame

        p_liq = self._probabilities("liquidated", X, matrix)
        p_neg = np.maximum.accumulate(self._probabilities("negative", X, matrix), axis=1)
        p_liq = np.maximum.accumulate(np.maximum(p_liq, p_neg), axis=1)
        shortfall = np.column_stack(
            [
                expected_shortfall(p_neg[:, k], self._severity(h, X, matrix), notional)
                for k, h in enumerate(self.horizons)
            ]
        )
        # (row, horizon, output) -> one row of :attr:`outputs`
        return np.stack([p_liq, p_neg, shortfall], axis=2).reshape(len(matrix), len(self.outputs))

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
        """Predict with ``n`` threads in every LightGBM model (classifiers and severity), in
        calls of fewer than :data:`~liqrisk.models.fastpath.PARALLEL_ROWS` rows; larger calls
        use every core (:func:`~liqrisk.models.fastpath.threads`).

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

    def _probabilities(self, event: str, X: Callable[[], pd.DataFrame], matrix: np.ndarray) -> np.ndarray:
        """The calibrated P(``event``) per row (rows) and horizon (columns, in order)."""
        return np.column_stack([self._proba(f"{event}_{h}", X, matrix) for h in self.horizons])

    def _proba(self, label: str, X: Callable[[], pd.DataFrame], matrix: np.ndarray) -> np.ndarray:
        """The calibrated P(event): from the fitted parts where :mod:`liqrisk.models.fastpath`
        knows the model, else scikit-learn's ``predict_proba`` on the model frame (``X()``).
        Both give the same numbers; the first skips milliseconds of per-call checks, which a
        service answering one account would pay for every classifier."""
        classifier = self.classifiers[label]
        fast = calibrated_probability(classifier, MODEL_LAYOUT, matrix)
        return classifier.predict_proba(X())[:, 1] if fast is None else fast

    def _severity(self, horizon: str, X: Callable[[], pd.DataFrame], matrix: np.ndarray) -> np.ndarray:
        severity = self.severity[horizon]
        booster = (
            fitted_booster(severity.regressor, MODEL_LAYOUT)
            if isinstance(severity.regressor, lgb.LGBMRegressor)
            else None
        )
        if booster is None:  # a constant severity reads only the number of rows: no frame for it
            return severity.predict(X() if severity.regressor is not None else matrix)
        # LGBMRegressor.predict: the booster's output (identity link for objective="regression")
        return (
            np.exp(booster_rows.predict(booster, matrix, "normal", threads(severity.regressor, len(matrix))))
            * severity.smearing
        )


def contributions(
    model: object, X: pd.DataFrame, matrix: np.ndarray | None = None
) -> pd.DataFrame | None:
    """Exact per-feature contributions to the log-odds of ``model`` on :func:`model_frame` rows
    (``matrix``: their :func:`lightgbm_matrix`, when the caller has it; ``X`` is then taken to
    have :data:`~liqrisk.models.train.MODEL_LAYOUT`, as every model frame has).

    LightGBM: TreeSHAP (``pred_contrib``). HistGB: the same, on its trees written as a LightGBM
    booster (:mod:`liqrisk.models.hist_gb_booster`; None where that booster cannot read the
    rows). The logistic pipeline: ``coef × transformed value``, summed back onto the input
    feature (its scaled value, its missing indicator, the one-hot columns of ``asset_class``),
    with the intercept as :data:`BIAS`. Other models: None.
    """
    layout = Layout.of(X) if matrix is None else MODEL_LAYOUT
    rows = functools.cache(lambda: lightgbm_matrix(X)) if matrix is None else (lambda: matrix)
    values = _contribution_values(model, lambda: X, layout, rows)
    if values is None:
        return None
    return pd.DataFrame(values, columns=column_index((*layout.columns, BIAS)), index=X.index)


def matrix_contributions(model: object, matrix: np.ndarray) -> np.ndarray | None:
    """:func:`contributions` of the rows of a model matrix (:func:`~liqrisk.models.train.model_matrix`)
    as an array, rows x (:data:`~liqrisk.models.train.FEATURES`, :data:`BIAS`): what the service
    explains a few accounts with, where building the frames cost more than the trees' work. The
    model frame is built only for a model without a fast path."""
    frame = functools.cache(lambda: frame_of_matrix(matrix, pd.RangeIndex(len(matrix))))
    return _contribution_values(model, frame, MODEL_LAYOUT, lambda: matrix)


def _contribution_values(
    model: object,
    X: Callable[[], pd.DataFrame],
    layout: Layout,
    matrix: Callable[[], np.ndarray],
) -> np.ndarray | None:
    """(rows, ``layout.columns`` + bias) for :func:`contributions`; ``X`` and ``matrix`` give
    the rows as a frame and as the LightGBM matrix, each asked for only where it is read."""
    if isinstance(model, lgb.LGBMClassifier):
        return _tree_contributions(model, X, layout, matrix)
    if isinstance(model, HistGradientBoostingClassifier):
        plan = hist_gb_plan(model, layout)
        return None if plan is None else plan.contributions(matrix(), len(layout.columns))
    if isinstance(model, Pipeline) and isinstance(model[-1], LogisticRegression):
        return _logistic_contributions(model, X, layout, matrix)
    return None


def _tree_contributions(
    model: lgb.LGBMClassifier,
    X: Callable[[], pd.DataFrame],
    layout: Layout,
    matrix: Callable[[], np.ndarray],
) -> np.ndarray:
    booster = fitted_booster(model, layout)  # the booster on the matrix the frame becomes: faster
    if booster is None:
        return model.predict(X(), pred_contrib=True)
    rows = matrix()
    return booster_rows.predict(booster, rows, "contrib", threads(model, len(rows)))


def _logistic_contributions(
    model: Pipeline,
    X: Callable[[], pd.DataFrame],
    layout: Layout,
    matrix: Callable[[], np.ndarray],
) -> np.ndarray:
    """(rows, inputs + bias): ``coef × design`` summed onto each design column's input."""
    plan = logistic_plan(model, layout)
    if plan is None:
        prep = model[:-1]
        design = np.asarray(prep.transform(X()), dtype=float)
        owners = design_owners(tuple(prep.get_feature_names_out()), layout.columns)
    else:
        design = plan.design(matrix())
        owners = plan.owners
    logit = model[-1]
    pushes = np.zeros((len(layout.columns) + 1, len(design)))
    np.add.at(pushes, owners, (design * logit.coef_[0]).T)
    pushes[-1] = float(logit.intercept_[0])
    return pushes.T


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
