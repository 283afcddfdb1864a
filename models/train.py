"""Fit and calibrate the ML models on one walk-forward split: LightGBM, logistic regression, HistGB.

Choices, stated once:

- **Features.** ``POSITION_FEATURES`` + ``MARKET_FEATURES`` as float64 (``inf`` -> NaN; every
  model sees NaN as "missing"), plus ``asset_class`` as a pandas ``category`` with the fixed
  list :data:`ASSET_CLASSES` (stored with the model as the dtype of its input; a class not in
  the list becomes NaN). Labels and the ``*_1h/_24h/_7d`` outcome columns are never features.
- **Monotone constraints** (:data:`MONOTONE`) only where the direction is certain with every
  other feature fixed; see the comments there. Everything else is unconstrained.
- **Class imbalance.** No reweighting and no ``scale_pos_weight``: reweighting only shifts the
  raw scores (ranking is nearly unchanged for trees) and makes the raw probabilities wrong by
  construction; the calibration step that follows would then have to undo it. Unweighted log
  loss keeps the raw probabilities close to calibrated, so the calibrator has less to fix.
- **No random splits.** LightGBM's early-stopping validation set is the last
  :data:`VALID_FRACTION` of the training rows in time, separated from the rows it fits on by the
  split's embargo (so no fitted label window reaches into the validation period). HistGB uses
  the same validation rows through ``X_val``/``y_val``; the logistic regression needs none.
- **Calibration** on the split's calibration period with ``FrozenEstimator`` (``cv="prefit"``
  is gone in scikit-learn 1.9). Default ``sigmoid``: P(negative within 24h) has a base rate
  near 0.2%, so a calibration window holds tens of positives, too few for isotonic
  regression's step function (it overfits and emits exact 0s); sigmoid fits two parameters.
  ``method="isotonic"`` is available for labels with more events (e.g. ``liquidated_24h``).
- **Determinism.** Every model takes ``seed``; LightGBM runs with ``deterministic=True``,
  ``force_row_wise=True`` and a fixed ``n_jobs``; no bagging or feature subsampling.
"""

from collections.abc import Mapping, Sequence
from typing import Literal

import lightgbm as lgb
import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from liqrisk.features._frames import Columns, frame_from_arrays
from liqrisk.features.market_features import MARKET_FEATURES
from liqrisk.features.position import POSITION_FEATURES
from liqrisk.models.baselines import structural_probabilities_by_horizon
from liqrisk.models.fastpath import Layout
from liqrisk.models.splits import Split

ASSET_CLASSES: tuple[str, ...] = ("commodity", "crypto", "equity", "fx", "index")
CATEGORICAL = "asset_class"
NUMERIC: tuple[str, ...] = (*POSITION_FEATURES, *MARKET_FEATURES)
INPUTS: tuple[str, ...] = (*NUMERIC, CATEGORICAL)  # the dataset columns a model reads
# The structural baseline's first-passage probabilities, derived from the inputs, fed to the
# models: a tree or a linear model cannot build Φ(distance / (σ√H)) from its parts.
STRUCTURAL_HORIZONS: dict[str, pd.Timedelta] = {
    "1h": pd.Timedelta(hours=1), "24h": pd.Timedelta(hours=24), "7d": pd.Timedelta(days=7)
}
DERIVED: tuple[str, ...] = tuple(f"fp_{b}_{h}" for h in STRUCTURAL_HORIZONS for b in ("liq", "bankrupt"))
FEATURES: tuple[str, ...] = (*NUMERIC, *DERIVED, CATEGORICAL)  # the model's columns, in order
ASSET_CLASS_DTYPE = pd.CategoricalDtype(list(ASSET_CLASSES), ordered=False)
_ASSET_CLASS_CODES = {name: code for code, name in enumerate(ASSET_CLASSES)}
_FEATURE_COLUMNS = Columns.of(FEATURES)
_FEATURE_POSITION = {c: j for j, c in enumerate(FEATURES)}
# what ``Layout.of`` finds in every :func:`model_frame` (the key of the fitted models' constants)
MODEL_LAYOUT = Layout(
    columns=FEATURES,
    names=FEATURES,
    categories=((len(FEATURES) - 1, ASSET_CLASSES),),
)

# +1: the score never falls as the feature rises (everything else fixed); -1: never rises.
MONOTONE: dict[str, int] = {
    # More gross notional per unit of collateral: the same price move costs more equity.
    "leverage": 1,
    # MM / E: a higher ratio is less equity above maintenance, so liquidation (MR >= 1) and
    # bankruptcy are nearer. (E <= 0 gives inf in the features, NaN here: LightGBM learns the
    # missing branch separately, outside the constraint.)
    "margin_ratio": 1,
    # The adverse move (as a fraction of price) that triggers liquidation / wipes out the
    # equity: farther away is never riskier.
    "dist_liq_pct": -1,
    "dist_bankrupt_pct": -1,
    # The same distances in horizon standard deviations.
    "dist_liq_sigma": -1,
    "dist_bankrupt_sigma": -1,
}
# Not constrained, although tempting: volatility (already inside dist_*_sigma; with the
# sigma-distance fixed, higher vol means a larger percentage distance), mmr and tier (a higher
# rate at the same distance is not riskier by itself), notional_to_liquidity (liquidation
# slippage raises shortfall, but the direction for P(negative) is not certain for every venue).

MODEL_KINDS: tuple[str, ...] = ("lightgbm", "hist_gb", "logistic")
VALID_FRACTION = 0.2
DEFAULT_N_JOBS = 2
CalibrationMethod = Literal["sigmoid", "isotonic", "temperature"]


def model_frame(table: pd.DataFrame) -> pd.DataFrame:
    """The model's input: :data:`FEATURES` in order, float64 with ``inf`` -> NaN, and
    ``asset_class`` as :data:`ASSET_CLASS_DTYPE` (unknown classes -> NaN). Same index as ``table``.

    Reads the :data:`INPUTS` columns of ``table`` and adds :data:`DERIVED` (the structural
    baseline's probabilities). Raises ``KeyError`` naming the missing input columns.
    """
    return model_inputs(table)[0]


def model_inputs(table: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """:func:`model_frame` of ``table`` and the same rows as the float matrix the fitted models
    read (``liqrisk.models.fastpath.lightgbm_matrix`` of that frame: ``asset_class`` as its
    category code, NaN where missing). The frame's layout is :data:`MODEL_LAYOUT`."""
    position = {c: i for i, c in enumerate(table.columns.tolist())}
    _check_inputs(position)
    values = table.take([position[c] for c in NUMERIC], axis=1).to_numpy(
        dtype=np.float64, na_value=np.nan, copy=True
    )
    matrix = _matrix(values, table.iloc[:, position[CATEGORICAL]].tolist())
    return frame_of_matrix(matrix, table.index), matrix


def model_matrix(columns: Mapping[str, ArrayLike]) -> np.ndarray:
    """The matrix of :func:`model_inputs` from a table's columns (name -> one value per row),
    without a frame: what the service scores a handful of accounts on."""
    _check_inputs(columns)
    values = np.empty((len(columns[CATEGORICAL]), len(NUMERIC)), dtype=np.float64)
    for j, c in enumerate(NUMERIC):
        values[:, j] = columns[c]
    return _matrix(values, list(columns[CATEGORICAL]))


def frame_of_matrix(matrix: np.ndarray, index: pd.Index) -> pd.DataFrame:
    """The :func:`model_frame` whose matrix is ``matrix`` (rows on ``index``).

    The frame is built from its blocks, one float array and one categorical column (a service
    calls this for a single account, where each pandas operation costs more than the arithmetic).
    """
    codes = matrix[:, -1]
    codes = np.where(np.isnan(codes), -1, codes).astype(np.int8)
    asset_class = pd.Categorical.from_codes(codes, dtype=ASSET_CLASS_DTYPE)
    columns = dict(zip(FEATURES, [*matrix[:, :-1].T, asset_class], strict=True))
    return frame_from_arrays(columns, index=index, names=_FEATURE_COLUMNS)


def matrix_value(matrix: np.ndarray, row: int, feature: str) -> float | str | None:
    """One model input of a model matrix's row, as :func:`frame_of_matrix` would hold it: a
    float, or ``asset_class`` as its text (None where unknown)."""
    value = matrix[row, _FEATURE_POSITION[feature]]
    if feature != CATEGORICAL:
        return float(value)
    return None if np.isnan(value) else ASSET_CLASSES[int(value)]


def _check_inputs(columns: Mapping[str, object]) -> None:
    missing = [c for c in INPUTS if c not in columns]
    if missing:
        raise KeyError(f"model_frame: table lacks feature column(s) {missing}")


def _matrix(values: np.ndarray, asset_class: list[object]) -> np.ndarray:
    """:data:`FEATURES` as floats from the numeric inputs (``values``, rows x :data:`NUMERIC`,
    changed in place) and the ``asset_class`` of each row: :data:`DERIVED` from the values as
    given (inf included), then ``inf`` -> NaN, and the class's code (NaN: unknown or missing)."""
    given = dict(zip(NUMERIC, values.T, strict=True))
    derived = [  # in DERIVED order
        p
        for pair in structural_probabilities_by_horizon(given, horizons=list(STRUCTURAL_HORIZONS.values()))
        for p in pair
    ]
    values[np.isinf(values)] = np.nan
    matrix = np.empty((len(values), len(FEATURES)), dtype=np.float64)
    matrix[:, : len(NUMERIC)] = values
    for j, p in enumerate(derived, start=len(NUMERIC)):
        matrix[:, j] = p
    matrix[:, -1] = [_ASSET_CLASS_CODES.get(value, np.nan) for value in asset_class]
    return matrix


def monotone_vector(columns: list[str] | tuple[str, ...] = FEATURES) -> list[int]:
    """:data:`MONOTONE` as LightGBM's ``monotone_constraints`` list, in ``columns`` order."""
    return [MONOTONE.get(c, 0) for c in columns]


def fit_lightgbm(
    X_train: pd.DataFrame,
    y_train: np.ndarray,
    X_valid: pd.DataFrame,
    y_valid: np.ndarray,
    *,
    seed: int,
    n_estimators: int = 500,
    learning_rate: float = 0.05,
    early_stopping_rounds: int = 50,
    n_jobs: int = DEFAULT_N_JOBS,
) -> lgb.LGBMClassifier:
    """LightGBM on :func:`model_frame` columns, early-stopped on ``(X_valid, y_valid)`` by log loss.

    Monotone constraints from :data:`MONOTONE`; no class reweighting (module docstring);
    deterministic for a given ``seed`` and ``n_jobs``. ``best_iteration_`` is used at predict time.
    """
    model = lgb.LGBMClassifier(
        objective="binary",
        n_estimators=n_estimators,
        learning_rate=learning_rate,
        num_leaves=31,
        min_child_samples=100,
        reg_lambda=1.0,
        monotone_constraints=monotone_vector(list(X_train.columns)),
        monotone_constraints_method="advanced",
        random_state=seed,
        deterministic=True,
        force_row_wise=True,
        n_jobs=n_jobs,
        verbose=-1,
    )
    model.fit(
        X_train,
        np.asarray(y_train, dtype=int),
        eval_X=(X_valid,),
        eval_y=(np.asarray(y_valid, dtype=int),),
        eval_metric="binary_logloss",
        callbacks=[lgb.early_stopping(early_stopping_rounds, verbose=False), lgb.log_evaluation(0)],
    )
    return model


def fit_logistic(
    X_train: pd.DataFrame, y_train: np.ndarray, *, seed: int, C: float = 1.0
) -> Pipeline:
    """Median imputation (+ missing indicators) and StandardScaler on the numeric features,
    one-hot ``asset_class`` (fixed categories), then an L2 logistic regression."""
    numeric = [c for c in X_train.columns if c != CATEGORICAL]
    prep = ColumnTransformer(
        [
            (
                "num",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="median", add_indicator=True)),
                        ("scale", StandardScaler()),
                    ]
                ),
                numeric,
            ),
            (
                "cat",
                OneHotEncoder(categories=[list(ASSET_CLASSES)], handle_unknown="ignore"),
                [CATEGORICAL],
            ),
        ]
    )
    logit = LogisticRegression(C=C, max_iter=2000, random_state=seed)
    model = Pipeline([("prep", prep), ("logit", logit)])
    model.fit(X_train, np.asarray(y_train, dtype=int))
    return model


def fit_hist_gb(
    X_train: pd.DataFrame,
    y_train: np.ndarray,
    X_valid: pd.DataFrame,
    y_valid: np.ndarray,
    *,
    seed: int,
    max_iter: int = 500,
    learning_rate: float = 0.05,
) -> HistGradientBoostingClassifier:
    """HistGradientBoosting with ``asset_class`` native categorical, :data:`MONOTONE` constraints,
    and early stopping on the given validation rows (not a random fraction)."""
    model = HistGradientBoostingClassifier(
        learning_rate=learning_rate,
        max_iter=max_iter,
        min_samples_leaf=100,
        l2_regularization=1.0,
        categorical_features="from_dtype",
        monotonic_cst={c: v for c, v in MONOTONE.items() if c in X_train.columns},
        early_stopping=True,
        scoring="loss",
        n_iter_no_change=30,
        random_state=seed,
    )
    y_val = np.asarray(y_valid, dtype=int)
    model.fit(X_train, np.asarray(y_train, dtype=int), X_val=X_valid, y_val=y_val)
    return model


def calibrate(
    model: object,
    X_cal: pd.DataFrame,
    y_cal: np.ndarray,
    *,
    method: CalibrationMethod = "sigmoid",
) -> CalibratedClassifierCV:
    """Calibrate a fitted ``model`` on ``(X_cal, y_cal)``, which must be disjoint from its training
    rows (and later in time). The raw model stays reachable with :func:`uncalibrated`."""
    classes = np.unique(np.asarray(y_cal, dtype=int))
    if len(classes) < 2:
        raise ValueError(
            f"calibrate: the calibration rows hold only class {classes.tolist()} ({len(classes) and len(y_cal)} rows); "
            "a calibration period needs both outcomes: choose a longer or later calibration window"
        )
    calibrated = CalibratedClassifierCV(FrozenEstimator(model), method=method)
    calibrated.fit(X_cal, np.asarray(y_cal, dtype=int))
    return calibrated


def uncalibrated(calibrated: CalibratedClassifierCV) -> object:
    """The fitted model inside a :func:`calibrate` result."""
    return calibrated.estimator.estimator


def early_stopping_rows(
    as_of: pd.Series, train: np.ndarray, *, embargo: pd.Timedelta
) -> tuple[np.ndarray, np.ndarray]:
    """Split training row positions into (fit, valid) by time: valid is the last
    :data:`VALID_FRACTION` of the training span's rows (by ``as_of``), fit are the rows at least
    ``embargo`` before the first validation snapshot. Rows in between are dropped."""
    t = pd.DatetimeIndex(as_of.iloc[train])
    cut = t.sort_values()[int(len(t) * (1 - VALID_FRACTION))]
    valid = train[np.asarray(t >= cut)]
    fit = train[np.asarray(t < cut - embargo)]
    if len(fit) == 0 or len(valid) == 0:
        raise ValueError(
            f"early_stopping_rows: training period too short to hold out {VALID_FRACTION:.0%} "
            f"after an embargo of {embargo}"
        )
    return fit, valid


def train_split(
    table: pd.DataFrame,
    split: Split,
    *,
    label: str,
    seed: int,
    method: CalibrationMethod = "sigmoid",
    n_estimators: int = 500,
    n_jobs: int = DEFAULT_N_JOBS,
    models: Sequence[str] = MODEL_KINDS,
) -> dict[str, CalibratedClassifierCV]:
    """Fit ``models`` (of ``lightgbm``, ``logistic`` and ``hist_gb``) on the split's train rows and
    calibrate each on its calibration rows. Row positions in ``split`` index ``table`` positionally.

    LightGBM and HistGB are early-stopped on the last part of the train period in time
    (:func:`early_stopping_rows`, with the split's embargo) and fitted on the rest; the logistic
    regression is fitted on all train rows. Rows with a missing ``label`` are dropped.
    Returns calibrated models; :func:`uncalibrated` gives the raw one.
    """
    X = model_frame(table)
    y = table[label]
    known = ~y.isna().to_numpy()
    y = y.fillna(False).to_numpy(dtype=bool)

    def rows(r: np.ndarray) -> np.ndarray:
        return r[known[r]]

    train, cal = rows(split.train), rows(split.calibration)
    fit, valid = early_stopping_rows(table["as_of"], train, embargo=split.embargo)
    fit, valid = rows(fit), rows(valid)
    unknown = set(models) - set(MODEL_KINDS)
    if unknown:
        raise ValueError(f"train_split: unknown model(s) {sorted(unknown)}; known: {list(MODEL_KINDS)}")
    fitters = {
        "lightgbm": lambda: fit_lightgbm(
            X.iloc[fit], y[fit], X.iloc[valid], y[valid], seed=seed, n_estimators=n_estimators, n_jobs=n_jobs
        ),
        "logistic": lambda: fit_logistic(X.iloc[train], y[train], seed=seed),
        "hist_gb": lambda: fit_hist_gb(
            X.iloc[fit], y[fit], X.iloc[valid], y[valid], seed=seed, max_iter=n_estimators
        ),
    }
    return {name: calibrate(fitters[name](), X.iloc[cal], y[cal], method=method) for name in models}
