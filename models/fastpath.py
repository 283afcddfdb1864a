"""The fitted models' numbers without scikit-learn's per-call machinery.

``CalibratedClassifierCV.predict_proba`` on a one-row frame spends milliseconds in input
checks, frame-to-array conversions and the ``ColumnTransformer`` before a few microseconds of
arithmetic; a service answering one account pays that for every classifier of every
horizon. Here the same arithmetic runs on one float matrix (:func:`lightgbm_matrix`) built
once per request:

- LightGBM: the booster's raw score (what ``LGBMClassifier.decision_function`` returns);
- HistGradientBoosting: its fitted trees, written as one LightGBM booster
  (:mod:`liqrisk.models.hist_gb_booster`), on the columns in the order its preprocessor hands
  them over (category columns first, as the model's codes), summed as ``decision_function``
  sums them;
- the logistic pipeline: median imputation with missing indicators, standard scaling and the
  fixed one-hot ``asset_class``, as its ``ColumnTransformer`` computes them, then
  ``coef · x + intercept``;
- the fitted sigmoid or isotonic calibrators on that score, averaged over the calibrated
  copies as ``CalibratedClassifierCV`` does.

What a model needs to know about a frame is its :class:`Layout` (column names and the
categories of its category columns), taken once per call. The constants a fitted model
derives from a layout (column positions, the one-hot lookup, the contribution owners) are
computed the first time and kept beside the fitted object in a weak-keyed cache, never on it:
a pickled model is unchanged, and one loaded from before the cache existed builds its
entries on first use. Fitted models are not refitted in place (a refitted logistic pipeline
is noticed by its new coefficients and gets new constants).

Every function returns None for a model it does not recognise (a changed pipeline, a new kind),
and callers then use scikit-learn's own ``predict_proba``. The tests hold each path equal to
scikit-learn's output.
"""

import functools
import itertools
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn import calibration
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, OrdinalEncoder, StandardScaler

from liqrisk.models import booster_rows
from liqrisk.models.hist_gb_booster import MISSING_CODE, SCALE, booster_of, scales


@dataclass(frozen=True)
class Layout:
    """The columns of a model frame as a fitted model reads them: ``columns`` (labels, in
    order), ``names`` (the same as text, as LightGBM stores them) and, per category column,
    ``(position, categories)``. Hashable: the key of every fitted model's constants."""

    columns: tuple[Any, ...]
    names: tuple[str, ...]
    categories: tuple[tuple[int, tuple[Any, ...]], ...]

    @classmethod
    def of(cls, X: pd.DataFrame) -> "Layout":
        """``X``'s layout (a few pandas calls, not one per column)."""
        columns = tuple(X.columns.tolist())
        return cls(
            columns=columns,
            names=tuple(map(str, columns)),
            categories=tuple(
                (i, tuple(dtype.categories.tolist()))
                for i, dtype in enumerate(X.dtypes.tolist())
                if isinstance(dtype, pd.CategoricalDtype)
            ),
        )


def column_index(names: tuple[str, ...]) -> pd.Index:
    """``pd.Index(names)`` for a frame's columns: built once per ``names`` (an Index of text
    takes ~20 µs to build, a copy ~2 µs) and copied, so renaming one frame's columns
    (``columns.name = ...``) changes no other frame."""
    return _column_index(names).copy()


@functools.lru_cache(maxsize=64)
def _column_index(names: tuple[str, ...]) -> pd.Index:
    return pd.Index(list(names))


def lightgbm_matrix(X: pd.DataFrame) -> np.ndarray:
    """``X`` as LightGBM's pandas path hands it to the booster: float64, each category column as
    its codes with NaN for a missing value (``lightgbm.basic._data_from_pandas``)."""
    dtypes = X.dtypes.tolist()
    categorical = [i for i, dtype in enumerate(dtypes) if isinstance(dtype, pd.CategoricalDtype)]
    if not categorical:
        return X.to_numpy(dtype=np.float64, na_value=np.nan)
    out = np.empty(X.shape, dtype=np.float64)
    for start, stop in _runs_between(categorical, len(dtypes)):
        out[:, start:stop] = X.iloc[:, start:stop].to_numpy(dtype=np.float64, na_value=np.nan)
    for i in categorical:
        codes = X.iloc[:, i].array.codes.astype(np.float64)
        codes[codes == -1] = np.nan
        out[:, i] = codes
    return out


def _runs_between(excluded: list[int], n: int) -> list[tuple[int, int]]:
    """The ``(start, stop)`` slices of ``range(n)`` between the sorted positions ``excluded``
    (a slice of a frame is cheaper than a take; a model frame has one, before ``asset_class``)."""
    bounds = [-1, *excluded, n]
    return [(a + 1, b) for a, b in itertools.pairwise(bounds) if b > a + 1]


def calibrated_probability(
    classifier: CalibratedClassifierCV, layout: Layout, matrix: np.ndarray
) -> np.ndarray | None:
    """``classifier.predict_proba(X)[:, 1]`` from :func:`decision` on ``matrix``
    (:func:`lightgbm_matrix` of ``X``, ``layout`` its :class:`Layout`) and the fitted binary
    sigmoid or isotonic calibrators. None where the classifier is anything else."""
    total = np.zeros(len(matrix))
    for calibrated in classifier.calibrated_classifiers_:
        model = getattr(calibrated.estimator, "estimator", calibrated.estimator)  # FrozenEstimator
        if (
            calibrated.method not in ("sigmoid", "isotonic")
            or len(calibrated.classes) != 2
            or len(calibrated.calibrators) != 1
            or list(getattr(model, "classes_", [])) != list(calibrated.classes)
        ):
            return None
        raw = decision(model, layout, matrix)
        if raw is None:
            return None
        calibrator = calibrated.calibrators[0]
        if type(calibrator) is _SIGMOID:  # its predict, without the input checks
            p = expit(-(calibrator.a_ * raw + calibrator.b_))
        else:
            p = np.asarray(calibrator.predict(raw), dtype=np.float64)
        p[(1.0 < p) & (p <= 1.0 + 1e-5)] = 1.0  # as scikit-learn clips a probability a hair above 1
        total += p
    return total / len(classifier.calibrated_classifiers_)


def decision(model: object, layout: Layout, matrix: np.ndarray) -> np.ndarray | None:
    """``model.decision_function(X)`` (the log-odds) for a LightGBM classifier or the logistic
    pipeline, on ``matrix`` with ``layout``; None for anything else."""
    if isinstance(model, lgb.LGBMClassifier):
        booster = fitted_booster(model, layout)
        return (
            None
            if booster is None
            else booster_rows.predict(booster, matrix, "raw", threads(model, len(matrix)))
        )
    if isinstance(model, HistGradientBoostingClassifier):
        trees = hist_gb_plan(model, layout)
        return None if trees is None else trees.decision(matrix)
    plan = logistic_plan(model, layout)
    return None if plan is None else plan.decision(matrix)


@dataclass(frozen=True)
class HistGBPlan:
    """A fitted binary HistGradientBoosting classifier on one :class:`Layout`: the matrix
    column behind each input its trees read (``columns``, in their order), the category
    inputs' recoding from the layout's codes to the model's (``recode``: input, code -> model
    code, :data:`~liqrisk.models.hist_gb_booster.MISSING_CODE` where the model would take the
    value as missing), and its trees as one LightGBM booster
    (:mod:`liqrisk.models.hist_gb_booster`), which predicts them in one call on LightGBM's own
    threads (scikit-learn's copy of OpenMP beside LightGBM's made both wait: after a parallel
    region each copy's threads spin on the cores)."""

    columns: np.ndarray
    recode: tuple[tuple[int, np.ndarray], ...]
    scaled: np.ndarray  # inputs read times SCALE (thresholds near 0; hist_gb_booster)
    booster: lgb.Booster
    predictors: tuple[Any, ...]  # the fitted trees it was written from (to notice a refit)

    def inputs(self, matrix: np.ndarray) -> np.ndarray | None:
        """The rows as the booster reads them; None if one would overflow when scaled (a
        number of 2^65, about 3.7e19, or more in a column split near 0)."""
        X = matrix[:, self.columns]
        for i, codes in self.recode:
            x = X[:, i]
            known = ~np.isnan(x)
            x[~known] = MISSING_CODE
            x[known] = codes[x[known].astype(np.intp)]
        if len(self.scaled):
            values = X[:, self.scaled]
            scaled = values * SCALE
            if (np.isinf(scaled) & ~np.isinf(values)).any():
                return None
            X[:, self.scaled] = scaled
        return X

    def decision(self, matrix: np.ndarray) -> np.ndarray | None:
        """The log-odds, as the model's ``decision_function`` computes them (the same sums)."""
        X = self.inputs(matrix)
        return None if X is None else booster_rows.predict(self.booster, X, "raw", _threads(1, len(X)))

    def contributions(self, matrix: np.ndarray, width: int) -> np.ndarray | None:
        """TreeSHAP contributions (rows, ``width`` layout columns + bias): zero for a column
        the model does not read."""
        X = self.inputs(matrix)
        if X is None:
            return None
        parts = booster_rows.predict(self.booster, X, "contrib", _threads(1, len(X)))
        out = np.zeros((len(X), width + 1))
        out[:, self.columns] = parts[:, :-1]
        out[:, -1] = parts[:, -1]
        return out


def hist_gb_plan(model: HistGradientBoostingClassifier, layout: Layout) -> HistGBPlan | None:
    """The :class:`HistGBPlan` of ``model`` on ``layout``, computed once per fitted model and
    layout (a refit is noticed by its new predictors); None if ``model`` is not binary, reads a
    column ``layout`` lacks, or preprocesses its input other than by scikit-learn 1.9's
    ordinal encoding of its category columns."""
    return _kept_plan(_HIST_GB_PLANS, model, layout, _hist_gb_plan, _refitted)


def _refitted(plan: HistGBPlan, model: HistGradientBoostingClassifier) -> bool:
    trees = model._predictors
    return len(trees) != len(plan.predictors) or (
        bool(trees) and (trees[0][0] is not plan.predictors[0] or trees[-1][0] is not plan.predictors[-1])
    )


def _hist_gb_plan(model: HistGradientBoostingClassifier, layout: Layout) -> HistGBPlan | None:
    predictors = getattr(model, "_predictors", None)
    names = getattr(model, "feature_names_in_", None)
    position = {c: i for i, c in enumerate(layout.columns)}
    if (
        predictors is None
        or names is None
        or model.n_trees_per_iteration_ != 1
        or any(len(trees) != 1 for trees in predictors)
        or not all(c in position for c in names)
    ):
        return None
    inputs = np.array([position[c] for c in names], dtype=np.intp)
    categories = dict(layout.categories)
    prep = model._preprocessor
    if prep is None:  # no category column at fit: the frame's columns as they are
        if any(i in categories for i in inputs):
            return None
        columns, recode = inputs, ()
    else:
        parts = [t for t in prep.transformers_ if not (t[0] == "remainder" and not np.any(t[2]))]
        if len(parts) != 2:
            return None
        (_, encoder, encoded), (_, numerical, passed) = parts
        encoded, passed = np.asarray(encoded, dtype=bool), np.asarray(passed, dtype=bool)
        if not (
            isinstance(encoder, OrdinalEncoder)
            and isinstance(numerical, FunctionTransformer)
            and encoded.shape == passed.shape == inputs.shape
            and np.array_equal(encoded, ~passed)
            and all(i in categories for i in inputs[encoded])
        ):
            return None
        columns = np.concatenate([inputs[encoded], inputs[passed]])
        recode = tuple(
            (j, _recoding(categories[i], known)) for j, (i, known) in enumerate(zip(inputs[encoded], encoder.categories_))
        )
    trees = tuple(trees[0] for trees in predictors)
    scale = scales(trees, len(columns))
    if scale is None:
        return None
    return HistGBPlan(
        columns=columns,
        recode=recode,
        scaled=np.flatnonzero(scale != 1.0),
        booster=booster_of(trees, float(model._baseline_prediction[0, 0]), scale),
        predictors=trees,
    )


def _recoding(names: tuple[Any, ...], known: np.ndarray) -> np.ndarray:
    """Layout code -> the encoder's code of the same category; the missing code for one it
    never saw, which the trees send where they send a missing value."""
    code = {value: float(k) for k, value in enumerate(known.tolist())}
    return np.array([code.get(name, float(MISSING_CODE)) for name in names], dtype=np.float64)


def logistic_design(model: object, layout: Layout, matrix: np.ndarray) -> np.ndarray | None:
    """``model[:-1].transform(X)`` for the logistic pipeline of ``liqrisk.models.train.fit_logistic``
    (imputer with indicators and scaler on the numeric columns, one-hot on one category column),
    computed on ``matrix``; None for any other shape of model."""
    plan = logistic_plan(model, layout)
    return None if plan is None else plan.design(matrix)


@dataclass(frozen=True)
class LogisticPlan:
    """A fitted logistic pipeline's arithmetic on one :class:`Layout`: the positions it reads,
    its fitted statistics, the category-code -> one-hot column lookup and, per design column,
    the input column it comes from (``owners``)."""

    numeric: np.ndarray  # positions of the numeric inputs
    medians: np.ndarray  # the imputer's fill values
    flagged: np.ndarray  # which numeric inputs (of ``numeric``) get a missing indicator
    mean: np.ndarray
    scale: np.ndarray
    category: int  # position of the category column
    slot: np.ndarray  # category code -> one-hot column (-1: none: unknown to the encoder)
    width: int  # one-hot columns
    coef: np.ndarray  # (1, design columns), as fitted
    intercept: np.ndarray  # (1,)
    owners: np.ndarray  # input position of each design column

    def design(self, matrix: np.ndarray) -> np.ndarray:
        """The transformed rows, as the pipeline's ``ColumnTransformer`` computes them."""
        values = matrix[:, self.numeric]
        missing = np.isnan(values)
        imputed = np.where(missing, self.medians, values)
        indicators = missing[:, self.flagged].astype(np.float64)
        scaled = (np.hstack([imputed, indicators]) - self.mean) / self.scale
        codes = matrix[:, self.category]
        known = ~np.isnan(codes)
        column = np.full(len(codes), -1, dtype=np.int64)
        column[known] = self.slot[codes[known].astype(np.int64)]
        onehot = (column[:, None] == np.arange(self.width)[None, :]).astype(np.float64)
        return np.hstack([scaled, onehot])

    def decision(self, matrix: np.ndarray) -> np.ndarray:
        """The log-odds, ``design · coef + intercept``, each row's sum on its own: a matrix
        product (BLAS) sums a row in an order that depends on the rows beside it, so an
        account scored alone and in a batch would differ in the last bits."""
        return (self.design(matrix) * self.coef[0]).sum(axis=1) + self.intercept[0]


def logistic_plan(model: object, layout: Layout) -> LogisticPlan | None:
    """The :class:`LogisticPlan` of ``model`` on ``layout``, computed once per fitted pipeline
    and layout; None if ``model`` is not the pipeline of ``fit_logistic`` or cannot read it."""
    if not isinstance(model, Pipeline):
        return None
    return _kept_plan(
        _LOGISTIC_PLANS, model, layout, _logistic_plan, lambda plan, m: plan.coef is not m[-1].coef_
    )


def _kept_plan(
    kept: "weakref.WeakKeyDictionary[Any, dict[Layout, Any]]",
    model: Any,
    layout: Layout,
    build: Callable[[Any, Layout], Any],
    refitted: Callable[[Any, Any], bool],
) -> Any:
    """``build(model, layout)``, kept beside ``model`` per layout (None too: a model the fast
    path cannot read is not examined again) and built again once ``refitted(plan, model)``."""
    plans = kept.get(model)
    if plans is None:
        plans = kept.setdefault(model, {})
    plan = plans.get(layout, _UNKNOWN)
    if plan is _UNKNOWN or (plan is not None and refitted(plan, model)):
        plan = plans[layout] = build(model, layout)
    return plan


def design_owners(transformed: tuple[str, ...], inputs: tuple[Any, ...]) -> np.ndarray:
    """Position in ``inputs`` of the input feature behind each transformed column
    (``prep.get_feature_names_out()``)."""
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


def _logistic_plan(model: Pipeline, layout: Layout) -> LogisticPlan | None:
    parts = _logistic_parts(model, layout)
    if parts is None:
        return None
    numeric, imputer, scaler, category, encoder = parts
    names = np.asarray(dict(layout.categories)[category], dtype=object)
    wanted = np.asarray(encoder.categories_[0], dtype=object)
    slot = np.array(
        [np.flatnonzero(wanted == n)[0] if n in wanted else -1 for n in names], dtype=np.int64
    )
    logit = model[-1]
    return LogisticPlan(
        numeric=numeric,
        medians=imputer.statistics_,
        flagged=imputer.indicator_.features_,
        mean=scaler.mean_,
        scale=scaler.scale_,
        category=category,
        slot=slot,
        width=len(wanted),
        coef=logit.coef_,
        intercept=logit.intercept_,
        owners=design_owners(tuple(model[:-1].get_feature_names_out()), layout.columns),
    )


def _logistic_parts(
    model: Pipeline, layout: Layout
) -> tuple[np.ndarray, SimpleImputer, StandardScaler, int, OneHotEncoder] | None:
    if not (len(model) == 2 and isinstance(model[-1], LogisticRegression)):
        return None
    prep = model[0]
    if not isinstance(prep, ColumnTransformer) or len(prep.transformers_) != 2:
        return None
    (_, num, num_cols), (_, encoder, cat_cols) = prep.transformers_
    position = {c: i for i, c in enumerate(layout.columns)}
    if not (
        isinstance(num, Pipeline)
        and len(num) == 2
        and isinstance(num[0], SimpleImputer)
        and isinstance(num[1], StandardScaler)
        and isinstance(encoder, OneHotEncoder)
        and len(cat_cols) == 1
        and encoder.drop_idx_ is None
        and encoder.handle_unknown == "ignore"
        and all(c in position for c in [*num_cols, *cat_cols])
        and position[cat_cols[0]] in dict(layout.categories)
    ):
        return None
    imputer, scaler = num[0], num[1]
    if (
        imputer.indicator_ is None
        or np.isnan(imputer.statistics_).any()  # an all-missing column was dropped at fit
        or not (scaler.with_mean and scaler.with_std)
        or len(scaler.mean_) != len(num_cols) + len(imputer.indicator_.features_)
    ):
        return None
    numeric = np.array([position[c] for c in num_cols], dtype=np.int64)
    return numeric, imputer, scaler, position[cat_cols[0]], encoder


# scikit-learn's private sigmoid calibrator (a, b); if it is renamed, its own predict is used
_SIGMOID = getattr(calibration, "_SigmoidCalibration", None)
_UNKNOWN = object()
_LOGISTIC_PLANS: "weakref.WeakKeyDictionary[Pipeline, dict[Layout, LogisticPlan | None]]" = (
    weakref.WeakKeyDictionary()
)
_HIST_GB_PLANS: "weakref.WeakKeyDictionary[HistGradientBoostingClassifier, dict[Layout, HistGBPlan | None]]" = (
    weakref.WeakKeyDictionary()
)
_BOOSTER_INPUTS: "weakref.WeakKeyDictionary[lgb.Booster, tuple[tuple[str, ...], tuple[tuple[Any, ...], ...]]]" = (
    weakref.WeakKeyDictionary()
)  # feature names and categories: C calls and copies each


def fitted_booster(model: lgb.LGBMModel, layout: Layout) -> lgb.Booster | None:
    """The fitted booster, if it reads ``layout``'s columns in order with the same categories."""
    booster = model.booster_
    inputs = _BOOSTER_INPUTS.get(booster)
    if inputs is None:
        categories = tuple(tuple(c) for c in booster.pandas_categorical or [])
        inputs = _BOOSTER_INPUTS.setdefault(booster, (tuple(booster.feature_name()), categories))
    names, categories = inputs
    if names != layout.names or categories != tuple(c for _, c in layout.categories):
        return None
    return booster


PARALLEL_ROWS = 256  # from this many rows a prediction uses every core, whatever n_jobs says


def threads(model: lgb.LGBMModel, rows: int) -> int:
    """The booster's ``num_threads`` for predicting ``rows`` rows: the model's ``n_jobs`` (0,
    OpenMP's default of every core, where it is not a positive number), or every core from
    :data:`PARALLEL_ROWS` rows. A service sets ``n_jobs=1`` because OpenMP's start-up costs
    milliseconds a call, more than a few rows' work; for a large batch it is a small part,
    and two threads predicted 925 rows of the champion in 17 ms against 28 ms for one."""
    return _threads(model.n_jobs, rows)


def _threads(n_jobs: object, rows: int) -> int:
    """:func:`threads` for ``n_jobs`` (HistGB's booster, which has none, predicts as ``n_jobs=1``)."""
    return n_jobs if isinstance(n_jobs, int) and n_jobs > 0 and rows < PARALLEL_ROWS else 0
