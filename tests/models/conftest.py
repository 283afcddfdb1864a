"""MLflow fixtures: one migrated SQLite store per session, copied into each test's folder.

Creating an MLflow database runs its Alembic migrations (1-2 s); copying the file takes ms.
"""

import shutil
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

# mlflow.set_tracking_uri / set_registry_uri / set_experiment also write these to os.environ.
MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID")


@pytest.fixture(scope="session")
def migrated_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, fully migrated MLflow store (tracking and registry tables)."""
    db = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    MlflowClient(
        tracking_uri=f"sqlite:///{db}", registry_uri=f"sqlite:///{db}"
    ).search_experiments()
    return db


@pytest.fixture
def mlflow_clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No MLflow URI comes from the environment, and none leaks into later tests."""
    for var in MLFLOW_ENV:
        monkeypatch.setenv(var, "")  # records the original value, restored at teardown ...
        monkeypatch.delenv(var)  # ... which also removes whatever MLflow writes meanwhile
    yield
    mlflow.set_tracking_uri(None)  # forget the test's store (None unsets the global)
    mlflow.set_registry_uri(None)


@pytest.fixture
def mlflow_work_dir(
    tmp_path: Path, migrated_mlflow_db: Path, mlflow_clean: None, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """``tmp_path/runs/mlflow`` holding a copy of the migrated store; the cwd is ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    work_dir = tmp_path / "runs" / "mlflow"
    work_dir.mkdir(parents=True)
    shutil.copy(migrated_mlflow_db, work_dir / "mlflow.db")
    return work_dir
