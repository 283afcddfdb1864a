"""Helpers for the API tests: a small real RiskModel, its registration in an MLflow store, a
small market data folder, accounts to score, waiting for readiness, and ``liqrisk serve`` run
in its own OS process."""

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Self

import httpx
import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient
from prometheus_client.parser import text_string_to_metric_families

from liqrisk.models.bundle import RiskModel, RiskModelPyfunc, requirements
from liqrisk.models.shortfall import exposure, fit_severity
from liqrisk.models.splits import walk_forward_splits
from liqrisk.models.train import model_frame, train_split
from liqrisk.serve.settings import ENV_PREFIX

HORIZONS = ("1h", "24h", "7d")
MODEL_NAME = "liqrisk"
MARKET = {"symbols": {"BTCUSDT": 40_000.0, "ETHUSDT": 2_000.0}, "start": "2024-01-01", "hours": 24 * 60, "seed": 3}
MARKET_END = pd.Timestamp(MARKET["start"], tz="UTC") + pd.Timedelta(hours=MARKET["hours"])  # last bar's close
AS_OF = MARKET_END.isoformat()  # every bar of the test market is complete by then
BTC = 40_000.0  # the test market's BTCUSDT starts here and wanders a few percent


def small_risk_model(table: pd.DataFrame) -> RiskModel:
    """A LightGBM RiskModel fitted in a few seconds on a synthetic table (see tests/conftest.py)."""
    split = walk_forward_splits(table["as_of"], n_folds=1, horizon=pd.Timedelta(days=7))[0]
    classifiers = {
        f"{e}_{h}": train_split(
            table, split, label=f"{e}_{h}", seed=0, n_estimators=20, n_jobs=1, models=("lightgbm",)
        )["lightgbm"]
        for h in HORIZONS
        for e in ("liquidated", "negative")
    }
    X = model_frame(table)
    severity = {
        h: fit_severity(
            X,
            table[f"shortfall_{h}"].to_numpy(),
            exposure(table),
            table[f"negative_{h}"].to_numpy(bool),
            seed=0,
            n_jobs=1,
        )
        for h in HORIZONS
    }
    return RiskModel(
        horizons=HORIZONS,
        classifiers=classifiers,
        severity=severity,
        kinds=dict.fromkeys(classifiers, "lightgbm"),
    )


def register(model: RiskModel, tracking_uri: str, *, alias: str | None = "champion") -> str:
    """Log ``model`` as a pyfunc, register a new version of :data:`MODEL_NAME`, point ``alias``
    at it; returns the version."""
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    experiment = client.get_experiment_by_name("serve-tests")
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else client.create_experiment(
            "serve-tests", artifact_location=_artifacts(tracking_uri).as_uri()
        )
    )
    with mlflow.start_run(experiment_id=experiment_id) as run:
        info = mlflow.pyfunc.log_model(
            name="model", python_model=RiskModelPyfunc(model), pip_requirements=requirements()
        )
    try:
        client.get_registered_model(MODEL_NAME)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(MODEL_NAME)
    created = client.create_model_version(MODEL_NAME, source=info.model_uri, run_id=run.info.run_id)
    version = str(created.version)
    if alias is not None:
        client.set_registered_model_alias(MODEL_NAME, alias, version)
    return version


def _artifacts(tracking_uri: str) -> Path:
    return Path(tracking_uri.removeprefix("sqlite:///")).parent / "artifacts"


def write_market(data_dir: Path, *, symbols: dict[str, float], start: str, hours: int, seed: int) -> Path:
    """Hourly bars of a random walk per symbol in ``data_dir/crypto_1h.parquet`` and an
    instruments file; returns ``data_dir``."""
    rng = np.random.default_rng(seed)
    frames = []
    ts = pd.date_range(start, periods=hours, freq="1h", tz="UTC").astype("datetime64[us, UTC]")
    for symbol, price in symbols.items():
        close = price * np.exp(np.cumsum(rng.normal(0, 0.004, size=hours)))
        open_ = np.r_[price, close[:-1]]
        spread = np.abs(rng.normal(0, 0.002, size=hours)) * close
        frames.append(
            pd.DataFrame(
                {
                    "symbol": symbol,
                    "ts": ts,
                    "open": open_,
                    "high": np.maximum(open_, close) + spread,
                    "low": np.minimum(open_, close) - spread,
                    "close": close,
                    "volume": rng.uniform(1e3, 1e4, size=hours),
                }
            )
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    pd.concat(frames, ignore_index=True).to_parquet(data_dir / "crypto_1h.parquet", index=False)
    instruments = {s: {"asset_class": "crypto", "depth_notional": 1e8} for s in symbols}
    (data_dir / "instruments.json").write_text(json.dumps(instruments))
    return data_dir


def write_late_file(data_dir: Path, symbol: str, *, hours: int, extra_hours: int) -> str:
    """A second bars file for ``symbol`` (``crypto_late.parquet``) holding only its last
    ``hours`` hourly bars of ``write_market`` and ``extra_hours`` more after them: it ends later,
    so the service takes the symbol from it, and begins later, so the hourly file holds the
    symbol's longer history. Returns the file's name."""
    hourly = pd.read_parquet(data_dir / "crypto_1h.parquet")
    mine = hourly[hourly["symbol"] == symbol].reset_index(drop=True)
    kept = mine.iloc[-hours:]
    extra = mine.iloc[-extra_hours:].assign(ts=lambda f: f["ts"] + pd.Timedelta(hours=extra_hours))
    pd.concat([kept, extra], ignore_index=True).to_parquet(data_dir / "crypto_late.parquet", index=False)
    return "crypto_late.parquet"


def wait_ready(client, timeout: float = 60.0) -> dict:
    """Poll ``/readyz`` until 200; returns its body."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get("/readyz")
        if response.status_code == 200:
            return response.json()
        if time.monotonic() > deadline:
            raise AssertionError(f"not ready after {timeout} s: {response.json()}")
        time.sleep(0.05)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def account(
    account_id: str,
    *,
    collateral: float = 20_000.0,
    qty: float = 1.0,
    entry: float = BTC,
    symbol: str = "BTCUSDT",
    side: int = 1,
    **extra: Any,
) -> dict[str, Any]:
    """A cross-margin account with one position (leverage about ``qty * entry / collateral``)."""
    return {
        "account_id": account_id,
        "margin_mode": "cross",
        "collateral": collateral,
        "positions": [{"symbol": symbol, "side": side, "qty": qty, "entry_price": entry}],
        **extra,
    }


def in_liquidation(account_id: str) -> dict[str, Any]:
    """Long 1 BTC bought at twice the price with little collateral: equity is far below zero."""
    return account(account_id, collateral=100.0, entry=2 * BTC)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """``liqrisk serve`` in its own OS process on a free loopback port, configured only through
    ``LIQRISK_SERVE__*`` variables (``settings``, names without the prefix); its output goes to
    ``log``. Starts at once; :meth:`wait_ready` waits for ``/readyz``. Use it as a context manager:
    leaving stops it with SIGTERM, as a process manager would."""

    def __init__(
        self, settings: dict[str, str], *, cwd: Path, log: Path, workers: int = 1, env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", ENV_PREFIX))}
        environ |= {f"{ENV_PREFIX}{name}": value for name, value in settings.items()} | (env or {})
        liqrisk = Path(sys.executable).parent / "liqrisk"
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [str(liqrisk), "serve", "--port", str(self.port), "--workers", str(workers)],
                env=environ,
                cwd=cwd,  # no stray .env is read
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Poll ``/readyz`` until 200; fail with the log's tail if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, trust_env=False) as http:
            while True:
                assert self.process.poll() is None, f"liqrisk serve exited:\n{self.tail()}"
                try:
                    if http.get("/readyz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, f"not ready after {timeout} s:\n{self.tail()}"
                time.sleep(0.1)

    def stop(self, timeout: float = 30.0) -> str:
        """SIGTERM, wait for the exit, and return the whole log."""
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=timeout)
        return self.log.read_text(errors="replace")

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def scrape(client: Any) -> dict[str, dict[tuple, float]]:
    """``GET /metrics`` as {sample name: {sorted label pairs: value}}."""
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples
