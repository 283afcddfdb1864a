import shutil
from pathlib import Path

import mlflow
import pytest

from liqrisk.models.tracking import DEFAULT_TRACKING_DIR, configure_tracking


def test_embedded_store_keeps_database_and_artifacts_in_work_dir(
    tmp_path: Path, mlflow_clean: None, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)  # a fresh store: creating it is part of the test
    work_dir = tmp_path / DEFAULT_TRACKING_DIR

    target = configure_tracking(DEFAULT_TRACKING_DIR)  # relative: resolved against the cwd
    with mlflow.start_run() as run:
        mlflow.log_text("hello", "notes/hello.txt")

    db = work_dir / "mlflow.db"
    assert db.is_file()
    assert target.tracking_uri == f"sqlite:///{db}"
    assert mlflow.get_tracking_uri() == mlflow.get_registry_uri() == target.tracking_uri
    assert target.artifact_location == (work_dir / "artifacts").as_uri()
    assert run.info.experiment_id == target.experiment_id
    assert [p.read_text() for p in (work_dir / "artifacts").rglob("hello.txt")] == ["hello"]
    assert not (tmp_path / "mlruns").exists()
    assert target.ui_command.startswith("mlflow ui --backend-store-uri sqlite:///")
    assert str(db) in target.ui_command


def test_existing_store_and_experiment_are_reused(mlflow_work_dir: Path, migrated_mlflow_db: Path):
    first = configure_tracking(mlflow_work_dir, experiment="exp")
    other_dir = mlflow_work_dir.parent / "other"
    other_dir.mkdir()
    shutil.copy(migrated_mlflow_db, other_dir / "mlflow.db")

    # mlflow.set_tracking_uri put the first URI into MLFLOW_TRACKING_URI; it is not an override.
    other = configure_tracking(other_dir, experiment="exp")
    again = configure_tracking(mlflow_work_dir, experiment="exp")

    assert other.tracking_uri == f"sqlite:///{other_dir / 'mlflow.db'}"
    assert other.artifact_location == (other_dir / "artifacts").as_uri()
    assert again == first


def test_tracking_uri_from_environment_wins(
    tmp_path: Path, mlflow_clean: None, migrated_mlflow_db: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    server_db = tmp_path / "server.db"
    shutil.copy(migrated_mlflow_db, server_db)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{server_db}")
    unused = tmp_path / "unused"

    target = configure_tracking(unused)

    assert target.tracking_uri == f"sqlite:///{server_db}"
    assert mlflow.get_tracking_uri() == mlflow.get_registry_uri() == target.tracking_uri
    assert mlflow.get_experiment(target.experiment_id).name == "liqrisk"
    assert not unused.exists()
    assert str(server_db) in target.ui_command
