"""The fitted models' numbers without scikit-learn's per-call machinery.

``CalibratedClassifierCV.predict_proba`` on a one-row frame spends milliseconds in input
checks, frame-to-array conversions and the ``ColumnTransformer`` before a few microseconds of
arithmetic; a service answering one account pays that for every classifier of every
horizon. Here the same arithmetic runs on one float matrix (:func:`lightgbm_matrix`) built
once per request:

- LightGBM: the booster's raw score (what ``LGBMClassifier.decision_function`` returns);
- the logistic pipeline: median imputation with missing indicators, standard scaling and the
  fixed one-hot ``asset_class``, as its ``ColumnTransformer`` computes them, then
  ``coef · x + intercept``;
- the fitted sigmoid or isotonic calibrators on that score, averaged over the calibrated
  copies as ``CalibratedClassifierCV`` does.

Every function returns None for a model it does not recognise (HistGB, a changed pipeline),
and callers then use scikit-learn's own ``predict_proba``. The tests hold each path equal to
scikit-learn's output.
"""

import weakref

import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn import calibration
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler


def lightgbm_matrix(X: pd.DataFrame) -> np.ndarray:
    """``X`` as LightGBM's pandas path hands it to the booster: float64, each category column as
    its codes with NaN for a missing value (``lightgbm.basic._data_from_pandas``)."""
    categorical = [i for i, dtype in enumerate(X.dtypes) if isinstance(dtype, pd.CategoricalDtype)]
    if not categorical:
        return X.to_numpy(dtype=np.float64, na_value=np.nan)
    numeric = [i for i in range(X.shape[1]) if i not in categorical]
    out = np.empty(X.shape, dtype=np.float64)
    out[:, numeric] = X.iloc[:, numeric].to_numpy(dtype=np.float64, na_value=np.nan)
    for i in categorical:
        codes = X.iloc[:, i].cat.codes.to_numpy(dtype=np.float64)
        codes[codes == -1] = np.nan
        out[:, i] = codes
    return out


def calibrated_probability(
    classifier: CalibratedClassifierCV, X: pd.DataFrame, matrix: np.ndarray
) -> np.ndarray | None:
    """``classifier.predict_proba(X)[:, 1]`` from :func:`decision` on ``matrix``
    (:func:`lightgbm_matrix` of ``X``) and the fitted binary sigmoid or isotonic calibrators.
    None where the classifier is anything else."""
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
        raw = decision(model, X, matrix)
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


def decision(model: object, X: pd.DataFrame, matrix: np.ndarray) -> np.ndarray | None:
    """``model.decision_function(X)`` (the log-odds) for a LightGBM classifier or the logistic
    pipeline; None for anything else."""
    if isinstance(model, lgb.LGBMClassifier):
        booster = fitted_booster(model, X)
        return (
            None
            if booster is None
            else booster.predict(matrix, raw_score=True, num_threads=threads(model))
        )
    design = logistic_design(model, X, matrix)
    if design is None:
        return None
    logit = model[-1]
    return (design @ logit.coef_.T + logit.intercept_).ravel()


def logistic_design(model: object, X: pd.DataFrame, matrix: np.ndarray) -> np.ndarray | None:
    """``model[:-1].transform(X)`` for the logistic pipeline of ``liqrisk.models.train.fit_logistic``
    (imputer with indicators and scaler on the numeric columns, one-hot on one category column),
    computed on ``matrix``; None for any other shape of model."""
    parts = _logistic_parts(model, X)
    if parts is None:
        return None
    numeric, imputer, scaler, category, encoder = parts
    values = matrix[:, numeric]
    missing = np.isnan(values)
    imputed = np.where(missing, imputer.statistics_, values)
    indicators = missing[:, imputer.indicator_.features_].astype(np.float64)
    scaled = (np.hstack([imputed, indicators]) - scaler.mean_) / scaler.scale_
    codes = matrix[:, category]
    names = np.asarray(X.iloc[:, category].cat.categories, dtype=object)
    wanted = np.asarray(encoder.categories_[0], dtype=object)
    # code -> position in the encoder's categories (-1: unknown or missing, all zeros)
    slot = np.array(
        [np.flatnonzero(wanted == n)[0] if n in wanted else -1 for n in names], dtype=np.int64
    )
    known = ~np.isnan(codes)
    column = np.full(len(codes), -1, dtype=np.int64)
    column[known] = slot[codes[known].astype(np.int64)]
    onehot = (column[:, None] == np.arange(len(wanted))[None, :]).astype(np.float64)
    return np.hstack([scaled, onehot])


def _logistic_parts(
    model: object, X: pd.DataFrame
) -> tuple[np.ndarray, SimpleImputer, StandardScaler, int, OneHotEncoder] | None:
    if not (
        isinstance(model, Pipeline)
        and len(model) == 2
        and isinstance(model[-1], LogisticRegression)
    ):
        return None
    prep = model[0]
    if not isinstance(prep, ColumnTransformer) or len(prep.transformers_) != 2:
        return None
    (_, num, num_cols), (_, encoder, cat_cols) = prep.transformers_
    if not (
        isinstance(num, Pipeline)
        and len(num) == 2
        and isinstance(num[0], SimpleImputer)
        and isinstance(num[1], StandardScaler)
        and isinstance(encoder, OneHotEncoder)
        and len(cat_cols) == 1
        and encoder.drop_idx_ is None
        and encoder.handle_unknown == "ignore"
        and isinstance(X[cat_cols[0]].dtype, pd.CategoricalDtype)
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
    columns = list(X.columns)
    numeric = np.array([columns.index(c) for c in num_cols], dtype=np.int64)
    return numeric, imputer, scaler, columns.index(cat_cols[0]), encoder


# scikit-learn's private sigmoid calibrator (a, b); if it is renamed, its own predict is used
_SIGMOID = getattr(calibration, "_SigmoidCalibration", None)
_FEATURE_NAMES: "weakref.WeakKeyDictionary[lgb.Booster, list[str]]" = (
    weakref.WeakKeyDictionary()
)  # a C call each


def fitted_booster(model: lgb.LGBMModel, X: pd.DataFrame) -> lgb.Booster | None:
    """The fitted booster, if it reads ``X``'s columns in order with the same categories."""
    booster = model.booster_
    names = _FEATURE_NAMES.get(booster)
    if names is None:
        names = _FEATURE_NAMES.setdefault(booster, booster.feature_name())
    if names != [str(c) for c in X.columns]:
        return None
    categories = [list(d.categories) for d in X.dtypes if isinstance(d, pd.CategoricalDtype)]
    if (booster.pandas_categorical or []) != categories:
        return None
    return booster


def threads(model: lgb.LGBMModel) -> int:
    """The model's ``n_jobs`` as the booster's ``num_threads`` (0: OpenMP's default)."""
    n = model.n_jobs
    return n if isinstance(n, int) and n > 0 else 0
