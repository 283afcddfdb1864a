"""The service's configuration: one :class:`ServeSettings`, read from the environment and ``.env``.

Every key is ``LIQRISK_SERVE__<NAME>`` (nested with ``__``), the names the project-wide
``Settings`` example in ``docs`` uses for its ``serve`` section::

    LIQRISK_SERVE__MODEL_VERSION=7
    LIQRISK_SERVE__DATABASE_URL=postgresql://liqrisk@db/liqrisk
    LIQRISK_SERVE__THRESHOLDS__CRITICAL=0.6
    LIQRISK_SERVE__API_KEYS='[{"name": "ops", "key_sha256": "9f86…", "scopes": ["score"]}]'

The MLflow store is MLflow's own ``MLFLOW_TRACKING_URI`` when set (as for every liqrisk
command), else ``LIQRISK_SERVE__TRACKING_URI``, else the embedded store ``liqrisk train``
writes. API keys are stored as the SHA-256 of the key, never the key: make one with
``python -m liqrisk.serve.settings new-key NAME SCOPE...``.
"""

import hashlib
import json
import secrets
import sys
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from liqrisk.features.durations import parse_duration
from liqrisk.serve.levels import Thresholds
from liqrisk.serve.store import MAX_ACCOUNTS_PER_CALL

DEFAULT_TRACKING_URI = "sqlite:///runs/mlflow/mlflow.db"  # where `liqrisk train` registers
ENV_PREFIX = "LIQRISK_SERVE__"


class Scope(StrEnum):
    """What an API key may do; each route requires one."""

    SCORE = "score"  # POST /v1/score
    INGEST = "ingest"  # POST /v1/bars
    WARNINGS_READ = "warnings:read"  # GET /v1/warnings
    WEBHOOKS_ADMIN = "webhooks:admin"  # /v1/webhooks, /v1/deliveries
    ADMIN = "admin"  # POST /v1/admin/reload


class ApiKey(BaseModel):
    """One client's key: a name for the logs, the key's SHA-256 (hex) and its scopes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    key_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    scopes: frozenset[Scope] = frozenset()

    @field_validator("key_sha256", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value


class ServeSettings(BaseSettings):
    """Configuration of ``liqrisk serve``; see the module docstring for the variable names.

    Parameters
    ----------
    model_name, model_alias : str
        Registered model and the alias served (``champion``); moving the alias is picked up
        within ``reload_seconds``.
    model_version : str, optional
        Pin one version instead of following the alias.
    tracking_uri : str
        MLflow tracking and registry URI (``MLFLOW_TRACKING_URI`` wins over the default).
    data_dir : Path
        Bars files and ``instruments.json`` loaded at start.
    market_files : list of str
        Bars files in ``data_dir`` to load (empty: the market state's default).
    instruments_path : Path, optional
        Instruments JSON (default: ``data_dir/instruments.json``).
    database_url : str
        Warnings store, SQLite file or PostgreSQL URL.
    sqlite_synchronous : {"FULL", "NORMAL"}
        SQLite's ``synchronous`` (ignored for PostgreSQL). ``FULL``, the default: every commit
        that raises a warning or moves a level is fsynced before the request is answered, so
        a stored warning survives a power loss of the host (commits that only refresh
        probabilities never wait: ``liqrisk.serve.store``, durable where it counts).
        ``NORMAL`` (in WAL mode): a stored warning survives a crash of the service but the
        last commits may be lost with the host; no fsync on the request path, whose tail then
        no longer follows the disk's (measured on this project's VM: fsyncs of 100-300 ms
        every few seconds under load, bench/README.md).
    thresholds : Thresholds
        Warning levels of P(negative) at ``level_horizon``, with hysteresis.
    level_horizon : str
        The served horizon whose P(negative) drives warnings, e.g. ``"24h"``.
    api_keys : list of ApiKey
        No keys: every protected route answers 401.
    max_body_bytes : int
        Larger request bodies get 413.
    max_accounts : int
        Accounts per ``POST /v1/score``.
    max_queued : int
        Score requests that may wait behind the running batch (every waiting request: they
        wait on the event loop, not in threads); more get 503 with ``Retry-After`` at once.
        The default, 128, is a few tenths of a second of single-account requests for a busy
        process, which scores them in batches at 400-700/s (measured: bench/README.md); 32
        refused 9 of 4,001 requests at 200/s during a stall on a slow machine.
    reasons : int
        Reasons (feature contributions) returned per account.
    reload_seconds : float
        How often the alias is checked; 0 turns polling off (``POST /v1/admin/reload`` still
        works).
    outbox_enabled : bool
        Run the webhook sender in this process.
    outbox_poll_seconds : float
    bars_poll_seconds : float
        How often this process applies the bars other processes of the service logged (a bar
        posted to one replica is scored by the others within about this, plus the time to
        append it); 0: only at start and when this process ingests.
    webhook_allow_private : bool
        Allow webhook URLs on loopback, private or link-local addresses (off: SSRF guard).
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",  # .env may hold other components' variables
        validate_by_name=True,
        validate_by_alias=True,
    )

    model_name: str = Field(default="liqrisk", min_length=1)
    model_alias: str = Field(default="champion", min_length=1)
    model_version: str | None = None
    tracking_uri: str = Field(
        default=DEFAULT_TRACKING_URI,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", f"{ENV_PREFIX}TRACKING_URI"),
    )
    data_dir: Path = Path("data")
    market_files: list[str] = []
    instruments_path: Path | None = None
    database_url: str = "sqlite:///runs/serve/warnings.db"
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    thresholds: Thresholds = Thresholds()
    level_horizon: str = "24h"
    api_keys: list[ApiKey] = []
    max_body_bytes: int = Field(default=5 * 1024 * 1024, gt=0)
    max_accounts: int = Field(default=10_000, ge=1, le=MAX_ACCOUNTS_PER_CALL)
    max_queued: int = Field(default=128, ge=0)
    reasons: int = Field(default=3, ge=0, le=50)
    reload_seconds: float = Field(default=30.0, ge=0)
    outbox_enabled: bool = True
    outbox_poll_seconds: float = Field(default=1.0, gt=0)
    bars_poll_seconds: float = Field(default=0.5, ge=0)
    webhook_allow_private: bool = False

    @field_validator("model_version", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("level_horizon")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)  # raises ValueError naming the text
        return value

    @field_validator("api_keys")
    @classmethod
    def _unique_keys(cls, keys: list[ApiKey]) -> list[ApiKey]:
        for attr in ("name", "key_sha256"):
            values = [getattr(k, attr) for k in keys]
            if len(set(values)) != len(values):
                raise ValueError(f"api_keys: duplicate {attr}")
        return keys

    @property
    def model_uri(self) -> str:
        """``models:/name/version`` when pinned, else ``models:/name@alias``."""
        if self.model_version is not None:
            return f"models:/{self.model_name}/{self.model_version}"
        return f"models:/{self.model_name}@{self.model_alias}"


def hash_key(key: str) -> str:
    """SHA-256 hex digest of an API key: what ``api_keys[].key_sha256`` holds."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random API key (``lqr_`` + 43 URL-safe characters, 256 bits)."""
    return "lqr_" + secrets.token_urlsafe(32)


def main(argv: Sequence[str] | None = None) -> int:
    """``new-key NAME SCOPE...``: print a new key and its settings entry;
    ``hash``: read a key from stdin and print its SHA-256."""
    args = list(sys.argv[1:] if argv is None else argv)
    scopes = [s.value for s in Scope]
    if args[:1] == ["hash"] and len(args) == 1:
        print(hash_key(sys.stdin.readline().strip()))
        return 0
    if args[:1] == ["new-key"] and len(args) >= 3 and set(args[2:]) <= set(scopes):
        key = new_key()
        entry = ApiKey(name=args[1], key_sha256=hash_key(key), scopes=frozenset(args[2:]))
        print(f"key (give it to the client, it is not stored): {key}")
        print("settings entry:", json.dumps(entry.model_dump(mode="json") | {"scopes": args[2:]}))
        return 0
    print(
        "usage: python -m liqrisk.serve.settings new-key NAME SCOPE... | hash < keyfile\n"
        f"scopes: {' '.join(scopes)}",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
