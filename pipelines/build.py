"""``liqrisk build``: the training set, one row per (account, as_of): features known then, labels after.

For each bars file (one market: its symbols and bar grid) the build generates or
loads account snapshots, computes the point-in-time market features once per file
(partitioned by symbols) and, per partition of accounts in as_of order (time),
the position features and the labels the engine gives for every horizon. The
same pure partition functions run in this process or on Dask; results are
joined in a fixed order, so both give the same table.

Accounts that are not prediction cases (already in liquidation at as_of) or whose
outcome is unknown (errors) are written to ``excluded.parquet`` with the reason
and counted in the data card: nothing is dropped silently.
"""

import hashlib
import json
import sys
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from liqrisk.features.durations import format_duration, parse_duration
from liqrisk.features.instruments import Instrument
from liqrisk.features.market import market_from_bars
from liqrisk.features.market_features import MARKET_FEATURES, market_features
from liqrisk.features.position import POSITION_FEATURES
from liqrisk.features.replay import replay_horizons
from liqrisk.features.snapshot import IN_LIQUIDATION, anchor_keys, join_snapshot, position_snapshot
from liqrisk.pipelines.accounts import Snapshots, read_snapshots
from liqrisk.pipelines.bars import read_bars
from liqrisk.pipelines.executors import chunks, make_executor
from liqrisk.pipelines.generator import GeneratorConfig, file_seed, generate_accounts
from liqrisk.pipelines.instruments_file import read_instruments
from liqrisk.pipelines.replay_cmd import bar_lengths_of

NOT_BARS = ("crypto_funding_8h.parquet",)
LABELS = ("liquidated", "negative", "shortfall", "time_to_liquidation_s")
KEY_COLUMNS = ("account_id", "as_of", "file", "symbol", "asset_class", "margin_mode")


@dataclass(frozen=True)
class BuildConfig:
    """Everything a build depends on; the dataset is reproducible from it (and the data files)."""

    seed: int = 7
    out: Path = Path("runs/dataset")
    horizons: tuple[str, ...] = ("1h", "24h", "7d")
    data_dir: Path = Path("data")
    instruments: Path | None = None
    files: tuple[str, ...] = ()
    accounts: str = "synthetic"
    accounts_per_file: int = 20_000
    partition_size: int = 25_000
    scheduler: str = "local"
    workers: int = 2
    # A fifth of the accounts on the eve of the crashes in data/events.md, so that bad
    # debt is not a handful of rows; sampling_weight undoes the oversampling.
    generator: dict[str, Any] = field(default_factory=lambda: {"event_share": 0.2})

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "BuildConfig":
        """From a TOML table; unknown keys are errors naming the key."""
        known = set(cls.__dataclass_fields__)
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"build config: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
        values = dict(raw)
        for name in ("out", "data_dir", "instruments"):
            if values.get(name) is not None:
                values[name] = Path(values[name])
        for name in ("horizons", "files"):
            if name in values:
                values[name] = tuple(values[name])
        config = cls(**values)
        for h in config.horizons:
            parse_duration(h, field="horizons")
        if config.scheduler not in ("local", "dask"):
            raise ValueError(f"build config: scheduler must be 'local' or 'dask', got {config.scheduler!r}")
        GeneratorConfig.from_dict(config.generator_dict())  # fail early on a bad generator table
        return config

    @classmethod
    def from_toml(cls, path: Path, **overrides: Any) -> "BuildConfig":
        raw = tomllib.loads(Path(path).read_text())
        raw.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(raw)

    def generator_dict(self) -> dict[str, Any]:
        """The generator table, its horizon at least the longest label horizon."""
        longest = max(parse_duration(h) for h in self.horizons)
        table = dict(self.generator)
        given = parse_duration(table["horizon"]) if "horizon" in table else pd.Timedelta(0)
        table["horizon"] = format_duration(max(longest, given))
        return table

    def resolved(self) -> dict[str, Any]:
        """Plain values, defaults filled in, for the data card and the hash (not where it runs)."""
        return {
            "seed": self.seed,
            "horizons": list(self.horizons),
            "data_dir": str(self.data_dir),
            "instruments": str(self.instruments_path),
            "files": [p.name for p in self.bars_files()],
            "accounts": self.accounts,
            "accounts_per_file": self.accounts_per_file,
            "partition_size": self.partition_size,
            "generator": GeneratorConfig.from_dict(self.generator_dict()).to_dict(),
        }

    @property
    def instruments_path(self) -> Path:
        return self.instruments or self.data_dir / "instruments.json"

    def bars_files(self) -> list[Path]:
        if self.files:
            return [self.data_dir / f for f in self.files]
        return sorted(p for p in self.data_dir.glob("*.parquet") if p.name not in NOT_BARS)


@dataclass(frozen=True)
class Dataset:
    table: pd.DataFrame
    excluded: pd.DataFrame
    card: dict[str, Any]


def config_hash(resolved: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a resolved config."""
    return hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()


def build_dataset(config: BuildConfig) -> Dataset:
    """Generate or load accounts per bars file, compute features and labels, assemble the table."""
    started = time.perf_counter()
    catalog = read_instruments(config.instruments_path)
    if catalog.errors:
        raise ValueError("; ".join(catalog.errors.values()))
    instruments = catalog.instruments
    negative_ok = [s for s, i in instruments.items() if i.negative_prices]
    bar_lengths = bar_lengths_of(catalog)
    generator = GeneratorConfig.from_dict(config.generator_dict())
    user = read_snapshots(Path(config.accounts)) if config.accounts != "synthetic" else None
    markets, excluded = [], []
    assigned: set[int] = set()
    with make_executor(config.scheduler, n_workers=config.workers) as executor:
        for path in tqdm(config.bars_files(), desc="read + accounts", unit="file", file=sys.stderr):
            bars = read_bars(path, negative_ok=negative_ok).bars
            market = market_from_bars(bars, bar_lengths)
            if user is None:
                seed = file_seed(config.seed, path.name)
                positions = generate_accounts(market, instruments, generator, n_accounts=config.accounts_per_file, seed=seed)
            else:
                positions = _user_positions(user, market.symbols, done=assigned)
                assigned.update(positions["account"].unique().tolist())
            if not positions.empty:
                positions = _in_time_order(positions)
                markets.append((path.name, executor.put(bars), positions, anchor_keys(positions)))
        timings = {"read_and_accounts": time.perf_counter() - started}
        # every file's partitions go out at once, so all workers stay busy
        features = executor.map(file_features, [(bars, bar_lengths, keys) for _, bars, _, keys in markets], desc="features")
        calls, owner = [], []
        for m, (_, bars, positions, keys) in enumerate(markets):
            for part in chunks(len(keys), config.partition_size):
                calls.append((bars, bar_lengths, instruments, _rows_of(positions, keys.index[part]), config.horizons))
                owner.append(m)
        timings["features"] = time.perf_counter() - started - sum(timings.values())
        labelled = executor.map(partition_rows, calls, desc="labels")
        timings["labels"] = time.perf_counter() - started - sum(timings.values())
    tables = []
    for m, (name, _, _, keys) in enumerate(markets):
        parts = [rows for rows, o in zip(labelled, owner) if o == m]
        rows = join_snapshot(pd.concat(parts), features[m], keys, instruments)
        rows.insert(0, "file", name)
        keep = rows["status"] == "ok"
        tables.append(rows.loc[keep].drop(columns=["status", "reason"]))
        excluded.append(rows.loc[~keep, ["file", "account_id", "as_of", "status", "reason"]])
    if user is not None:
        excluded.append(_user_rejects(user, assigned))
    table = _order_columns(pd.concat(tables, ignore_index=True), config.horizons)
    excluded_table = (
        pd.concat(excluded, ignore_index=True)
        if excluded
        else pd.DataFrame(columns=["file", "account_id", "as_of", "status", "reason"])
    )
    timings["assemble"] = time.perf_counter() - started - sum(timings.values())
    card = data_card(table, excluded_table, config, generator, seconds=time.perf_counter() - started)
    card["timings_s"] = {k: round(v, 2) for k, v in timings.items()}
    return Dataset(table=table, excluded=excluded_table, card=card)


def build_command(config_path: Path | None, *, out: Path | None, scheduler: str | None, seed: int | None) -> int:
    """Build and write the dataset; print where it is and the label rates."""
    overrides = {"out": out, "scheduler": scheduler, "seed": seed}
    if config_path is None:
        config = BuildConfig.from_dict({k: v for k, v in overrides.items() if v is not None})
    else:
        config = BuildConfig.from_toml(config_path, **overrides)
    dataset = build_dataset(config)
    write_dataset(dataset, config.out)
    card = dataset.card
    print(f"liqrisk build: {card['rows']:,} rows ({card['excluded']['rows']:,} excluded) in {card['seconds']}s, "
          f"config hash {card['config_hash'][:12]}")
    for horizon, classes in card["label_rates"].items():
        parts = ", ".join(f"{cls} {r['negative']:.3%} ({r['negative_count']})" for cls, r in classes.items())
        print(f"  below zero within {horizon}: {parts}")
    print(f"wrote {config.out / 'dataset.parquet'}, {config.out / 'data_card.md'}")
    return 0


def file_features(bars: pd.DataFrame, bar_lengths: Mapping[str, pd.Timedelta], keys: pd.DataFrame) -> pd.DataFrame:
    """Market features of each account's anchor symbol at its as_of (index ``account``)."""
    return market_features(bars, bar_lengths, keys[["symbol", "as_of"]])


def partition_rows(
    bars: pd.DataFrame,
    bar_lengths: Mapping[str, pd.Timedelta],
    instruments: Mapping[str, Instrument],
    positions: pd.DataFrame,
    horizons: Sequence[str],
) -> pd.DataFrame:
    """Position features and labels for every horizon, one row per account (index ``account``).

    ``status`` is ``ok`` when the account is a prediction case with a known outcome at
    every horizon; otherwise ``reason`` says why (in liquidation at as_of, or the error).
    """
    market = market_from_bars(bars, bar_lengths)
    longest = parse_duration(max(horizons, key=parse_duration))
    snapshot = position_snapshot(market, instruments, positions, feature_horizon=longest)
    out = snapshot[["account_id", "as_of", "margin_mode"]].copy()
    status = pd.Series("ok", index=out.index, dtype=object)
    reason = pd.Series("", index=out.index, dtype=object)
    outcomes = replay_horizons(market, instruments, positions, horizons=[parse_duration(h) for h in horizons])
    for horizon, outcome in zip(horizons, outcomes):
        bad = (outcome["status"] != "ok") & (status == "ok")
        status[bad] = outcome.loc[bad, "status"]
        reason[bad] = np.where(outcome.loc[bad, "status"] == "in_liquidation", IN_LIQUIDATION, outcome.loc[bad, "error"])
        for label in LABELS:
            out[f"{label}_{horizon}"] = outcome[label]
    return out.assign(status=status, reason=reason).join(snapshot[list(POSITION_FEATURES)])


def data_card(
    table: pd.DataFrame, excluded: pd.DataFrame, config: BuildConfig, generator: GeneratorConfig, *, seconds: float
) -> dict[str, Any]:
    """What a reader needs to trust the dataset: counts, label rates, events, features, config and hash."""
    resolved = config.resolved()
    year = pd.to_datetime(table["as_of"]).dt.year
    rates = {}
    for horizon in config.horizons:
        grouped = table.groupby("asset_class")
        rates[horizon] = {
            cls: {
                "rows": len(g),
                "liquidated": float(g[f"liquidated_{horizon}"].astype(float).mean()),
                "negative": float(g[f"negative_{horizon}"].astype(float).mean()),
                "negative_count": int(g[f"negative_{horizon}"].sum()),
                "shortfall_sum": float(g[f"shortfall_{horizon}"].sum()),
            }
            for cls, g in grouped
        }
    return {
        "rows": len(table),
        "excluded": {
            "rows": len(excluded),
            "by_status": {str(k): int(v) for k, v in excluded["status"].value_counts().items()},
        },
        "rows_by_asset_class_and_year": {
            cls: {str(y): int(n) for y, n in counts.items()}
            for cls, counts in table.groupby([table["asset_class"], year]).size().unstack(fill_value=0).iterrows()
        },
        "rows_by_file": {str(k): int(v) for k, v in table["file"].value_counts().sort_index().items()},
        "label_rates": rates,
        "events": _event_rates(table, generator, config.horizons),
        "features": _feature_summary(table),
        "config": resolved,
        "config_hash": config_hash(resolved),
        "seconds": round(seconds, 1),
    }


def write_dataset(dataset: Dataset, out: Path) -> None:
    """``dataset.parquet``, ``excluded.parquet``, ``data_card.json`` and a readable ``data_card.md``."""
    out.mkdir(parents=True, exist_ok=True)
    dataset.table.to_parquet(out / "dataset.parquet", index=False)
    dataset.excluded.to_parquet(out / "excluded.parquet", index=False)
    (out / "data_card.json").write_text(json.dumps(dataset.card, indent=2, default=str))
    (out / "data_card.md").write_text(card_markdown(dataset.card))


def card_markdown(card: Mapping[str, Any]) -> str:
    """The data card as a page to read."""
    lines = [
        "# Data card",
        "",
        f"- rows: {card['rows']:,} (excluded: {card['excluded']['rows']:,} {card['excluded']['by_status']})",
        f"- config hash: `{card['config_hash']}` (seed {card['config']['seed']})",
        f"- built in {card['seconds']}s",
        "",
        "## Label rates per asset class",
        "",
        "| horizon | asset class | rows | liquidated | below zero | below-zero count | bad debt |",
        "|---|---|---|---|---|---|---|",
    ]
    for horizon, classes in card["label_rates"].items():
        for cls, r in classes.items():
            lines.append(
                f"| {horizon} | {cls} | {r['rows']:,} | {r['liquidated']:.2%} | {r['negative']:.3%} "
                f"| {r['negative_count']:,} | {r['shortfall_sum']:,.0f} |"
            )
    lines += ["", "## Historic events (as_of inside the event window)", "",
              "| event | horizon | rows | liquidated | below zero | bad debt |", "|---|---|---|---|---|---|"]
    for name, by_h in card["events"].items():
        for horizon, r in by_h.items():
            lines.append(f"| {name} | {horizon} | {r['rows']:,} | {r['liquidated']:.2%} | {r['negative']:.2%} | {r['shortfall_sum']:,.0f} |")
    lines += ["", "## Rows per asset class and year", "", "```", json.dumps(card["rows_by_asset_class_and_year"], indent=1), "```",
              "", "## Features", "", "| feature | NaN share | mean | p50 | p1 | p99 |", "|---|---|---|---|---|---|"]
    for name, s in card["features"].items():
        lines.append(f"| {name} | {s['nan_share']:.1%} | {s['mean']:.4g} | {s['p50']:.4g} | {s['p1']:.4g} | {s['p99']:.4g} |")
    lines += ["", "## Config", "", "```json", json.dumps(card["config"], indent=2, default=str), "```", ""]
    return "\n".join(lines)


def _event_rates(table: pd.DataFrame, generator: GeneratorConfig, horizons: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    as_of = pd.to_datetime(table["as_of"], utc=True)
    for event in generator.events:
        end = event.end if event.end is not None else event.start
        inside = (as_of >= event.start - generator.event_before) & (as_of <= end + generator.event_after)
        if not inside.any():
            continue
        rows = table.loc[inside]
        out[event.name] = {
            h: {
                "rows": len(rows),
                "liquidated": float(rows[f"liquidated_{h}"].astype(float).mean()),
                "negative": float(rows[f"negative_{h}"].astype(float).mean()),
                "shortfall_sum": float(rows[f"shortfall_{h}"].sum()),
            }
            for h in horizons
        }
    return out


def _feature_summary(table: pd.DataFrame) -> dict[str, Any]:
    summary = {}
    for name in (*POSITION_FEATURES, *MARKET_FEATURES):
        values = pd.to_numeric(table[name], errors="coerce").replace([np.inf, -np.inf], np.nan)
        q = values.quantile([0.01, 0.5, 0.99]) if values.notna().any() else pd.Series([np.nan] * 3, index=[0.01, 0.5, 0.99])
        summary[name] = {
            "nan_share": float(values.isna().mean()) if len(values) else 0.0,
            "mean": float(values.mean()),
            "p1": float(q[0.01]),
            "p50": float(q[0.5]),
            "p99": float(q[0.99]),
        }
    return summary


def _in_time_order(positions: pd.DataFrame) -> pd.DataFrame:
    """Accounts sorted by as_of (stable), codes renumbered 0..n-1, rows of an account together."""
    first = positions.groupby("account", sort=False)["as_of"].first()
    order = first.sort_values(kind="stable").index
    rank = pd.Series(np.arange(len(order)), index=order)
    ordered = positions.assign(account=positions["account"].map(rank)).sort_values("account", kind="stable")
    return ordered.reset_index(drop=True)


def _rows_of(positions: pd.DataFrame, accounts: pd.Index) -> pd.DataFrame:
    """The positions of a consecutive range of account codes."""
    lo, hi = accounts.min(), accounts.max()
    return positions.loc[(positions["account"] >= lo) & (positions["account"] <= hi)]


def _user_positions(user: Snapshots, symbols: Sequence[str], *, done: set[int]) -> pd.DataFrame:
    """The user's valid accounts, not built yet, whose symbols all trade in this bars file."""
    positions = user.positions
    here = positions["symbol"].isin(list(symbols)).groupby(positions["account"]).transform("all")
    here &= ~positions["account"].isin(list(done))
    ids = user.accounts.set_index("account")["account_id"]
    return positions.loc[here].assign(account_id=lambda p: p["account"].map(ids))


def _user_rejects(user: Snapshots, assigned: set[int]) -> pd.DataFrame:
    """Accounts that failed to parse, and valid ones no bars file could replay: reported, not dropped."""
    accounts = user.accounts
    bad = accounts["error"] != ""
    unplaced = ~bad & ~accounts["account"].isin(list(assigned))
    reason = accounts["error"].where(bad, "its symbols are not all in one of the bars files")
    rows = accounts.loc[bad | unplaced, ["account_id", "as_of"]].assign(
        file="", status="error", reason=reason[bad | unplaced]
    )
    return rows[["file", "account_id", "as_of", "status", "reason"]]


def _order_columns(table: pd.DataFrame, horizons: Sequence[str]) -> pd.DataFrame:
    labels = [f"{label}_{h}" for h in horizons for label in LABELS]
    first = [c for c in KEY_COLUMNS if c in table]
    rest = [c for c in table.columns if c not in first and c not in labels]
    return table[first + rest + labels]


