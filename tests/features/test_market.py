"""The engine's layout of the bars, and what it keeps with a market between calls."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from liqrisk.features.instruments import instrument_from_dict
from liqrisk.features.market import market_from_bars, search_blocks, symbol_codes, to_us
from liqrisk.features.replay import state_at_as_of

PRICES = {"BTCUSDT": 40_000.0, "ETHUSDT": 2_500.0, "SOLUSDT": 100.0}


@pytest.fixture
def bars(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2024-01-01", periods=24 * 40, freq="1h", tz="UTC").astype("datetime64[us, UTC]")
    frames = []
    for symbol, price in PRICES.items():
        close = price * np.exp(np.cumsum(rng.normal(0, 0.004, size=len(ts))))
        open_ = np.r_[price, close[:-1]]
        frames.append(
            pd.DataFrame(
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
        )
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(params=[0, 11])
def seed(request: pytest.FixtureRequest) -> int:
    return request.param


def _positions(symbols: list[str], as_of: pd.Timestamp) -> pd.DataFrame:
    n = len(symbols)
    return pd.DataFrame(
        {
            "account": np.arange(n),
            "as_of": pd.Series([as_of] * n, dtype="datetime64[us, UTC]"),
            "margin_mode": "cross",
            "collateral": 1e6,
            "symbol": symbols,
            "side": 1,
            "qty": 1.0,
            "entry_price": [PRICES.get(s, 1.0) for s in symbols],
        }
    )


@pytest.mark.parametrize("dtype", ["str", "category", "object"])
def test_symbol_codes_are_the_markets_codes_and_minus_one_for_the_unknown(bars, dtype):
    market = market_from_bars(bars)
    symbol = pd.Series(["SOLUSDT", "NOPE", "BTCUSDT", None, "SOLUSDT"], dtype=dtype)
    expected = [market.code.get(s, -1) if isinstance(s, str) else -1 for s in symbol.tolist()]
    assert symbol_codes(market, symbol).tolist() == expected == [2, -1, 0, -1, 2]


def test_search_blocks_is_a_search_in_each_rows_own_block(bars, seed):
    market = market_from_bars(bars)
    rng = np.random.default_rng(seed)
    sym = rng.integers(0, len(market.symbols), size=50)
    times = rng.integers(market.ts.min() - 10**10, market.ts.max() + 10**10, size=50)
    for side in ("left", "right"):
        found = search_blocks(market, market.done, sym, times, side=side)
        for s, t, at in zip(sym, times, found, strict=True):
            a, b = market.start[s], market.stop[s]
            assert at == a + np.searchsorted(market.done[a:b], t, side=side)


def test_to_us_reads_any_zone_and_unit_as_utc_microseconds():
    utc = pd.Series(pd.to_datetime(["2024-03-10 06:30:00.0000017", None], utc=True))  # ns
    for times in (utc, utc.dt.tz_convert("America/New_York"), utc.dt.as_unit("us")):
        assert to_us(times)[0] == pd.Timestamp("2024-03-10 06:30:00.000001", tz="UTC").value // 1000
        assert np.isnat(to_us(times)[1:].view("datetime64[us]")).all()
    with pytest.raises(TypeError):
        to_us(pd.Series(pd.to_datetime(["2024-01-01"])))  # naive: not a UTC time


def test_the_instrument_tables_kept_with_a_market_follow_the_instruments_given(bars):
    market = market_from_bars(bars)
    instruments = {s: instrument_from_dict(s, {"asset_class": "crypto"}) for s in PRICES}
    positions = _positions(["BTCUSDT", "ETHUSDT", "SOLUSDT"], pd.Timestamp("2024-02-05", tz="UTC"))
    before, _ = state_at_as_of(market, instruments, positions)

    flat = {"tiers": [[None, 0.25, 0.0]]}
    changed = dict(instruments, ETHUSDT=instrument_from_dict("ETHUSDT", {"asset_class": "crypto", **flat}))
    after, _ = state_at_as_of(market, changed, positions)
    assert after["mmr"].tolist() == [before["mmr"].iat[0], 0.25, before["mmr"].iat[2]]

    fewer = {s: i for s, i in instruments.items() if s != "SOLUSDT"}
    gone, decided = state_at_as_of(market, fewer, positions)
    assert decided["status"].tolist() == ["ok", "ok", "error"]
    assert "unknown symbol 'SOLUSDT'" in decided["error"].iat[2]
    equal = {s: replace(i) for s, i in instruments.items()}  # equal, not the same objects
    pd.testing.assert_frame_equal(state_at_as_of(market, equal, positions)[0], before)
    pd.testing.assert_frame_equal(state_at_as_of(market, instruments, positions)[0], before)
