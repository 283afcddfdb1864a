"""The main job on the bundled data, and the seeded sampler it replays."""

from pathlib import Path

import pandas as pd
import pytest

from liqrisk.features.market import market_from_bars
from liqrisk.pipelines.bars import read_bars
from liqrisk.pipelines.cli import main
from liqrisk.pipelines.synthetic import sample_positions

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture(scope="module")
def btc_market():
    bars = read_bars(DATA / "crypto_1h.parquet").bars
    return market_from_bars(bars[bars["symbol"].isin(["BTCUSDT", "ETHUSDT"])].reset_index(drop=True))


def test_sampler_is_reproducible_from_its_seed(btc_market):
    kw = {"n_accounts": 500, "horizon": pd.Timedelta("24h"), "positions_per_account": 2, "margin_mode": "cross"}
    classes = {"BTCUSDT": "crypto", "ETHUSDT": "crypto"}
    first = sample_positions(btc_market, classes, seed=3, **kw)
    pd.testing.assert_frame_equal(first, sample_positions(btc_market, classes, seed=3, **kw))
    assert not first.equals(sample_positions(btc_market, classes, seed=4, **kw))


def test_sampler_leaves_history_before_and_the_horizon_after_as_of(btc_market):
    classes = {"BTCUSDT": "crypto", "ETHUSDT": "crypto"}
    positions = sample_positions(btc_market, classes, n_accounts=2000, horizon=pd.Timedelta("7D"), seed=1)
    first_bar = pd.Timestamp(btc_market.ts[btc_market.start.min()], unit="us", tz="UTC")
    last_bar = pd.Timestamp(btc_market.ts[btc_market.stop.max() - 1], unit="us", tz="UTC")
    assert (positions["as_of"] >= first_bar + pd.Timedelta("31D")).all()
    assert (positions["as_of"] <= last_bar - pd.Timedelta("7D")).all()
    cross = positions.groupby("account")["collateral"].nunique()
    assert (cross == 1).all()
    assert set(positions["side"].unique()) == {-1, 1}


@pytest.mark.slow
def test_main_job_validates_and_builds_every_bundled_file(tmp_path, capsys):
    assert main(["run", "--accounts", "300", "--seed", "5", "--out", str(tmp_path), "--build-only"]) == 0
    table = pd.read_parquet(tmp_path / "dataset.parquet")
    bars_files = {p.name for p in DATA.glob("*.parquet")} - {"crypto_funding_8h.parquet"}
    assert set(table["file"]) == bars_files
    assert set(table["asset_class"]) == {"crypto", "fx", "equity", "commodity", "index"}
    again = tmp_path / "again"
    assert main(["run", "--accounts", "300", "--seed", "5", "--out", str(again), "--build-only"]) == 0
    pd.testing.assert_frame_equal(table, pd.read_parquet(again / "dataset.parquet"))
    out = capsys.readouterr().out
    assert "liqrisk run: seed 5" in out and "data card:" in out
