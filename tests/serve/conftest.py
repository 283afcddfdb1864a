"""Fixtures for the warnings store and webhook sender: real databases and a real HTTP receiver.

``db_url`` runs a test once on a SQLite file and once on PostgreSQL. PostgreSQL is the server
at ``LIQRISK_TEST_POSTGRES_URL`` if set, else a throwaway one started from Debian's package
binaries (``postgres_server.py``); each test gets its own schema (``module_postgres_url``: each
module). Where no server can be had the PostgreSQL runs skip with the reason, or fail if
``LIQRISK_TEST_POSTGRES_REQUIRED=1``.
"""

import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine, make_url

from liqrisk.serve.store import create_engine_for, create_schema

sys.path.insert(0, str(Path(__file__).resolve().parent))
import postgres_server
from serve_support import Receiver


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a PostgreSQL database the tests may create schemas in."""
    given = os.environ.get("LIQRISK_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    try:
        server = postgres_server.start()
    except postgres_server.Unavailable as exc:
        if os.environ.get("LIQRISK_TEST_POSTGRES_REQUIRED") == "1":
            pytest.fail(f"PostgreSQL required but unavailable: {exc}")
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    try:
        yield server.url
    finally:
        server.stop()


@contextmanager
def postgres_schema(base: str) -> Iterator[str]:
    """A new, empty schema on the server at ``base``: yields a URL whose connections use it
    (``search_path``), and drops it afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine_for(base)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    url = make_url(base)
    url = url.update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a new schema on the PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'warnings.db'}"
        return
    with postgres_schema(request.getfixturevalue("postgres_url")) as url:
        yield url


@pytest.fixture(scope="module")
def module_postgres_url(postgres_url: str) -> Iterator[str]:
    """A new schema on the PostgreSQL server, kept for one test module (for a module's app)."""
    with postgres_schema(postgres_url) as url:
        yield url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """Engine on ``db_url`` with the schema created."""
    eng = create_engine_for(db_url)
    create_schema(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


# --- the HTTP service ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def risk_model(make_dataset):
    """A small real RiskModel (LightGBM, every horizon), trained once per session."""
    from api_support import small_risk_model

    return small_risk_model(make_dataset(3000, seed=1))


@pytest.fixture(scope="module")
def model_store(
    tmp_path_factory: pytest.TempPathFactory, migrated_mlflow_db: Path, risk_model
) -> Iterator[str]:
    """Tracking URI of a fresh MLflow store holding ``risk_model`` as ``liqrisk`` v1 @champion.

    MLflow's process-wide URIs (which the service sets too) are reset afterwards.
    """
    import shutil

    import mlflow
    from api_support import register

    with pytest.MonkeyPatch.context() as mp:
        for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID"):
            mp.setenv(var, "")
            mp.delenv(var)
        folder = tmp_path_factory.mktemp("mlflow")
        shutil.copy(migrated_mlflow_db, folder / "mlflow.db")
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        register(risk_model, uri)
        try:
            yield uri
        finally:
            mlflow.set_tracking_uri(None)
            mlflow.set_registry_uri(None)


@pytest.fixture(scope="module")
def market_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 days of hourly bars of BTCUSDT and ETHUSDT from 2024-01-01, and their instruments."""
    from api_support import MARKET, write_market

    return write_market(tmp_path_factory.mktemp("data"), **MARKET)
