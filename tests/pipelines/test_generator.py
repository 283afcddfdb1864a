"""The account generator: reproducible, within the caps, point in time, and its draws follow
the distributions docs/generator.md documents.

The statistical tests draw at a fixed seed and test the documented parameters at level
0.001, recomputing every distribution with scipy.stats from the mix's numbers; each
family also checks that the same test rejects a wrong parameter, so it can fail. They run
with ``survivors_only = False``: survivor selection (the default) changes the joint
distribution on purpose (docs/generator.md, "Survivors").
"""

import dataclasses
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from liqrisk.features.errors import InputError
from liqrisk.features.market import US_PER_DAY, market_from_bars, search_blocks
from liqrisk.features.replay import POSITION_COLUMNS, replay
from liqrisk.pipelines.bars import read_bars
from liqrisk.pipelines.generator import (
    DEFAULT_MIXES,
    GENERATED_COLUMNS,
    GeneratorConfig,
    generate_accounts,
)
from liqrisk.pipelines.instruments_file import read_instruments
from liqrisk.pipelines.replay_cmd import bar_lengths_of

DATA = Path(__file__).resolve().parents[2] / "data"
ALPHA = 0.001
HORIZON = pd.Timedelta("7D")
BAR_FILES = sorted(p.stem for p in DATA.glob("*.parquet") if p.name != "crypto_funding_8h.parquet")


@cache
def catalog():
    return read_instruments(DATA / "instruments.json")


@cache
def market(name: str):
    negative_ok = [s for s, i in catalog().instruments.items() if i.negative_prices]
    bars = read_bars(DATA / f"{name}.parquet", negative_ok=negative_ok).bars
    return market_from_bars(bars, bar_lengths_of(catalog()))


def generate(name: str, n: int, seed: int, **config) -> pd.DataFrame:
    return generate_accounts(
        market(name),
        catalog().instruments,
        GeneratorConfig.from_dict(config),
        n_accounts=n,
        seed=seed,
    )


@pytest.fixture(scope="module")
def crypto_draws() -> pd.DataFrame:
    """Unselected draws (no survivor filter) of the crypto mix: the documented distributions."""
    return generate("crypto_1h", 20_000, seed=20240101, survivors_only=False)


# ----------------------------------------------------------------------------- reproducible


def test_same_seed_same_accounts_other_seed_other_accounts():
    config = {"event_share": 0.3}
    first = generate("crypto_1h", 3000, seed=5, **config)
    pd.testing.assert_frame_equal(first, generate("crypto_1h", 3000, seed=5, **config))
    other = generate("crypto_1h", 3000, seed=6, **config)
    assert not first[list(POSITION_COLUMNS)].equals(other[list(POSITION_COLUMNS)])
    assert (first["as_of"].iloc[:50].to_numpy() != other["as_of"].iloc[:50].to_numpy()).any()
    assert list(first.columns) == list(GENERATED_COLUMNS)
    ids = first.groupby("account", sort=True)["account_id"].agg(["first", "nunique"])
    assert (ids["nunique"] == 1).all() and ids["first"].is_unique
    assert ids["first"].iloc[0] == "s5-0000000" and list(ids.index) == list(range(3000))


# ------------------------------------------------------------------ documented distributions


def _leverage_pit(draws: pd.DataFrame, median: float, sigma: float) -> np.ndarray:
    """PIT of the leverages drawn off the cap under lognormal(median, sigma) truncated to [1, cap]."""
    body = draws[~draws["at_max_leverage"] & (draws["leverage_cap"] > 1)]
    mu = np.log(median)
    a = stats.norm.cdf((0.0 - mu) / sigma)
    b = stats.norm.cdf((np.log(body["leverage_cap"]) - mu) / sigma)
    return (stats.norm.cdf((np.log(body["leverage_drawn"]) - mu) / sigma) - a) / (b - a)


def test_leverage_is_the_documented_truncated_lognormal(crypto_draws):
    mix = DEFAULT_MIXES["crypto"]
    pit = _leverage_pit(crypto_draws, mix.leverage_median, mix.leverage_sigma)
    assert len(pit) > 10_000
    assert stats.kstest(pit, "uniform").pvalue > ALPHA
    # the same test rejects a median of 18x instead of 15x: it has power
    assert (
        stats.kstest(_leverage_pit(crypto_draws, 18.0, mix.leverage_sigma), "uniform").pvalue
        < ALPHA
    )


def test_share_at_the_leverage_cap_is_the_documented_one(crypto_draws):
    eligible = crypto_draws["leverage_cap"] > 1
    at_cap = int(crypto_draws.loc[eligible, "at_max_leverage"].sum())
    n = int(eligible.sum())
    assert stats.binomtest(at_cap, n, DEFAULT_MIXES["crypto"].leverage_at_cap).pvalue > ALPHA
    assert stats.binomtest(at_cap, n, 0.12).pvalue < ALPHA


def test_holding_time_is_log_uniform_from_1h_to_4_weeks(crypto_draws):
    low, high = DEFAULT_MIXES["crypto"].holding_hours
    assert (low, high) == (1.0, 672.0)
    holding = crypto_draws["holding_hours"]
    assert stats.kstest(holding, stats.loguniform(low, high).cdf).pvalue > ALPHA
    assert stats.kstest(holding, stats.loguniform(low, 2 * high).cdf).pvalue < ALPHA


def test_long_share_and_cross_share_are_the_documented_ones(crypto_draws):
    mix = DEFAULT_MIXES["crypto"]
    longs = int((crypto_draws["side"] == 1).sum())
    assert stats.binomtest(longs, len(crypto_draws), mix.long_share).pvalue > ALPHA
    assert stats.binomtest(longs, len(crypto_draws), 0.5).pvalue < ALPHA
    accounts = crypto_draws.groupby("account").first()
    cross = int((accounts["margin_mode"] == "cross").sum())
    assert stats.binomtest(cross, len(accounts), mix.cross_share).pvalue > ALPHA


def _size_pit(draws: pd.DataFrame, median: float, tail_share: float) -> np.ndarray:
    mix = DEFAULT_MIXES["crypto"]
    m = market("crypto_1h")
    code = m.code
    sym = draws["symbol"].map(code).to_numpy()
    as_of = draws["as_of"].to_numpy(dtype="datetime64[us]").view(np.int64)
    last = search_blocks(m, m.done, sym, as_of, side="right") - 1
    last_cap = draws["symbol"].map(lambda s: catalog().instruments[s].tier_caps[-1]).to_numpy()
    room = (
        last_cap
        * draws["entry_price"].to_numpy()
        / m.close[last]
        / draws["daily_notional"].to_numpy()
    )
    upper = np.minimum(mix.size_max, room * (1 - 1e-9))

    def cdf(x):
        body = stats.lognorm(s=mix.size_sigma, scale=median).cdf(x)
        tail = stats.pareto(b=mix.size_tail_alpha, scale=mix.size_tail_min).cdf(x)
        return (1 - tail_share) * body + tail_share * tail

    return cdf(draws["size_fraction"].to_numpy()) / cdf(upper)


def test_size_is_a_lognormal_body_with_a_pareto_tail(crypto_draws):
    mix = DEFAULT_MIXES["crypto"]
    assert (
        stats.kstest(
            _size_pit(crypto_draws, mix.size_median, mix.size_tail_share), "uniform"
        ).pvalue
        > ALPHA
    )
    assert stats.kstest(_size_pit(crypto_draws, mix.size_median, 0.04), "uniform").pvalue < ALPHA
    # the heavy tail: most positions are tiny against the day's traded notional, a few are not
    assert (
        crypto_draws["size_fraction"].median() < 1e-5
        and (crypto_draws["size_fraction"] > 1e-3).any()
    )
    np.testing.assert_allclose(
        crypto_draws["notional_entry"],
        crypto_draws["size_fraction"] * crypto_draws["daily_notional"],
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        crypto_draws["qty"] * crypto_draws["entry_price"],
        crypto_draws["notional_entry"],
        rtol=1e-12,
    )


def test_number_of_positions_follows_the_documented_probabilities(crypto_draws):
    # from 2024-10-31 all ten crypto_1h symbols have a month of history: no account is short of symbols
    accounts = crypto_draws.groupby("account").first()
    full = accounts[accounts["as_of"] >= pd.Timestamp("2024-11-01", tz="UTC")]
    observed = np.bincount(full["n_positions"], minlength=5)[1:]
    expected = np.array(DEFAULT_MIXES["crypto"].positions) * len(full)
    assert stats.chisquare(observed, expected).pvalue > ALPHA
    counts = crypto_draws.groupby("account").size()
    assert (counts == accounts["n_positions"]).all()


# ------------------------------------------------------------------------------ caps


# ESMA retail caps, Reg T overnight, Binance 125x; per symbol where the tier says less.
EXPECTED_CAPS = {
    "crypto_1h": {"BTCUSDT": 125.0, "ADAUSDT": 1 / (2 * 0.0065)},
    "fx_4h": {"EURUSD": 30.0, "AUDUSD": 20.0, "EURNZD": 20.0, "USDCHF": 30.0},
    "equity_1d": {"SPY": 2.0, "AAPL": 2.0},
    "commodity_1d": {"GC=F": 20.0, "CL=F": 10.0, "NG=F": 10.0},
    "index_1d": {"^GSPC": 20.0, "^RUT": 10.0, "ES=F": 20.0},
}


@pytest.mark.parametrize("name", sorted(EXPECTED_CAPS))
def test_leverage_never_exceeds_the_venue_or_regulatory_cap(name):
    draws = generate(name, 3000, seed=11)
    instruments = catalog().instruments
    mmr = [
        instruments[s].tier_mmr[np.searchsorted(instruments[s].tier_caps, n, side="left")]
        for s, n in zip(draws["symbol"], draws["notional_entry"])
    ]
    cls_max = draws["asset_class"].map({c: m.max_leverage for c, m in DEFAULT_MIXES.items()})
    cap = np.minimum(cls_max, 1 / (2 * np.asarray(mmr)))
    np.testing.assert_allclose(draws["leverage_cap"], cap, rtol=1e-12)
    assert (draws["leverage_drawn"] <= cap * (1 + 1e-12)).all()
    assert ((draws["leverage_drawn"] >= 1 - 1e-12) | (cap < 1)).all()
    for symbol, limit in EXPECTED_CAPS[name].items():
        rows = draws["symbol"] == symbol
        assert rows.any(), symbol
        assert draws.loc[rows, "leverage_drawn"].max() <= limit * (1 + 1e-12), symbol
        small = rows & (draws["notional_entry"] < instruments[symbol].tier_caps[0])
        assert np.allclose(draws.loc[small, "leverage_cap"], limit), symbol
    own = draws["notional_entry"] / draws["leverage_drawn"]
    isolated = draws["margin_mode"] == "isolated"
    np.testing.assert_allclose(draws.loc[isolated, "collateral"], own[isolated], rtol=1e-12)
    cross_sum = own[~isolated].groupby(draws.loc[~isolated, "account"]).transform("sum")
    np.testing.assert_allclose(draws.loc[~isolated, "collateral"], cross_sum, rtol=1e-12)


# ----------------------------------------------------------------------- entries, history


def test_entry_price_is_the_close_of_a_bar_complete_before_as_of():
    draws = generate("fx_4h", 2000, seed=3)
    m = market("fx_4h")
    sym = draws["symbol"].map(m.code).to_numpy()
    entry_ts = draws["entry_ts"].to_numpy(dtype="datetime64[us]").view(np.int64)
    bar = search_blocks(m, m.ts, sym, entry_ts, side="left")
    assert (m.ts[bar] == entry_ts).all()
    np.testing.assert_array_equal(m.close[bar], draws["entry_price"].to_numpy())
    as_of = draws["as_of"].to_numpy(dtype="datetime64[us]").view(np.int64)
    opened = as_of - np.round(draws["holding_hours"].to_numpy() * 3.6e9).astype(np.int64)
    assert (m.done[bar] <= opened).all() and (m.done[bar] < as_of).all()
    # and it is the last such bar: the next one was not complete when the position opened
    nxt = np.minimum(bar + 1, m.stop[sym] - 1)
    assert ((m.done[nxt] > opened) | (nxt == bar)).all()
    # positions opened hours to weeks before: some in profit, some losing
    price = m.close[search_blocks(m, m.done, sym, as_of, side="right") - 1]
    pnl = draws["side"] * (price - draws["entry_price"])
    assert (pnl > 0).mean() > 0.2 and (pnl < 0).mean() > 0.2


@pytest.mark.parametrize("name", BAR_FILES)
def test_generated_accounts_replay_ok_or_in_liquidation_on_the_bundled_data(name):
    draws = generate(name, 300, seed=17, event_share=0.3)
    m = market(name)
    outcomes = replay(m, catalog().instruments, draws, horizon=HORIZON)
    assert len(outcomes) == 300
    assert outcomes["status"].isin(["ok", "in_liquidation"]).all(), (
        outcomes.loc[outcomes["status"] == "error", "error"].head().tolist()
    )
    first_bar = pd.Series(m.ts[m.start], index=m.symbols)
    as_of_us = draws["as_of"].to_numpy(dtype="datetime64[us]").view(np.int64)
    assert (as_of_us >= first_bar[draws["symbol"]].to_numpy() + 31 * US_PER_DAY).all()
    # one quote currency per cross account
    cross = draws[draws["margin_mode"] == "cross"]
    assert (cross.groupby("account")["quote_currency"].nunique() == 1).all()
    assert (draws.groupby("account")["symbol"].nunique() == draws.groupby("account").size()).all()


# ------------------------------------------------------------------------------ survivors


def test_survivors_were_never_liquidated_between_entry_and_as_of():
    draws = generate("crypto_1h", 4000, seed=9)
    m = market("crypto_1h")
    instruments = catalog().instruments
    sample = draws.sample(400, random_state=1)
    for row in sample.itertuples():
        code = m.code[row.symbol]
        a, b = m.start[code], m.stop[code]
        after_entry = (m.ts[a:b] > row.entry_ts.value // 1000) & (
            m.done[a:b] <= row.as_of.value // 1000
        )
        inst = instruments[row.symbol]
        t = np.searchsorted(inst.tier_caps, row.notional_entry, side="left")
        m_rate, amount = inst.tier_mmr[t], inst.tier_amount[t]
        prices = (m.low if row.side > 0 else m.high)[a:b][after_entry]
        own = row.notional_entry / row.leverage_drawn
        excess = (
            own
            + row.side * row.qty * (prices - row.entry_price)
            - (m_rate * row.qty * prices - amount)
        )
        assert (excess > 0).all(), row
    assert draws["survived"].all()
    # the filter bites: without it some accounts were liquidated before as_of
    unfiltered = generate("crypto_1h", 4000, seed=9, survivors_only=False)
    assert not unfiltered["survived"].all()
    assert unfiltered["leverage_drawn"].mean() > draws["leverage_drawn"].mean()


def test_draws_use_no_price_after_as_of():
    """Prices of bars completing after T change nothing for accounts whose as_of is at or before T."""
    m = market("crypto_1h")
    cut = pd.Timestamp("2023-01-01", tz="UTC").value // 1000
    later = m.done > cut
    shocked = dataclasses.replace(
        m, **{k: np.where(later, getattr(m, k) * 1.5, getattr(m, k)) for k in ("open", "high", "low", "close")}
    )
    kw = {"n_accounts": 2000, "seed": 4}
    config = GeneratorConfig.from_dict({"survivors_only": False})
    before = generate_accounts(m, catalog().instruments, config, **kw)
    after = generate_accounts(shocked, catalog().instruments, config, **kw)
    early = (before["as_of"] <= pd.Timestamp("2023-01-01", tz="UTC")).to_numpy()
    assert early.sum() > 500
    pd.testing.assert_frame_equal(before[early], after[early])
    assert not before[~early].equals(after[~early])


# ------------------------------------------------------------------------ event oversampling


def test_event_windows_are_oversampled_and_the_weights_undo_it():
    share = 0.3
    draws = generate("crypto_1h", 6000, seed=21, event_share=share, survivors_only=False)
    accounts = draws.groupby("account").first()
    # independent count of the design: eligible bar opens, and those inside an event window
    m = market("crypto_1h")
    config = GeneratorConfig()
    n_all = n_event = 0
    for code, symbol in enumerate(m.symbols):
        ts = m.ts[m.start[code] : m.stop[code]]
        ok = (ts >= ts[0] + 31 * US_PER_DAY) & (ts <= ts[-1] - 7 * US_PER_DAY)
        inside = np.zeros(len(ts), dtype=bool)
        for e in config.events:
            lo = (e.start - pd.Timedelta("3D")).value // 1000
            hi = ((e.end or e.start) + pd.Timedelta("1D")).value // 1000
            inside |= (ts >= lo) & (ts < hi)
        n_all += ok.sum()
        n_event += (ok & inside).sum()
    p_window = share + (1 - share) * n_event / n_all
    in_window = int((accounts["event_window"] != "").sum())
    assert stats.binomtest(in_window, len(accounts), p_window).pvalue > ALPHA
    assert stats.binomtest(in_window, len(accounts), n_event / n_all).pvalue < ALPHA
    oversampled = accounts["oversampled_event"] != ""
    assert stats.binomtest(int(oversampled.sum()), len(accounts), share).pvalue > ALPHA
    assert (
        accounts.loc[oversampled, "oversampled_event"] == accounts.loc[oversampled, "event_window"]
    ).all()
    inside_weight = 1 / ((1 - share) + share * n_all / n_event)
    expected = np.where(accounts["event_window"] != "", inside_weight, 1 / (1 - share))
    np.testing.assert_allclose(accounts["sampling_weight"], expected, rtol=1e-12)
    uniform = generate("crypto_1h", 500, seed=21)
    assert (uniform["oversampled_event"] == "").all() and (uniform["sampling_weight"] == 1).all()


# ------------------------------------------------------------------------------- config


def test_config_round_trips_through_plain_values():
    config = GeneratorConfig.from_dict(
        {
            "horizon": "24h",
            "event_share": 0.2,
            "events": [{"name": "SNB", "start": "2015-01-15T09:00:00Z"}],
            "classes": {"crypto": {"leverage_median": 10, "positions": [0.5, 0.5]}},
        }
    )
    assert config.horizon == pd.Timedelta("24h") and config.classes["crypto"].leverage_median == 10
    assert config.classes["fx"] == DEFAULT_MIXES["fx"]
    assert GeneratorConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "raw, needle",
    [
        ({"horizn": "7d"}, "horizn"),
        ({"horizon": "a week"}, "horizon"),
        ({"event_share": 1.5}, "event_share"),
        ({"classes": {"crypto": {"leverage_median": -1}}}, "classes.crypto.leverage_median"),
        ({"classes": {"crypto": {"positions": [0.5, 0.2]}}}, "classes.crypto.positions"),
        ({"classes": {"crypto": {"levrage": 3}}}, "levrage"),
        ({"classes": {"bonds": {}}}, "bonds"),
        ({"classes": {"fx": {"holding_hours": [1, 2000]}}}, "holding_hours"),
        ({"events": [{"name": "x", "start": "not a time"}]}, "events[0].start"),
    ],
)
def test_bad_config_names_the_key(raw, needle):
    with pytest.raises(InputError, match=None) as info:
        GeneratorConfig.from_dict(raw)
    assert needle in str(info.value)
