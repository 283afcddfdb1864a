"""Snapshot features: the row the dataset build writes for an account, computed for any snapshot.

``snapshot_features`` is what the scoring service calls; the build assembles the same row from
the same functions. These tests hold them together on the bundled bars.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from liqrisk.features.market import market_from_bars
from liqrisk.features.market_features import MARKET_FEATURES
from liqrisk.features.position import POSITION_FEATURES
from liqrisk.features.replay import POSITION_COLUMNS, replay
from liqrisk.features.snapshot import (
    IN_LIQUIDATION,
    SNAPSHOT_COLUMNS,
    anchor_keys,
    market_features_from_bars,
    snapshot_features,
)
from liqrisk.pipelines.accounts import read_snapshots, write_snapshots
from liqrisk.pipelines.bars import read_bars
from liqrisk.pipelines.build import BuildConfig, build_dataset
from liqrisk.pipelines.generator import GeneratorConfig, generate_accounts
from liqrisk.pipelines.instruments_file import read_instruments

DATA = Path(__file__).resolve().parents[2] / "data"
FILE = "crypto_perp_1h.parquet"
HORIZON = pd.Timedelta(days=7)
FEATURES = [*POSITION_FEATURES, *MARKET_FEATURES]


@pytest.fixture(scope="module")
def catalog():
    return read_instruments(DATA / "instruments.json")


@pytest.fixture(scope="module")
def bars():
    return read_bars(DATA / FILE).bars


@pytest.fixture(scope="module")
def market(bars, catalog):
    return market_from_bars(bars, catalog.bar_lengths())


@pytest.fixture(scope="module")
def accounts(market, catalog) -> pd.DataFrame:
    config = GeneratorConfig.from_dict({"event_share": 0.3})
    return generate_accounts(market, catalog.instruments, config, n_accounts=120, seed=5)


def features_of(positions, market, bars, catalog, **kwargs):
    return snapshot_features(
        market,
        catalog.instruments,
        positions,
        feature_horizon=HORIZON,
        market_part=market_features_from_bars(bars, catalog.bar_lengths()),
        **kwargs,
    )


def test_snapshot_rows_are_the_rows_of_the_dataset_build(tmp_path, accounts, market, bars, catalog):
    write_snapshots(accounts, tmp_path / "accounts.jsonl")
    config = {
        "data_dir": str(DATA),
        "files": [FILE],
        "accounts": str(tmp_path / "accounts.jsonl"),
        "horizons": ["1h", "24h", "7d"],
    }
    dataset = build_dataset(BuildConfig.from_dict(config)).table.set_index("account_id")
    snaps = read_snapshots(tmp_path / "accounts.jsonl")
    ids = snaps.accounts.set_index("account")["account_id"]
    positions = snaps.positions.assign(account_id=lambda p: p["account"].map(ids))

    table = features_of(positions, market, bars, catalog)

    assert list(table.columns) == list(SNAPSHOT_COLUMNS)
    assert len(table) == len(accounts["account"].unique())
    assert len(dataset) > 100  # the build keeps the accounts whose outcome is known
    mine = table.set_index("account_id").loc[dataset.index]
    assert (mine["status"] == "ok").all() and (mine["reason"] == "").all()
    columns = ["as_of", "symbol", "asset_class", "margin_mode", *FEATURES]
    pd.testing.assert_frame_equal(
        mine[columns], dataset[columns], check_exact=True, check_dtype=False, check_names=False
    )


def test_accounts_in_liquidation_or_in_error_say_so_as_the_engine_does(market, bars, catalog):
    as_of = pd.Timestamp("2025-03-03T12:00:00Z")
    price = float(bars.loc[bars["symbol"] == "BTCUSDT-PERP"].set_index("ts")["close"].asof(as_of - pd.Timedelta(hours=1)))
    rows = [
        (0, "cross", 1_000.0, "BTCUSDT-PERP", 1, 0.01, price),  # healthy
        (1, "cross", 10.0, "BTCUSDT-PERP", 1, 1.0, price * 1.5),  # deep under water: in liquidation
        (2, "isolated", 100.0, "BTCUSDT-PERP", -1, 0.001, price),  # healthy isolated position ...
        (2, "isolated", 1.0, "ETHUSDT-PERP", 1, 10.0, 9_000.0),  # ... beside one in liquidation
        (3, "cross", 1_000.0, "NOSUCHUSDT", 1, 1.0, 10.0),  # unknown symbol
    ]
    positions = pd.DataFrame(rows, columns=["account", "margin_mode", "collateral", "symbol", "side", "qty", "entry_price"])
    positions = positions.assign(as_of=as_of, account_id=positions["account"].map("acct-{}".format))
    positions = positions[[*POSITION_COLUMNS, "account_id"]]
    positions["as_of"] = positions["as_of"].astype("datetime64[us, UTC]")

    table = features_of(positions, market, bars, catalog)

    assert table["status"].tolist() == ["ok", "in_liquidation", "in_liquidation", "error"]
    assert table.loc[1, "reason"] == IN_LIQUIDATION
    assert "positions[0].symbol: unknown symbol 'NOSUCHUSDT'" in table.loc[3, "reason"]
    outcome = replay(market, catalog.instruments, positions, horizon=pd.Timedelta(hours=1))
    assert outcome["status"].tolist() == table["status"].tolist()
    assert table.loc[1, "margin_ratio"] == np.inf  # E <= 0


def test_the_anchor_is_the_largest_position_by_entry_notional():
    positions = pd.DataFrame(
        {
            "account": [0, 0, 1],
            "as_of": pd.to_datetime(["2025-01-01"] * 3, utc=True),
            "symbol": ["A", "B", "C"],
            "qty": [1.0, 3.0, 1.0],
            "entry_price": [100.0, 50.0, 7.0],
            "account_id": ["x", "x", "y"],
        }
    )
    keys = anchor_keys(positions)
    assert keys["symbol"].tolist() == ["B", "C"] and keys["account_id"].tolist() == ["x", "y"]


def test_features_ignore_bars_that_complete_after_as_of(accounts, market, bars, catalog):
    """Every bar not complete at the latest as_of is shocked: no feature of any account moves,
    until an as_of after the shock."""
    positions = accounts[[*POSITION_COLUMNS, "account_id"]]
    latest = positions["as_of"].max()
    unknown = bars["ts"] + pd.Timedelta(hours=1) > latest
    shocked = bars.copy()
    for column, factor in {"open": 3.0, "high": 3.0, "low": 0.5, "close": 2.0, "volume": 10.0}.items():
        shocked.loc[unknown, column] *= factor
    moved = market_from_bars(shocked, catalog.bar_lengths())

    before = features_of(positions, market, bars, catalog)
    pd.testing.assert_frame_equal(features_of(positions, moved, shocked, catalog), before)
    later = positions.assign(as_of=latest + pd.Timedelta(days=1))
    assert not features_of(later, moved, shocked, catalog)[FEATURES].equals(features_of(later, market, bars, catalog)[FEATURES])


def test_features_do_not_depend_on_the_other_symbols_laid_out_beside(accounts, market, bars, catalog):
    """The service lays out every bundled file in one market; the build, one file at a time."""
    fx = read_bars(DATA / "fx_4h.parquet").bars  # its symbols sort before the crypto perpetuals
    together = pd.concat([fx.assign(symbol=fx["symbol"].astype(str)), bars.assign(symbol=bars["symbol"].astype(str))])
    together = together.sort_values(["symbol", "ts"], kind="stable", ignore_index=True)
    positions = accounts[[*POSITION_COLUMNS, "account_id"]]
    alone = features_of(positions, market, bars, catalog)
    beside = features_of(positions, market_from_bars(together, catalog.bar_lengths()), together, catalog)
    pd.testing.assert_frame_equal(beside, alone, check_exact=True)
