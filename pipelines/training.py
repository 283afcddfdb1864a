"""``liqrisk train``: walk-forward evaluation, the served bundle, MLflow tracking and the promotion gate.

The flow, on a built dataset (``liqrisk build``):

1. **Splits.** Expanding-window walk-forward splits over the rows since ``since``, with an
   embargo as long as the longest label horizon, so one set of splits serves every label.
2. **Evaluation.** For every label, every model kind and every baseline on the pooled
   out-of-fold test rows.
3. **Candidate.** Per label the model kind with the best pooled PR-AUC. The bundle
   (:class:`~liqrisk.models.bundle.RiskModel`) holds the *last fold's* fitted and
   calibrated models for every label: exactly what was evaluated on the last test period,
   so the gate compares like with like.
4. **Gate.** Candidate, baselines and the current champion on the last fold's test rows,
   PR-AUC and Brier (:mod:`liqrisk.models.promote`).
5. **Tracking.** One MLflow run: params, the dataset digest and data card, metrics, plots,
   the report, the model (pyfunc with signature and input example); the version is
   registered, and the ``champion`` alias moves only when the gate says so.
"""

import hashlib
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from liqrisk.features.durations import parse_duration
from liqrisk.models.bundle import RiskModel, contributions
from liqrisk.models.evaluate import (
    WalkForward,
    baseline_scores,
    evaluation_table,
    label_parts,
    walk_forward,
)
from liqrisk.models.metrics import evaluate_scores
from liqrisk.models.splits import Split, walk_forward_splits
from liqrisk.models.train import MODEL_KINDS, model_frame, uncalibrated

TARGET = "negative_24h"


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on besides the dataset; logged as the run's params."""

    dataset: Path = Path("runs/latest/dataset.parquet")
    out: Path = Path("runs/latest")
    tracking_dir: Path = Path("runs/mlflow")
    data_dir: Path = Path("data")
    seed: int = 7
    target: str = TARGET
    since: str = "2013-01-01"
    n_folds: int = 2
    min_train_days: int = 6 * 365
    calibration_days: int = 540
    n_estimators: int = 500
    model_name: str = "liqrisk"
    events: bool = True
    event_accounts: int = 2000

    def params(self) -> dict[str, Any]:
        return {k: str(v) for k, v in asdict(self).items()}


@dataclass
class TrainResult:
    """What a run measured and built (no MLflow in here)."""

    config: TrainConfig
    table: pd.DataFrame
    splits: list[Split]
    horizons: tuple[str, ...]
    walks: dict[str, WalkForward]
    evaluation: pd.DataFrame
    kind: str
    bundle: RiskModel
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def last_test(self) -> np.ndarray:
        """Row positions of the last fold's test period with a known target label."""
        walk = self.walks[self.config.target]
        return walk.rows[walk.fold == self.splits[-1].fold]


def dataset_horizons(table: pd.DataFrame) -> tuple[str, ...]:
    """The label horizons present in a dataset, shortest first (``negative_<H>`` columns)."""
    found = [c.removeprefix("negative_") for c in table.columns if c.startswith("negative_")]
    if not found:
        raise ValueError("dataset has no negative_<H> label columns; build it with `liqrisk build`")
    return tuple(sorted(found, key=parse_duration))


def dataset_digest(path: Path) -> str:
    """sha256 of the dataset file's bytes: the run's link to exactly the data it saw."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def training_splits(table: pd.DataFrame, config: TrainConfig, horizons: Sequence[str]) -> list[Split]:
    """Walk-forward splits with the embargo of the longest horizon (every label's window closes
    before the next period starts)."""
    longest = max(parse_duration(h) for h in horizons)
    return walk_forward_splits(
        table["as_of"],
        n_folds=config.n_folds,
        horizon=longest,
        min_train=pd.Timedelta(days=config.min_train_days),
        calibration=pd.Timedelta(days=config.calibration_days),
    )


def train_models(config: TrainConfig, table: pd.DataFrame) -> TrainResult:
    """Evaluate every label walk-forward with every model kind and assemble the candidate bundle:
    per label the kind with the best pooled PR-AUC (module docstring, steps 1–3)."""
    started = time.perf_counter()
    table = table[table["as_of"] >= pd.Timestamp(config.since, tz="UTC")].reset_index(drop=True)
    horizons = dataset_horizons(table)
    if config.target not in table.columns:
        raise ValueError(f"target {config.target!r} is not a label of the dataset (horizons {list(horizons)})")
    splits = training_splits(table, config, horizons)
    seconds: dict[str, float] = {}
    walks: dict[str, WalkForward] = {}
    labels = [config.target, *(f"{e}_{h}" for h in horizons for e in ("liquidated", "negative"))]
    for label in dict.fromkeys(labels):
        t0 = time.perf_counter()
        walks[label] = _walk(table, splits, config, label, MODEL_KINDS)
        seconds[label] = time.perf_counter() - t0
    evaluation = pd.concat(
        [evaluation_table(table, w).assign(label=label) for label, w in walks.items()], ignore_index=True
    )
    kinds = {label: best_kind(evaluation[evaluation["label"] == label]) for label in walks}
    bundle = RiskModel(
        horizons=horizons,
        classifiers={label: w.last_models[kinds[label]] for label, w in walks.items()},
        severity={h: walks[f"negative_{h}"].last_severity for h in horizons},
        kinds=kinds,
        info={
            "train_period": str(splits[-1].train_period),
            "calibration_period": str(splits[-1].calibration_period),
            "test_period": str(splits[-1].test_period),
            "train_end": splits[-1].calibration_period.end.isoformat(),
        },
    )
    kind = kinds[config.target]
    seconds["total"] = time.perf_counter() - started
    return TrainResult(config, table, splits, horizons, walks, evaluation, kind, bundle, seconds)


def best_kind(evaluation: pd.DataFrame) -> str:
    """The model kind with the highest pooled PR-AUC overall (ties: the order of ``MODEL_KINDS``)."""
    overall = evaluation[(evaluation["group"] == "all") & evaluation["model"].isin(MODEL_KINDS)]
    ranked = overall.set_index("model")["pr_auc"].reindex(list(MODEL_KINDS)).fillna(-1.0)
    return str(ranked.idxmax())


MIN_CLASS_EVENTS = 20


def target_check(evaluation: pd.DataFrame, *, label: str, kind: str, min_events: int = MIN_CLASS_EVENTS) -> pd.DataFrame:
    """Issue 5's target per group on the pooled test: PR-AUC at least twice the best rule's and
    above the structural baseline's (groups with at least ``min_events`` events), and the top 1%
    by expected shortfall carrying at least 70% of the bad-debt dollars."""
    rows = []
    for group, g in evaluation[evaluation["label"] == label].groupby("group", sort=False):
        m = g.set_index("model")
        pr = float(m.loc[kind, "pr_auc"])
        rule = float(m.loc[["margin_ratio_rule", "leverage_rule"], "pr_auc"].max())
        structural = float(m.loc["structural", "pr_auc"])
        dollars = f"{kind}_expected_shortfall"
        share = float(m.loc[dollars, "bad_debt_share@1%"]) if dollars in m.index else float("nan")
        enough = int(m.loc[kind, "n_pos"]) >= min_events
        rows.append(
            {
                "group": group, "events": int(m.loc[kind, "n_pos"]), "pr_auc": pr, "best_rule": rule,
                "ratio_to_rule": pr / rule if rule > 0 else float("nan"), "structural": structural,
                "pr_auc_met": bool(enough and pr >= 2 * rule and pr > structural) if enough else None,
                "bad_debt_share@1%": share, "bad_debt_met": bool(share >= 0.7) if not np.isnan(share) else None,
            }
        )
    return pd.DataFrame(rows)


def gate_metrics(result: TrainResult, champion: RiskModel | None) -> dict[str, Any]:
    """PR-AUC and Brier of the candidate, each baseline and the champion on the last test period."""
    label = result.config.target
    _, horizon = label_parts(label)
    rows = result.table.iloc[result.last_test]
    y = rows[label].to_numpy(dtype=bool)
    debt = rows[f"shortfall_{horizon}"].to_numpy(dtype=float)
    candidate = result.bundle.predict(rows)[f"p_negative_{horizon}"].to_numpy()
    keep = ("pr_auc", "brier", "n", "n_pos")

    def measured(score: np.ndarray, probability: bool) -> dict[str, float]:
        m = evaluate_scores(y, score, bad_debt=debt, is_probability=probability)
        return {k: m[k] for k in keep}

    baselines = {
        name: measured(score, probability=name.startswith("structural"))
        for name, score in baseline_scores(rows, label=label).items()
    }
    out: dict[str, Any] = {"candidate": measured(candidate, True), "baselines": baselines, "champion": None}
    if champion is not None:
        out["champion"] = measured(champion.predict(rows)[f"p_negative_{horizon}"].to_numpy(), True)
    return out


def target_contributions(result: TrainResult, *, limit: int = 20_000) -> pd.DataFrame | None:
    """Per-feature contributions of the target classifier on (at most ``limit``) last-test rows."""
    rows = result.table.iloc[result.last_test[:limit]]
    return contributions(uncalibrated(result.bundle.classifiers[result.config.target]), model_frame(rows))


def write_json(path: Path, payload: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def _walk(table: pd.DataFrame, splits: list[Split], config: TrainConfig, label: str, kinds: Sequence[str]) -> WalkForward:
    print(f"liqrisk train: {label} ({', '.join(kinds)}) over {len(splits)} folds", file=sys.stderr)
    return walk_forward(table, splits, label=label, seed=config.seed, models=kinds, n_estimators=config.n_estimators)


def train_command(config: TrainConfig) -> int:
    """Train, evaluate, back-test, log to MLflow, gate and register; print where everything is."""
    import mlflow
    from mlflow.models import infer_signature

    from liqrisk.models.bundle import RiskModelPyfunc, input_example, requirements
    from liqrisk.models.promote import decide, gate_and_register
    from liqrisk.models.tracking import configure_tracking
    from liqrisk.pipelines.training_report import event_figures, figures, write_training_report

    if not config.dataset.exists():
        raise FileNotFoundError(f"liqrisk train: no dataset at {config.dataset}; run `liqrisk build` first")
    card_path = config.dataset.parent / "data_card.json"
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    result = train_models(config, pd.read_parquet(config.dataset))
    target = configure_tracking(config.tracking_dir)
    champion, champion_label = load_champion(config.model_name)
    gate = gate_metrics(result, champion)
    decision = decide(gate["candidate"], gate["baselines"], gate["champion"], champion_label=champion_label)
    backtests, skipped = (None, None)
    if config.events:
        backtests, skipped = event_backtests(result)
    out = config.out
    figs = figures(result, target_contributions(result))
    check = target_check(result.evaluation, label=config.target, kind=result.kind)
    event_figs = event_figures(backtests) if backtests is not None and len(backtests) else {}
    digest = dataset_digest(config.dataset)
    with mlflow.start_run(run_name=f"{config.target}-{result.kind}") as run:
        kinds = {f"kind.{label}": kind for label, kind in result.bundle.kinds.items()}
        mlflow.log_params(config.params() | kinds | {"horizons": ",".join(result.horizons)})
        mlflow.set_tags({"dataset_sha256": digest, "dataset_config_hash": card.get("config_hash", ""), "target": config.target})
        for split in result.splits:
            mlflow.log_dict(split.record(), f"splits/fold_{split.fold}.json")
        if card:
            mlflow.log_dict(card, "dataset/data_card.json")
        mlflow.log_metrics(run_metrics(result.evaluation))
        evaluation_csv = result.evaluation.to_csv(index=False)
        mlflow.log_text(evaluation_csv, "evaluation/metrics.csv")
        for stem, fig in {**figs, **event_figs}.items():
            mlflow.log_figure(fig, f"plots/{stem}.png")
        if backtests is not None:
            mlflow.log_text(backtests.to_csv(index=False), "evaluation/event_backtests.csv")
        rows = result.table.iloc[result.last_test]
        example = input_example(rows)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=RiskModelPyfunc(result.bundle),
            signature=infer_signature(example, result.bundle.predict(example)),
            input_example=example,
            pip_requirements=requirements(),
        )
        outcome = gate_and_register(model_uri=info.model_uri, run_id=run.info.run_id, name=config.model_name, decision=decision)
        meta = {
            "dataset": f"{config.dataset} (sha256 {digest[:16]}…)",
            "MLflow run": f"{run.info.run_id} in {target.tracking_uri}",
            "registered": f"{config.model_name} v{outcome.version}; champion v{outcome.champion_version}",
            "MLflow UI": target.ui_command,
            "created": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
        }
        report = write_training_report(
            out / "report.html", result, figs=figs, decision=decision.record(), meta=meta,
            backtests=backtests, skipped_events=skipped, event_figs=event_figs, target=check,
        )
        mlflow.log_artifact(str(report), "report")
    out.mkdir(parents=True, exist_ok=True)
    result.evaluation.to_csv(out / "evaluation.csv", index=False)
    check.to_csv(out / "target_check.csv", index=False)
    if backtests is not None:
        backtests.to_csv(out / "event_backtests.csv", index=False)
    write_json(out / "promotion.json", decision.record() | {"version": outcome.version, "champion_version": outcome.champion_version})
    _print_summary(result, decision.promote, outcome, report, target.ui_command, check)
    return 0


def run_metrics(evaluation: pd.DataFrame) -> dict[str, float]:
    """Flat MLflow metric names ``<label>.<group>.<model>.<metric>`` for the gate's and the
    issue's figures (NaN left out: MLflow stores it, but it reads as a number in the UI)."""
    out = {}
    for row in evaluation.to_dict("records"):
        for metric in ("pr_auc", "roc_auc", "brier", "ece", "bad_debt_share@1%", "recall@5%"):
            value = float(row[metric])
            if np.isfinite(value):
                name = metric.replace("@", "_at_").replace("%", "pct")
                out[f"{row['label']}.{row['group']}.{row['model']}.{name}"] = value
    return out


def load_champion(name: str) -> tuple[RiskModel | None, str]:
    """The current champion's :class:`RiskModel` and a label for the gate's reasons."""
    import mlflow

    from liqrisk.models.promote import current_champion

    version = current_champion(name)
    if version is None:
        return None, "champion"
    model = mlflow.pyfunc.load_model(f"models:/{name}/{version.version}").unwrap_python_model().model
    return model, f"champion v{version.version}"


MIN_TRAIN_EVENTS = 20


def event_backtests(result: TrainResult) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """:func:`~liqrisk.pipelines.backtest.run_event_backtests` with the candidate's model kind
    refitted on the rows whose target window closed before each event, beside the baselines.

    The refit is uncalibrated: a back-test flags a fixed share of the accounts, which only
    the ranking decides. An event with fewer than :data:`MIN_TRAIN_EVENTS` below-zero rows
    before it is skipped with that reason.
    """
    from liqrisk.models.baselines import leverage_rule, margin_ratio_rule, structural_baseline
    from liqrisk.models.train import early_stopping_rows, fit_hist_gb, fit_lightgbm, fit_logistic
    from liqrisk.pipelines.backtest import NoTrainingData, run_event_backtests

    config, table = result.config, result.table
    label = config.target
    _, horizon = label_parts(label)
    window = parse_duration(horizon)
    X = model_frame(table)
    known = ~table[label].isna().to_numpy()
    y = table[label].fillna(False).to_numpy(dtype=bool)
    closes = table["as_of"] + window

    def fit_scorers(cutoff: pd.Timestamp) -> dict[str, Any]:
        rows = np.flatnonzero(known & (closes <= cutoff).to_numpy())
        if y[rows].sum() < MIN_TRAIN_EVENTS:
            raise NoTrainingData(
                f"{int(y[rows].sum())} below-zero {horizon} outcomes before {cutoff:%Y-%m-%d %H:%M} "
                f"(at least {MIN_TRAIN_EVENTS} needed to train)"
            )
        if result.kind == "logistic":
            model = fit_logistic(X.iloc[rows], y[rows], seed=config.seed)
        else:
            fit, valid = early_stopping_rows(table["as_of"], rows, embargo=window)
            fitter = fit_lightgbm if result.kind == "lightgbm" else fit_hist_gb
            model = fitter(X.iloc[fit], y[fit], X.iloc[valid], y[valid], seed=config.seed)
        return {
            result.kind: lambda rows: model.predict_proba(model_frame(rows))[:, 1],
            "margin_ratio_rule": margin_ratio_rule,
            "leverage_rule": leverage_rule,
            "structural": lambda rows: structural_baseline(rows, horizon=window)["p_bankrupt"],
        }

    done = run_event_backtests(
        fit_scorers, data_dir=config.data_dir, n_accounts=config.event_accounts, seed=config.seed
    )
    return done.table, done.skipped


def _print_summary(
    result: TrainResult, promoted: bool, outcome: Any, report: Path, ui: str, check: pd.DataFrame
) -> None:
    ev = result.evaluation
    label = result.config.target
    table = ev[(ev["label"] == label)].pivot_table(index="model", columns="group", values="pr_auc", sort=False)
    print(f"\nliqrisk train: {label}, PR-AUC on the pooled walk-forward test (rows: score, columns: asset class)")
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"\ntarget check ({result.kind}; PR-AUC needs >= {MIN_CLASS_EVENTS} events in the group):")
    print(check.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"\ncandidate {result.kind}: registered {outcome.name} v{outcome.version}; "
          f"{'promoted to champion' if promoted else 'not promoted'} (champion is v{outcome.champion_version})")
    print(f"report: {report}\nMLflow UI: {ui}")
