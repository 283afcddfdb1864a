"""The main job on the bundled data: build the dataset, then train, evaluate, back-test,
register and report (``liqrisk train``), with embedded defaults and no server to install.
It prints where the dataset, the report and the MLflow store are.
"""

from pathlib import Path

import pandas as pd

from liqrisk.pipelines.build import BuildConfig, build_dataset, write_dataset
from liqrisk.pipelines.training import TrainConfig, train_command


def run_command(
    *,
    data_dir: Path,
    n_accounts: int,
    seed: int,
    out: Path,
    config: Path | None = None,
    train: bool = True,
    tracking_dir: Path = Path("runs/mlflow"),
) -> int:
    """Build the dataset from ``data_dir`` (every bars file, strictly validated) into ``out``,
    then (``train``) run :func:`~liqrisk.pipelines.training.train_command` on it."""
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
    if not train:
        return 0
    return train_command(
        TrainConfig(
            dataset=build.out / "dataset.parquet", out=build.out, tracking_dir=tracking_dir, seed=seed, data_dir=data_dir
        )
    )


def summarise(table: pd.DataFrame, horizons: tuple[str, ...]) -> pd.DataFrame:
    """Per asset class: snapshots, and per horizon the liquidated and below-zero shares and the bad debt."""
    grouped = table.groupby("asset_class")
    columns = {"snapshots": grouped.size()}
    for h in horizons:
        columns[f"liquidated_{h}"] = grouped[f"liquidated_{h}"].mean()
        columns[f"below_zero_{h}"] = grouped[f"negative_{h}"].mean()
        columns[f"bad_debt_{h}"] = grouped[f"shortfall_{h}"].sum()
    return pd.DataFrame(columns)
