"""Scoring benchmark: the service's scorer (no HTTP) on 1 and 1,000 accounts, against the offline
path (features from the bars on every call, then ``RiskModel.predict``) on the same accounts.

    python bench/bench_scoring.py                                # model trained here (about 30 s)
    python bench/bench_scoring.py --model-uri models:/liqrisk@champion [--stages]

The market is the bundled bars (``MarketState.load``); accounts are seeded cross and isolated
books of one to three positions around the last close of the symbols whose bars are at most a
week old. Without ``--model-uri`` a LightGBM RiskModel is fitted on ``runs/latest/dataset.parquet``
(``liqrisk build``) with up to ``--trees`` trees a label. Both paths' probabilities are compared.
"""

import argparse
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from liqrisk.features.accounts import snapshots_from_dicts
from liqrisk.features.snapshot import market_features_from_bars, snapshot_features
from liqrisk.models.bundle import RiskModel
from liqrisk.models.shortfall import exposure, fit_severity
from liqrisk.models.splits import walk_forward_splits
from liqrisk.models.train import model_frame, train_split
from liqrisk.serve.market import MarketState
from liqrisk.serve.runtime import freeze_heap
from liqrisk.serve.scoring import Scorer

ROOT = Path(__file__).resolve().parents[1]
HORIZONS = ("1h", "24h", "7d")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-uri", help="an MLflow RiskModel (pyfunc) instead of training one")
    parser.add_argument("--trees", type=int, default=500)
    parser.add_argument("--files", nargs="*", default=[], help="bars files (default: every bundled one)")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--stages", action="store_true",
                        help="also time the scorer's stages on one account at a time (wraps them: a little slower)")
    args = parser.parse_args()

    started = time.perf_counter()
    market = MarketState.load(ROOT / "data", files=args.files)
    print(f"market: {len(market.symbols())} symbols loaded in {time.perf_counter() - started:.1f} s")
    model = load_model(args.model_uri) if args.model_uri else fit_model(args.trees, args.seed)
    scorer = Scorer(model, name="bench", version="0", market=market, instruments=market.instruments)
    accounts = seeded_accounts(market, 1000, seed=args.seed)
    started = time.perf_counter()
    scorer.score(accounts)
    print(f"first batch (bar-level feature tables computed): {time.perf_counter() - started:.2f} s\n")
    freeze_heap()  # as the service does after loading (serve/runtime.py)

    print(f"{'case':<38}{'median ms':>10}{'p99 ms':>9}{'accounts/s':>12}")
    for n in (1, 1000):
        times = timed(lambda i, n=n: scorer.score(accounts[i % 1000 : i % 1000 + 1] if n == 1 else accounts), args.repeat)
        report(f"scorer, {n} account(s)", times, n)
    offline = timed(lambda i: offline_scores(model, market, accounts), max(3, args.repeat // 10))
    report("offline path, 1000 accounts", offline, 1000)
    what_if = timed(lambda i: scorer.score(accounts, what_if={"add_collateral": 100.0, "cut": 0.2}), max(3, args.repeat // 5))
    report("scorer + what-if, 1000 accounts", what_if, 1000)

    served = pd.DataFrame(
        [{f"p_negative_{h}": r["horizons"][h]["p_negative"] for h in HORIZONS} for r in scorer.score(accounts) if r["status"] == "ok"]
    )
    reference = offline_scores(model, market, accounts)
    print(f"\nsame probabilities (1e-12): {np.allclose(served.to_numpy(), reference[served.columns].to_numpy(), rtol=1e-12, atol=1e-12)}")
    if args.stages:
        stage_times(scorer, accounts, args.repeat * 10, size=1)
        stage_times(scorer, accounts, args.repeat, size=1000)


# the scorer's stages, by where serve/scoring.py looks them up: module functions, then methods
STAGE_FUNCTIONS = ("accounts_from_dicts", "_errors", "state_at_as_of", "snapshot_columns", "_baselines", "model_matrix")
STAGE_METHODS = ("_horizons", "_explain", "_result")


def stage_times(scorer: Scorer, accounts: list[dict], calls: int, *, size: int) -> None:
    """Mean wall time per call of each stage over ``calls`` scores of ``size`` accounts (the
    stages wrapped in timers for this, then restored); ``rest``: the call's time outside them."""
    from liqrisk.serve import scoring

    spent: dict[str, float] = dict.fromkeys((*STAGE_FUNCTIONS, *STAGE_METHODS), 0.0)

    def timer(name, call):
        def timed_call(*args, **kwargs):
            started = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - started
        return timed_call

    saved = [(scoring, n, getattr(scoring, n)) for n in STAGE_FUNCTIONS]
    saved += [(Scorer, n, getattr(Scorer, n)) for n in STAGE_METHODS]
    for owner, name, call in saved:
        setattr(owner, name, timer(name, call))
    try:
        started = time.perf_counter()
        for i in range(calls):
            start = i % (len(accounts) - size + 1)
            scorer.score(accounts[start : start + size])
        total = time.perf_counter() - started
    finally:
        for owner, name, call in saved:
            setattr(owner, name, call)
    spent["rest"] = total - sum(spent.values())
    print(f"\nstages of {size} account(s) ({calls} calls, {total / calls * 1000:.2f} ms a call in all):")
    for name, seconds in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<22}{seconds / calls * 1000:>7.2f} ms")


def load_model(uri: str) -> RiskModel:
    return mlflow.pyfunc.load_model(uri).unwrap_python_model().model


def fit_model(trees: int, seed: int) -> RiskModel:
    """LightGBM for every label on the built dataset (since 2012), the last fold's split."""
    started = time.perf_counter()
    table = pd.read_parquet(ROOT / "runs" / "latest" / "dataset.parquet")
    table = table[table["as_of"] >= pd.Timestamp("2012-01-01", tz="UTC")].sort_values("as_of", kind="stable")
    table = table.reset_index(drop=True)
    split = walk_forward_splits(
        table["as_of"], n_folds=1, horizon=pd.Timedelta(days=7),
        min_train=pd.Timedelta(days=8 * 365), calibration=pd.Timedelta(days=900),
    )[0]
    labels = [f"{e}_{h}" for h in HORIZONS for e in ("liquidated", "negative")]
    classifiers = {
        label: train_split(table, split, label=label, seed=seed, n_estimators=trees, models=("lightgbm",))["lightgbm"]
        for label in labels
    }
    X = model_frame(table)
    severity = {
        h: fit_severity(X, table[f"shortfall_{h}"].to_numpy(), exposure(table), table[f"negative_{h}"].to_numpy(bool), seed=seed)
        for h in HORIZONS
    }
    print(f"model: LightGBM, up to {trees} trees a label, fitted in {time.perf_counter() - started:.0f} s")
    return RiskModel(horizons=HORIZONS, classifiers=classifiers, severity=severity, kinds=dict.fromkeys(labels, "lightgbm"))


def seeded_accounts(market: MarketState, n: int, *, seed: int) -> list[dict]:
    view = market.view()
    symbols = [s for s in view.symbols() if market.latest - market.latest_of(s) <= pd.Timedelta(days=7)]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        mode = "cross" if rng.random() < 0.6 else "isolated"
        picked = rng.choice(symbols, size=rng.integers(1, 4), replace=False)
        leverage = rng.lognormal(1.5, 0.6)
        positions = []
        for symbol in picked:
            entry = float(view.bars_of(symbol)["close"].iat[-1]) * (1 + rng.normal(0, 0.03))
            position = {"symbol": str(symbol), "side": int(rng.choice([1, -1])), "qty": 1000 * leverage / len(picked) / entry, "entry_price": entry}
            if mode == "isolated":
                position["collateral"] = 1000 / len(picked)
            positions.append(position)
        account = {"account_id": f"bench-{i}", "margin_mode": mode, "positions": positions}
        if mode == "cross":
            account["collateral"] = 1000.0
        out.append(account)
    return out


def offline_scores(model: RiskModel, market: MarketState, accounts: list[dict]) -> pd.DataFrame:
    """The pipeline's way: market features from the bars (no cache), then predict the ok rows."""
    table = offline_table(market, accounts)
    return model.predict(table[table["status"] == "ok"])


def offline_table(market: MarketState, accounts: list[dict]) -> pd.DataFrame:
    """The accounts' snapshot features at the market's latest bar, computed as the dataset build
    computes them (market features from the bars on every call), one row per account."""
    view = market.view()
    snaps = snapshots_from_dicts([dict(a, as_of=view.latest) for a in accounts])
    positions = snaps.positions.assign(account_id=lambda p: p["account"].map(snaps.accounts["account_id"]))
    bars = pd.concat([view.bars_of(s) for s in view.symbols()], ignore_index=True)
    given = {s: i.bar_length for s, i in market.instruments.items() if i.bar_length is not None}
    return snapshot_features(
        view.market, market.instruments, positions,
        feature_horizon=pd.Timedelta(days=7), market_part=market_features_from_bars(bars, given),
    )


def timed(call, repeat: int) -> np.ndarray:
    times = []
    for i in range(repeat):
        started = time.perf_counter()
        call(i)
        times.append(time.perf_counter() - started)
    return np.array(times) * 1000


def report(case: str, ms: np.ndarray, n: int) -> None:
    print(f"{case:<38}{np.median(ms):>10.1f}{np.percentile(ms, 99):>9.1f}{n / np.median(ms) * 1000:>12,.0f}")


if __name__ == "__main__":
    main()
