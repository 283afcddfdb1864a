"""The main job on the bundled data: validate every bars file, build the training set, summarise.

Later issues grow it into build, train, evaluate and register; today it runs the
foundation and the dataset end to end with embedded defaults and prints where
the results are.
"""

from pathlib import Path

import pandas as pd

from liqrisk.pipelines.build import BuildConfig, build_dataset, write_dataset


def run_command(*, data_dir: Path, n_accounts: int, seed: int, out: Path, config: Path | None = None) -> int:
    """Build the dataset from ``data_dir`` (every bars file, strictly validated) into ``out``."""
    overrides = {"data_dir": str(data_dir), "accounts_per_file": n_accounts, "seed": seed, "out": str(out)}
    build = BuildConfig.from_toml(config, **overrides) if config else BuildConfig.from_dict(overrides)
    dataset = build_dataset(build)
    write_dataset(dataset, build.out)
    card = dataset.card
    print(f"\nliqrisk run: seed {seed}, {n_accounts:,} accounts per bars file, horizons {', '.join(build.horizons)}")
    print(f"validated {len(card['rows_by_file'])} bars files strictly (no rejects); "
          f"{card['rows']:,} snapshots, {card['excluded']['rows']:,} excluded, built in {card['seconds']}s")
    print("\n" + summarise(dataset.table, build.horizons).to_string(float_format=lambda v: f"{v:.4g}"))
    print(f"\ndataset: {build.out / 'dataset.parquet'}\ndata card: {build.out / 'data_card.md'}")
    return 0


def summarise(table: pd.DataFrame, horizons: tuple[str, ...]) -> pd.DataFrame:
    """Per asset class: snapshots, and per horizon the liquidated and below-zero shares and the bad debt."""
    grouped = table.groupby("asset_class")
    columns = {"snapshots": grouped.size()}
    for h in horizons:
        columns[f"liquidated_{h}"] = grouped[f"liquidated_{h}"].mean()
        columns[f"below_zero_{h}"] = grouped[f"negative_{h}"].mean()
        columns[f"bad_debt_{h}"] = grouped[f"shortfall_{h}"].sum()
    return pd.DataFrame(columns)
