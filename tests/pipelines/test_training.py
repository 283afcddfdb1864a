import json
from collections.abc import Callable
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from liqrisk.pipelines.training import (
    TrainConfig,
    best_kind,
    load_champion,
    run_metrics,
    train_command,
)


@pytest.fixture
def dataset(tmp_path: Path, make_dataset: Callable[..., pd.DataFrame]) -> Path:
    path = tmp_path / "dataset" / "dataset.parquet"
    path.parent.mkdir()
    make_dataset(6000, seed=4).to_parquet(path, index=False)
    (path.parent / "data_card.json").write_text(json.dumps({"config_hash": "abc123", "rows": 6000}))
    return path


def _config(dataset: Path, work: Path, **kw) -> TrainConfig:
    return TrainConfig(
        dataset=dataset, out=work / "out", tracking_dir=work, since="2020-01-01", n_folds=2,
        min_train_days=300, calibration_days=200, n_estimators=40, events=False, **kw,
    )


@pytest.mark.slow
def test_train_command_tracks_registers_and_gates(dataset: Path, mlflow_work_dir: Path, capsys) -> None:
    config = _config(dataset, mlflow_work_dir)
    assert train_command(config) == 0
    out = config.out
    evaluation = pd.read_csv(out / "evaluation.csv")
    assert set(evaluation["label"]) == {f"{e}_{h}" for e in ("liquidated", "negative") for h in ("1h", "24h", "7d")}
    first = json.loads((out / "promotion.json").read_text())
    assert first["version"] == "1" and first["promote"] and "no current champion" in first["reasons"]
    html = (out / "report.html").read_text()
    for title in ("Summary", "Precision-recall", "Reliability", "Promotion gate"):
        assert title in html
    printed = capsys.readouterr().out
    assert str(out / "report.html") in printed and "mlflow ui" in printed

    client = MlflowClient()
    run = client.search_runs([client.get_experiment_by_name("liqrisk").experiment_id])[0]
    assert run.data.tags["dataset_config_hash"] == "abc123" and len(run.data.tags["dataset_sha256"]) == 64
    assert run.data.params["seed"] == "7"
    assert "negative_24h.all.structural.pr_auc" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/pr_curves.png" in artifacts and "plots/reliability.png" in artifacts
    assert (mlflow_work_dir / "artifacts").exists()  # the embedded store keeps artifacts beside it

    # The same data and seed again: the candidate equals the champion, so it is registered
    # but cannot beat it (strictly better is required) and the alias stays.
    assert train_command(config) == 0
    second = json.loads((out / "promotion.json").read_text())
    assert second["version"] == "2" and not second["promote"] and second["champion_version"] == "1"
    assert any("champion v1" in r for r in second["reasons"])
    assert client.get_model_version_by_alias("liqrisk", "champion").version in ("1", 1)

    champion, label = load_champion("liqrisk")
    assert label == "champion v1"
    rows = pd.read_parquet(dataset).iloc[:50]
    served = mlflow.pyfunc.load_model("models:/liqrisk@champion").predict(rows)
    pd.testing.assert_frame_equal(served, champion.predict(rows))


def test_best_kind_and_metric_names() -> None:
    evaluation = pd.DataFrame(
        {
            "label": ["negative_24h"] * 4,
            "group": ["all", "all", "all", "crypto"],
            "model": ["lightgbm", "logistic", "structural", "lightgbm"],
            "pr_auc": [0.01, 0.02, 0.5, 0.9],
            "roc_auc": [0.6, 0.7, 0.8, np.nan],
            "brier": [0.01, 0.01, 0.02, 0.01],
            "ece": [0.001, 0.002, 0.003, 0.004],
            "bad_debt_share@1%": [0.1, 0.2, 0.3, 0.4],
            "recall@5%": [0.1, 0.2, 0.3, 0.4],
        }
    )
    assert best_kind(evaluation) == "logistic"  # baselines are not candidates
    metrics = run_metrics(evaluation)
    assert metrics["negative_24h.all.logistic.bad_debt_share_at_1pct"] == 0.2
    assert "negative_24h.crypto.lightgbm.roc_auc" not in metrics  # NaN left out
