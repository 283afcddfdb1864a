"""Properties of ``liqrisk replay`` that hold for any input (docs/liquidation-contract.md).

No reference implementation here: each test states one consequence of the contract
and checks the real command against it on random inputs.
"""

import bisect
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_replay import build_symbols
from test_replay_vs_reference import _timedelta, money_agrees, random_cases

PROPERTY = settings(
    max_examples=15,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

OUTCOME_FIELDS = [
    "liquidated",
    "negative",
    "shortfall",
    "time_to_liquidation_s",
    "trigger_ts",
    "e_close",
    "e_final",
]


def _as_ofs(accounts) -> list[pd.Timestamp]:
    return [pd.Timestamp(a["as_of"]) for a in accounts if isinstance(a, dict)]


# --------------------------------------------------------------------------- invariants


@PROPERTY
@given(case=random_cases())
def test_outcome_fields_are_consistent(run_replay, case):
    bars, instruments, accounts, horizon = case
    out = run_replay(bars, instruments, accounts, horizon=horizon)
    assert out.attrs["exit_code"] == 0
    for row in out.to_dict("records"):
        if row["status"] in ("in_liquidation", "error"):
            # "For in_liquidation and error, every outcome field is empty."
            assert all(row[f] == "" for f in OUTCOME_FIELDS), row
            assert (row["error"] != "") == (row["status"] == "error"), row
            continue
        assert row["status"] == "ok", row
        shortfall = float(row["shortfall"])
        assert shortfall >= 0, row
        # "negative: liquidated and E_close < 0"; "shortfall = max(0, −E_close)"
        assert (row["negative"] == "true") == (shortfall > 0), row
        if row["liquidated"] == "false":
            # "For ok and not liquidated: liquidated=false, negative=false, shortfall=0,
            # the other outcome fields empty."
            assert row["negative"] == "false" and shortfall == 0, row
            assert all(row[f] == "" for f in OUTCOME_FIELDS[3:]), row
            continue
        assert row["liquidated"] == "true", row
        as_of, trigger = pd.Timestamp(row["as_of"]), pd.Timestamp(row["trigger_ts"])
        # "the execution may fall after the horizon, the trigger may not"; and never
        # before as_of: the walk starts at the bars that open at or after as_of.
        assert as_of <= trigger < as_of + _timedelta(horizon), row
        assert float(row["time_to_liquidation_s"]) == (trigger - as_of).total_seconds(), row


# --------------------------------------------------------------------------- the liquidation price


@st.composite
def single_position_gap_free_trigger(draw):
    """One position whose first walk bar opens on the safe side of L and crosses it."""
    side = draw(st.sampled_from([1, -1]))
    entry = draw(st.floats(1.0, 10_000.0))
    qty = draw(st.floats(0.01, 1_000.0))
    leverage = draw(st.floats(2.0, 50.0))
    mmr = draw(st.floats(0.001, 0.1))
    amount = draw(st.floats(0.0, 0.5)) * mmr * qty * entry
    collateral = qty * entry / leverage
    # not in liquidation at as_of, where the price is the entry: E = C > MM
    assume(collateral > mmr * qty * entry - amount + 1e-6 * qty * entry)
    liq = (side * qty * entry - collateral - amount) / (qty * (side - mmr))
    assume(liq > 0)
    # the bar opens between L and the entry, and its adverse extreme goes past L
    open_ = liq + draw(st.floats(0.01, 1.0)) * (entry - liq)
    extreme = liq * (1 - side * draw(st.floats(0.001, 0.5)))
    return side, entry, qty, collateral, mmr, amount, liq, open_, extreme


@PROPERTY
@given(case=single_position_gap_free_trigger(), mode=st.sampled_from(["cross", "isolated"]))
def test_intrabar_trigger_without_frictions_closes_exactly_at_the_liquidation_price(
    run_replay, case, mode
):
    """λ = 0, no latency, no impact, no fees: "For one position this is exactly the
    liquidation price L", so E_close = C + s·q·(L − e)."""
    side, entry, qty, collateral, mmr, amount, liq, open_, extreme = case
    as_of = pd.Timestamp("2024-05-10 00:00", tz="UTC")
    day = pd.Timedelta(days=1)
    ts = pd.date_range(as_of - 5 * day, as_of + 2 * day, freq="1h", unit="us")
    rng = np.random.default_rng(0)
    close = entry * np.exp(rng.normal(0, 1e-3, len(ts)))
    close[ts < as_of] *= entry / close[ts < as_of][-1]  # the price at as_of is the entry
    flat = {"open": close, "high": close, "low": close, "close": close}
    bars = pd.DataFrame({"symbol": "X", "ts": ts, **flat, "volume": 5.0})
    first = np.flatnonzero(ts == as_of)[0]
    low, high = (extreme, open_) if side == 1 else (open_, extreme)
    bars.loc[first, ["open", "high", "low", "close"]] = [open_, high, low, open_]
    instruments = {
        "X": {
            "asset_class": "crypto",
            "tiers": [[None, mmr, amount]],
            "taker_fee": 0.0,
            "liquidation_fee": 0.0,
            "latency_bars": 0,
            "slippage_to_extreme": 0.0,
            "impact_coef": 0.0,
        }
    }
    position = {"symbol": "X", "side": side, "qty": qty, "entry_price": entry}
    account = {"account_id": "a", "as_of": "2024-05-10T00:00:00Z", "margin_mode": mode}
    if mode == "cross":
        account.update(collateral=collateral, positions=[position])
    else:
        account.update(positions=[{**position, "collateral": collateral}])

    row = run_replay(bars, instruments, [account], horizon="24h").iloc[0]

    expected = collateral + side * qty * (liq - entry)
    assert row["status"] == "ok" and row["liquidated"] == "true", row.to_dict()
    assert pd.Timestamp(row["trigger_ts"]) == as_of
    assert money_agrees(float(row["e_close"]), expected), (row.to_dict(), expected)
    assert money_agrees(float(row["e_final"]), expected), (row.to_dict(), expected)


# --------------------------------------------------------------------------- what must not matter


def assert_same_outcomes(after: pd.DataFrame, before: pd.DataFrame) -> None:
    """Equal row for row, money under the contract's Agreement rule (the engine may sum
    in another order when other bars are present: floating-point noise is not a change)."""
    assert after.attrs["exit_code"] == before.attrs["exit_code"] == 0
    assert list(after.columns) == list(before.columns) and len(after) == len(before)
    money = ["shortfall", "e_close", "e_final"]
    for a, b in zip(after.to_dict("records"), before.to_dict("records")):
        exact = [k for k in a if k not in money]
        assert [a[k] for k in exact] == [b[k] for k in exact], (a, b)
        for k in money:
            assert (a[k] == "") == (b[k] == ""), (k, a, b)
            if a[k] != "":
                assert money_agrees(float(a[k]), float(b[k])), (k, a, b)


def _shock(bars: pd.DataFrame, which: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """Scale the chosen bars' prices and volumes; every bar stays valid."""
    shocked = bars.copy()
    factor = rng.uniform(0.3, 3.0, len(bars))
    for column in ("open", "high", "low", "close"):
        shocked[column] = np.where(which, bars[column] * factor, bars[column])
    n = len(bars)
    shocked["high"] = np.where(which, shocked["high"] * rng.uniform(1.0, 1.5, n), shocked["high"])
    shocked["low"] = np.where(which, shocked["low"] * rng.uniform(0.6, 1.0, n), shocked["low"])
    shocked["volume"] = np.where(which, bars["volume"] * rng.uniform(0, 10, n), bars["volume"])
    return shocked


@PROPERTY
@given(case=random_cases(), seed=st.integers(0, 2**32 - 1))
def test_bars_opening_after_the_horizon_and_the_latency_reach_change_nothing(
    run_replay, case, seed
):
    """The walk sees bars opening before as_of + H; an execution with latency n reaches
    at most the n-th bar of each symbol after that (and censoring only asks whether a
    bar opens at or after as_of + H, which no shock removes)."""
    bars, instruments, accounts, horizon = case
    as_ofs = _as_ofs(accounts)
    assume(as_ofs)
    boundary = max(as_ofs) + _timedelta(horizon)
    reach = max(inst["latency_bars"] for inst in instruments.values())
    later = bars["ts"] >= boundary
    rank_after = later.groupby(bars["symbol"]).cumsum()  # 1 for a symbol's first bar after it
    which = (later & (rank_after > reach)).to_numpy(copy=True)
    assume(which.any())

    before = run_replay(bars, instruments, accounts, horizon=horizon)
    shocked = _shock(bars, which, np.random.default_rng(seed))
    after = run_replay(shocked, instruments, accounts, horizon=horizon)
    assert_same_outcomes(after, before)


@PROPERTY
@given(case=random_cases(), seed=st.integers(0, 2**32 - 1))
def test_bars_older_than_the_impact_window_change_nothing(run_replay, case, seed):
    """Only the impact window (bars opening at or after as_of − 30 days) and the last
    bar complete at as_of (tier and in_liquidation) look back before as_of."""
    bars, instruments, accounts, horizon = case
    as_ofs = _as_ofs(accounts)
    assume(as_ofs)
    old = (bars["ts"] < min(as_ofs) - pd.Timedelta(days=30)).to_numpy(copy=True)
    # keep, for every symbol and snapshot, the last bar complete at or before as_of
    symbols = build_symbols(bars, instruments)
    for name, symbol in symbols.items():
        if symbol.bar_length is None:
            continue
        rows = np.flatnonzero((bars["symbol"] == name).to_numpy())
        order = rows[np.argsort(bars["ts"].to_numpy()[rows], kind="stable")]
        completes = list(bars["ts"].iloc[order] + symbol.bar_length)
        for as_of in as_ofs:
            n_complete = bisect.bisect_right(completes, as_of)
            if n_complete:
                old[order[n_complete - 1]] = False
    assume(old.any())

    before = run_replay(bars, instruments, accounts, horizon=horizon)
    shocked = _shock(bars, old, np.random.default_rng(seed))
    after = run_replay(shocked, instruments, accounts, horizon=horizon)
    assert_same_outcomes(after, before)
