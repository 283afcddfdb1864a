"""Figures for the risk team: calibrated models next to the rule and structural baselines.

Every function returns a :class:`matplotlib.figure.Figure` drawn on an Agg canvas, built
without ``pyplot`` (no global figure registry, no window, no file I/O); save it with
``fig.savefig`` or embed it with :func:`liqrisk.models.report.figure_html`.

Choices, stated once:

- **Colours.** :func:`colours` gives the i-th name of ``order`` the i-th tab10 colour
  (cycling after ten). Every function takes ``order``; pass the same list of all model and
  baseline names to every figure of a report and a name keeps its colour everywhere. Without
  ``order`` the names plotted are sorted, which is deterministic but only consistent between
  figures that show the same names.
- **Models solid, baselines dashed** (hatched in bar charts): names in ``baselines`` are
  rules or structural models, the others calibrated ML models.
- **The numbers come from** :mod:`liqrisk.models.metrics`: reliability points are
  :func:`~liqrisk.models.metrics.calibration_bins`, ECE is
  :func:`~liqrisk.models.metrics.expected_calibration_error`, PR-AUC is average precision
  (as in :func:`~liqrisk.models.metrics.evaluate_scores`) and the bad-debt share at a budget
  is :func:`~liqrisk.models.metrics.at_budget` (ties at the cut shared pro rata).
"""

from collections.abc import Collection, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, PercentFormatter
from sklearn.metrics import average_precision_score, precision_recall_curve

from liqrisk.models.metrics import (
    at_budget,
    budget_label,
    calibration_bins,
    expected_calibration_error,
)

PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # tab10
ORACLE_COLOUR = "black"
CHANCE_COLOUR = "#999999"
LOG_FLOOR = 1e-5  # probabilities and frequencies are clipped here on log axes
LOG_BELOW = 0.2  # reliability axes are log-log when every probability is below this
MARKED_BUDGETS = (0.01, 0.05)
DEFAULT_BUDGETS = np.geomspace(1e-3, 1.0, 61)


def colours(names: Iterable[str]) -> dict[str, str]:
    """Name -> tab10 colour, by position in ``names`` (duplicates keep their first colour)."""
    unique = list(dict.fromkeys(names))
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(unique)}


def reliability_diagram(
    y: np.ndarray,
    probabilities: Mapping[str, np.ndarray],
    *,
    n_bins: int = 15,
    title: str,
    order: Sequence[str] | None = None,
) -> Figure:
    """Mean predicted probability vs observed frequency per quantile bin, one line per model.

    The top panel holds the reliability curves and the diagonal, the bottom panel the rows
    per bin. When every bin's mean probability is below 0.2 (rare events: a few confident
    rows must not flatten the curve everyone reads) both axes are logarithmic and values are
    clipped at 1e-5 (a bin with no event sits on the floor).

    Parameters
    ----------
    y : array of bool
        The event, one per row.
    probabilities : mapping of name to array of float
        Calibrated probabilities in [0, 1] on the same rows as ``y``.
    n_bins : int
        Quantile bins of :func:`~liqrisk.models.metrics.calibration_bins`.
    title : str
    order : sequence of str, optional
        Names that fix the colours (see :func:`colours`).

    Returns
    -------
    Figure
        Legend entries read ``"<name> (ECE <4 significant digits>)"``.
    """
    y = _labels(y, "reliability_diagram")
    probs = {n: _scores(p, len(y), n, "reliability_diagram") for n, p in probabilities.items()}
    for name, p in probs.items():
        if not ((p >= 0) & (p <= 1)).all():
            raise ValueError(f"reliability_diagram: {name!r} is not a probability in [0, 1]")
    palette = colours(order if order is not None else sorted(probs))
    tables = {name: calibration_bins(y, p, n_bins=n_bins) for name, p in probs.items()}
    log = bool(probs) and all(t["mean_p"].max() < LOG_BELOW for t in tables.values())

    fig = _figure(figsize=(7.0, 6.5))
    ax, ax_n = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    shown = []
    for name, p in probs.items():
        table = tables[name]
        ece = expected_calibration_error(y, p, n_bins=n_bins)
        x, f = _on_axis(table["mean_p"], log), _on_axis(table["frac_pos"], log)
        shown += [x, f]
        colour = palette.get(name)
        ax.plot(x, f, marker="o", color=colour, label=f"{name} (ECE {ece:.4g})")
        ax_n.plot(x, table["n"].to_numpy(), marker="o", color=colour, label=name)
    lo, hi = _limits(np.concatenate(shown) if shown else np.array([0.0, 1.0]), log)
    ax.plot([lo, hi], [lo, hi], linestyle=":", color=CHANCE_COLOUR, label="perfect calibration")
    if log:
        for a in (ax, ax_n):
            a.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_ylabel("observed frequency")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize="small")
    ax.grid(True, which="major", alpha=0.3)
    ax_n.set_xlabel("mean predicted probability (quantile bins)")
    ax_n.set_ylabel("rows per bin")
    ax_n.set_ylim(0, ax_n.get_ylim()[1] * 1.15)  # room for the markers of equal-count bins
    ax_n.grid(True, which="major", alpha=0.3)
    return fig


def pr_curves(
    y: np.ndarray,
    scores: Mapping[str, np.ndarray],
    *,
    title: str,
    baselines: Collection[str] = (),
    order: Sequence[str] | None = None,
) -> Figure:
    """Precision-recall curves, models solid and ``baselines`` dashed, with the base rate.

    Parameters
    ----------
    y : array of bool
        The event; needs at least one positive.
    scores : mapping of name to array of float
        Higher means riskier; rule scores need not be probabilities.
    title : str
    baselines : collection of str
        Names drawn dashed.
    order : sequence of str, optional
        Names that fix the colours (see :func:`colours`).

    Returns
    -------
    Figure
        Legend entries read ``"<name> (PR-AUC <4 significant digits>)"``, PR-AUC being
        average precision, then ``"base rate <rate>"``.
    """
    y = _labels(y, "pr_curves")
    if not y.any():
        raise ValueError("pr_curves: y has no positive row, precision and recall are undefined")
    palette = colours(order if order is not None else sorted(scores))
    fig = _figure(figsize=(7.0, 5.0))
    ax = fig.subplots()
    for name, s in scores.items():
        s = _scores(s, len(y), name, "pr_curves")
        precision, recall, _ = precision_recall_curve(y, s)
        ap = average_precision_score(y, s)
        ax.plot(
            recall,
            precision,
            drawstyle="steps-post",
            color=palette.get(name),
            linestyle="--" if name in baselines else "-",
            label=f"{name} (PR-AUC {ap:.4g})",
        )
    base_rate = float(y.mean())
    ax.axhline(base_rate, color=CHANCE_COLOUR, linestyle=":", label=f"base rate {base_rate:.4g}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize="small")
    ax.grid(True, alpha=0.3)
    return fig


def bad_debt_captured(
    scores: Mapping[str, np.ndarray],
    bad_debt: np.ndarray,
    *,
    budgets: np.ndarray | None = None,
    title: str,
    baselines: Collection[str] = (),
    order: Sequence[str] | None = None,
) -> Figure:
    """Share of bad-debt dollars on the accounts flagged, against the alert budget.

    At budget ``b`` the top ``ceil(b * n)`` rows of each score are flagged, ties at the cut
    shared pro rata (:func:`~liqrisk.models.metrics.at_budget`). The oracle ranks by the bad
    debt itself, so no score can lie above it; random flagging catches ``b`` on average.

    Parameters
    ----------
    scores : mapping of name to array of float
        Higher means riskier, one per row of ``bad_debt``.
    bad_debt : array of float
        Dollars lost per row, >= 0, not all zero.
    budgets : array of float, optional
        Fractions of rows in (0, 1]; default 61 log-spaced points from 0.1% to 100%.
    title : str
    baselines : collection of str
        Names drawn dashed.
    order : sequence of str, optional
        Names that fix the colours (see :func:`colours`).

    Returns
    -------
    Figure
        One line per score labelled with its name, then ``"oracle"`` and ``"random"``;
        dotted vertical markers at 1% and 5%.
    """
    debt = np.asarray(bad_debt, dtype=float)
    if not debt.sum() > 0:
        raise ValueError("bad_debt_captured: bad_debt sums to 0 (or is empty), no share to capture")
    b = np.sort(np.asarray(DEFAULT_BUDGETS if budgets is None else budgets, dtype=float))
    if b.size == 0 or not ((b > 0) & (b <= 1)).all():
        raise ValueError(f"bad_debt_captured: budgets must be non-empty and in (0, 1], got {b}")
    palette = colours(order if order is not None else sorted(scores))
    fig = _figure(figsize=(7.0, 5.0))
    ax = fig.subplots()
    for name, s in scores.items():
        s = _scores(s, len(debt), name, "bad_debt_captured")
        ax.plot(
            b,
            captured_share(s, debt, b),
            color=palette.get(name),
            linestyle="--" if name in baselines else "-",
            label=name,
        )
    ax.plot(b, captured_share(debt, debt, b), color=ORACLE_COLOUR, linewidth=1.0, label="oracle")
    ax.plot(b, b, color=CHANCE_COLOUR, linestyle=":", label="random")
    for mark in MARKED_BUDGETS:
        ax.axvline(mark, color=CHANCE_COLOUR, linewidth=0.8, linestyle="-.")
        ax.annotate(budget_label(mark), (mark, 1.0), xytext=(3, -12), textcoords="offset points",
                    fontsize="small", color="#555555")
    ax.set_xscale("log")
    ax.set_xlim(b[0], b[-1])
    ax.set_ylim(0, 1.02)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: budget_label(v)))
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    ax.set_xlabel("alert budget (share of accounts flagged)")
    ax.set_ylabel("share of bad-debt dollars on flagged accounts")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize="small")
    ax.grid(True, which="major", alpha=0.3)
    return fig


def captured_share(score: np.ndarray, bad_debt: np.ndarray, budgets: np.ndarray) -> np.ndarray:
    """``bad_debt_share`` of :func:`~liqrisk.models.metrics.at_budget` at each budget.

    Costs one sort of the rows per budget.
    """
    has_debt = np.asarray(bad_debt, dtype=float) > 0  # at_budget needs a label; unused here
    shares = []
    for budget in budgets:
        row = at_budget(has_debt, score, bad_debt=bad_debt, budget=float(budget))
        shares.append(row[f"bad_debt_share@{budget_label(float(budget))}"])
    return np.array(shares, dtype=float)


def feature_importance(
    contributions: pd.DataFrame,
    *,
    top: int = 20,
    title: str,
    labels: Mapping[str, str] | None = None,
) -> Figure:
    """Mean absolute SHAP value per feature, largest at the top, the ``"bias"`` column left out.

    Parameters
    ----------
    contributions : DataFrame
        LightGBM ``predict(..., pred_contrib=True)`` as a frame: one column per feature,
        optionally a last ``"bias"`` column (the expected value), which is not a feature.
    top : int
        Features shown.
    title : str
    labels : mapping of column to str, optional
        Human-readable names; columns not in it keep their own.

    Returns
    -------
    Figure
        Horizontal bars, widths the mean |contribution| in raw-score (log-odds) units.
    """
    if top < 1:
        raise ValueError(f"feature_importance: top must be >= 1, got {top}")
    features = contributions.drop(columns=["bias"], errors="ignore")
    if features.shape[1] == 0:
        raise ValueError("feature_importance: contributions has no feature column besides 'bias'")
    importance = mean_abs_contribution(features).head(top)
    names = [(labels or {}).get(c, str(c)) for c in importance.index]
    fig = _figure(figsize=(7.0, 1.2 + 0.3 * len(importance)))
    ax = fig.subplots()
    position = np.arange(len(importance))[::-1]  # largest at the top; labels may repeat
    ax.barh(position, importance.to_numpy(), color=PALETTE[0])
    ax.set_yticks(position, names)
    ax.set_xlabel("mean |SHAP value| (log-odds)")
    ax.set_title(title)
    ax.grid(True, axis="x", alpha=0.3)
    return fig


def mean_abs_contribution(contributions: pd.DataFrame) -> pd.Series:
    """Mean |value| per column, largest first (ties keep column order)."""
    return contributions.abs().mean().sort_values(ascending=False, kind="stable")


def event_backtest_chart(
    table: pd.DataFrame,
    *,
    title: str,
    baselines: Collection[str] = (),
    order: Sequence[str] | None = None,
) -> Figure:
    """Share of below-zero accounts flagged ahead of one market event, per lead time and scorer.

    Parameters
    ----------
    table : DataFrame
        One event's rows: ``event``, ``lead`` (e.g. ``"24h"``), ``scorer``, ``recall`` (in
        [0, 1], NaN when nothing went below zero). At most one row per (lead, scorer).
        Leads and scorers are drawn in order of first appearance.
    title : str
    baselines : collection of str
        Scorers drawn hatched.
    order : sequence of str, optional
        Names that fix the colours (see :func:`colours`).

    Returns
    -------
    Figure
        One bar per (lead, scorer), grouped by lead; a missing pair is an empty (NaN) bar.
    """
    missing = {"event", "lead", "scorer", "recall"} - set(table.columns)
    if missing:
        raise ValueError(f"event_backtest_chart: table lacks column(s) {sorted(missing)}")
    events = table["event"].unique()
    if len(events) > 1:
        raise ValueError(
            f"event_backtest_chart: one event per chart, got {len(events)}: {list(events)}"
        )
    twice = table.duplicated(["lead", "scorer"])
    if twice.any():
        first = table[twice].iloc[0]
        raise ValueError(
            f"event_backtest_chart: lead {first['lead']!r}, scorer {first['scorer']!r} "
            f"appears twice; {int(twice.sum())} duplicate row(s)"
        )
    leads = list(dict.fromkeys(table["lead"]))
    scorers = list(dict.fromkeys(table["scorer"]))
    recall = table.pivot(index="lead", columns="scorer", values="recall")
    recall = recall.reindex(index=leads, columns=scorers)
    palette = colours(order if order is not None else sorted(scorers))
    width = 0.8 / max(len(scorers), 1)
    x = np.arange(len(leads))
    fig = _figure(figsize=(max(5.0, 1.2 + 0.5 * len(leads) * len(scorers)), 4.5))
    ax = fig.subplots()
    for i, scorer in enumerate(scorers):
        values = recall[scorer].to_numpy(dtype=float)
        bars = ax.bar(
            x + (i - (len(scorers) - 1) / 2) * width,
            values,
            width,
            color=palette.get(scorer),
            hatch="//" if scorer in baselines else None,
            edgecolor="white",
            label=str(scorer),
        )
        texts = ["" if np.isnan(v) else f"{v:.0%}" for v in values]
        ax.bar_label(bars, labels=texts, fontsize="x-small")
        for bar, v in zip(bars, values, strict=True):
            if np.isnan(v):  # no below-zero account: say so rather than look like 0%
                ax.annotate("n/a", (bar.get_x() + bar.get_width() / 2, 0), xytext=(0, 2),
                            textcoords="offset points", ha="center", fontsize="x-small")
    ax.set_xticks(x, [str(lead) for lead in leads])
    ax.set_xlabel("lead time before the event")
    ax.set_ylabel("share of below-zero accounts flagged")
    ax.set_ylim(0, 1.1)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize="small")
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def _figure(*, figsize: tuple[float, float]) -> Figure:
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _labels(y: np.ndarray, where: str) -> np.ndarray:
    y_arr = np.asarray(y)
    if y_arr.dtype != bool:
        if not np.isin(y_arr, (0, 1)).all():
            raise ValueError(f"{where}: y must be bool (or 0/1), got other values or missing")
        y_arr = y_arr.astype(bool)
    return y_arr


def _scores(score: np.ndarray, n: int, name: str, where: str) -> np.ndarray:
    s = np.asarray(score, dtype=float)
    if len(s) != n:
        raise ValueError(f"{where}: {name!r} has {len(s)} rows, expected {n}")
    bad = np.flatnonzero(~np.isfinite(s))
    if bad.size:
        raise ValueError(f"{where}: {name!r} must be finite, got {s[bad[0]]} at row {bad[0]}; "
                         f"{bad.size} row(s) affected")
    return s


def _on_axis(values: pd.Series, log: bool) -> np.ndarray:
    v = values.to_numpy(dtype=float)
    return np.clip(v, LOG_FLOOR, 1.0) if log else v


def _limits(values: np.ndarray, log: bool) -> tuple[float, float]:
    if not log:
        return 0.0, 1.0
    lo = 10 ** np.floor(np.log10(values.min()))
    hi = min(1.0, 10 ** np.ceil(np.log10(values.max())))
    return float(lo), float(max(hi, lo * 10))
