"""``liqrisk replay`` against the plain-loop reference (``reference_replay.py``).

Random markets, instruments and accounts (hypothesis draws the shape and a seed;
numpy fills in the bars), a crash at the very end of a symbol's data with latency
reaching past it, then four fixed cases on the bundled real data around the big gap
events (~200 accounts each). Every row must agree under the contract's "Agreement"
rule: money within max(0.01, 1e-9·|size|), booleans, timestamps and status exactly,
and for error rows only that both are errors. Rows where the reference met a
decision inside the contract's 1e-9 rounding band ("either answer is accepted") are
not compared.
"""

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_replay import reference_replay

DATA = Path(__file__).resolve().parents[2] / "data"

HYPOTHESIS = settings(
    max_examples=80,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# --------------------------------------------------------------------------- comparison


def _engine_bool(text: str) -> bool | None:
    return {"true": True, "false": False, "": None}[text]


def _engine_float(text: str) -> float | None:
    return None if text == "" else float(text)


def _engine_ts(text: str) -> pd.Timestamp | None:
    return None if text == "" else pd.Timestamp(text).tz_convert("UTC")


def money_agrees(a: float | None, b: float | None) -> bool:
    """"differ by at most one cent or 1e-9 of their size, whichever is larger"."""
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= max(0.01, 1e-9 * max(abs(a), abs(b)))


def row_disagreements(engine: dict[str, str], ref: dict[str, Any]) -> list[str]:
    """What differs between one OUTCOMES.csv row (strings) and one reference row."""
    if ref["_near_tie"]:
        return []  # "within 1e-9 of the notional, either answer is accepted"
    problems = []
    if engine["status"] != ref["status"]:
        return [f"status {engine['status']!r} vs reference {ref['status']!r} ({ref['error']})"]
    if ref["status"] == "error":
        return []  # "for error rows only that both are errors"
    if engine["account_id"] != str(ref["account_id"]):
        problems.append(f"account_id {engine['account_id']!r} vs {ref['account_id']!r}")
    if _engine_ts(engine["as_of"]) != ref["as_of"]:
        problems.append(f"as_of {engine['as_of']!r} vs {ref['as_of']}")
    for name in ("liquidated", "negative"):
        if _engine_bool(engine[name]) != ref[name]:
            problems.append(f"{name} {engine[name]!r} vs {ref[name]}")
    for name in ("shortfall", "e_close", "e_final"):
        if not money_agrees(_engine_float(engine[name]), ref[name]):
            problems.append(f"{name} {engine[name]!r} vs {ref[name]!r}")
    seconds = engine["time_to_liquidation_s"]
    if _engine_float(seconds) != ref["time_to_liquidation_s"]:
        problems.append(f"time_to_liquidation_s {seconds!r} vs {ref['time_to_liquidation_s']}")
    if _engine_ts(engine["trigger_ts"]) != ref["trigger_ts"]:
        problems.append(f"trigger_ts {engine['trigger_ts']!r} vs {ref['trigger_ts']}")
    if engine["error"] != "":
        problems.append(f"error {engine['error']!r} on a {ref['status']} row")
    return problems


def assert_agrees(
    run_replay, bars, instruments, accounts, horizon: str, bars_format: str = "parquet"
) -> pd.DataFrame:
    """Run both sides and fail with every disagreeing row, its input and both outputs."""
    out = run_replay(bars, instruments, accounts, horizon=horizon, bars_format=bars_format)
    assert out.attrs["exit_code"] == 0
    ref = reference_replay(bars, instruments, accounts, _timedelta(horizon))
    assert len(out) == len(ref), f"{len(out)} rows from the engine, {len(ref)} from the reference"
    report = []
    for (_, engine_row), ref_row, account in zip(out.iterrows(), ref, _non_blank(accounts)):
        problems = row_disagreements(engine_row.to_dict(), ref_row)
        if problems:
            report.append(f"account {account}\n    " + "\n    ".join(problems))
    assert not report, f"{len(report)} of {len(ref)} rows disagree:\n" + "\n".join(report[:5])
    return out


def _non_blank(accounts):
    return [a for a in accounts if not (isinstance(a, str) and not a.strip())]


def _timedelta(text: str) -> pd.Timedelta:
    unit = {"m": "min", "h": "h", "d": "D", "w": "W", "s": "s"}[text[-1]]
    return pd.Timedelta(int(text[:-1]), unit=unit)


# --------------------------------------------------------------------------- random cases

HOUR = pd.Timedelta(hours=1)


def random_bars(
    rng: np.random.Generator,
    name: str,
    step: pd.Timedelta,
    start: pd.Timestamp,
    end: pd.Timestamp,
    *,
    crash_at_end: bool = False,
) -> pd.DataFrame:
    """A random walk with gaps, intrabar spikes, closures, missing bars and odd volume."""
    ts = pd.date_range(start, end, freq=step, tz="UTC", unit="us")
    keep = rng.random(len(ts)) > rng.choice([0.0, 0.02, 0.08])  # missing bars
    if rng.random() < 0.4:  # a market that closes: weekends, or random stretches
        if rng.random() < 0.5:
            keep &= ts.day_of_week < 5
        else:
            for _ in range(rng.integers(1, 5)):
                a = rng.integers(0, len(ts))
                keep[a : a + rng.integers(2, 40)] = False
    if rng.random() < 0.1:  # steps alternate 1, 2, 1, 2 bar lengths: a tie, the smaller wins
        keep = np.arange(len(ts)) % 3 != 2
        kept = np.flatnonzero(keep)
        keep[kept[-1]] = len(kept) % 2 == 1  # an even number of steps
    ts = ts[keep]
    n = len(ts)
    vol = rng.uniform(0.002, 0.03)
    start_price = 10 ** rng.uniform(-1, 4)
    ret = rng.normal(0, vol, n)
    gap = np.where(rng.random(n) < 0.03, rng.normal(0, 0.08, n), 0.0)
    if crash_at_end and n > 3:  # a crash in the last bars: latency runs past the end of the data
        gap[n - 1 - rng.integers(0, 3)] = rng.choice([-0.3, 0.3])
    after_closure = np.r_[False, np.diff(ts.asi8) > step.value // 1000]  # asi8 is in us
    gap = np.where(after_closure & (rng.random(n) < 0.6), rng.normal(0, 0.05, n), gap)
    opens, closes = np.empty(n), np.empty(n)
    price = start_price
    for i in range(n):
        opens[i] = price * math.exp(gap[i])
        closes[i] = opens[i] * math.exp(ret[i])
        price = closes[i]
    high = np.maximum(opens, closes) * np.exp(np.abs(rng.normal(0, vol / 2, n)))
    low = np.minimum(opens, closes) * np.exp(-np.abs(rng.normal(0, vol / 2, n)))
    spike = rng.random(n)
    low = np.where(spike < 0.02, low * rng.uniform(0.5, 0.95, n), low)
    high = np.where(spike > 0.98, high * rng.uniform(1.05, 1.5, n), high)
    volume = rng.lognormal(3, 1, n)
    mode = rng.choice(["full", "full", "holes", "none"])
    if mode == "holes":
        volume = np.where(rng.random(n) < 0.3, np.nan, volume)
        volume = np.where(rng.random(n) < 0.2, 0.0, volume)
    elif mode == "none":
        volume = np.full(n, np.nan) if rng.random() < 0.7 else np.zeros(n)
    prices = {"open": opens, "high": high, "low": low, "close": closes}
    return pd.DataFrame({"symbol": name, "ts": ts, **prices, "volume": volume})


def random_instrument(rng: np.random.Generator, typical_notional: float, has_volume: bool) -> dict:
    n_tiers = int(rng.integers(1, 4))
    caps = np.sort(typical_notional * 10 ** rng.uniform(-0.5, 1.0, n_tiers))
    mmr = np.sort(rng.uniform(0.004, 0.05, n_tiers))
    amounts, amount = [], 0.0
    binance_like = rng.random() < 0.7
    for k in range(n_tiers):
        if k > 0 and binance_like:  # Binance: a_k = a_{k-1} + cap_{k-1}·(m_k − m_{k-1})
            amount += caps[k - 1] * (mmr[k] - mmr[k - 1])
        elif not binance_like:
            amount = float(rng.choice([0.0, rng.uniform(0, 0.002 * typical_notional)]))
        amounts.append(float(amount))
    tiers = [[float(c), float(m), a] for c, m, a in zip(caps, mmr, amounts)]
    if rng.random() < 0.85:
        tiers[-1][0] = None  # no cap
    inst = {
        "asset_class": str(rng.choice(["crypto", "fx", "equity", "commodity", "index"])),
        "tiers": tiers,
        "taker_fee": float(rng.choice([0.0, rng.uniform(0, 0.001)])),
        "liquidation_fee": float(rng.choice([0.0, rng.uniform(0, 0.02)])),
        "latency_bars": int(rng.choice([0, 0, 0, 1, 2, 3])),
        "slippage_to_extreme": float(rng.choice([0.0, 1.0, rng.uniform(0, 1), rng.uniform(0, 1)])),
        "impact_coef": float(rng.choice([0.0, rng.uniform(0, 1), rng.uniform(0, 1)])),
    }
    if not has_volume and rng.random() < 0.85 or rng.random() < 0.2:
        inst["depth_notional"] = float(typical_notional * 10 ** rng.uniform(1, 5))
    return inst


def random_market(rng: np.random.Generator, n_symbols: int, as_of_start, span_start, span_end):
    frames, instruments = [], {}
    for i in range(n_symbols):
        name = f"S{i}"
        label = str(rng.choice(["1h", "1h", "1h", "4h", "30m", "1d"]))
        step = _timedelta(label)
        offset = pd.Timedelta(0)
        if label == "4h":
            offset = HOUR * int(rng.choice([0, 0, 1, 2]))
        elif label == "1d":
            offset = HOUR * int(rng.choice([0, 22]))
        end, ends_early = span_end, rng.random() < 0.2
        if ends_early:  # data that ends among the snapshots: censoring, latency past the end
            end = as_of_start + pd.Timedelta(minutes=int(rng.integers(0, 5 * 24 * 60)))
        frame = random_bars(rng, name, step, span_start + offset, end, crash_at_end=ends_early)
        frames.append(frame)
        inst = random_instrument(rng, 10 ** rng.uniform(3, 5), frame["volume"].gt(0).any())
        if rng.random() < 0.3:
            inst["bar_length"] = label
        instruments[name] = inst
    bars = pd.concat(frames, ignore_index=True)
    return bars, instruments


def last_close(bars: pd.DataFrame, symbol: str, as_of: pd.Timestamp) -> float | None:
    """Approximate price at as_of, only to size random positions (not a contract rule)."""
    before = bars[(bars["symbol"] == symbol) & (bars["ts"] < as_of)]
    return None if before.empty else float(before["close"].iloc[-1])


MALFORMED = [
    lambda a: {**a, "margin_mode": "portfolio"},
    lambda a: {**a, "positions": []},
    lambda a: {**a, "positions": [{**a["positions"][0], "side": 2}]},
    lambda a: {**a, "positions": [{**a["positions"][0], "qty": 0}]},
    lambda a: {**a, "positions": [{**a["positions"][0], "qty": "1.5"}]},
    lambda a: {**a, "positions": [{**a["positions"][0], "entry_price": -3.0}]},
    lambda a: {**a, "positions": [{**a["positions"][0], "symbol": "NOPE"}]},
    lambda a: {**a, "margin_mode": "cross", "collateral": -5.0},
    lambda a: "{not json",
    lambda a: {**a, "positions": [{**a["positions"][0], "side": True}]},
    lambda a: {  # an isolated position without its own collateral
        **a,
        "margin_mode": "isolated",
        "positions": [{k: v for k, v in a["positions"][0].items() if k != "collateral"}],
    },
    lambda a: {  # an unused but negative account-level collateral (docs/engine.md)
        **a,
        "margin_mode": "isolated",
        "collateral": -1.0,
        "positions": [{**a["positions"][0], "collateral": 5.0}],
    },
]

# Odd but valid (docs/engine.md, "Readings of the contract"): an integer account_id,
# side written 1.0, and a cross account whose positions also carry a collateral.
ODD_BUT_VALID = [
    lambda a: {**a, "account_id": int(a["account_id"][1:])},
    lambda a: {**a, "positions": [{**p, "side": float(p["side"])} for p in a["positions"]]},
    lambda a: {**a, "positions": [{**p, "collateral": 1.0} for p in a["positions"]]}
    if a["margin_mode"] == "cross"
    else a,
]


def random_accounts(rng, bars, instruments, as_of_start, as_of_end, n, *, malformed=0.03) -> list:
    symbols = list(instruments)
    accounts = []
    span_hours = max(1, int((as_of_end - as_of_start) / HOUR))
    for i in range(n):
        as_of = as_of_start + HOUR * int(rng.integers(0, span_hours + 1))
        if rng.random() < 0.2:
            as_of += pd.Timedelta(minutes=int(rng.choice([15, 30, 45])))  # off the bar grid
        mode = str(rng.choice(["cross", "isolated"]))
        positions, total = [], 0.0
        for _ in range(int(rng.choice([1, 1, 2, 3]))):
            symbol = str(rng.choice(symbols))
            price = last_close(bars, symbol, as_of)
            price = price if price is not None and price > 0 else 10.0  # WTI went below zero
            notional = 10 ** rng.uniform(2.5, 5)
            qty = notional / price
            entry = price * math.exp(rng.normal(0, 0.01))
            leverage = 10 ** rng.uniform(0, 1.8)
            side = int(rng.choice([1, -1]))
            position = {"symbol": symbol, "side": side, "qty": qty, "entry_price": entry}
            if mode == "isolated":
                position["collateral"] = notional / leverage
            positions.append(position)
            total += notional / leverage
        account = {
            "account_id": f"a{i}",
            "as_of": as_of.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "margin_mode": mode,
            "positions": positions,
        }
        if mode == "cross" or rng.random() < 0.5:
            account["collateral"] = total
        if rng.random() < malformed:
            account = MALFORMED[int(rng.integers(len(MALFORMED)))](account)
        elif rng.random() < malformed:
            account = ODD_BUT_VALID[int(rng.integers(len(ODD_BUT_VALID)))](account)
        accounts.append(account)
    return accounts


@st.composite
def random_cases(draw):
    """(bars, instruments, accounts, horizon) with a hypothesis-chosen shape and seed."""
    seed = draw(st.integers(0, 2**32 - 1))
    n_symbols = draw(st.integers(1, 3))
    horizon = draw(st.sampled_from(["90m", "6h", "24h", "24h", "3d"]))
    rng = np.random.default_rng(seed)
    day = pd.Timedelta(days=1)
    as_of_start = pd.Timestamp("2024-03-01", tz="UTC") + day * int(rng.integers(0, 300))
    as_of_end = as_of_start + 3 * day
    bars, instruments = random_market(
        rng, n_symbols, as_of_start, as_of_start - 36 * day, as_of_end + 4 * day
    )
    n_accounts = int(rng.integers(15, 40))
    accounts = random_accounts(rng, bars, instruments, as_of_start, as_of_end, n=n_accounts)
    return bars, instruments, accounts, horizon


@HYPOTHESIS
@given(case=random_cases(), bars_format=st.sampled_from(["parquet", "parquet", "csv"]))
def test_random_cases_agree_with_reference(run_replay, case, bars_format):
    bars, instruments, accounts, horizon = case
    assert_agrees(run_replay, bars, instruments, accounts, horizon, bars_format)


@pytest.mark.parametrize("seed", range(3))
def test_latency_past_the_end_of_the_data_agrees_with_reference(run_replay, seed):
    """A crash in the last bars of a symbol, with latency reaching past its data: "if
    the data ends first, at the last close available"; in a cross account with a symbol
    that keeps trading, the timeline goes on and the ended symbol is held."""
    rng = np.random.default_rng(seed)
    as_of = pd.Timestamp("2024-06-20 00:00", tz="UTC")
    ends = random_bars(rng, "END", HOUR, as_of - 35 * 24 * HOUR, as_of + 8 * HOUR)
    ends.loc[ends.index[-3:], ["open", "low", "close"]] *= [0.7, 0.6, 0.65]  # the crash
    ends["high"] = ends[["open", "high", "close"]].max(axis=1)
    ends["low"] = ends[["open", "low", "close"]].min(axis=1)
    goes_on = random_bars(rng, "ON", 4 * HOUR, as_of - 35 * 24 * HOUR, as_of + 72 * HOUR)
    bars = pd.concat([ends, goes_on], ignore_index=True)
    instruments = {
        name: {
            **random_instrument(rng, 10_000.0, True),
            "tiers": [[None, 0.01, 0.0]],
            "latency_bars": n,
        }
        for name, n in (("END", 3), ("ON", 1))
    }
    accounts = random_accounts(rng, bars, instruments, as_of, as_of + 6 * HOUR, n=60, malformed=0.0)
    out = assert_agrees(run_replay, bars, instruments, accounts, "24h")
    assert (out["liquidated"] == "true").any()


# --------------------------------------------------------------------------- real data

CRYPTO = {
    "asset_class": "crypto",
    # Binance BTCUSDT brackets of 2021 (docs/instruments.md), cut after four tiers
    "tiers": [
        [50_000.0, 0.004, 0.0],
        [250_000.0, 0.005, 50.0],
        [1_000_000.0, 0.01, 1_300.0],
        [None, 0.025, 16_300.0],
    ],
    "taker_fee": 0.0005,
    "liquidation_fee": 0.0125,
    "latency_bars": 0,
    "slippage_to_extreme": 0.1,
    "impact_coef": 1.0,
}
FX = {
    "asset_class": "fx",
    "tiers": [[None, 1 / 60, 0.0]],
    "taker_fee": 0.00002,
    "liquidation_fee": 0.0,
    "latency_bars": 0,
    "slippage_to_extreme": 0.5,
    "impact_coef": 1.0,
    "depth_notional": 1e9,
}
COMMODITY = {
    "asset_class": "commodity",
    "tiers": [[None, 0.05, 0.0]],
    "taker_fee": 0.0001,
    "liquidation_fee": 0.005,
    "latency_bars": 0,
    "slippage_to_extreme": 0.1,
    "impact_coef": 1.0,
    "depth_notional": 1e9,
}

EVENTS = {
    "crypto-2020-03-12": (
        "crypto_1h.parquet",
        ["BTCUSDT", "ETHUSDT", "BNBUSDT"],
        CRYPTO,
        "2020-03-09",
        "2020-03-13",
        "24h",
    ),
    "crypto-2025-10-10": (
        "crypto_1h.parquet",
        ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", "ADAUSDT", "BNBUSDT"],
        CRYPTO,
        "2025-10-08",
        "2025-10-11",
        "24h",
    ),
    "eurchf-2015-01-15": (
        "fx_1h.parquet", ["EURCHF", "USDCHF", "EURUSD"], FX, "2015-01-12", "2015-01-16", "24h"
    ),
    "wti-2020-04-20": (
        "commodity_1d.parquet", ["CL=F", "GC=F"], COMMODITY, "2020-04-10", "2020-04-24", "3d"
    ),
}


@pytest.mark.parametrize("event", list(EVENTS))
def test_real_data_around_gap_events_agrees_with_reference(run_replay, event):
    file, symbols, template, start, end, horizon = EVENTS[event]
    as_of_start, as_of_end = pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC")
    bars = pd.read_parquet(
        DATA / file,
        filters=[
            ("symbol", "in", symbols),
            ("ts", ">=", as_of_start - pd.Timedelta(days=35)),
            ("ts", "<", as_of_end + pd.Timedelta(days=10)),
        ],
    )
    bars["symbol"] = bars["symbol"].astype(str)
    rng = np.random.default_rng(sum(map(ord, event)))
    instruments = {}
    for symbol in symbols:
        inst = dict(template)
        inst["latency_bars"] = int(rng.choice([0, 0, 1, 2]))
        inst["slippage_to_extreme"] = float(rng.uniform(0, 1))
        instruments[symbol] = inst
    accounts = random_accounts(rng, bars, instruments, as_of_start, as_of_end, n=200, malformed=0.0)
    out = assert_agrees(run_replay, bars, instruments, accounts, horizon)
    assert (out["liquidated"] == "true").any(), "the event should liquidate someone"
