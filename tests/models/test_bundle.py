import itertools
import pickle
from collections.abc import Callable

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature
from sklearn.ensemble import HistGradientBoostingClassifier

from liqrisk.models.bundle import (
    BIAS,
    RiskModel,
    RiskModelPyfunc,
    contributions,
    input_example,
    matrix_contributions,
    requirements,
)
from liqrisk.models.fastpath import (
    PARALLEL_ROWS,
    Layout,
    calibrated_probability,
    decision,
    lightgbm_matrix,
    logistic_design,
    threads,
)
from liqrisk.models.shortfall import exposure, fit_severity
from liqrisk.models.splits import walk_forward_splits
from liqrisk.models.tracking import configure_tracking
from liqrisk.models.train import (
    FEATURES,
    calibrate,
    fit_logistic,
    frame_of_matrix,
    model_frame,
    model_inputs,
    model_matrix,
    train_split,
    uncalibrated,
)

HORIZONS = ("1h", "24h", "7d")


@pytest.fixture(scope="module")
def table(make_dataset: Callable[..., pd.DataFrame]) -> pd.DataFrame:
    return make_dataset(4000, seed=1)


@pytest.fixture(scope="module")
def fitted(table: pd.DataFrame) -> dict[str, dict]:
    split = walk_forward_splits(table["as_of"], n_folds=1, horizon=pd.Timedelta(days=7))[0]
    return {
        f"{e}_{h}": train_split(table, split, label=f"{e}_{h}", seed=0, n_estimators=60, models=("lightgbm", "logistic", "hist_gb"))
        for h in HORIZONS
        for e in ("liquidated", "negative")
    }


def _model(table: pd.DataFrame, fitted: dict[str, dict], kind: str) -> RiskModel:
    X = model_frame(table)
    severity = {
        h: fit_severity(
            X, table[f"shortfall_{h}"].to_numpy(), exposure(table), table[f"negative_{h}"].to_numpy(bool), seed=0
        )
        for h in HORIZONS
    }
    return RiskModel(
        horizons=("7d", "1h", "24h"),  # any order in, sorted by duration
        classifiers={label: models[kind] for label, models in fitted.items()},
        severity=severity,
        kinds={label: kind for label in fitted},
    )


def test_probabilities_are_coherent_and_shortfall_is_pd_lgd_ead(table, fitted) -> None:
    model = _model(table, fitted, "lightgbm")
    assert model.horizons == HORIZONS
    out = model.predict(table)
    assert list(out.columns) == list(model.outputs) and out.index.equals(table.index)
    for h in HORIZONS:
        assert (out[f"p_liquidated_{h}"] >= out[f"p_negative_{h}"]).all()
    for a, b in itertools.pairwise(HORIZONS):
        assert (out[f"p_negative_{b}"] >= out[f"p_negative_{a}"]).all()
        assert (out[f"p_liquidated_{b}"] >= out[f"p_liquidated_{a}"]).all()
    severity = model.severity["24h"].predict(model_frame(table))
    np.testing.assert_allclose(out["expected_shortfall_24h"], out["p_negative_24h"] * severity * exposure(table))


def test_missing_label_is_refused(table, fitted) -> None:
    model = _model(table, fitted, "lightgbm")
    classifiers = {k: v for k, v in model.classifiers.items() if k != "negative_1h"}
    with pytest.raises(ValueError, match="negative_1h"):
        RiskModel(horizons=HORIZONS, classifiers=classifiers, severity=model.severity, kinds=model.kinds)


@pytest.mark.parametrize("kind", ["lightgbm", "logistic", "hist_gb"])
def test_contributions_sum_to_the_raw_log_odds(table, fitted, kind) -> None:
    raw = uncalibrated(fitted["negative_24h"][kind])
    X = model_frame(table.iloc[:300])
    parts = contributions(raw, X)
    assert list(parts.columns) == [*FEATURES, BIAS]
    p = raw.predict_proba(X)[:, 1]
    np.testing.assert_allclose(parts.sum(axis=1), np.log(p / (1 - p)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["lightgbm", "logistic", "hist_gb", "other"])
def test_contributions_of_a_matrix_are_those_of_its_frame(table, fitted, kind, make_unexplained_model) -> None:
    # the service explains a matrix without building its frame; a model without exact
    # contributions (other) gives None either way
    model = make_unexplained_model(table, "negative_24h") if kind == "other" else fitted["negative_24h"][kind]
    raw = uncalibrated(model)
    X, matrix = model_inputs(table.iloc[:40])
    if kind == "other":
        assert contributions(raw, X) is None
        assert matrix_contributions(raw, matrix) is None
    else:
        np.testing.assert_array_equal(matrix_contributions(raw, matrix), contributions(raw, X).to_numpy())


def test_contributions_of_the_logistic_model_move_with_their_feature(table, fitted) -> None:
    raw = uncalibrated(fitted["negative_24h"]["logistic"])
    X = model_frame(table.iloc[:50])
    moved = X.assign(leverage=X["leverage"] + 5.0)
    delta = contributions(raw, moved) - contributions(raw, X)
    assert (delta["leverage"].abs() > 0).all()
    assert np.allclose(delta.drop(columns="leverage"), 0.0)


def test_pyfunc_round_trip_through_the_registry(table, fitted, mlflow_work_dir) -> None:
    model = _model(table, fitted, "lightgbm")
    configure_tracking(mlflow_work_dir)
    example = input_example(table)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=RiskModelPyfunc(model),
            signature=infer_signature(example, model.predict(example)),
            input_example=example,
            pip_requirements=requirements(),
        )
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    rows = input_example(table, n=200)
    pd.testing.assert_frame_equal(loaded.predict(rows), model.predict(rows))
    with pytest.raises(Exception, match="leverage"):
        loaded.predict(rows.drop(columns="leverage"))


@pytest.mark.parametrize("kind", ["lightgbm", "logistic", "hist_gb"])
@pytest.mark.parametrize("method", ["sigmoid", "isotonic"])
def test_probabilities_from_the_fitted_parts_are_scikit_learns(table, fitted, kind, method) -> None:
    raw = uncalibrated(fitted["liquidated_24h"][kind])
    X = model_frame(table)
    y = table["liquidated_24h"].to_numpy(bool)
    classifier = calibrate(raw, X.iloc[:2000], y[:2000], method=method)
    X = X.assign(asset_class=X["asset_class"].mask(X.index % 7 == 0))  # missing classes too
    X = X.assign(leverage=X["leverage"].mask(X.index % 5 == 0))  # and missing numbers
    matrix = lightgbm_matrix(X)
    log_odds = decision(raw, Layout.of(X), matrix)
    if kind == "logistic":  # summed row by row, not by BLAS: equal but for the last bits
        np.testing.assert_allclose(log_odds, raw.decision_function(X), rtol=1e-13, atol=1e-15)
    else:  # the same trees added in the same order: the same bits
        np.testing.assert_array_equal(log_odds, raw.decision_function(X))
    np.testing.assert_allclose(
        calibrated_probability(classifier, Layout.of(X), matrix),
        classifier.predict_proba(X)[:, 1],
        rtol=1e-13,
        atol=1e-13,  # a last-bit change of the log-odds on an isotonic step moved one by 7e-15
    )
    if kind == "logistic":
        np.testing.assert_allclose(
            logistic_design(raw, Layout.of(X), matrix), raw[:-1].transform(X), rtol=0, atol=1e-15
        )


def test_a_model_the_fast_path_does_not_know_is_left_to_scikit_learn(table, make_unexplained_model) -> None:
    X = model_frame(table)
    unknown = make_unexplained_model(table, "liquidated_24h")
    assert calibrated_probability(unknown, Layout.of(X), lightgbm_matrix(X)) is None
    assert contributions(uncalibrated(unknown), X) is None


def test_a_hist_gb_model_fitted_without_a_category_column_reads_the_numbers_as_they_are(table) -> None:
    X = model_frame(table).drop(columns="asset_class")
    X = X.assign(leverage=X["leverage"].mask(X.index % 5 == 0))
    model = HistGradientBoostingClassifier(max_iter=15, random_state=0).fit(X, table["negative_24h"].to_numpy(bool))
    np.testing.assert_array_equal(decision(model, Layout.of(X), lightgbm_matrix(X)), model.decision_function(X))
    reordered = X.assign(asset_class=model_frame(table)["asset_class"])[["asset_class", *reversed(X.columns)]]
    np.testing.assert_array_equal(
        decision(model, Layout.of(reordered), lightgbm_matrix(reordered)), model.decision_function(X)
    )


def test_a_hist_gb_model_splitting_numbers_near_zero_is_read_exactly(table) -> None:
    """LightGBM reads |x| <= 1e-35 as 0; HistGB splits first-passage probabilities far below
    that. The fast path scales such a column by 2^959 and stays bit-equal; a number that would
    overflow when scaled leaves the call to scikit-learn."""
    X = model_frame(table)
    rng = np.random.default_rng(3)
    tiny = 10.0 ** -rng.uniform(10, 320, len(X))  # normal and subnormal numbers down to 1e-320
    tiny[:: 9] = 0.0
    y = np.log10(np.maximum(tiny, 1e-320)) > -200
    X = X.assign(fp_liq_1h=tiny)
    model = HistGradientBoostingClassifier(max_iter=8, random_state=0).fit(X, y)
    layout, matrix = Layout.of(X), lightgbm_matrix(X)
    splits = np.concatenate([p[0].nodes[p[0].nodes["is_leaf"] == 0]["num_threshold"] for p in model._predictors])
    assert (np.abs(splits[splits != 0]) < 1e-35).any()  # it does split where LightGBM reads 0
    np.testing.assert_array_equal(decision(model, layout, matrix), model.decision_function(X))
    huge = X.assign(fp_liq_1h=np.where(X.index % 11 == 0, 2.0**70, tiny))
    assert decision(model, layout, lightgbm_matrix(huge)) is None
    calibrated = calibrate(model, X.iloc[:2000], y[:2000])
    assert calibrated_probability(calibrated, layout, lightgbm_matrix(huge)) is None  # scikit-learn's turn
    np.testing.assert_array_equal(
        calibrated_probability(calibrated, layout, matrix), calibrated.predict_proba(X)[:, 1]
    )


def test_a_hist_gb_model_sends_missing_and_unseen_categories_where_it_learnt(table) -> None:
    """LightGBM sends a missing category right whatever the split; the fast path gives it (and
    a category the model never saw at fit) a code each split sends the fitted way."""
    X = model_frame(table)
    rng = np.random.default_rng(4)
    missing = rng.random(len(X)) < 0.3
    train = X.assign(asset_class=X["asset_class"].mask(missing | (X["asset_class"] == "equity")))
    y = missing | (X["asset_class"] == "fx").to_numpy()  # missing behaves like fx, not like the rest
    model = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(train, y)
    nodes = np.concatenate([p[0].nodes for p in model._predictors])
    categorical = nodes[(nodes["is_leaf"] == 0) & (nodes["is_categorical"] == 1)]
    assert categorical["missing_go_to_left"].any() and not categorical["missing_go_to_left"].all()
    scored = X.assign(asset_class=X["asset_class"].mask(X.index % 4 == 0))  # missing, and equity unseen
    assert (scored["asset_class"] == "equity").any()
    np.testing.assert_array_equal(
        decision(model, Layout.of(scored), lightgbm_matrix(scored)), model.decision_function(scored)
    )


def test_hist_gb_contributions_are_those_of_its_trees(table, fitted) -> None:
    """TreeSHAP of the trees as LightGBM reads them: a column the model never splits on gets 0,
    and moving the one input of a model fitted on it moves only its contribution."""
    X = model_frame(table.iloc[:400])
    model = uncalibrated(fitted["negative_24h"]["hist_gb"])
    used = {int(f) for p in model._predictors for f in p[0].nodes[p[0].nodes["is_leaf"] == 0]["feature_idx"]}
    parts = contributions(model, X)
    order = [*(c for c in X.columns if c == "asset_class"), *(c for c in X.columns if c != "asset_class")]
    unused = [name for j, name in enumerate(order) if j not in used]
    assert unused and np.allclose(parts[unused], 0.0)
    y = table["negative_24h"].to_numpy(bool)
    one = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(model_frame(table)[["leverage"]], y)
    frame = X[["leverage"]]
    moved = frame.assign(leverage=frame["leverage"] * 3.0)
    delta = contributions(one, moved) - contributions(one, frame)
    assert (delta["leverage"].abs() > 0).any() and np.allclose(delta[BIAS], 0.0)


def test_a_hist_gb_model_of_single_leaf_trees_predicts_its_baseline_and_leaves() -> None:
    X = pd.DataFrame({"a": np.ones(500)})  # nothing to split on: every tree is one leaf
    model = HistGradientBoostingClassifier(max_iter=5, random_state=0).fit(X, np.arange(500) % 3 == 0)
    assert all(len(p[0].nodes) == 1 for p in model._predictors)
    np.testing.assert_array_equal(decision(model, Layout.of(X), lightgbm_matrix(X)), model.decision_function(X))


def test_a_refitted_hist_gb_model_gets_new_constants(table) -> None:
    X = model_frame(table)
    y = table["negative_24h"].to_numpy(bool)
    model = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(X.iloc[:2000], y[:2000])
    layout, matrix = Layout.of(X), lightgbm_matrix(X)
    decision(model, layout, matrix)
    model.fit(X.iloc[2000:], y[2000:])
    np.testing.assert_array_equal(decision(model, layout, matrix), model.decision_function(X))


def test_predict_values_on_the_matrix_alone_equal_predict(table, fitted, make_unexplained_model) -> None:
    """The service predicts from the model matrix without a frame; a model without a fast path
    then reads a frame rebuilt from the matrix, and the numbers do not change."""
    model = _model(table, fitted, "lightgbm")
    mixed = RiskModel(
        horizons=model.horizons,
        classifiers={**model.classifiers, "liquidated_24h": make_unexplained_model(table, "liquidated_24h"),
                     "negative_7d": fitted["negative_7d"]["hist_gb"]},
        severity=model.severity,
        kinds={**model.kinds, "liquidated_24h": "other", "negative_7d": "hist_gb"},
    )
    rows = table.iloc[::7]
    expected = mixed.predict(rows)
    X, matrix = model_inputs(rows)
    pd.testing.assert_frame_equal(frame_of_matrix(matrix, rows.index), X, check_exact=True)
    np.testing.assert_array_equal(mixed.predict_values(matrix, exposure(rows)), expected.to_numpy())
    by_column = {c: rows[c].to_numpy() for c in rows.columns}
    np.testing.assert_array_equal(mixed.predict_values(model_matrix(by_column), exposure(by_column)), expected.to_numpy())


def test_threads_do_not_change_the_predictions(table, fitted) -> None:
    model = _model(table, fitted, "lightgbm")
    before = model.predict(table)
    model.set_threads(1)
    pd.testing.assert_frame_equal(model.predict(table), before, check_exact=True)
    assert len(table) >= PARALLEL_ROWS  # so the call above ran on every core
    few = table.iloc[: PARALLEL_ROWS - 1]
    pd.testing.assert_frame_equal(model.predict(few), before.iloc[: len(few)], check_exact=True)


def test_a_service_model_predicts_large_batches_on_every_core() -> None:
    one = lgb.LGBMClassifier(n_jobs=1)
    assert threads(one, PARALLEL_ROWS - 1) == 1 and threads(one, PARALLEL_ROWS) == 0
    assert threads(lgb.LGBMClassifier(n_jobs=-1), 1) == 0  # not a count: OpenMP's default


def test_predicting_leaves_the_pickled_model_unchanged(table, fitted) -> None:
    # the fast path's constants live beside the fitted objects, never in a RiskModel's state:
    # a model pickled before they existed loads and predicts as one pickled after
    model = _model(table, fitted, "logistic")
    before = pickle.dumps(model)
    out = model.predict(table)
    assert pickle.dumps(model) == before
    pd.testing.assert_frame_equal(pickle.loads(before).predict(table), out, check_exact=True)


def test_the_fast_path_follows_the_column_order_of_the_frame(table, fitted) -> None:
    classifier = fitted["negative_24h"]["logistic"]
    X = model_frame(table.iloc[:200])
    shuffled = X[list(reversed(X.columns))]
    for frame in (X, shuffled, X):  # a second layout for the same pipeline, then the first again
        np.testing.assert_allclose(
            calibrated_probability(classifier, Layout.of(frame), lightgbm_matrix(frame)),
            classifier.predict_proba(frame)[:, 1],
            rtol=1e-13,
            atol=1e-15,
        )


def test_a_refitted_logistic_pipeline_gets_new_constants(table) -> None:
    X = model_frame(table)
    y = table["negative_24h"].to_numpy(bool)
    model = fit_logistic(X.iloc[:2000], y[:2000], seed=0)
    layout, matrix = Layout.of(X), lightgbm_matrix(X)
    logistic_design(model, layout, matrix)
    model.fit(X.iloc[2000:], y[2000:])
    np.testing.assert_allclose(
        logistic_design(model, layout, matrix), model[:-1].transform(X), rtol=0, atol=1e-15
    )


@pytest.mark.parametrize("kind", ["lightgbm", "logistic"])
def test_renaming_the_columns_of_one_result_leaves_the_next_alone(table, fitted, kind) -> None:
    model = _model(table, fitted, kind)
    X = model_frame(table.iloc[:5])
    first, parts = model.predict(table.iloc[:5]), contributions(uncalibrated(model.classifiers["negative_1h"]), X)
    first.columns.name, parts.columns.name, X.columns.name = "mine", "mine", "mine"
    assert model.predict(table.iloc[:5]).columns.name is None
    assert contributions(uncalibrated(model.classifiers["negative_1h"]), X).columns.name is None
    assert model_frame(table.iloc[:5]).columns.name is None
