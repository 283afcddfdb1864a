"""``liqrisk build``: the training set from the bundled data, reproducible, the same on Dask."""

import json
from pathlib import Path

import pandas as pd
import pytest

from liqrisk.features.market_features import MARKET_FEATURES
from liqrisk.features.position import POSITION_FEATURES
from liqrisk.pipelines.accounts import write_snapshots
from liqrisk.pipelines.bars import read_bars
from liqrisk.pipelines.build import BuildConfig, build_dataset, config_hash
from liqrisk.pipelines.cli import main

DATA = Path(__file__).resolve().parents[2] / "data"
SMALL = {
    "seed": 11,
    "data_dir": str(DATA),
    "files": ["crypto_perp_1h.parquet", "fx_4h.parquet"],
    "accounts_per_file": 400,
    "partition_size": 150,
    "horizons": ["1h", "24h"],
    "generator": {"event_share": 0.3},
}


@pytest.fixture(scope="module")
def small_build():
    return build_dataset(BuildConfig.from_dict(SMALL))


def test_one_row_per_account_with_features_labels_and_keys(small_build):
    table = small_build.table
    assert len(table) + len(small_build.excluded) == 2 * 400
    assert table["account_id"].is_unique
    for column in (*POSITION_FEATURES, *MARKET_FEATURES):
        assert column in table
    for horizon in ("1h", "24h"):
        for label in ("liquidated", "negative", "shortfall", "time_to_liquidation_s"):
            assert f"{label}_{horizon}" in table
    assert set(table["asset_class"]) == {"crypto", "fx"}
    negative = table["negative_24h"].astype(bool)
    assert ((table["shortfall_24h"] > 0) == negative).all()
    # a longer horizon never un-liquidates an account
    assert (table["liquidated_24h"].astype(bool) | ~table["liquidated_1h"].astype(bool)).all()


def test_data_card_counts_and_hash(small_build):
    card = small_build.card
    assert card["rows"] == len(small_build.table)
    assert sum(card["rows_by_file"].values()) == card["rows"]
    assert card["config_hash"] == config_hash(card["config"])
    assert set(card["label_rates"]) == {"1h", "24h"}
    assert card["label_rates"]["24h"]["crypto"]["rows"] == int((small_build.table["asset_class"] == "crypto").sum())
    assert set(card["features"]) == set(POSITION_FEATURES) | set(MARKET_FEATURES)


def test_same_config_same_table_other_seed_other_table(small_build):
    again = build_dataset(BuildConfig.from_dict(SMALL))
    pd.testing.assert_frame_equal(small_build.table, again.table)
    assert again.card["config_hash"] == small_build.card["config_hash"]
    other = build_dataset(BuildConfig.from_dict({**SMALL, "seed": 12, "files": ["fx_4h.parquet"]}))
    assert other.card["config_hash"] != small_build.card["config_hash"]
    assert not other.table["as_of"].reset_index(drop=True).equals(
        small_build.table.loc[small_build.table["file"] == "fx_4h.parquet", "as_of"].reset_index(drop=True)
    )


def test_dask_cluster_of_two_workers_gives_exactly_the_pandas_table(small_build):
    on_dask = build_dataset(BuildConfig.from_dict({**SMALL, "scheduler": "dask", "workers": 2}))
    pd.testing.assert_frame_equal(small_build.table, on_dask.table)
    pd.testing.assert_frame_equal(small_build.excluded, on_dask.excluded)


def test_features_at_as_of_ignore_bars_that_complete_later(tmp_path, small_build):
    """Fixed accounts, bars after a cut-off shocked: every feature of accounts before it is unchanged."""
    crypto = small_build.table[small_build.table["file"] == "crypto_perp_1h.parquet"]
    cut = crypto["as_of"].sort_values().iloc[len(crypto) // 2]
    bars = read_bars(DATA / "crypto_perp_1h.parquet").bars
    later = bars["ts"] + pd.Timedelta("1h") > cut
    shocked = bars.assign(
        high=bars["high"].mask(later, bars["high"] * 3),
        close=bars["close"].mask(later, bars["close"] * 2),
        open=bars["open"].mask(later, bars["open"] * 2),
        volume=bars["volume"].mask(later, bars["volume"] * 10),
    )
    shocked["high"] = shocked[["open", "high", "close"]].max(axis=1)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    bars.to_parquet(tmp_path / "a" / "bars.parquet")
    shocked.to_parquet(tmp_path / "b" / "bars.parquet")
    accounts = _accounts_of(crypto)
    write_snapshots(accounts, tmp_path / "accounts.parquet")
    tables = []
    for folder in ("a", "b"):
        config = {
            "data_dir": str(tmp_path / folder),
            "instruments": str(DATA / "instruments.json"),
            "files": ["bars.parquet"],
            "accounts": str(tmp_path / "accounts.parquet"),
            "horizons": ["24h"],
        }
        tables.append(build_dataset(BuildConfig.from_dict(config)).table.set_index("account_id"))
    before = tables[0]["as_of"] <= cut
    assert before.sum() > 50
    features = list(POSITION_FEATURES) + list(MARKET_FEATURES)
    pd.testing.assert_frame_equal(tables[0].loc[before, features], tables[1].loc[before, features])
    after = ~before
    assert not tables[0].loc[after, features].equals(tables[1].loc[after, features])


def _accounts_of(table: pd.DataFrame) -> pd.DataFrame:
    """Positions frame of the generator for the accounts in ``table`` (regenerated from the config)."""
    from liqrisk.features.market import market_from_bars
    from liqrisk.pipelines.generator import GeneratorConfig, file_seed, generate_accounts
    from liqrisk.pipelines.instruments_file import read_instruments

    catalog = read_instruments(DATA / "instruments.json")
    bars = read_bars(DATA / "crypto_perp_1h.parquet").bars
    config = BuildConfig.from_dict(SMALL)
    positions = generate_accounts(
        market_from_bars(bars),
        catalog.instruments,
        GeneratorConfig.from_dict(config.generator_dict()),
        n_accounts=400,
        seed=file_seed(11, "crypto_perp_1h.parquet"),
    )
    return positions[positions["account_id"].isin(table["account_id"])]


@pytest.mark.slow
def test_build_command_writes_dataset_and_card(tmp_path, capsys):
    config = tmp_path / "build.toml"
    config.write_text(
        f'data_dir = "{DATA}"\nfiles = ["equity_1d.parquet"]\naccounts_per_file = 300\nhorizons = ["24h", "7d"]\n'
    )
    assert main(["build", "--config", str(config), "--out", str(tmp_path / "out")]) == 0
    table = pd.read_parquet(tmp_path / "out" / "dataset.parquet")
    card = json.loads((tmp_path / "out" / "data_card.json").read_text())
    assert card["rows"] == len(table) > 0
    assert "below zero within 7d" in capsys.readouterr().out
    assert (tmp_path / "out" / "data_card.md").read_text().startswith("# Data card")


def test_example_config_in_docs_parses_and_unknown_keys_are_named():
    config = BuildConfig.from_toml(Path(__file__).resolve().parents[2] / "docs" / "build.toml")
    assert config.horizons == ("1h", "24h", "7d")
    with pytest.raises(ValueError, match="horizon_list"):
        BuildConfig.from_dict({"horizon_list": ["1h"]})
