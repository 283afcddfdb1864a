"""Service settings from the environment and .env, API key hashing and checking, `liqrisk serve`."""

import json
import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from liqrisk.pipelines.cli import main as liqrisk
from liqrisk.serve.security import authenticate
from liqrisk.serve.settings import (
    DEFAULT_TRACKING_URI,
    ApiKey,
    Scope,
    ServeSettings,
    hash_key,
)
from liqrisk.serve.settings import main as keytool


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No LIQRISK_SERVE__* or MLflow variables, and a working directory without .env."""
    import os

    for var in list(os.environ):
        if var.startswith(("LIQRISK_SERVE__", "MLFLOW_")):
            monkeypatch.delenv(var)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_defaults(clean_env: pytest.MonkeyPatch) -> None:
    s = ServeSettings()
    assert (s.model_name, s.model_alias, s.model_version) == ("liqrisk", "champion", None)
    assert s.tracking_uri == DEFAULT_TRACKING_URI and s.model_uri == "models:/liqrisk@champion"
    assert s.database_url == "sqlite:///runs/serve/warnings.db" and s.level_horizon == "24h"
    assert s.api_keys == [] and s.max_body_bytes == 5 * 1024 * 1024 and s.max_accounts == 10_000
    assert s.sqlite_synchronous == "FULL"  # durable against a power loss unless chosen otherwise


def test_environment_variables_nest_with_double_underscores(clean_env: pytest.MonkeyPatch) -> None:
    entry = {"name": "ops", "key_sha256": hash_key("secret-key").upper(), "scopes": ["score", "ingest"]}
    clean_env.setenv("LIQRISK_SERVE__MODEL_VERSION", "7")
    clean_env.setenv("LIQRISK_SERVE__THRESHOLDS__CRITICAL", "0.9")
    clean_env.setenv("LIQRISK_SERVE__API_KEYS", json.dumps([entry]))
    clean_env.setenv("LIQRISK_SERVE__RELOAD_SECONDS", "5")
    clean_env.setenv("LIQRISK_SERVE__SQLITE_SYNCHRONOUS", "NORMAL")
    s = ServeSettings()
    assert s.model_version == "7" and s.model_uri == "models:/liqrisk/7"
    assert s.thresholds.critical == 0.9 and s.thresholds.watch == 0.2
    assert s.api_keys[0].key_sha256 == hash_key("secret-key")  # normalised to lower case
    assert s.api_keys[0].scopes == {Scope.SCORE, Scope.INGEST}
    assert s.reload_seconds == 5 and s.sqlite_synchronous == "NORMAL"


def test_an_env_file_is_read(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("LIQRISK_SERVE__DATABASE_URL=postgresql://db/liqrisk\nOTHER=1\n")
    assert ServeSettings().database_url == "postgresql://db/liqrisk"


def test_mlflow_tracking_uri_wins_over_the_service_variable(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("LIQRISK_SERVE__TRACKING_URI", "sqlite:///mine.db")
    assert ServeSettings().tracking_uri == "sqlite:///mine.db"
    clean_env.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert ServeSettings().tracking_uri == "http://mlflow:5000"
    assert ServeSettings(tracking_uri="sqlite:///given.db").tracking_uri == "sqlite:///given.db"


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"level_horizon": "tomorrow"}, "level_horizon"),
        ({"api_keys": [{"name": "a", "key_sha256": "abc", "scopes": []}]}, "key_sha256"),
        ({"api_keys": [{"name": "a", "key_sha256": "0" * 64, "scopes": ["everything"]}]}, "scopes"),
        ({"thresholds": {"watch": 0.5, "warning": 0.4, "critical": 0.7}}, "strictly increasing"),
        ({"max_accounts": 0}, "max_accounts"),
        ({"sqlite_synchronous": "OFF"}, "sqlite_synchronous"),
    ],
)
def test_bad_settings_are_refused(clean_env: pytest.MonkeyPatch, changes: dict, words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        ServeSettings(**changes)


def test_keys_are_checked_by_their_hash() -> None:
    keys = [
        ApiKey(name="a", key_sha256=hash_key("alpha"), scopes=frozenset({Scope.SCORE})),
        ApiKey(name="b", key_sha256=hash_key("beta"), scopes=frozenset()),
    ]
    assert authenticate("alpha", keys).name == "a"
    assert authenticate("beta", keys).name == "b"
    assert authenticate(hash_key("alpha"), keys) is None  # the stored hash is not a key
    assert authenticate("", keys) is None and authenticate(None, keys) is None


def test_the_key_tool_prints_a_key_and_its_settings_entry(capsys: pytest.CaptureFixture) -> None:
    assert keytool(["new-key", "ops", "score", "warnings:read"]) == 0
    out = capsys.readouterr().out.splitlines()
    plain = out[0].rsplit(" ", 1)[1]
    entry = ApiKey.model_validate(json.loads(out[1].split(" ", 2)[2]))
    assert entry.key_sha256 == hash_key(plain) and entry.scopes == {Scope.SCORE, Scope.WARNINGS_READ}
    assert keytool(["new-key", "ops", "everything"]) == 2


def test_liqrisk_serve_runs_the_app_factory_under_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    calls, folders = [], []

    def run(*args: Any, **kwargs: Any) -> None:
        calls.append((args, kwargs))
        folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        folders.append(folder)
        assert folder is None or (Path(folder).is_dir() and not any(Path(folder).iterdir()))

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setattr(uvicorn, "run", run)
    assert liqrisk(["serve", "--port", "8123"]) == 0
    assert liqrisk(["serve", "--port", "8124", "--workers", "2", "--no-access-log"]) == 0
    assert calls == [
        (
            ("liqrisk.serve.app:create_app",),
            {"factory": True, "host": "127.0.0.1", "port": port, "workers": n, "access_log": logged},
        )
        for port, n, logged in ((8123, 1, True), (8124, 2, False))
    ]
    # the workers share an empty metrics folder of their own, gone with the service
    assert folders[0] is None and folders[1] is not None and not Path(folders[1]).exists()
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    assert liqrisk(["serve", "--workers", "0"]) == 2 and len(calls) == 2
