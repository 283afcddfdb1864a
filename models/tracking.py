"""Where MLflow state lives: an embedded SQLite store in a work folder, or a tracking server.

Choices, stated once:

- **SQLite, not ./mlruns.** MLflow 3.7+ defaults to SQLite anyway and keeps the file store in
  "keep-the-lights-on" mode; the registry (versions, aliases) needs a database. One file, under
  ``work_dir`` (default :data:`DEFAULT_TRACKING_DIR`), absolute so the store does not depend on
  the directory a command is started from.
- **Explicit artifact location.** The database holds metadata only. Without an
  ``artifact_location`` an experiment's artifacts (models, decision files) go to ``./mlruns``
  of whatever directory the first run happened to start in. So the experiment is created with
  ``<work_dir>/artifacts`` (a ``file://`` URI): database and artifacts stay together. The
  location is fixed when the experiment is created and absolute: move the folder and old
  artifacts are no longer found.
- **MLFLOW_TRACKING_URI overrides.** MLflow's own variable, so a tracking server configured
  for the MLflow CLI applies here too. It is used as is; a new experiment then gets the
  server's artifact root. (A database URI there, e.g. ``sqlite:///x.db``, works as well, but
  new experiments then put artifacts under ``./mlruns`` of the working directory.)
- **Registry URI = tracking URI**, so the promotion gate registers into the same store.
- **MLflow writes the variable itself.** ``mlflow.set_tracking_uri`` stores its URI in
  ``os.environ["MLFLOW_TRACKING_URI"]`` (for subprocesses). A URI this module set for an
  embedded store is therefore not read back as an override by a later call in the same
  process (a second ``work_dir`` gets its own store).
"""

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

import mlflow

DEFAULT_TRACKING_DIR = Path("runs/mlflow")
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
UI_PORT = 5000
# Stores that `mlflow ui` can open directly; anything else (http, databricks) is a server.
_DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "file")

# Embedded-store URIs set by configure_tracking in this process (see the module docstring).
_EMBEDDED_URIS: set[str] = set()


@dataclass(frozen=True)
class TrackingTarget:
    """Where runs, models and artifacts go, and how to look at them."""

    tracking_uri: str
    experiment_id: str
    experiment: str
    artifact_location: str
    ui_command: str


def configure_tracking(work_dir: Path, *, experiment: str = "liqrisk") -> TrackingTarget:
    """Point MLflow (tracking and registry) at one store and make ``experiment`` active.

    Parameters
    ----------
    work_dir : Path
        Folder of the embedded store (``mlflow.db`` and ``artifacts/``), created if missing;
        relative paths are resolved against the working directory. Unused when
        ``MLFLOW_TRACKING_URI`` is set.
    experiment : str
        Created if missing (embedded: with ``<work_dir>/artifacts`` as artifact location).

    Returns
    -------
    TrackingTarget
        ``artifact_location`` is the experiment's actual one (an existing experiment keeps
        its own); ``ui_command`` is what to run or open to see the runs.
    """
    server_uri = _server_uri()
    if server_uri is not None:
        uri, artifact_root = server_uri, None
    else:
        work_dir = work_dir.resolve()
        work_dir.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{(work_dir / 'mlflow.db').as_posix()}"
        artifact_root = (work_dir / "artifacts").as_uri()
        _EMBEDDED_URIS.add(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=artifact_root)
    active = mlflow.set_experiment(experiment)
    return TrackingTarget(
        tracking_uri=uri,
        experiment_id=active.experiment_id,
        experiment=experiment,
        artifact_location=active.artifact_location,
        ui_command=_ui_command(uri),
    )


def _server_uri() -> str | None:
    uri = os.environ.get(TRACKING_URI_ENV)
    return uri if uri and uri not in _EMBEDDED_URIS else None


def _ui_command(uri: str) -> str:
    scheme = uri.split(":", 1)[0].split("+", 1)[0]  # "postgresql+psycopg://..." -> "postgresql"
    if scheme in _DATABASE_SCHEMES:
        return f"mlflow ui --backend-store-uri {shlex.quote(uri)} --port {UI_PORT}"
    return f"Runs are on the MLflow tracking server {uri} (from {TRACKING_URI_ENV}); open its UI."
