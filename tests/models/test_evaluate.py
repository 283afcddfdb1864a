from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from liqrisk.models.baselines import structural_baseline
from liqrisk.models.evaluate import (
    BASELINES,
    ES_SUFFIX,
    EXTRA,
    RULES,
    baseline_scores,
    evaluation_table,
    label_parts,
    walk_forward,
)
from liqrisk.models.splits import walk_forward_splits


@pytest.fixture(scope="module")
def table(make_dataset: Callable[..., pd.DataFrame]) -> pd.DataFrame:
    t = make_dataset(5000, seed=2)
    t.loc[t.index[::97], "negative_24h"] = pd.NA  # unknown outcomes are dropped once, for every score
    return t


@pytest.fixture(scope="module")
def splits(table: pd.DataFrame):
    return walk_forward_splits(table["as_of"], n_folds=2, horizon=pd.Timedelta(days=7))


def test_label_parts() -> None:
    assert label_parts("negative_24h") == ("negative", "24h")
    assert label_parts("liquidated_7d") == ("liquidated", "7d")
    with pytest.raises(ValueError, match="shortfall_24h"):
        label_parts("shortfall_24h")


def test_baseline_scores_are_finite_and_use_the_labels_barrier(table) -> None:
    scores = baseline_scores(table, label="negative_24h")
    assert list(scores) == list(BASELINES)
    assert all(np.isfinite(s).all() and len(s) == len(table) for s in scores.values())
    expected = structural_baseline(table, horizon=pd.Timedelta(hours=24))
    np.testing.assert_allclose(scores["structural"], expected["p_bankrupt"].fillna(0.0))
    liq = baseline_scores(table, label="liquidated_24h")["structural"]
    np.testing.assert_allclose(liq, expected["p_liq"].fillna(0.0))


def test_walk_forward_scores_only_test_rows_with_a_known_label(table, splits) -> None:
    result = walk_forward(table, splits, label="negative_24h", seed=0, models=("lightgbm", "logistic"), n_estimators=40)
    known = ~table["negative_24h"].isna().to_numpy()
    expected = np.concatenate([s.test[known[s.test]] for s in splits])
    np.testing.assert_array_equal(result.rows, expected)
    np.testing.assert_array_equal(result.fold, np.repeat([0, 1], [known[s.test].sum() for s in splits]))
    shortfall = {f"lightgbm{ES_SUFFIX}", f"logistic{ES_SUFFIX}"}
    assert set(result.scores) == {"lightgbm", "logistic", *EXTRA, *shortfall}
    assert all(len(s) == len(expected) for s in result.scores.values())
    assert set(result.last_models) == {"lightgbm", "logistic"}

    liquidated = walk_forward(table, splits, label="liquidated_24h", seed=0, models=("logistic",), n_estimators=40)
    assert set(liquidated.scores) == {"logistic"}  # no LightGBM extras, no shortfall ranking


def test_evaluation_table_scores_everyone_on_the_same_rows(table, splits) -> None:
    result = walk_forward(table, splits, label="negative_24h", seed=0, models=("logistic",), n_estimators=40)
    metrics = evaluation_table(table, result)
    names = [*result.scores, *BASELINES]
    groups = ["all", *sorted(table["asset_class"].unique())]
    assert list(metrics["group"].unique()) == groups
    for _, rows in metrics.groupby("group"):
        assert list(rows["model"]) == names
        assert rows["n"].nunique() == 1 and rows["n_pos"].nunique() == 1
    overall = metrics[metrics["group"] == "all"].set_index("model")
    assert overall.loc["logistic", "n"] == len(result.rows)
    assert overall.loc[list(RULES), "brier"].isna().all()  # rules are ranked, not calibrated
    assert np.isnan(overall.loc[f"logistic{ES_SUFFIX}", "brier"])  # a dollar ranking, not a probability
    assert dict(zip(overall.index, overall["kind"]))["structural"] == "structural"
    # the synthetic label follows leverage and distance: the model ranks far above chance
    assert overall.loc["logistic", "pr_auc"] > 2 * overall.loc["logistic", "base_rate"]
