"""The as-of join (``liqrisk.features.market_features``): semantics, consistency, point in time."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import given, settings

from liqrisk.features.liquidity import ImpactInputs, impact_inputs
from liqrisk.features.market import US_PER_DAY, market_from_bars, to_us
from liqrisk.features.market_features import (
    BAR_FEATURES,
    MARKET_FEATURES,
    bar_features,
    market_features,
)
from liqrisk.features.sessions import CLOSURE_FEATURES, closure_features
from liqrisk.pipelines.bars import read_bars

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pit_cases import HYPOTHESIS, apply_edit, bars_on, calendar, future_edit

DATA = Path(__file__).resolve().parents[2] / "data"
DAY, FOUR_H = pd.Timedelta("1D"), pd.Timedelta("4h")
LENGTHS = {"FX": FOUR_H, "STK": DAY, "BTC": FOUR_H}
SERIES = {
    "FX": bars_on(calendar("2022-01-03", "2024-01-01", "4h", "fx"), seed=20, symbol="FX"),
    "STK": bars_on(
        calendar("2022-01-03", "2024-01-01", "1D", "weekdays") + pd.Timedelta("14h30m"),
        seed=21,
        symbol="STK",
    ),
    "BTC": bars_on(calendar("2022-06-01", "2024-01-01", "4h", "24/7"), seed=22, symbol="BTC"),
}
BAR_COLUMNS = list(BAR_FEATURES)


def combined(series: dict[str, pd.DataFrame]) -> pd.DataFrame:
    bars = pd.concat(
        [s.assign(symbol=s["symbol"].astype(str)) for s in series.values()], ignore_index=True
    )
    return bars.assign(symbol=bars["symbol"].astype("category")).sort_values(
        ["symbol", "ts"], ignore_index=True
    )


BARS = combined(SERIES)


def keys_of(pairs: list[tuple[str, object]], index=None) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "symbol": [s for s, _ in pairs],
            "as_of": pd.to_datetime([t for _, t in pairs], utc=True).as_unit("us"),
        },
        index=index,
    )


def test_feature_list_is_the_columns_with_one_line_each():
    keys = keys_of([("FX", "2023-06-01T12:00Z")])
    got = market_features(BARS, LENGTHS, keys)
    assert list(got.columns) == list(MARKET_FEATURES)
    assert (
        set(CLOSURE_FEATURES) <= set(MARKET_FEATURES)
        and len(MARKET_FEATURES) == len(BAR_FEATURES) + 5
    )
    assert all(text and "\n" not in text for text in MARKET_FEATURES.values())
    assert (got.dtypes == np.float64).all()


def test_a_bar_that_completes_after_as_of_is_not_seen():
    fx = SERIES["FX"]
    per_bar = bar_features(fx, bar_length=FOUR_H)
    k = 2000
    opened, done = fx["ts"].iloc[k], fx["ts"].iloc[k] + FOUR_H
    keys = keys_of(
        [("FX", opened + FOUR_H / 2), ("FX", done), ("FX", done - pd.Timedelta(microseconds=1))]
    )
    got = market_features(BARS, LENGTHS, keys)
    np.testing.assert_array_equal(
        got.iloc[0][BAR_COLUMNS].to_numpy(), per_bar.iloc[k - 1].to_numpy()
    )
    np.testing.assert_array_equal(got.iloc[1][BAR_COLUMNS].to_numpy(), per_bar.iloc[k].to_numpy())
    np.testing.assert_array_equal(
        got.iloc[2][BAR_COLUMNS].to_numpy(), per_bar.iloc[k - 1].to_numpy()
    )
    expected = closure_features(fx, keys["as_of"], bar_length=FOUR_H)
    np.testing.assert_array_equal(got[list(CLOSURE_FEATURES)].to_numpy(), expected.to_numpy())


def test_unknown_symbol_missing_time_and_no_history_give_nan():
    first_done = SERIES["STK"]["ts"].iloc[0] + DAY
    keys = keys_of(
        [
            ("ZZZ", "2023-06-01"),
            ("STK", None),
            ("STK", first_done - pd.Timedelta("1s")),
            ("STK", first_done),
        ]
    )
    got = market_features(BARS, LENGTHS, keys)
    assert got.iloc[:3][BAR_COLUMNS].isna().all().all()
    assert got.iloc[:2].isna().all().all()
    assert got.iloc[3]["bar_hours"] == 24.0


def test_keys_keep_their_index_and_order_does_not_matter():
    rng = np.random.default_rng(0)
    symbols = rng.choice(list(SERIES), 300)
    times = pd.Timestamp("2022-03-01", tz="UTC") + pd.to_timedelta(
        rng.integers(0, 660 * 24, 300), unit="h"
    )
    keys = pd.DataFrame({"symbol": symbols, "as_of": times}, index=rng.permutation(300) + 1000)
    got = market_features(BARS, LENGTHS, keys)
    pd.testing.assert_index_equal(got.index, keys.index)
    flipped = keys.iloc[::-1]
    pd.testing.assert_frame_equal(market_features(BARS, LENGTHS, flipped), got.iloc[::-1])
    as_ns = keys.assign(as_of=keys["as_of"].dt.tz_convert("America/New_York").dt.as_unit("ns"))
    pd.testing.assert_frame_equal(market_features(BARS, LENGTHS, as_ns), got)  # any zone and unit
    shuffled = BARS.sample(frac=1.0, random_state=1)
    pd.testing.assert_frame_equal(market_features(shuffled, LENGTHS, keys), got)
    for symbol, one in SERIES.items():  # many symbols in one call = one call per symbol
        mine = keys[keys["symbol"] == symbol]
        pd.testing.assert_frame_equal(market_features(one, LENGTHS, mine), got.loc[mine.index])


@settings(HYPOTHESIS, max_examples=10)
@given(edit=future_edit(min_cut=0.7))
def test_bars_completing_after_as_of_change_nothing(edit):
    first, last = BARS["ts"].min(), BARS["ts"].max()
    as_of = (first + (last - first) * edit.cut).floor("h") + FOUR_H * edit.inside
    offsets = pd.to_timedelta(["0h", "2h", "3D", "20D"])
    keys = keys_of([(s, as_of - d) for s in SERIES for d in offsets])
    edited = combined({s: apply_edit(one, as_of, LENGTHS[s], edit) for s, one in SERIES.items()})
    before = market_features(BARS, LENGTHS, keys)
    pd.testing.assert_frame_equal(market_features(edited, LENGTHS, keys), before, check_exact=True)


def test_a_shock_after_as_of_is_seen_once_complete():
    # FX and BTC: the 08:00 bar is open, the STK bar opened 14:30 yesterday
    as_of = pd.Timestamp("2023-06-01T10:00Z")
    keys = keys_of(
        [(s, as_of) for s in SERIES] + [(s, as_of + pd.Timedelta("30D")) for s in SERIES]
    )
    shocked = BARS.copy()
    later = (
        shocked["ts"] + shocked["symbol"].map(LENGTHS).astype("timedelta64[us]") > as_of
    ).to_numpy()
    shocked.loc[later, ["open", "high", "low", "close"]] *= 3.0
    before, after = market_features(BARS, LENGTHS, keys), market_features(shocked, LENGTHS, keys)
    pd.testing.assert_frame_equal(after.iloc[:3], before.iloc[:3], check_exact=True)
    assert (after["max_abs_ret_30d"].iloc[3:] > before["max_abs_ret_30d"].iloc[3:] + 0.5).all()


def test_bundled_wti_with_negative_prices_and_the_contract_notional():
    bars = read_bars(DATA / "commodity_1d.parquet", negative_ok=["CL=F"]).bars
    lengths = dict.fromkeys(bars["symbol"].cat.categories, DAY)
    times = pd.date_range("2020-03-01", "2020-06-01", freq="6h", tz="UTC", unit="us")
    keys = keys_of([(s, t) for s in ("CL=F", "GC=F") for t in times])
    got = market_features(bars, lengths, keys)
    assert not np.isinf(got.to_numpy()).any()
    wti = got[keys["symbol"] == "CL=F"].set_axis(times)
    negative = wti.loc["2020-04-21T00:00Z"]  # the -37.63 close completed at 2020-04-20T22:00Z
    # more than 100 % below the high
    assert np.isnan(negative["ret_1d"]) and negative["drawdown_30d"] < -1
    assert (
        np.isnan(wti.loc["2020-04-22T00:00Z", "ret_1d"])
        and wti.loc["2020-04-23T00:00Z", "ret_1d"] > 0
    )
    assert wti["vol_30d"].notna().all() and wti["never_closes"].eq(0).all()


def test_notional_at_a_bar_end_is_the_contracts_daily_notional():
    bars = read_bars(DATA / "commodity_1d.parquet", negative_ok=["CL=F"]).bars
    lengths = dict.fromkeys(bars["symbol"].cat.categories, DAY)
    ends = bars["ts"] + DAY
    keys = pd.DataFrame({"symbol": bars["symbol"], "as_of": ends})[
        bars["ts"].dt.year.isin([2013, 2020])
    ]
    got = market_features(bars, lengths, keys)
    market = market_from_bars(bars, lengths)  # the liquidation contract's V_d, as of the same times
    code = keys["symbol"].map(market.code).to_numpy(dtype=np.int64)
    contract = impact_inputs(market, code, to_us(keys["as_of"])).notional_d
    defined = got["notional_30d"].notna().to_numpy()
    assert defined.mean() > 0.9
    # cumulative sums over other spans
    np.testing.assert_allclose(
        got["notional_30d"].to_numpy()[defined], contract[defined], rtol=1e-7
    )


def test_sigma_d_of_a_key_is_the_same_to_the_last_bit_alone_and_in_any_batch():
    # keys from 3 to 31 days into the history: each row's daily closes have their own length,
    # and a row's σ_d must not depend on the longest row beside it
    bars = combined(SERIES)
    market = market_from_bars(bars, LENGTHS)
    starts = {s: g["ts"].min() for s, g in bars.groupby("symbol", observed=True)}
    rng = np.random.default_rng(3)
    keys = [
        (s, starts[s] + pd.Timedelta(days=int(rng.integers(3, 40)), hours=int(rng.integers(0, 24))))
        for s in rng.choice(list(SERIES), 300)
    ]
    code = np.array([market.code[s] for s, _ in keys], dtype=np.int64)
    as_of = to_us(pd.Series([t for _, t in keys]))
    together = impact_inputs(market, code, as_of).sigma_d
    alone = np.array([impact_inputs(market, code[i : i + 1], as_of[i : i + 1]).sigma_d[0] for i in range(len(keys))])
    assert np.isfinite(together).mean() > 0.8
    np.testing.assert_array_equal(alone, together)


def test_impact_inputs_kept_for_a_few_pairs_are_those_computed():
    # a call of a few pairs keeps each pair's inputs in its market; a later call reads them back:
    # the same bits and dtypes as computing them, whatever the caller does with what it got
    market = market_from_bars(BARS, LENGTHS)
    rng = np.random.default_rng(5)
    as_of = to_us(pd.Series(BARS["ts"].sample(40, random_state=1).to_numpy())) + US_PER_DAY
    code = rng.integers(0, len(market.symbols), 40)
    fields = list(ImpactInputs.__dataclass_fields__)

    def computed(at: slice) -> ImpactInputs:  # the same pairs in a market that keeps nothing
        return impact_inputs(market_from_bars(BARS, LENGTHS), code[at], as_of[at])

    for at in (slice(0, 1), slice(0, 3), slice(2, 40), slice(0, 5)):  # 38 pairs: computed, not kept
        first = impact_inputs(market, code[at], as_of[at])
        for name in fields:  # the caller's arrays are its own
            got = getattr(first, name)
            got[...] = "changed" if got.dtype == object else got.dtype.type(7)
        again, fresh = impact_inputs(market, code[at], as_of[at]), computed(at)
        for name in fields:
            np.testing.assert_array_equal(getattr(again, name), getattr(fresh, name))
            assert getattr(again, name).dtype == getattr(fresh, name).dtype
    assert 5 <= len(market.derived["impact_inputs"]) < 38


def test_impact_inputs_kept_by_one_market_are_not_another_markets():
    # a market with a later bar changed is a new market: the first's kept inputs are not read
    market = market_from_bars(BARS, LENGTHS)
    code = np.array([market.code["FX"]])
    as_of = to_us(pd.Series([pd.Timestamp("2023-06-01T10:00Z")]))
    before = impact_inputs(market, code, as_of).sigma_d
    shocked = BARS.copy()
    recent = ((shocked["symbol"] == "FX") & (shocked["ts"] >= pd.Timestamp("2023-05-25T00:00Z"))
              & (shocked["ts"] < pd.Timestamp("2023-06-01T04:00Z"))).to_numpy()
    shocked.loc[recent, ["open", "high", "low", "close"]] *= 1.2
    shocked.loc[recent & (shocked["ts"].dt.day % 2 == 0).to_numpy(), ["open", "high", "low", "close"]] /= 1.5
    assert impact_inputs(market_from_bars(shocked, LENGTHS), code, as_of).sigma_d[0] != before[0]
    np.testing.assert_array_equal(impact_inputs(market, code, as_of).sigma_d, before)
