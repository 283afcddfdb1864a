"""Shared fixtures: ``liqrisk replay`` through its file interface, MLflow stores, a model-ready table.

MLflow: creating a database runs its Alembic migrations (1-2 s), so one migrated SQLite
store is built per session and copied (ms) into each test's folder.
"""

import json
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from hypothesis import settings
from mlflow.tracking import MlflowClient

from liqrisk.pipelines.cli import main

# No timed assertions: Hypothesis' per-example deadline (200 ms) failed a correct test on a
# loaded 2-core machine. Speed is measured in bench/, not asserted here.
settings.register_profile("liqrisk", deadline=None)
settings.load_profile("liqrisk")

RunReplay = Callable[..., pd.DataFrame]


def write_accounts(path: Path, accounts: Sequence[dict[str, Any] | str]) -> None:
    """One account a line; a ``str`` is written as is (for malformed-line tests)."""
    lines = [a if isinstance(a, str) else json.dumps(a) for a in accounts]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def run_replay(tmp_path: Path) -> RunReplay:
    """Write bars, instruments and accounts to files, run ``liqrisk replay``, read OUTCOMES.csv.

    The result keeps every field as the string written (``""`` where empty), so tests
    can check the exact output format; ``.attrs["exit_code"]`` holds the exit code.
    """

    def run(
        bars: pd.DataFrame,
        instruments: dict[str, Any],
        accounts: Sequence[dict[str, Any] | str],
        horizon: str = "24h",
        bars_format: str = "parquet",
    ) -> pd.DataFrame:
        bars_path = tmp_path / f"bars.{bars_format}"
        if bars_format == "parquet":
            bars.to_parquet(bars_path, index=False)
        else:
            bars.to_csv(bars_path, index=False)
        instruments_path = tmp_path / "instruments.json"
        instruments_path.write_text(json.dumps(instruments))
        accounts_path = tmp_path / "accounts.jsonl"
        write_accounts(accounts_path, accounts)
        out = tmp_path / "outcomes.csv"
        code = main(
            [
                "replay",
                "--bars", str(bars_path),
                "--instruments", str(instruments_path),
                "--accounts", str(accounts_path),
                "--horizon", horizon,
                "--out", str(out),
            ]
        )
        if code != 0:
            frame = pd.DataFrame()
        else:
            frame = pd.read_csv(out, dtype=str, keep_default_na=False)
        frame.attrs["exit_code"] = code
        return frame

    return run


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


def synthetic_dataset(n: int = 6000, *, seed: int = 0, days: int = 1100) -> pd.DataFrame:
    """A table shaped like ``liqrisk build`` output (every feature, labels for 1h/24h/7d) whose
    labels follow leverage, distance to liquidation and volatility, over ``days`` days from 2020.
    Outcomes are nested as the contract makes them: negative implies liquidated, and an event
    within a shorter horizon is one within every longer horizon."""
    from liqrisk.models.train import ASSET_CLASSES, NUMERIC

    rng = np.random.default_rng(seed)
    table = pd.DataFrame({c: rng.normal(size=n) for c in NUMERIC})
    table["leverage"] = rng.lognormal(1.5, 0.8, size=n)
    table["dist_liq_pct"] = rng.uniform(0.001, 0.5, size=n)
    table["dist_bankrupt_pct"] = table["dist_liq_pct"] + 0.01
    table["margin_ratio"] = np.where(rng.random(n) < 0.01, np.inf, rng.uniform(0, 1, size=n))
    table["vol_ewma_rm"] = rng.uniform(0.005, 0.05, size=n)
    table["kurt_30d"] = rng.uniform(0, 10, size=n)
    table["bar_hours"] = 1.0
    table["log_notional"] = rng.normal(4.0, 1.0, size=n)
    table["asset_class"] = rng.choice(list(ASSET_CLASSES), size=n)
    table["symbol"] = table["asset_class"].str.upper()
    table["account_id"] = [f"acct-{i}" for i in range(n)]
    start = pd.Timestamp("2020-01-01", tz="UTC")
    table["as_of"] = (start + pd.to_timedelta(np.sort(rng.uniform(0, days, size=n)), unit="D")).astype(
        "datetime64[us, UTC]"
    )
    risk = 0.15 * table["leverage"] - 6.0 * table["dist_liq_pct"] + 0.8 * table["vol_1d"]
    u_liq, u_neg = rng.random(n), rng.random(n)
    for shift, h in zip((-3.0, -1.5, 0.0), ("1h", "24h", "7d")):
        liquidated = u_liq < 1 / (1 + np.exp(-(shift - 1.0 + risk)))
        negative = liquidated & (u_neg < 1 / (1 + np.exp(-(shift - 2.0 + risk))))
        table[f"liquidated_{h}"] = pd.array(liquidated, dtype="boolean")
        table[f"negative_{h}"] = pd.array(negative, dtype="boolean")
        table[f"shortfall_{h}"] = np.where(negative, 10 ** table["log_notional"] * rng.uniform(0, 0.05, size=n), 0.0)
    return table


@pytest.fixture(scope="session")
def make_dataset() -> Callable[..., pd.DataFrame]:
    """:func:`synthetic_dataset`, as a fixture so test modules need not import conftest."""
    return synthetic_dataset


def unexplained_model(table: pd.DataFrame, label: str) -> Any:
    """A calibrated classifier that neither the fast path nor :func:`contributions` knows
    (trees behind an encoder pipeline), fitted on ``table``'s model frame."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    from liqrisk.models.train import calibrate, model_frame

    X, y = model_frame(table), table[label].to_numpy(bool)
    prep = ColumnTransformer([("cat", OrdinalEncoder(), ["asset_class"])], remainder="passthrough")
    trees = Pipeline([("prep", prep), ("trees", HistGradientBoostingClassifier(max_iter=20, random_state=0))])
    half = len(X) // 2
    return calibrate(trees.fit(X.iloc[:half], y[:half]), X.iloc[half:], y[half:])


@pytest.fixture(scope="session")
def make_unexplained_model() -> Callable[..., Any]:
    """:func:`unexplained_model`, as a fixture."""
    return unexplained_model
