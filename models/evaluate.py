"""Walk-forward evaluation: every model and every baseline scored on the same out-of-time rows.

Choices, stated once:

- **Out-of-fold pooling.** Each fold's models are fitted on its train period, calibrated
  on its calibration period and score only its test period; the test periods of all
  folds are then pooled into one table. Below-zero outcomes cluster in a handful of
  crashes, so a single test window holds one or two of them; pooling the folds is how
  the metrics see several, each predicted by a model that had only the past.
- **Same rows for everyone.** Rows whose label is unknown are dropped once, before any
  score is computed; every baseline and model is then scored on exactly those rows.
- **Baselines** (:mod:`liqrisk.models.baselines`): the margin-ratio and leverage rules
  (rank-only: not probabilities) and the structural first-passage probabilities of the
  barrier that defines the label (the bankruptcy price for ``negative``, the liquidation
  price for ``liquidated``), plain and fat-tailed. A score that cannot be computed
  (NaN: no volatility yet, no leverage cap) ranks last: rules get ``-1`` (below every
  real value, which are >= 0) and probabilities ``0``.
- **Expected shortfall** (PD × LGD × EAD, :mod:`liqrisk.models.shortfall`) of each model,
  ``<model>_expected_shortfall``, is a dollar ranking, scored rank-only beside the
  probabilities: it is the score that should carry the bad-debt dollars at a fixed alert
  budget.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV

from liqrisk.features.durations import parse_duration
from liqrisk.models.baselines import (
    fat_tail_baseline,
    leverage_rule,
    margin_ratio_rule,
    structural_baseline,
)
from liqrisk.models.metrics import metrics_table
from liqrisk.models.shortfall import Severity, exposure, fit_severity
from liqrisk.models.splits import Split
from liqrisk.models.train import (
    MODEL_KINDS,
    CalibrationMethod,
    calibrate,
    model_frame,
    train_split,
    uncalibrated,
)

RULES: tuple[str, ...] = ("margin_ratio_rule", "leverage_rule")
STRUCTURAL: tuple[str, ...] = ("structural", "structural_fat_tail")
BASELINES: tuple[str, ...] = (*RULES, *STRUCTURAL)
EXTRA: tuple[str, ...] = ("lightgbm_uncalibrated", "lightgbm_isotonic")
ES_SUFFIX = "_expected_shortfall"


def label_parts(label: str) -> tuple[str, str]:
    """``"negative_24h"`` -> ``("negative", "24h")``."""
    event, _, horizon = label.rpartition("_")
    if event not in ("negative", "liquidated") or not horizon:
        raise ValueError(f"label must be negative_<H> or liquidated_<H>, got {label!r}")
    return event, horizon


def baseline_scores(table: pd.DataFrame, *, label: str) -> dict[str, np.ndarray]:
    """The four baselines of the module docstring for ``label``, one finite score per row of ``table``."""
    event, horizon = label_parts(label)
    column = "p_bankrupt" if event == "negative" else "p_liq"
    h = parse_duration(horizon)
    return {
        "margin_ratio_rule": np.nan_to_num(margin_ratio_rule(table)["score"].to_numpy(dtype=float), nan=-1.0),
        "leverage_rule": np.nan_to_num(leverage_rule(table)["score"].to_numpy(dtype=float), nan=-1.0),
        "structural": np.nan_to_num(structural_baseline(table, horizon=h)[column].to_numpy(dtype=float), nan=0.0),
        "structural_fat_tail": np.nan_to_num(fat_tail_baseline(table, horizon=h)[column].to_numpy(dtype=float), nan=0.0),
    }


@dataclass
class WalkForward:
    """Out-of-fold test scores of every model, and the last fold's fitted models."""

    label: str
    rows: np.ndarray  # positions in the table, every fold's test rows with a known label
    fold: np.ndarray  # the fold of each of ``rows``
    scores: dict[str, np.ndarray]  # name -> score per entry of ``rows``
    last_models: dict[str, CalibratedClassifierCV]
    last_severity: Severity | None = None  # ``negative_*``: the last fold's severity model


def walk_forward(
    table: pd.DataFrame,
    splits: Sequence[Split],
    *,
    label: str,
    seed: int,
    models: Sequence[str] = MODEL_KINDS,
    n_estimators: int = 500,
    method: CalibrationMethod = "sigmoid",
    n_jobs: int = 2,
) -> WalkForward:
    """Fit, calibrate and score every fold of ``splits`` for ``label`` (row positions index ``table``).

    Scores: each of ``models`` (calibrated with ``method``); for LightGBM also its raw
    probabilities (``lightgbm_uncalibrated``), an isotonic calibration of the same model
    (``lightgbm_isotonic``, so the report can compare the two); for ``negative_*`` each
    model's expected shortfall (``<model>_expected_shortfall``).
    """
    event, horizon = label_parts(label)
    X = model_frame(table)
    known = ~table[label].isna().to_numpy()
    rows, folds, parts = [], [], []
    last: dict[str, CalibratedClassifierCV] = {}
    severity_model: Severity | None = None
    for split in splits:
        test = split.test[known[split.test]]
        fitted = train_split(
            table, split, label=label, seed=seed, method=method, n_estimators=n_estimators, n_jobs=n_jobs, models=models
        )
        scores = {name: m.predict_proba(X.iloc[test])[:, 1] for name, m in fitted.items()}
        if event == "negative":
            train = split.train[known[split.train]]
            severity_model = fit_severity(
                X.iloc[train],
                table[f"shortfall_{horizon}"].to_numpy(dtype=float)[train],
                exposure(table.iloc[train]),
                table[label].to_numpy()[train].astype(bool),
                seed=seed,
                n_jobs=n_jobs,
            )
            severity = severity_model.predict(X.iloc[test]) * exposure(table.iloc[test])
            scores |= {f"{name}{ES_SUFFIX}": scores[name] * severity for name in fitted}
        if "lightgbm" in fitted:
            raw = uncalibrated(fitted["lightgbm"])
            cal = split.calibration[known[split.calibration]]
            y_cal = table[label].to_numpy()[cal].astype(bool)
            scores["lightgbm_uncalibrated"] = raw.predict_proba(X.iloc[test])[:, 1]
            isotonic = calibrate(raw, X.iloc[cal], y_cal, method="isotonic")
            scores["lightgbm_isotonic"] = isotonic.predict_proba(X.iloc[test])[:, 1]
        rows.append(test)
        folds.append(np.full(len(test), split.fold))
        parts.append(scores)
        last = fitted
    names = list(parts[0])
    return WalkForward(
        label=label,
        rows=np.concatenate(rows),
        fold=np.concatenate(folds),
        scores={n: np.concatenate([p[n] for p in parts]) for n in names},
        last_models=last,
        last_severity=severity_model,
    )


def evaluation_table(table: pd.DataFrame, result: WalkForward, *, budgets: Sequence[float] = (0.01, 0.05)) -> pd.DataFrame:
    """:func:`~liqrisk.models.metrics.metrics_table` of every model and baseline on the pooled test rows,
    per asset class and overall, plus a ``kind`` column (model, baseline, rule)."""
    _, horizon = label_parts(result.label)
    rows = table.iloc[result.rows]
    scores = {**result.scores, **baseline_scores(rows, label=result.label)}
    rank_only = [*RULES, *(n for n in scores if n.endswith(ES_SUFFIX))]
    metrics = metrics_table(
        rows.assign(**{result.label: rows[result.label].astype(bool)}),
        scores,
        label=result.label,
        bad_debt=f"shortfall_{horizon}",
        budgets=budgets,
        rank_only=rank_only,
    )
    kind = {n: "rule" for n in RULES} | {n: "structural" for n in STRUCTURAL}
    metrics.insert(2, "kind", metrics["model"].map(lambda n: kind.get(n, "model")))
    return metrics
