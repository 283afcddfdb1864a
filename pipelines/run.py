"""The main job on the bundled data: validate every bars file, replay a seeded sample of accounts.

Later issues grow it into build, train, evaluate and register; today it proves the
foundation end to end and prints what happened per file and asset class.
"""

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from liqrisk.features.durations import format_duration
from liqrisk.features.market import market_from_bars
from liqrisk.features.replay import replay
from liqrisk.pipelines.bars import read_bars
from liqrisk.pipelines.generator import file_seed
from liqrisk.pipelines.instruments_file import read_instruments
from liqrisk.pipelines.replay_cmd import bar_lengths_of
from liqrisk.pipelines.synthetic import sample_positions

NOT_BARS = ("crypto_funding_8h.parquet",)


def run_command(*, data_dir: Path, n_accounts: int, seed: int, horizon: pd.Timedelta, out: Path) -> int:
    """Validate ``data_dir/*.parquet`` strictly, replay ``n_accounts`` per file, write and print a summary."""
    started = time.perf_counter()
    catalog = read_instruments(data_dir / "instruments.json")
    if catalog.errors:
        raise ValueError("; ".join(catalog.errors.values()))
    asset_class = {s: i.asset_class for s, i in catalog.instruments.items()}
    negative_ok = [s for s, i in catalog.instruments.items() if i.negative_prices]
    files = sorted(p for p in data_dir.glob("*.parquet") if p.name not in NOT_BARS)
    results = []
    for path in tqdm(files, desc="validate + replay", unit="file", file=sys.stderr):
        loaded = read_bars(path, negative_ok=negative_ok)
        market = market_from_bars(loaded.bars, bar_lengths_of(catalog))
        positions = sample_positions(
            market,
            asset_class,
            n_accounts=n_accounts,
            horizon=horizon,
            seed=file_seed(seed, path.name),
            instruments=catalog.instruments,
        )
        outcomes = replay(market, catalog.instruments, positions, horizon=horizon)
        first = positions.groupby("account", sort=False).first()
        results.append(
            outcomes.assign(
                file=path.name,
                symbol=first["symbol"].to_numpy(),
                asset_class=first["symbol"].map(asset_class).to_numpy(),
                as_of=first["as_of"].to_numpy(),
                bars=len(loaded.bars),
            )
        )
    table = pd.concat(results, ignore_index=True)
    out.mkdir(parents=True, exist_ok=True)
    table.to_parquet(out / "outcomes.parquet", index=False)
    summary = summarise(table)
    summary.to_csv(out / "summary.csv")
    print(f"\nliqrisk run: seed {seed}, horizon {format_duration(horizon)}, {n_accounts} accounts per file")
    print(summary.to_string(float_format=lambda v: f"{v:,.4g}"))
    print(f"\nwrote {out / 'outcomes.parquet'} and {out / 'summary.csv'} in {time.perf_counter() - started:.1f}s")
    return 0


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Per file and asset class: accounts, statuses, liquidation and below-zero rates, bad debt."""
    ok = table["status"] == "ok"
    frame = table.assign(
        ok=ok,
        in_liquidation=table["status"] == "in_liquidation",
        error=table["status"] == "error",
        liquidated=table["liquidated"].fillna(False).astype(bool) & ok,
        negative=table["negative"].fillna(False).astype(bool) & ok,
        bad_debt=table["shortfall"].where(ok, 0.0),
    )
    grouped = frame.groupby(["file", "asset_class"], sort=True)
    summary = grouped.agg(
        accounts=("status", "size"),
        ok=("ok", "sum"),
        in_liquidation=("in_liquidation", "sum"),
        error=("error", "sum"),
        liquidated=("liquidated", "sum"),
        negative=("negative", "sum"),
        bad_debt=("bad_debt", "sum"),
    )
    summary["liquidated_rate"] = summary["liquidated"] / summary["ok"].replace(0, np.nan)
    summary["negative_rate"] = summary["negative"] / summary["ok"].replace(0, np.nan)
    return summary
