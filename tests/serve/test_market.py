"""The service's market state: loaded from bars files, appended all or nothing, read on views."""

import json
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from api_support import write_late_file, write_market

from liqrisk.features.errors import InputError
from liqrisk.features.market_features import market_features
from liqrisk.features.replay import state_at_as_of
from liqrisk.serve.market import MarketState

DATA = Path(__file__).resolve().parents[2] / "data"
SYMBOLS = {"BTCUSDT": 40_000.0, "ETHUSDT": 2_500.0}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return write_market(tmp_path / "data", symbols=SYMBOLS, start="2024-01-01", hours=24 * 40, seed=3)


@pytest.fixture
def state(data_dir: Path) -> MarketState:
    return MarketState.load(data_dir)


def next_bars(state: MarketState, symbol: str, n: int, *, step: str = "1h", move: float = 0.0) -> pd.DataFrame:
    """``n`` well-formed bars after the symbol's last one, the price moving by ``move`` a bar."""
    last = state.view().bars_of(symbol).iloc[-1]
    ts = last["ts"] + pd.Timedelta(step) * np.arange(1, n + 1)
    close = last["close"] * (1 + move) ** np.arange(1, n + 1)
    open_ = np.r_[last["close"], close[:-1]]
    return pd.DataFrame(
        {
            "symbol": symbol,
            "ts": ts,
            "open": open_,
            "high": np.maximum(open_, close) * 1.001,
            "low": np.minimum(open_, close) * 0.999,
            "close": close,
            "volume": 10.0,
        }
    )


def test_load_keeps_the_symbols_with_an_instrument_and_the_latest_file_of_each(data_dir: Path):
    hourly = pd.read_parquet(data_dir / "crypto_1h.parquet")
    stray = hourly[hourly["symbol"] == "ETHUSDT"].assign(symbol="NOINSTRUMENT")
    pd.concat([hourly, stray]).to_parquet(data_dir / "crypto_1h.parquet", index=False)
    # BTCUSDT again on 4h bars that go on a day longer: that file wins for BTCUSDT
    btc = hourly[hourly["symbol"] == "BTCUSDT"].set_index("ts")
    four = btc.resample("4h").agg({"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
    extra = four.iloc[-6:].copy()
    extra.index = extra.index + pd.Timedelta("1D")
    four = pd.concat([four, extra]).reset_index().assign(symbol="BTCUSDT")
    four.to_parquet(data_dir / "crypto_4h.parquet", index=False)
    pd.DataFrame({"symbol": ["BTCUSDT"], "ts": [four["ts"].iloc[0]], "funding_rate": [0.0001]}).to_parquet(
        data_dir / "funding.parquet", index=False
    )

    state = MarketState.load(data_dir)

    assert state.symbols() == ("BTCUSDT", "ETHUSDT")
    view = state.view()
    assert view.sources == {"BTCUSDT": "crypto_4h.parquet", "ETHUSDT": "crypto_1h.parquet"}
    assert view.bar_lengths["BTCUSDT"] == pd.Timedelta("4h")
    assert state.latest_of("BTCUSDT") == four["ts"].iloc[-1] + pd.Timedelta("4h")
    assert state.latest == state.latest_of("BTCUSDT")
    only_hourly = MarketState.load(data_dir, files=["crypto_1h.parquet"])
    assert only_hourly.view().bar_lengths["BTCUSDT"] == pd.Timedelta("1h")
    assert state.history is None  # the 4h bars begin where the hourly ones do: no longer history


def test_a_symbol_held_from_earlier_in_another_file_keeps_the_longest_series_as_history(data_dir: Path):
    late = write_late_file(data_dir, "BTCUSDT", hours=24 * 12, extra_hours=24)

    state = MarketState.load(data_dir)

    assert state.view().sources == {"BTCUSDT": late, "ETHUSDT": "crypto_1h.parquet"}
    history = state.history
    assert history is not None and history.history is None
    assert history.view().sources == {"BTCUSDT": "crypto_1h.parquet", "ETHUSDT": "crypto_1h.parquet"}
    # a symbol whose longest series is the served one is shared, caches included, not copied
    assert history.view()._symbols["ETHUSDT"] is state.view()._symbols["ETHUSDT"]
    state.warm()
    assert all(held.warm for held in history.view()._symbols.values())
    hourly = MarketState.load(data_dir, files=["crypto_1h.parquet"]).view()
    for symbol in ("BTCUSDT", "ETHUSDT"):
        pd.testing.assert_frame_equal(history.view().bars_of(symbol), hourly.bars_of(symbol))
    assert state.view().first_of("BTCUSDT") == hourly.first_of("BTCUSDT") + pd.Timedelta(hours=24 * 28)
    state.append(next_bars(state, "BTCUSDT", 3))  # appends go to the latest bars only
    assert state.history is history and history.version == 0
    assert history.view().bars_of("BTCUSDT")["ts"].iloc[-1] == hourly.bars_of("BTCUSDT")["ts"].iloc[-1]


def test_load_checks_bars_files_like_the_loader(data_dir: Path):
    bars = pd.read_parquet(data_dir / "crypto_1h.parquet")
    bars.loc[5, "high"] = bars.loc[5, "low"] - 1.0
    bars.to_parquet(data_dir / "crypto_1h.parquet", index=False)
    with pytest.raises(InputError, match=r"crypto_1h.parquet: high < low at row 5, symbol=BTCUSDT, .*field high"):
        MarketState.load(data_dir)


def test_append_adds_bars_on_a_new_version_and_old_views_stay_as_they_were(state: MarketState):
    before = state.view()
    latest = state.latest
    added = next_bars(state, "ETHUSDT", 3)

    assert state.append(added) == 3

    assert state.version == before.version + 1
    assert state.latest == latest + pd.Timedelta("3h")
    assert state.latest_of("BTCUSDT") == latest
    assert len(state.view().bars_of("ETHUSDT")) == len(before.bars_of("ETHUSDT")) + 3
    assert before.latest == latest and before.market.stop[-1] + 3 == state.view().market.stop[-1]
    # sending the same bars again (a retry) adds nothing
    assert state.append(added) == 0
    assert state.version == before.version + 1


def test_a_new_symbol_with_an_instrument_can_start_by_append(data_dir: Path):
    instruments = json.loads((data_dir / "instruments.json").read_text())
    instruments["SOLUSDT"] = {"asset_class": "crypto", "depth_notional": 1e8}
    (data_dir / "instruments.json").write_text(json.dumps(instruments))
    state = MarketState.load(data_dir)
    first = next_bars(state, "ETHUSDT", 2).assign(symbol="SOLUSDT")
    assert state.append(first) == 2
    assert "SOLUSDT" in state.symbols()


def test_an_append_is_priced_on_its_own_version_whatever_was_kept_with_the_last(data_dir: Path):
    # a symbol that sorts first renumbers every other symbol of the next version's market
    instruments = json.loads((data_dir / "instruments.json").read_text())
    instruments["AAVEUSDT"] = {"asset_class": "crypto", "depth_notional": 1e8}
    (data_dir / "instruments.json").write_text(json.dumps(instruments))
    state = MarketState.load(data_dir)
    before = state.view()
    eth = pd.DataFrame(
        {
            "account": [0],
            "as_of": pd.Series([before.latest], dtype="datetime64[us, UTC]"),
            "margin_mode": "cross",
            "collateral": 1e6,
            "symbol": "ETHUSDT",
            "side": 1,
            "qty": 1.0,
            "entry_price": 2_500.0,
        }
    )
    old_price = state_at_as_of(before.market, state.instruments, eth)[0]["price"].iat[0]
    old_features = before.market_features(eth[["symbol", "as_of"]])

    added = next_bars(state, "ETHUSDT", 3, move=0.05)
    state.append(pd.concat([added, added.assign(symbol="AAVEUSDT")], ignore_index=True))
    after = state.view()
    later = eth.assign(as_of=pd.Series([after.latest], dtype="datetime64[us, UTC]"))

    assert after.market.symbols[0] == "AAVEUSDT"
    price = state_at_as_of(after.market, state.instruments, later)[0]["price"].iat[0]
    assert price == added["close"].iat[-1] != old_price
    bars = pd.concat([after.bars_of(s) for s in after.symbols()], ignore_index=True)
    keys = later[["symbol", "as_of"]]
    pd.testing.assert_frame_equal(after.market_features(keys), market_features(bars, {}, keys))
    # the previous version answers as it did
    assert state_at_as_of(before.market, state.instruments, eth)[0]["price"].iat[0] == old_price
    pd.testing.assert_frame_equal(before.market_features(eth[["symbol", "as_of"]]), old_features)


BAD_BARS = {
    # the loader's own rules, then the service's three
    "high < low": (lambda b, s: b.assign(high=b["low"] - 1.0), "field high"),
    "rewrites a bar already held": (
        lambda b, s: s.view().bars_of("BTCUSDT").iloc[[-1]].assign(low=lambda x: x["low"] * 0.99),
        "field low",
    ),
    "bar before the symbol's last bar": (
        lambda b, s: b.assign(ts=s.view().bars_of("BTCUSDT")["ts"].iloc[-2] + pd.Timedelta("30min")),
        "field ts",
    ),
    "bar overlaps the previous bar": (lambda b, s: b.assign(ts=b["ts"] - pd.Timedelta("30min")), "field ts"),
    "symbol without an instrument": (lambda b, s: b.assign(symbol="DOGEUSDT"), "field symbol"),
}


@pytest.mark.parametrize("problem", list(BAD_BARS))
def test_one_bad_bar_in_the_middle_rejects_the_batch_naming_row_symbol_and_field(state: MarketState, problem: str):
    make_bad, field = BAD_BARS[problem]
    good = next_bars(state, "BTCUSDT", 3)
    bad = make_bad(next_bars(state, "BTCUSDT", 1).iloc[[0]], state).reset_index(drop=True)
    batch = pd.concat([next_bars(state, "ETHUSDT", 1), bad, good.iloc[1:]], ignore_index=True)
    if problem == "bar overlaps the previous bar":  # a new bar half an hour after the last one held
        batch = pd.concat([next_bars(state, "ETHUSDT", 1), bad], ignore_index=True)
    before = state.view()

    with pytest.raises(InputError) as raised:
        state.append(batch)

    message = str(raised.value)
    symbol = bad["symbol"].iloc[0]
    assert f"{problem} at row 1, symbol={symbol}" in message and field in message
    assert state.view() is before  # nothing applied, not even the good bars around it
    assert len(state.view().bars_of("ETHUSDT")) == len(before.bars_of("ETHUSDT"))


def test_an_append_records_only_its_new_bars_before_applying_them(state: MarketState):
    held = next_bars(state, "BTCUSDT", 2)
    state.append(held)
    assert state.view().logged == 0  # appended without a log
    calls = []

    def record(bars: pd.DataFrame, after: int) -> int:
        calls.append((bars.copy(), after, state.version))
        return after + len(bars)

    new = next_bars(state, "BTCUSDT", 3)
    assert state.append(pd.concat([held.iloc[1:], new], ignore_index=True), record=record) == 3
    (recorded, after, version_then), = calls
    assert after == 0 and version_then == state.version - 1  # recorded before it was applied
    recorded = recorded.reset_index(drop=True).astype({"symbol": str})[list(new.columns)]
    pd.testing.assert_frame_equal(recorded, new, check_dtype=False)
    assert state.view().logged == 3

    before = state.view()

    def failing(bars: pd.DataFrame, after: int) -> int:
        raise OSError("database gone")

    with pytest.raises(OSError):
        state.append(next_bars(state, "ETHUSDT", 2), record=failing)
    assert state.view() is before  # nothing applied


def test_catch_up_applies_the_log_skipping_bars_held_and_moves_past_refused_ones(
    state: MarketState, data_dir: Path
):
    other = MarketState.load(data_dir)  # another process on the same files
    logged = pd.concat([next_bars(state, "BTCUSDT", 3), next_bars(state, "ETHUSDT", 2)], ignore_index=True)
    assert state.catch_up(logged, through=5) == 5
    view = state.view()
    assert view.logged == 5 and state.latest_of("BTCUSDT") == other.latest_of("BTCUSDT") + pd.Timedelta("3h")
    assert state.catch_up(logged, through=5) == 0 and state.view() is view  # applied already

    # a restart whose files already hold the first logged BTC bar: that one is skipped
    other.append(logged.iloc[:1])
    assert other.catch_up(logged, through=5) == 4
    for symbol in ("BTCUSDT", "ETHUSDT"):
        pd.testing.assert_frame_equal(other.view().bars_of(symbol), state.view().bars_of(symbol))

    stray = next_bars(state, "ETHUSDT", 1).assign(symbol="NOINSTRUMENT")
    with pytest.raises(InputError, match="NOINSTRUMENT"):
        state.catch_up(stray, through=6)
    assert state.view().logged == 6 and state.view().version == view.version  # refused once
    assert state.catch_up(stray, through=6) == 0


def test_the_views_market_features_are_the_pipelines(state: MarketState):
    view = state.view()
    bars = pd.concat([view.bars_of(s) for s in view.symbols()], ignore_index=True)
    ts = view.bars_of("BTCUSDT")["ts"]
    keys = pd.DataFrame(
        {
            "symbol": ["BTCUSDT", "ETHUSDT", "BTCUSDT", "BTCUSDT", "NOPE", "ETHUSDT"],
            "as_of": [ts.iloc[-1], ts.iloc[-1], ts.iloc[100], ts.iloc[5], ts.iloc[-1], ts.iloc[-1] + pd.Timedelta("5h")],
        },
        index=[10, 11, 12, 13, 14, 15],
    )
    expected = market_features(bars, {}, keys)
    pd.testing.assert_frame_equal(view.market_features(keys), expected)
    pd.testing.assert_frame_equal(view.market_features(keys), expected)  # from the cache


def test_readers_see_whole_versions_while_bars_are_appended(state: MarketState):
    bars = next_bars(state, "BTCUSDT", 20)
    seen: list[tuple[int, int, int]] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            view = state.view()
            code = view.market.symbols.index("BTCUSDT")
            held = view.bars_of("BTCUSDT")
            seen.append((view.version, len(held), int(view.market.stop[code] - view.market.start[code])))
            time.sleep(0.0005)  # let the writer have the GIL too

    readers = [threading.Thread(target=read) for _ in range(2)]
    for reader in readers:
        reader.start()
    for i in range(len(bars)):
        state.append(bars.iloc[[i]])
    stop.set()
    for reader in readers:
        reader.join()

    assert state.version == 20 and len(seen) > 20
    assert all(held == laid_out for _, held, laid_out in seen)
    first = len(state.view().bars_of("BTCUSDT")) - 20
    assert all(held == first + version for version, held, _ in seen)


def test_the_bundled_data_loads(tmp_path: Path):
    state = MarketState.load(DATA, files=["crypto_perp_1h.parquet", "crypto_mark_1h.parquet"])
    instruments = json.loads((DATA / "instruments.json").read_text())
    assert set(state.symbols()) <= set(instruments) and len(state.symbols()) == 11
    view = state.view()
    assert view.sources["BTCUSDT-PERP"] == "crypto_mark_1h.parquet"  # its bars end three hours later
    assert state.latest == max(state.latest_of(s) for s in state.symbols())
