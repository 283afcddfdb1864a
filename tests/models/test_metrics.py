"""Metrics: hand-computed small cases, agreement with scikit-learn, and chance on shuffled labels."""

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from liqrisk.models.metrics import (
    at_budget,
    calibration_bins,
    evaluate_scores,
    expected_calibration_error,
    flag_weights,
    metrics_table,
)


@pytest.fixture(params=[0, 1, 2])
def seed(request) -> int:
    return request.param


# ---- expected calibration error ------------------------------------------------------------

Y6 = np.array([0, 0, 1, 1, 0, 1], dtype=bool)
P6 = np.array([0.1, 0.2, 0.3, 0.4, 0.8, 0.9])


def test_ece_equal_frequency_by_hand():
    # bins of 2 rows: {.1,.2} -> |0 - .15|, {.3,.4} -> |1 - .35|, {.8,.9} -> |.5 - .85|
    expected = (0.15 + 0.65 + 0.35) * 2 / 6
    assert expected_calibration_error(Y6, P6, n_bins=3) == pytest.approx(expected)


def test_ece_equal_width_by_hand():
    # [0, .5): .1 .2 .3 .4 -> |.5 - .25| on 4 rows; [.5, 1]: .8 .9 -> |.5 - .85| on 2 rows
    expected = (0.25 * 4 + 0.35 * 2) / 6
    assert expected_calibration_error(Y6, P6, n_bins=2, strategy="uniform") == pytest.approx(expected)


def test_ece_keeps_ties_in_one_bin_whatever_the_row_order():
    y = np.array([0, 1, 0, 1], dtype=bool)
    p = np.array([0.2, 0.2, 0.2, 0.6])
    # the three 0.2s share a bin: |1/3 - .2| * 3/4 + |1 - .6| * 1/4 = 0.1 + 0.1
    assert expected_calibration_error(y, p, n_bins=2) == pytest.approx(0.2)
    order = np.array([3, 1, 0, 2])
    assert expected_calibration_error(y[order], p[order], n_bins=2) == pytest.approx(0.2)
    assert calibration_bins(y, p, n_bins=2)["n"].tolist() == [3, 1]


def test_ece_of_a_perfectly_calibrated_constant_is_zero():
    y = np.array([1, 0, 0, 0], dtype=bool)
    assert expected_calibration_error(y, np.full(4, 0.25), n_bins=15) == pytest.approx(0.0)


# ---- alert budget --------------------------------------------------------------------------


def test_recall_precision_and_bad_debt_share_at_budget_by_hand():
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    y = np.array([1, 0, 0, 1, 0, 0, 0, 0, 0, 1], dtype=bool)
    debt = np.array([100.0, 0, 0, 50, 0, 0, 0, 0, 0, 50])
    got = at_budget(y, score, bad_debt=debt, budget=0.2)  # k = 2: rows 0 and 1
    assert got == {
        "flagged@20%": 2,
        "recall@20%": pytest.approx(1 / 3),
        "precision@20%": pytest.approx(1 / 2),
        "bad_debt_share@20%": pytest.approx(100 / 200),
    }


def test_ties_at_the_cut_share_the_slots():
    score = np.array([5.0, 4, 4, 4, 1, 1])
    y = np.array([0, 1, 0, 0, 1, 0], dtype=bool)
    debt = np.array([0.0, 30, 0, 0, 10, 0])
    np.testing.assert_allclose(flag_weights(score, 2), [1, 1 / 3, 1 / 3, 1 / 3, 0, 0])
    got = at_budget(y, score, bad_debt=debt, budget=2 / 6)
    assert got["recall@33.3333%"] == pytest.approx((1 / 3) / 2)
    assert got["precision@33.3333%"] == pytest.approx((1 / 3) / 2)
    assert got["bad_debt_share@33.3333%"] == pytest.approx(10 / 40)
    perm = np.array([5, 3, 1, 4, 0, 2])  # row order does not matter
    assert at_budget(y[perm], score[perm], bad_debt=debt[perm], budget=2 / 6) == got


def test_budget_size_is_the_ceiling_without_float_round_off():
    y = np.zeros(300, dtype=bool)
    y[0] = True
    got = evaluate_scores(y, np.linspace(1, 0, 300), bad_debt=np.zeros(300), is_probability=False)
    assert got["flagged@1%"] == 3  # 0.01 * 300 is 3.0000000000000004
    assert got["flagged@5%"] == 15
    assert math.isnan(got["bad_debt_share@1%"])  # no bad debt at all
    assert at_budget(y[:150], np.linspace(1, 0, 150), bad_debt=np.zeros(150), budget=0.01)["flagged@1%"] == 2


# ---- ranking and probability metrics -------------------------------------------------------


def test_pr_and_roc_auc_equal_sklearn_on_random_data(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(2000) < 0.1
    score = rng.random(2000) + 0.3 * y
    got = evaluate_scores(y, score / score.max(), bad_debt=np.zeros(2000))
    assert got["pr_auc"] == pytest.approx(average_precision_score(y, score))
    assert got["roc_auc"] == pytest.approx(roc_auc_score(y, score))


def test_brier_and_log_loss_by_hand():
    got = evaluate_scores(np.array([True, False]), np.array([0.8, 0.4]), bad_debt=np.zeros(2))
    assert got["brier"] == pytest.approx((0.2**2 + 0.4**2) / 2)
    assert got["log_loss"] == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    certain_miss = evaluate_scores(np.array([True]), np.array([0.0]), bad_debt=np.zeros(1))
    assert math.isfinite(certain_miss["log_loss"])


def test_shuffled_labels_give_chance(seed):
    rng = np.random.default_rng(seed)
    n = 20_000
    y = rng.random(n) < 0.05
    informative = np.clip(0.03 + 0.5 * y + 0.05 * rng.standard_normal(n), 0, 1)
    shuffled = rng.permutation(y)
    good = evaluate_scores(y, informative, bad_debt=y * 100.0)
    chance = evaluate_scores(shuffled, informative, bad_debt=shuffled * 100.0)
    assert good["pr_auc"] > 0.9
    assert chance["pr_auc"] == pytest.approx(shuffled.mean(), rel=0.25)
    assert chance["roc_auc"] == pytest.approx(0.5, abs=0.04)
    assert chance["recall@5%"] == pytest.approx(0.05, abs=0.02)  # a random 5% catches ~5%
    assert chance["bad_debt_share@5%"] == pytest.approx(0.05, abs=0.02)


def test_rule_scores_skip_probability_metrics():
    y = np.array([True, False, False, True])
    leverage = np.array([50.0, 3, 30, 20])  # pairs: 50>3, 50>30, 20>3, 20<30
    got = evaluate_scores(y, leverage, bad_debt=np.zeros(4), is_probability=False)
    assert got["roc_auc"] == pytest.approx(0.75)
    assert all(math.isnan(got[k]) for k in ("brier", "log_loss", "ece"))
    with pytest.raises(ValueError, match=r"probability in \[0, 1\].*is_probability=False.*got 50.0 at row 0; 4 row"):
        evaluate_scores(y, leverage, bad_debt=np.zeros(4))


def test_no_positives_is_nan_not_a_crash():
    got = evaluate_scores(np.zeros(5, dtype=bool), np.linspace(0, 1, 5), bad_debt=np.zeros(5))
    assert got["n_pos"] == 0
    for key in ("pr_auc", "roc_auc", "recall@1%", "bad_debt_share@5%"):
        assert math.isnan(got[key])
    assert got["precision@1%"] == 0
    assert got["brier"] == pytest.approx(np.mean(np.linspace(0, 1, 5) ** 2))


@pytest.mark.parametrize(
    ("score", "debt", "message"),
    [
        ([0.1, np.nan, 0.2], [0.0, 0, 0], r"score must be finite, got nan at row 1; 1 row"),
        ([0.1, 0.2, 0.3], [0.0, -1, np.nan], r"bad_debt must be finite and >= 0, got -1.0 at row 1; 2 row"),
    ],
)
def test_bad_input_names_value_row_and_count(score, debt, message):
    with pytest.raises(ValueError, match=message):
        evaluate_scores(np.array([True, False, True]), np.array(score), bad_debt=np.array(debt))


# ---- the table -----------------------------------------------------------------------------


def test_metrics_table_every_score_on_the_same_rows_per_group_and_overall(seed):
    rng = np.random.default_rng(seed)
    n = 600
    table = pd.DataFrame(
        {
            "asset_class": pd.Categorical(rng.choice(["crypto", "fx", "equity"], n)),
            "negative_24h": rng.random(n) < 0.1,
        }
    )
    table.loc[table["asset_class"] == "equity", "negative_24h"] = False  # no events at all
    table["shortfall_24h"] = np.where(table["negative_24h"], rng.exponential(1000, n), 0.0)
    scores = {"model": rng.random(n), "mr_rule": rng.random(n) * 3}
    out = metrics_table(table, scores, label="negative_24h", bad_debt="shortfall_24h", rank_only=["mr_rule"])

    assert out[["group", "model"]].values.tolist() == [
        [g, m] for g in ["all", "crypto", "equity", "fx"] for m in ["model", "mr_rule"]
    ]
    by = out.set_index(["group", "model"])
    counts = table.groupby("asset_class", observed=True)["negative_24h"].agg(["size", "sum"])
    for g in ["crypto", "fx", "equity"]:
        for m in scores:  # same rows for every score
            assert by.loc[(g, m), "n"] == counts.loc[g, "size"]
            assert by.loc[(g, m), "n_pos"] == counts.loc[g, "sum"]
    assert by.loc[("all", "model"), "n"] == n
    assert by.loc[("equity", "model"), ["pr_auc", "roc_auc", "recall@1%"]].isna().all()
    assert by.loc[("all", "mr_rule"), ["brier", "log_loss", "ece"]].isna().all()
    assert by.loc[("all", "model"), ["brier", "log_loss", "ece"]].notna().all()
    mask = (table["asset_class"] == "fx").to_numpy()
    direct = evaluate_scores(
        table["negative_24h"].to_numpy()[mask], scores["model"][mask], bad_debt=table["shortfall_24h"].to_numpy()[mask]
    )
    assert by.loc[("fx", "model")].to_dict() == pytest.approx(direct, nan_ok=True)


def test_metrics_table_rejects_misaligned_or_unknown_scores():
    table = pd.DataFrame({"asset_class": ["fx"] * 3, "y": [True, False, False], "d": [1.0, 0, 0]})
    with pytest.raises(ValueError, match=r"score 'm' has 2 rows, the table 3"):
        metrics_table(table, {"m": np.array([0.1, 0.2])}, label="y", bad_debt="d")
    with pytest.raises(ValueError, match=r"rank_only names no score: \['rule'\]"):
        metrics_table(table, {"m": np.array([0.1, 0.2, 0.3])}, label="y", bad_debt="d", rank_only=["rule"])
