"""Helpers for the API tests: a small real RiskModel, its registration in an MLflow store, a
small market data folder, and waiting for readiness."""

import json
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from liqrisk.models.bundle import RiskModel, RiskModelPyfunc, requirements
from liqrisk.models.shortfall import exposure, fit_severity
from liqrisk.models.splits import walk_forward_splits
from liqrisk.models.train import model_frame, train_split

HORIZONS = ("1h", "24h", "7d")
MODEL_NAME = "liqrisk"
MARKET = {"symbols": {"BTCUSDT": 40_000.0, "ETHUSDT": 2_000.0}, "start": "2024-01-01", "hours": 24 * 60, "seed": 3}
MARKET_END = pd.Timestamp(MARKET["start"], tz="UTC") + pd.Timedelta(hours=MARKET["hours"])  # last bar's close


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
