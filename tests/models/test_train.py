import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from liqrisk.models.fastpath import Layout, lightgbm_matrix
from liqrisk.models.metrics import expected_calibration_error
from liqrisk.models.splits import walk_forward_splits
from liqrisk.models.train import (
    ASSET_CLASSES,
    FEATURES,
    MODEL_LAYOUT,
    MONOTONE,
    NUMERIC,
    calibrate,
    early_stopping_rows,
    fit_lightgbm,
    model_frame,
    model_inputs,
    model_matrix,
    train_split,
    uncalibrated,
)

HORIZON = pd.Timedelta("24h")
DATASET = Path(__file__).resolve().parents[2] / "runs" / "latest" / "dataset.parquet"


def synthetic_table(n: int = 6000, seed: int = 0) -> pd.DataFrame:
    """Rows spread over 300 days; the label depends on leverage, distance and vol."""
    rng = np.random.default_rng(seed)
    table = pd.DataFrame({c: rng.normal(size=n) for c in NUMERIC})
    table["leverage"] = rng.lognormal(1.5, 0.8, size=n)
    table["dist_liq_pct"] = rng.uniform(0.001, 0.5, size=n)
    table["margin_ratio"] = np.where(rng.random(n) < 0.01, np.inf, rng.uniform(0, 1, size=n))
    table["asset_class"] = rng.choice(list(ASSET_CLASSES), size=n)
    start = pd.Timestamp("2024-01-01", tz="UTC")
    table["as_of"] = start + pd.to_timedelta(np.sort(rng.uniform(0, 300, size=n)), unit="D")
    logit = -4.0 + 0.15 * table["leverage"] - 6.0 * table["dist_liq_pct"] + 0.8 * table["vol_1d"]
    table["negative_24h"] = pd.array(rng.random(n) < 1 / (1 + np.exp(-logit)), dtype="boolean")
    return table


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return synthetic_table()


@pytest.fixture(scope="module")
def split(table: pd.DataFrame):
    splits = walk_forward_splits(
        table["as_of"], n_folds=1, horizon=HORIZON, min_train=pd.Timedelta(days=150)
    )
    return splits[0]


def test_model_frame_types(table: pd.DataFrame) -> None:
    X = model_frame(table.assign(asset_class=table["asset_class"].where(table.index != 0, "rates")))
    assert list(X.columns) == list(FEATURES)
    assert (X.drop(columns="asset_class").dtypes == "float64").all()
    assert list(X["asset_class"].cat.categories) == list(ASSET_CLASSES)
    assert pd.isna(X["asset_class"].iloc[0])  # unknown class -> NaN, not a new category
    assert not np.isinf(X.drop(columns="asset_class").to_numpy()).any()
    assert X["margin_ratio"].isna().sum() == np.isinf(table["margin_ratio"]).sum()


def _model_frame_by_column(table: pd.DataFrame) -> pd.DataFrame:
    """model_frame as it was first written: one column at a time (the reference)."""
    from liqrisk.models.baselines import structural_probabilities
    from liqrisk.models.train import ASSET_CLASS_DTYPE, CATEGORICAL, STRUCTURAL_HORIZONS

    values = table[list(NUMERIC)].to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    given = dict(zip(NUMERIC, values.T, strict=True))
    derived = {}
    for h, horizon in STRUCTURAL_HORIZONS.items():
        derived[f"fp_liq_{h}"], derived[f"fp_bankrupt_{h}"] = structural_probabilities(given, horizon=horizon)
    values[np.isinf(values)] = np.nan
    raw = np.asarray(table[CATEGORICAL].to_numpy(), dtype=object)
    asset_class = pd.Categorical(raw, dtype=ASSET_CLASS_DTYPE)
    return pd.DataFrame(
        {**dict(zip(NUMERIC, values.T, strict=True)), **derived, CATEGORICAL: asset_class}, index=table.index
    )


@pytest.mark.parametrize("rows", [0, 1, 7, 6000])
@pytest.mark.filterwarnings("ignore:Constructing a Categorical:DeprecationWarning")
def test_model_frame_is_the_frame_built_column_by_column(table: pd.DataFrame, rows: int) -> None:
    odd = table.iloc[:rows].copy()
    odd.index = odd.index * 3 + 11  # any index is kept
    odd["asset_class"] = odd["asset_class"].astype(object)
    odd.iloc[::2, odd.columns.get_loc("leverage")] = np.inf
    odd.iloc[::3, odd.columns.get_loc("vol_1d")] = -np.inf
    odd.iloc[::4, odd.columns.get_loc("margin_ratio")] = np.nan
    odd.iloc[1::5, odd.columns.get_loc("asset_class")] = "rates"
    odd.iloc[2::5, odd.columns.get_loc("asset_class")] = None
    odd.iloc[3::5, odd.columns.get_loc("asset_class")] = np.nan
    odd = odd[[*reversed(odd.columns)]]  # the frame's column order does not matter
    pd.testing.assert_frame_equal(model_frame(odd), _model_frame_by_column(odd), check_exact=True)
    as_category = odd.assign(asset_class=odd["asset_class"].astype("category"))
    pd.testing.assert_frame_equal(model_frame(as_category), _model_frame_by_column(odd), check_exact=True)
    # the matrix built beside the frame is the frame as the fitted models read it
    X, matrix = model_inputs(odd)
    assert Layout.of(X) == MODEL_LAYOUT
    np.testing.assert_array_equal(matrix, lightgbm_matrix(_model_frame_by_column(odd)))
    np.testing.assert_array_equal(model_matrix({c: odd[c].to_numpy() for c in odd.columns}), matrix)


def test_model_frame_names_the_missing_inputs(table: pd.DataFrame) -> None:
    with pytest.raises(KeyError, match="leverage"):
        model_frame(table.drop(columns=["leverage"]))


def test_early_stopping_rows_are_later_and_embargoed(table: pd.DataFrame, split) -> None:
    fit, valid = early_stopping_rows(table["as_of"], split.train, embargo=split.embargo)
    t = table["as_of"]
    assert t.iloc[fit].max() + HORIZON <= t.iloc[valid].min()
    assert set(fit) | set(valid) <= set(split.train)


def _null_ap_quantile(y: np.ndarray, q: float, draws: int = 2000) -> float:
    """The ``q`` quantile of the PR-AUC of a random ranking of these labels (same n and n_pos).

    Under a random ranking the P positives sit at P ranks drawn without replacement from
    1..n; the k-th highest of them, at rank r_k, contributes precision k / r_k, so
    PR-AUC (average precision) = mean_k k / r_k.
    """
    rng = np.random.default_rng(12345)
    n, n_pos = len(y), int(np.sum(y))
    k = np.arange(1, n_pos + 1)
    ap = [np.mean(k / (np.sort(rng.choice(n, n_pos, replace=False)) + 1)) for _ in range(draws)]
    return float(np.quantile(ap, q))


def test_shuffled_labels_drive_every_model_to_chance(table: pd.DataFrame, split) -> None:
    labels = table["negative_24h"].to_numpy(dtype=bool)
    shuffled = table.assign(negative_24h=np.random.default_rng(7).permutation(labels))
    models = train_split(shuffled, split, label="negative_24h", seed=0, n_estimators=100)
    X = model_frame(shuffled).iloc[split.test]
    y = shuffled["negative_24h"].to_numpy(dtype=bool)[split.test]
    # Bound: the 99.9% quantile of PR-AUC under random ranking with this many positives
    # (per model, 3 models: family-wise false alarm < 0.3%). Not tuned to the models.
    bound = _null_ap_quantile(y, 0.999)
    assert y.sum() >= 20
    for name, model in models.items():
        ap = average_precision_score(y, model.predict_proba(X)[:, 1])
        assert ap <= bound, (
            f"{name}: PR-AUC {ap:.4f} on shuffled labels above the chance bound {bound:.4f} "
            f"(base rate {y.mean():.4f})"
        )
    # The same models on the true labels clear the bound: the test has power.
    models = train_split(table, split, label="negative_24h", seed=0, n_estimators=100)
    y_true = table["negative_24h"].to_numpy(dtype=bool)[split.test]
    for name, model in models.items():
        ap = average_precision_score(y_true, model.predict_proba(X)[:, 1])
        assert ap > _null_ap_quantile(y_true, 0.999), name


def _lightgbm(table: pd.DataFrame, split, seed: int = 0):
    X = model_frame(table)
    y = table["negative_24h"].to_numpy(dtype=bool)
    fit, valid = early_stopping_rows(table["as_of"], split.train, embargo=split.embargo)
    return fit_lightgbm(X.iloc[fit], y[fit], X.iloc[valid], y[valid], seed=seed, n_estimators=100)


def test_monotone_constraints_hold(table: pd.DataFrame, split) -> None:
    model = _lightgbm(table, split)
    rows = model_frame(table).iloc[split.test[:200]]
    for feature, direction in MONOTONE.items():
        grid = np.linspace(0.0, 50.0 if feature == "leverage" else 1.0, 41)
        scores = np.column_stack(
            [model.predict_proba(rows.assign(**{feature: v}))[:, 1] for v in grid]
        )
        steps = np.diff(scores, axis=1) * direction
        assert (steps >= 0).all(), f"{feature}: moves against {direction:+d} by {steps.min():.3g}"


def test_same_seed_same_predictions(table: pd.DataFrame, split) -> None:
    X = model_frame(table).iloc[split.test]
    first = train_split(table, split, label="negative_24h", seed=3, n_estimators=60)
    second = train_split(table, split, label="negative_24h", seed=3, n_estimators=60)
    for name in first:
        np.testing.assert_array_equal(
            first[name].predict_proba(X), second[name].predict_proba(X), err_msg=name
        )


def _default_dataset() -> pd.DataFrame:
    """The main job's dataset (default build config): read if ``liqrisk run`` made it, else built."""
    from liqrisk.pipelines.build import BuildConfig, build_dataset, config_hash

    config = BuildConfig.from_dict({"data_dir": str(DATASET.parents[2] / "data")})
    card = DATASET.parent / "data_card.json"
    if card.exists() and json.loads(card.read_text())["config_hash"] == config_hash(config.resolved()):
        return pd.read_parquet(DATASET)
    return build_dataset(config).table


@pytest.mark.slow
def test_calibration_lowers_ece_on_held_out_period() -> None:
    data = _default_dataset()
    data = data[data["as_of"] >= pd.Timestamp("2021-01-01", tz="UTC")].reset_index(drop=True)
    split = walk_forward_splits(
        data["as_of"], n_folds=1, horizon=HORIZON, min_train=pd.Timedelta(days=3 * 365)
    )[0]
    model = _lightgbm(data, split)
    X = model_frame(data)
    y = data["negative_24h"].to_numpy(dtype=bool)
    calibrated = calibrate(model, X.iloc[split.calibration], y[split.calibration], method="sigmoid")
    assert uncalibrated(calibrated) is model
    test_X, test_y = X.iloc[split.test], y[split.test]
    raw = expected_calibration_error(test_y, model.predict_proba(test_X)[:, 1])
    cal = expected_calibration_error(test_y, calibrated.predict_proba(test_X)[:, 1])
    print(f"negative_24h test period: ECE uncalibrated {raw:.5f}, sigmoid-calibrated {cal:.5f}")
    assert cal < raw
