"""Figures: what is drawn equals what the metrics module computes, on seeded synthetic data."""

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score

from liqrisk.models.metrics import calibration_bins, expected_calibration_error
from liqrisk.models.plots import (
    LOG_FLOOR,
    bad_debt_captured,
    colours,
    event_backtest_chart,
    feature_importance,
    pr_curves,
    reliability_diagram,
)

matplotlib.use("Agg")  # the figures need no pyplot; this keeps any stray pyplot use headless


@pytest.fixture(params=[0, 1, 20240611])
def seed(request: pytest.FixtureRequest) -> int:
    return request.param


def _rare_events(seed: int, n: int = 4000) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Events at about 0.5%, a sharp and a vague probability model, and a rule score."""
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    p_true = 1 / (1 + np.exp(-(risk * 1.5 - 6.0)))
    y = rng.random(n) < p_true
    y[0] = True  # at least one event for any seed
    scores = {
        "lightgbm": np.clip(p_true * rng.lognormal(0, 0.3, n), 0, 0.19),
        "logistic": np.clip(1 / (1 + np.exp(-(risk * 0.7 - 5.5))), 0, 0.19),
        "margin_ratio": np.round(risk + rng.normal(0, 1, n), 1),  # a coarse rule: many ties
    }
    return y, scores


def _legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_colours_follow_the_given_order_whatever_else_is_plotted():
    assert colours(["b", "a", "b"]) == {"b": "#1f77b4", "a": "#ff7f0e"}
    assert colours(["a", "b", "c"])["c"] == colours(["a", "b", "c", "d"])["c"]


# ---- reliability diagram -------------------------------------------------------------------


def test_reliability_points_are_the_calibration_bins_clipped_on_log_axes(seed):
    y, scores = _rare_events(seed)
    probs = {k: v for k, v in scores.items() if k != "margin_ratio"}
    fig = reliability_diagram(y, probs, n_bins=10, title="rel")
    assert isinstance(fig, Figure)
    ax, ax_n = fig.axes
    assert ax.get_xscale() == ax.get_yscale() == "log"  # every probability < 0.2
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert len(lines) == len(probs) + 1  # one per model and the diagonal
    for name, p in probs.items():
        table = calibration_bins(y, p, n_bins=10)
        (label,) = [k for k in lines if k.startswith(f"{name} (")]
        assert label == f"{name} (ECE {expected_calibration_error(y, p, n_bins=10):.4g})"
        np.testing.assert_allclose(lines[label].get_xdata(), np.clip(table["mean_p"], LOG_FLOOR, 1))
        np.testing.assert_allclose(lines[label].get_ydata(), np.clip(table["frac_pos"], LOG_FLOOR, 1))
        (counts,) = [line for line in ax_n.get_lines() if line.get_label() == name]
        np.testing.assert_array_equal(counts.get_ydata(), table["n"])
    assert all(any(t.startswith(name) for t in _legend_texts(ax)) for name in probs)


def test_reliability_is_linear_and_unclipped_for_large_probabilities(seed):
    rng = np.random.default_rng(seed)
    p = rng.random(500)
    y = rng.random(500) < p
    fig = reliability_diagram(y, {"m": p}, n_bins=5, title="rel")
    ax = fig.axes[0]
    assert ax.get_xscale() == "linear"
    table = calibration_bins(y, p, n_bins=5)
    line = ax.get_lines()[0]
    np.testing.assert_allclose(line.get_xdata(), table["mean_p"])
    np.testing.assert_allclose(line.get_ydata(), table["frac_pos"])


def test_reliability_rejects_a_score_that_is_not_a_probability():
    with pytest.raises(ValueError, match="'rule' is not a probability"):
        reliability_diagram(np.array([0, 1]), {"rule": np.array([0.5, 3.0])}, title="t")


# ---- precision-recall ----------------------------------------------------------------------


def test_pr_curves_label_each_score_with_sklearn_average_precision(seed):
    y, scores = _rare_events(seed)
    fig = pr_curves(y, scores, title="pr", baselines=["margin_ratio"])
    ax = fig.axes[0]
    texts = _legend_texts(ax)
    for name, s in scores.items():
        assert f"{name} (PR-AUC {average_precision_score(y, s):.4g})" in texts
    assert f"base rate {y.mean():.4g}" in texts
    styles = {line.get_label().split(" (")[0]: line.get_linestyle() for line in ax.get_lines()}
    assert styles["margin_ratio"] == "--"
    assert styles["lightgbm"] == styles["logistic"] == "-"
    base = next(line for line in ax.get_lines() if line.get_label().startswith("base rate"))
    np.testing.assert_allclose(base.get_ydata(), y.mean())


def test_pr_curves_keep_a_name_s_colour_given_the_same_order(seed):
    y, scores = _rare_events(seed)
    order = ["lightgbm", "logistic", "margin_ratio"]
    full = pr_curves(y, scores, title="a", order=order).axes[0].get_lines()
    part = pr_curves(y, {"margin_ratio": scores["margin_ratio"]}, title="b", order=order).axes[0].get_lines()
    assert full[2].get_color() == part[0].get_color() == colours(order)["margin_ratio"]


# ---- bad debt captured ---------------------------------------------------------------------


def test_bad_debt_captured_reaches_one_and_never_beats_the_oracle(seed):
    y, scores = _rare_events(seed)
    rng = np.random.default_rng(seed)
    debt = np.where(y, rng.lognormal(8, 2, len(y)), 0.0)
    fig = bad_debt_captured(scores, debt, title="debt", baselines=["margin_ratio"])
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    assert set(lines) == {*scores, "oracle", "random"}
    oracle = lines["oracle"].get_ydata()
    for name in scores:
        x, share = lines[name].get_xdata(), lines[name].get_ydata()
        assert x[-1] == 1.0 and share[-1] == pytest.approx(1.0)
        assert np.all(share <= oracle + 1e-12)
        assert np.all(np.diff(share) >= -1e-12)  # a larger budget never catches less
    assert lines["margin_ratio"].get_linestyle() == "--"
    np.testing.assert_allclose(lines["random"].get_ydata(), lines["random"].get_xdata())
    assert ax.get_xscale() == "log"
    assert ax.get_xlim() == pytest.approx((1e-3, 1.0))
    vertical = [line.get_xdata()[0] for line in ax.get_lines() if line.get_label().startswith("_")]
    assert sorted(vertical) == [0.01, 0.05]


def test_bad_debt_captured_shares_ties_at_the_cut_pro_rata():
    # budget 1/4 of 4 rows flags 1 row; the scores all tie, so each carries 1/4 of the dollars
    debt = np.array([100.0, 0.0, 0.0, 300.0])
    fig = bad_debt_captured({"flat": np.zeros(4)}, debt, budgets=np.array([0.25, 1.0]), title="t")
    flat = next(line for line in fig.axes[0].get_lines() if line.get_label() == "flat")
    np.testing.assert_allclose(flat.get_ydata(), [0.25, 1.0])
    oracle = next(line for line in fig.axes[0].get_lines() if line.get_label() == "oracle")
    np.testing.assert_allclose(oracle.get_ydata(), [0.75, 1.0])


def test_bad_debt_captured_needs_some_bad_debt():
    with pytest.raises(ValueError, match="sums to 0"):
        bad_debt_captured({"s": np.ones(3)}, np.zeros(3), title="t")


# ---- feature importance --------------------------------------------------------------------


def test_feature_importance_drops_bias_and_sorts_by_mean_abs(seed):
    rng = np.random.default_rng(seed)
    scale = {"leverage": 0.9, "margin_ratio": 2.0, "vol_30d": 0.3, "ret_6h": 1.1}
    frame = pd.DataFrame({k: rng.normal(0, s, 300) for k, s in scale.items()})
    frame["bias"] = -5.0  # larger than any feature, must not appear
    fig = feature_importance(frame, top=3, title="shap", labels={"margin_ratio": "margin ratio (MM/E)"})
    ax = fig.axes[0]
    expected = frame.drop(columns="bias").abs().mean().sort_values(ascending=False).head(3)
    bars = sorted(ax.patches, key=lambda b: -b.get_y())  # top to bottom
    assert len(bars) == 3
    np.testing.assert_allclose([b.get_width() for b in bars], expected.to_numpy())
    ticks = {t.get_position()[1]: t.get_text() for t in ax.get_yticklabels()}
    names = [ticks[b.get_y() + b.get_height() / 2] for b in bars]
    labels = {"margin_ratio": "margin ratio (MM/E)"}
    assert names == [labels.get(c, c) for c in expected.index]
    assert "bias" not in names


# ---- event backtest ------------------------------------------------------------------------


def test_event_chart_has_one_bar_per_lead_and_scorer_in_order_of_appearance(seed):
    rng = np.random.default_rng(seed)
    leads, scorers = ["24h", "6h", "1h"], ["lightgbm", "margin_ratio", "structural"]
    rows = [(lead, s) for lead in leads for s in scorers]
    order = rng.permutation(len(rows))[::-1]
    order = np.concatenate([[0], order[order != 0]])  # 24h/lightgbm first, the rest shuffled
    table = pd.DataFrame(
        {
            "event": "2025-10-10 crash",
            "lead": [rows[i][0] for i in order],
            "scorer": [rows[i][1] for i in order],
            "recall": rng.random(len(rows)),
        }
    )
    fig = event_backtest_chart(table, title="crash", baselines=["margin_ratio"])
    ax = fig.axes[0]
    assert len(ax.patches) == len(leads) * len(scorers)
    seen_leads = list(dict.fromkeys(table["lead"]))
    assert [t.get_text() for t in ax.get_xticklabels()] == seen_leads
    assert _legend_texts(ax) == list(dict.fromkeys(table["scorer"]))
    for container in ax.containers:
        scorer = container.get_label()
        got = [bar.get_height() for bar in container]
        want = table.set_index(["scorer", "lead"]).loc[scorer].loc[seen_leads, "recall"]
        np.testing.assert_allclose(got, want.to_numpy())
        assert all((bar.get_hatch() == "//") == (scorer == "margin_ratio") for bar in container)


def test_event_chart_refuses_two_events():
    table = pd.DataFrame(
        {"event": ["a", "b"], "lead": ["1h", "1h"], "scorer": ["m", "m"], "recall": [0.1, 0.2]}
    )
    with pytest.raises(ValueError, match="one event per chart"):
        event_backtest_chart(table, title="t")
