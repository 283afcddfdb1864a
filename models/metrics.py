"""Metrics that a risk team reads: ranking, calibration, and what a fixed alert budget catches.

Choices, stated once:

- **Probabilities vs rule scores.** Brier, log loss and ECE only mean something for
  probabilities. A rule score (margin ratio, leverage) is ranked but not calibrated, so for
  ``is_probability=False`` those three are NaN (skipped, not made up); compare rules on
  PR-AUC, ROC-AUC and the budget metrics. To judge a rule's calibration, calibrate it on the
  calibration period first: it is then a model and gets all metrics.
- **ECE** uses equal-frequency (quantile) bins by default: with rare events almost every
  probability sits near 0, and equal-width bins would put nearly all rows in the first bin
  and hide the miscalibration where the mass is. Equal scores always share a bin, so the
  result does not depend on row order. ``strategy="uniform"`` gives equal-width bins.
- **Alert budget.** The top ``k = ceil(budget * n)`` rows by score are flagged. Rows tied
  at the cut share the remaining slots pro rata (each counts ``slots / tied``), which is
  the expected result of a random tie-break: deterministic, independent of row order,
  and a coarse rule (many equal scores) is neither flattered nor punished by how the
  table happens to be sorted.
- **No positives** in a group: PR-AUC, ROC-AUC, recall are NaN (and ROC-AUC also when
  every row is positive); the bad-debt share is NaN when the group has no bad debt.
- **Log loss** clips probabilities to ``[1e-15, 1 - 1e-15]`` so one confident miss is a
  large, finite penalty rather than infinity.
"""

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

LOG_LOSS_EPS = 1e-15
OVERALL = "all"


def evaluate_scores(
    y: np.ndarray,
    score: np.ndarray,
    *,
    bad_debt: np.ndarray,
    budgets: Sequence[float] = (0.01, 0.05),
    is_probability: bool = True,
    n_bins: int = 15,
) -> dict[str, float]:
    """All metrics of one score against one binary label, on the same rows.

    Parameters
    ----------
    y : array of bool
        The event (e.g. ``negative_24h``).
    score : array of float
        Higher means riskier; a probability in [0, 1] when ``is_probability``.
    bad_debt : array of float
        Dollars lost per row (e.g. ``shortfall_24h``), >= 0.
    budgets : sequence of float
        Alert budgets as fractions of rows, each in (0, 1].
    is_probability : bool
        False for rule scores: Brier, log loss and ECE are then NaN.
    n_bins : int
        Bins of the expected calibration error.

    Returns
    -------
    dict
        ``n``, ``n_pos``, ``base_rate``, ``bad_debt``, ``pr_auc``, ``roc_auc``, ``brier``,
        ``log_loss``, ``ece`` and per budget ``b`` (label ``f"{100*b:g}%"``):
        ``flagged@1%``, ``recall@1%``, ``precision@1%``, ``bad_debt_share@1%``.
    """
    y, score, bad_debt = _checked(y, score, bad_debt, is_probability=is_probability)
    n, n_pos = len(y), int(y.sum())
    out: dict[str, float] = {
        "n": n,
        "n_pos": n_pos,
        "base_rate": n_pos / n if n else math.nan,
        "bad_debt": float(bad_debt.sum()),
        "pr_auc": float(average_precision_score(y, score)) if n_pos > 0 else math.nan,
        "roc_auc": float(roc_auc_score(y, score)) if 0 < n_pos < n else math.nan,
    }
    if is_probability and n:
        out["brier"] = float(np.mean((score - y) ** 2))
        out["log_loss"] = log_loss(y, score)
        out["ece"] = expected_calibration_error(y, score, n_bins=n_bins)
    else:
        out["brier"] = out["log_loss"] = out["ece"] = math.nan
    for budget in budgets:
        out.update(at_budget(y, score, bad_debt=bad_debt, budget=budget))
    return out


def at_budget(y: np.ndarray, score: np.ndarray, *, bad_debt: np.ndarray, budget: float) -> dict[str, float]:
    """Recall, precision and bad-debt share of the top ``ceil(budget * n)`` rows by score.

    Ties at the cut are shared pro rata (see the module docstring). Keys carry the budget,
    e.g. ``recall@1%``.
    """
    if not 0 < budget <= 1:
        raise ValueError(f"at_budget: budget must be in (0, 1], got {budget}")
    y, score, bad_debt = _checked(y, score, bad_debt, is_probability=False)
    n = len(y)
    k = math.ceil(budget * n - 1e-9)  # 1% of 300 rows is 3, not 4 from float round-off
    weight = flag_weights(score, k)
    caught = float(weight @ y)
    total_pos, total_debt = float(y.sum()), float(bad_debt.sum())
    tag = budget_label(budget)
    return {
        f"flagged@{tag}": k,
        f"recall@{tag}": caught / total_pos if total_pos else math.nan,
        f"precision@{tag}": caught / k if k else math.nan,
        f"bad_debt_share@{tag}": float(weight @ bad_debt) / total_debt if total_debt > 0 else math.nan,
    }


def flag_weights(score: np.ndarray, k: int) -> np.ndarray:
    """How much of each row is flagged when the ``k`` highest scores are: 1, 0, or a share at a tie.

    The weights sum to ``k``; rows tied with the ``k``-th highest score share its slots equally.
    """
    score = np.asarray(score, dtype=float)
    weight = np.zeros(len(score))
    if k <= 0:
        return weight
    if k >= len(score):
        return np.ones(len(score))
    cut = np.sort(score)[::-1][k - 1]
    above = score > cut
    tied = score == cut
    weight[above] = 1.0
    weight[tied] = (k - above.sum()) / tied.sum()
    return weight


def budget_label(budget: float) -> str:
    """0.01 -> "1%", 0.005 -> "0.5%"."""
    return f"{100 * budget:g}%"


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean negative log-likelihood, with ``p`` clipped to ``[1e-15, 1 - 1e-15]``."""
    y, p = np.asarray(y, dtype=float), np.clip(np.asarray(p, dtype=float), LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def calibration_bins(
    y: np.ndarray, p: np.ndarray, *, n_bins: int = 15, strategy: Literal["quantile", "uniform"] = "quantile"
) -> pd.DataFrame:
    """Rows per bin with mean predicted probability and observed frequency (a reliability table).

    ``quantile``: rows sorted by ``p`` fill ``n_bins`` bins of (nearly) equal count; a run of
    equal ``p`` goes whole into the bin of its first row, so bins may be uneven and empty
    bins are dropped. ``uniform``: bins ``[i/n_bins, (i+1)/n_bins)``, the last one closed.

    Returns
    -------
    DataFrame
        ``bin``, ``n``, ``mean_p``, ``frac_pos``; one row per non-empty bin, in order of ``p``.
    """
    if n_bins < 1:
        raise ValueError(f"calibration_bins: n_bins must be >= 1, got {n_bins}")
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    if strategy == "quantile":
        sorted_p = np.sort(p)
        first_rank = np.searchsorted(sorted_p, p, side="left")  # equal p -> same first rank
        bins = first_rank * n_bins // max(len(p), 1)
    elif strategy == "uniform":
        bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    else:
        raise ValueError(f"calibration_bins: strategy must be 'quantile' or 'uniform', got {strategy!r}")
    frame = pd.DataFrame({"bin": bins, "p": p, "y": y})
    table = frame.groupby("bin", sort=True).agg(n=("p", "size"), mean_p=("p", "mean"), frac_pos=("y", "mean"))
    return table.reset_index()


def expected_calibration_error(
    y: np.ndarray, p: np.ndarray, *, n_bins: int = 15, strategy: Literal["quantile", "uniform"] = "quantile"
) -> float:
    """``sum_b n_b / n * |frac_pos_b - mean_p_b|`` over the bins of :func:`calibration_bins`.

    NaN for no rows.
    """
    table = calibration_bins(y, p, n_bins=n_bins, strategy=strategy)
    if table.empty:
        return math.nan
    gap = (table["frac_pos"] - table["mean_p"]).abs()
    return float((table["n"] * gap).sum() / table["n"].sum())


def metrics_table(
    table: pd.DataFrame,
    scores: Mapping[str, np.ndarray],
    *,
    label: str,
    bad_debt: str,
    group: str = "asset_class",
    budgets: Sequence[float] = (0.01, 0.05),
    rank_only: Collection[str] = (),
    n_bins: int = 15,
) -> pd.DataFrame:
    """Every score on the same rows, per ``group`` value and overall (``group == "all"``).

    Parameters
    ----------
    table : DataFrame
        The evaluation rows: ``label`` (bool), ``bad_debt`` (float) and ``group`` columns.
    scores : mapping of name to array
        One score per row of ``table``, in its order, for each model and baseline.
    rank_only : collection of str
        Names in ``scores`` that are not probabilities (rules): their Brier, log loss and
        ECE are NaN.

    Returns
    -------
    DataFrame
        One row per (group, model): ``group``, ``model`` then the keys of
        :func:`evaluate_scores`. Groups sorted, ``"all"`` first; models in the given order.
        ``n_pos`` shows where there are too few events to read the rest.
    """
    unknown = set(rank_only) - set(scores)
    if unknown:
        raise ValueError(f"metrics_table: rank_only names no score: {sorted(unknown)}")
    for name, s in scores.items():
        if len(s) != len(table):
            raise ValueError(f"metrics_table: score {name!r} has {len(s)} rows, the table {len(table)}")
    y = table[label].to_numpy(dtype=bool)
    debt = table[bad_debt].to_numpy(dtype=float)
    groups = [(OVERALL, np.ones(len(table), dtype=bool))]
    values = table[group]
    groups += [(str(g), (values == g).to_numpy()) for g in sorted(values.dropna().unique(), key=str)]
    rows = []
    for g, mask in groups:
        for name, s in scores.items():
            metrics = evaluate_scores(
                y[mask],
                np.asarray(s, dtype=float)[mask],
                bad_debt=debt[mask],
                budgets=budgets,
                is_probability=name not in rank_only,
                n_bins=n_bins,
            )
            rows.append({"group": g, "model": name, **metrics})
    return pd.DataFrame(rows)


def _checked(
    y: np.ndarray, score: np.ndarray, bad_debt: np.ndarray, *, is_probability: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y_arr = np.asarray(y)
    if y_arr.dtype != bool:
        if not np.isin(y_arr, (0, 1)).all():
            raise ValueError("evaluate_scores: y must be bool (or 0/1), got other values or missing")
        y_arr = y_arr.astype(bool)
    s = np.asarray(score, dtype=float)
    d = np.asarray(bad_debt, dtype=float)
    if not len(y_arr) == len(s) == len(d):
        raise ValueError(f"evaluate_scores: lengths differ: y {len(y_arr)}, score {len(s)}, bad_debt {len(d)}")
    _require(np.isfinite(s), "score must be finite", s)
    _require(np.isfinite(d) & (d >= 0), "bad_debt must be finite and >= 0", d)
    if is_probability:
        _require((s >= 0) & (s <= 1), "score must be a probability in [0, 1] (pass is_probability=False for a rule score)", s)
    return y_arr, s, d


def _require(ok: np.ndarray, what: str, values: np.ndarray) -> None:
    if ok.all():
        return
    bad = np.flatnonzero(~ok)
    raise ValueError(f"evaluate_scores: {what}, got {values[bad[0]]} at row {bad[0]}; {len(bad)} row(s) affected")
