"""Hand-computed replays through ``liqrisk replay``, one per rule of docs/liquidation-contract.md.

Unless a test says otherwise:

- ``AS_OF`` is 2024-01-04T00:00Z and the horizon ``H`` is 24h (the fixture's default).
- Each symbol has three UTC days of flat hourly history (open = high = low = close) before
  as_of, with daily closes 100, 110, 100 and volume 1 in every bar. So the last close at
  as_of is 100 and, from the "Exactly:" paragraph of step 3,

      σ_d = stdev([ln(110/100), ln(100/110)], ddof=1) = √2·ln 1.1 ≈ 0.1347904
      V_d = (24·100·1 + 24·110·1 + 24·100·1) / 3 = 2480

- Instruments have one tier (mmr 1%, amount 0), no fees, no latency, λ = 0 and Y = 0
  (no impact), so a fill is the execution price itself.
- After the bars a test lists, each symbol goes on flat at its last close up to and
  including the bar opening at as_of + H, so nothing is censored.

The base account is long 10 @ 100 with collateral 100:

    E(P)  = 100 + 10·(P − 100) = 10·P − 900         MM(P) = 0.01·10·P = 0.1·P
    L     = (s·q·e − C − a) / (q·(s − m)) = (1000 − 100) / (10·0.99) = 900/9.9 ≈ 90.909091
    B     = e − s·C/q = 100 − 100/10 = 90
    at as_of: E(100) = 100 > MM(100) = 10, not in liquidation.

Money is compared with the contract's Agreement tolerance, max(0.01, 1e-9·|x|).
"""

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd
import pytest

AS_OF = pd.Timestamp("2024-01-04T00:00:00Z")
HOUR = pd.Timedelta(hours=1)
DAY = pd.Timedelta(days=1)
H = pd.Timedelta(hours=24)

SIGMA_D = math.sqrt(2) * math.log(1.1)  # stdev of [+ln 1.1, −ln 1.1] with ddof = 1
V_D = (24 * 100 + 24 * 110 + 24 * 100) / 3  # = 2480
L_BASE = 900 / 9.9  # liquidation price of the base account (long 10 @ 100, C = 100, m = 1%)

OUTCOME_FIELDS = (
    "liquidated",
    "negative",
    "shortfall",
    "time_to_liquidation_s",
    "trigger_ts",
    "e_close",
    "e_final",
)
COLUMNS = ["account_id", "as_of", "status", *OUTCOME_FIELDS, "error"]
MONEY = ("shortfall", "e_close", "e_final")

Ohlc = tuple[float, float, float, float]


# ---------------------------------------------------------------- building inputs


def flat(price: float) -> Ohlc:
    return (price, price, price, price)


def _frame(
    symbol: str, start: pd.Timestamp, step: pd.Timedelta, rows: Sequence[Ohlc], volume: float
) -> pd.DataFrame:
    ts = pd.DatetimeIndex([start + i * step for i in range(len(rows))]).as_unit("us")
    o, h, lo, c = (list(col) for col in zip(*rows)) if rows else ([], [], [], [])
    return pd.DataFrame(
        {
            "symbol": symbol,
            "ts": ts,
            "open": o,
            "high": h,
            "low": lo,
            "close": c,
            "volume": float(volume),
        }
    )


def history(
    symbol: str,
    closes: Sequence[float | None] = (100.0, 110.0, 100.0),
    *,
    step: pd.Timedelta = HOUR,
    volume: float = 1.0,
    end: pd.Timestamp = AS_OF,
) -> pd.DataFrame:
    """Flat bars, one UTC day per close (oldest first), the last day ending at ``end``.

    ``None`` leaves that day without bars. With ``step=DAY`` each day is one bar.
    """
    per_day = int(DAY / step)
    days = [
        _frame(symbol, end - (len(closes) - i) * DAY, step, [flat(c)] * per_day, volume)
        for i, c in enumerate(closes)
        if c is not None
    ]
    return pd.concat(days, ignore_index=True)


def walk(
    symbol: str,
    rows: Sequence[Ohlc],
    *,
    start: pd.Timestamp = AS_OF,
    step: pd.Timedelta = HOUR,
    until: pd.Timestamp | None = AS_OF + H,
    volume: float = 1.0,
) -> pd.DataFrame:
    """``rows`` from ``start``; then flat bars at the last close up to and including ``until``."""
    rows = list(rows)
    if until is not None:
        last = rows[-1][3] if rows else 100.0
        while start + len(rows) * step <= until:
            rows.append(flat(last))
    return _frame(symbol, start, step, rows, volume)


def bars(*frames: pd.DataFrame) -> pd.DataFrame:
    out = pd.concat(frames, ignore_index=True)
    return out.sort_values(["symbol", "ts"], kind="stable").reset_index(drop=True)


def series(symbol: str, rows: Sequence[Ohlc] = (), **walk_kw: Any) -> pd.DataFrame:
    """Default history, then ``rows`` from as_of (hourly), padded flat to as_of + H."""
    return bars(history(symbol), walk(symbol, rows, **walk_kw))


def inst(**overrides: Any) -> dict[str, Any]:
    """Every key given, so asset-class defaults never matter (crypto has no depth_notional)."""
    base = {
        "asset_class": "crypto",
        "tiers": [[None, 0.01, 0.0]],
        "taker_fee": 0.0,
        "liquidation_fee": 0.0,
        "latency_bars": 0,
        "slippage_to_extreme": 0.0,
        "impact_coef": 0.0,
    }
    return base | overrides


def pos(
    symbol: str, side: int, qty: float, entry: float, collateral: float | None = None
) -> dict[str, Any]:
    p: dict[str, Any] = {"symbol": symbol, "side": side, "qty": qty, "entry_price": entry}
    if collateral is not None:
        p["collateral"] = collateral
    return p


def iso(t: pd.Timestamp) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def cross(
    account_id: str, collateral: float, *positions: dict, as_of: pd.Timestamp = AS_OF
) -> dict:
    return {
        "account_id": account_id,
        "as_of": iso(as_of),
        "margin_mode": "cross",
        "collateral": collateral,
        "positions": list(positions),
    }


def isolated(account_id: str, *positions: dict, as_of: pd.Timestamp = AS_OF, **extra: Any) -> dict:
    return {
        "account_id": account_id,
        "as_of": iso(as_of),
        "margin_mode": "isolated",
        "positions": list(positions),
        **extra,
    }


BASE = pos("AAA", 1, 10, 100)  # with collateral 100 in a cross account: the base account


# ---------------------------------------------------------------- checking outputs


def close_enough(got: str, want: float) -> bool:
    return got != "" and abs(float(got) - want) <= max(0.01, 1e-9 * abs(want))


def only_row(out: pd.DataFrame) -> pd.Series:
    assert out.attrs["exit_code"] == 0
    assert len(out) == 1, out
    return out.iloc[0]


def assert_liquidated(
    row: pd.Series,
    *,
    trigger: pd.Timestamp,
    e_close: float,
    e_final: float | None = None,
    as_of: pd.Timestamp = AS_OF,
    shortfall: float | None = None,
    negative: bool | None = None,
) -> None:
    """A liquidated ``ok`` row. ``shortfall``/``negative`` default to the one-account rules
    ``max(0, −E_close)`` and ``E_close < 0`` (isolated aggregates pass them explicitly)."""
    e_final = e_close if e_final is None else e_final
    shortfall = max(0.0, -e_close) if shortfall is None else shortfall
    negative = e_close < 0 if negative is None else negative
    report = row.to_dict()
    assert row["status"] == "ok", report
    assert row["error"] == "", report
    assert row["liquidated"] == "true", report
    assert row["negative"] == ("true" if negative else "false"), report
    assert pd.Timestamp(row["trigger_ts"]) == trigger, report
    assert float(row["time_to_liquidation_s"]) == (trigger - as_of).total_seconds(), report
    assert close_enough(row["e_close"], e_close), (report, "e_close", e_close)
    assert close_enough(row["e_final"], e_final), (report, "e_final", e_final)
    assert close_enough(row["shortfall"], shortfall), (report, "shortfall", shortfall)


def assert_not_liquidated(row: pd.Series) -> None:
    report = row.to_dict()
    assert row["status"] == "ok", report
    assert (row["liquidated"], row["negative"]) == ("false", "false"), report
    assert row["shortfall"] != "" and float(row["shortfall"]) == 0.0, report
    for field in ("time_to_liquidation_s", "trigger_ts", "e_close", "e_final", "error"):
        assert row[field] == "", (report, field)


def assert_in_liquidation(row: pd.Series) -> None:
    report = row.to_dict()
    assert row["status"] == "in_liquidation", report
    for field in (*OUTCOME_FIELDS, "error"):
        assert row[field] == "", (report, field)


def assert_error(row: pd.Series, *needles: str) -> None:
    report = row.to_dict()
    assert row["status"] == "error", report
    for field in OUTCOME_FIELDS:
        assert row[field] == "", (report, field)
    assert row["error"] != "", report
    for needle in needles:
        assert needle.lower() in row["error"].lower(), (report, needle)


def t(hours: float) -> pd.Timestamp:
    return AS_OF + pd.Timedelta(hours=hours)


# ================================================================ formulas and step 2


def test_gap_through_bankruptcy_references_the_open(run_replay):
    # Bar 01:00 opens at 85, below B = 90 (and below L ≈ 90.91): at θ = 0 already
    # E(85) = 10·85 − 900 = −50 ≤ MM(85) = 8.5, a gap, so the reference is the open 85.
    # λ = 0, Y = 0, no fees: fill = 85.
    # E_close = 100 + 10·(85 − 100) = −50 → negative, shortfall 50; E_final = −50 (fee 0).
    data = series("AAA", [flat(100), (85, 86, 84, 85)])
    out = run_replay(data, {"AAA": inst()}, [cross("a", 100, BASE)])
    assert_liquidated(only_row(out), trigger=t(1), e_close=-50)


def test_intrabar_trigger_fills_exactly_at_the_liquidation_price(run_replay):
    # Bar 01:00 (95, 96, 80, 85): at the open E(95) = 50 > MM = 9.5, no gap; at the low
    # E(80) = −100 ≤ MM(80) = 8, trigger. θ* solves E = MM on 95 → 80: the price is L.
    # λ = 0: x = L = 900/9.9 ≈ 90.909091; Y = 0: fill = L.
    # E_close = 10·L − 900 = 9000/9.9 − 900 ≈ 9.090909 (= MM(L) = 0.1·L, as it must).
    data = series("AAA", [flat(100), (95, 96, 80, 85)])
    out = run_replay(data, {"AAA": inst()}, [cross("a", 100, BASE)])
    e_close = 10 * L_BASE - 900
    assert e_close == pytest.approx(0.1 * L_BASE)
    assert_liquidated(only_row(out), trigger=t(1), e_close=e_close)


@pytest.mark.parametrize(
    "bar, e_close",
    [
        # Short 10 @ 100, C = 100: E(P) = 100 − 10·(P − 100) = 1100 − 10·P, MM(P) = 0.1·P.
        # L = (−1000 − 100) / (10·(−1 − 0.01)) = 1100/10.1 ≈ 108.910891; B = 100 + 100/10 = 110.
        # Intrabar: open 105 → E = 50 > MM = 10.5; high 120 → E = −100 ≤ 12: trigger,
        # fill = L, E_close = 1100 − 10·L ≈ 10.891089 (= MM(L) = 0.1·L).
        pytest.param((105, 120, 104, 110), 1100 - 10 * (1100 / 10.1), id="intrabar-at-L"),
        # Gap: bar opens at 115 > B = 110, E(115) = −50 ≤ 11.5 at θ = 0: reference = open 115.
        # E_close = 1100 − 10·115 = −50.
        pytest.param((115, 116, 114, 115), -50.0, id="gap-above-B"),
    ],
)
def test_short_side(run_replay, bar, e_close):
    account = cross("s", 100, pos("AAA", -1, 10, 100))
    out = run_replay(series("AAA", [flat(100), bar]), {"AAA": inst()}, [account])
    assert_liquidated(only_row(out), trigger=t(1), e_close=e_close)


def test_tier_is_chosen_by_notional_at_as_of_and_kept(run_replay):
    # Tiers (Binance style): up to 1950 mmr 1% amount 0; above, mmr 5% amount
    # 1950·(0.05 − 0.01) = 78. Long 20 @ 97 with C = 40.
    # - notional at entry 20·97 = 1940 would be tier 1, but the tier is chosen by the
    #   notional at as_of: 20·100 (last close) = 2000 > 1950 → tier 2 (m = 0.05, a = 78).
    # E(P) = 40 + 20·(P − 97) = 20·P − 1900; MM(P) = 0.05·20·P − 78 = P − 78.
    # At as_of: E = 100 > MM = 22.  L = (20·97 − 40 − 78) / (20·0.95) = 1822/19 ≈ 95.894737.
    # Bar 01:00 low 95.92: E = 18.4 > MM = 17.92 with the kept tier 2 (no trigger), although
    #   the notional 20·95.92 = 1918.4 is now in tier 1, whose MM = 0.2·95.92 = 19.184 ≥ 18.4
    #   would trigger: an engine that re-tiers during the walk triggers at 01:00.
    # Bar 02:00 (96, 96, 95, 95.5): open E = 20 > 18; low E = 0 ≤ 17: trigger, fill = L.
    # E_close = 20·L − 1900 = 340/19 ≈ 17.894737 (= MM(L) = L − 78).
    tiers = [[1950.0, 0.01, 0.0], [None, 0.05, 78.0]]
    out = run_replay(
        series("AAA", [flat(100), (99, 99, 95.92, 96), (96, 96, 95, 95.5)]),
        {"AAA": inst(tiers=tiers)},
        [cross("t", 40, pos("AAA", 1, 20, 97))],
    )
    assert_liquidated(only_row(out), trigger=t(2), e_close=340 / 19)


def test_maintenance_amount_decides_in_liquidation_at_as_of(run_replay):
    # Same tiers. Long 20 @ 100.5; notional at as_of 20·100 = 2000 → tier 2:
    # MM(100) = 0.05·2000 − 78 = 22.
    # C = 25: E(100) = 25 + 20·(100 − 100.5) = 15 ≤ 22 → in liquidation.
    # C = 35: E(100) = 25 > 22 → ok, never liquidated on flat bars (an engine that drops
    #         the amount, MM = 100, would call it in liquidation).
    tiers = [[1950.0, 0.01, 0.0], [None, 0.05, 78.0]]
    position = pos("AAA", 1, 20, 100.5)
    accounts = [cross("in", 25, position), cross("ok", 35, position)]
    out = run_replay(series("AAA"), {"AAA": inst(tiers=tiers)}, accounts)
    assert list(out["account_id"]) == ["in", "ok"]
    assert_in_liquidation(out.iloc[0])
    assert_not_liquidated(out.iloc[1])


def test_cross_takes_every_position_at_its_own_adverse_extreme(run_replay):
    # Long AAA 10 @ 100 and short BBB 10 @ 100, C = 30, m = 1% each: a hedge.
    # MM = 0.1·(P_A + P_B). Bar 01:00: AAA (100, 101, 98, 100), BBB (100, 102, 99, 100).
    # Open: E = 30 > MM = 20. Each at its adverse extreme (AAA low 98, BBB high 102):
    # E = 30 + 10·(98 − 100) − 10·(102 − 100) = −10 ≤ MM = 20: trigger.
    # (Both at their lows would give E = 20 > MM = 19.7: no trigger.)
    # θ*: P_A = 100 − 2θ, P_B = 100 + 2θ; E = 30 − 40θ, MM = 0.1·200 = 20 → θ* = 1/4,
    # references 99.5 and 100.5; E_close = 30 + 10·(−0.5) − 10·(0.5) = 20.
    data = bars(
        series("AAA", [flat(100), (100, 101, 98, 100)]),
        series("BBB", [flat(100), (100, 102, 99, 100)]),
    )
    account = cross("h", 30, pos("AAA", 1, 10, 100), pos("BBB", -1, 10, 100))
    out = run_replay(data, {"AAA": inst(), "BBB": inst()}, [account])
    assert_liquidated(only_row(out), trigger=t(1), e_close=20.0)


# ================================================================ closed markets, mixed grids


def _held_while_closed_bars(bbb_reopen: Ohlc, aaa_rows: Sequence[Ohlc]) -> pd.DataFrame:
    """AAA hourly throughout; BBB hourly, closed 01:00–04:00 (no bars), reopening at 05:00."""
    bbb = bars(
        history("BBB"),
        walk("BBB", [(100, 100, 97, 98)], until=None),  # 00:00, closes at 98
        walk("BBB", [bbb_reopen], start=t(5)),  # 05:00 onwards
    )
    return bars(series("AAA", aaa_rows), bbb)


def test_cross_symbol_closed_is_held_at_its_last_close(run_replay):
    # Cross C = 200, long AAA 10 @ 100 and long BBB 10 @ 100, m = 1% each; BBB has λ = 0.5.
    # 00:00  AAA flat 100, BBB (100, 100, 97, 98): E = 200 − 30 = 170 > MM = 19.7.
    # 01:00  AAA (100, 100, 99, 99), BBB closed → held at 98: E = 200 − 10 − 20 = 170.
    # 02:00  AAA (99, 99, 70, 80), BBB held at 98 (its open and extreme alike).
    #        Open: E = 170. Low: E = 200 − 300 − 20 = −120 ≤ MM: trigger.
    #        θ*: E = 200 + 10·(P − 100) − 20 = 10·P − 820, MM = 0.1·P + 9.8
    #        → 9.9·P = 829.8, P = 829.8/9.9 ≈ 83.818182.
    #        BBB: x = 98 + 0.5·(98 − 98) = 98.
    # E_close = 10·P − 820 ≈ 18.181818.   (BBB reopens at 05:00 at 60: never seen.)
    aaa = [flat(100), (100, 100, 99, 99), (99, 99, 70, 80)]
    data = _held_while_closed_bars((60, 60, 60, 60), aaa)
    account = cross("x", 200, pos("AAA", 1, 10, 100), pos("BBB", 1, 10, 100))
    out = run_replay(data, {"AAA": inst(), "BBB": inst(slippage_to_extreme=0.5)}, [account])
    assert_liquidated(only_row(out), trigger=t(2), e_close=10 * (829.8 / 9.9) - 820)


def test_cross_gap_when_a_closed_market_reopens(run_replay):
    # Same account; AAA flat 100 all along, BBB closes 98 at 00:00 and is held at 98 till
    # 04:00 (E = 200 − 20 = 180 > MM). 05:00 BBB reopens (75, 76, 74, 75): at θ = 0
    # E = 200 + 0 + 10·(75 − 100) = −50 ≤ MM → gap, references are the opens (AAA 100, BBB 75).
    # BBB λ = 0.5: x_B = 75 + 0.5·(74 − 75) = 74.5; x_A = 100.
    # E_close = 200 + 10·(100 − 100) + 10·(74.5 − 100) = −55 → shortfall 55.
    data = _held_while_closed_bars((75, 76, 74, 75), [])
    account = cross("x", 200, pos("AAA", 1, 10, 100), pos("BBB", 1, 10, 100))
    out = run_replay(data, {"AAA": inst(), "BBB": inst(slippage_to_extreme=0.5)}, [account])
    assert_liquidated(only_row(out), trigger=t(5), e_close=-55.0)


def _mixed_grid_bars(bbb_day: Ohlc, aaa_rows: Sequence[Ohlc]) -> pd.DataFrame:
    """AAA hourly; BBB daily (history: one bar a day, volume 24, so V_d is again 2480)."""
    bbb = bars(
        history("BBB", step=DAY, volume=24.0),
        walk("BBB", [bbb_day], step=DAY, until=AS_OF + H, volume=24.0),  # D4 00:00 and D5 00:00
    )
    return bars(series("AAA", aaa_rows), bbb)


def test_mixed_grid_daily_bar_in_progress_is_not_seen(run_replay):
    # Cross C = 200, long AAA (1h) 10 @ 100, long BBB (1d) 10 @ 100, m = 1%; BBB λ = 0.5.
    # 00:00  both open a bar: AAA flat 100, BBB's day bar (100, 100, 97, 97) taken at its
    #        low: E = 200 − 30 = 170 > MM = 19.7.
    # 01:00… BBB's day bar is in progress (complete at D5 00:00): BBB is held at the close of
    #        its last complete bar, D3's 100 — not at 97.
    # 02:00  AAA (100, 100, 83, 85): E = 200 + 10·(83 − 100) = 30 > MM = 8.3 + 10 = 18.3.
    #        (With BBB at 97: E = 0 ≤ 18 — an engine that peeks triggers here.)
    # 03:00  AAA (85, 85, 70, 75): open E = 50 > 18.5; low E = −100: trigger.
    #        θ*: E = 10·P − 800, MM = 0.1·P + 10 → P = 810/9.9 ≈ 81.818182; x_B = 100.
    # E_close = 10·P − 800 ≈ 18.181818.
    aaa = [flat(100), flat(100), (100, 100, 83, 85), (85, 85, 70, 75)]
    data = _mixed_grid_bars((100, 100, 97, 97), aaa)
    account = cross("m", 200, pos("AAA", 1, 10, 100), pos("BBB", 1, 10, 100))
    out = run_replay(data, {"AAA": inst(), "BBB": inst(slippage_to_extreme=0.5)}, [account])
    assert_liquidated(only_row(out), trigger=t(3), e_close=10 * (810 / 9.9) - 800)


def test_mixed_grid_daily_bar_opening_at_as_of_is_walked(run_replay):
    # Same account, λ = 0 everywhere. BBB's day bar opening at as_of (100, 100, 70, 90) is
    # walked at 00:00 with its low: E = 200 + 10·(70 − 100) = −100 ≤ MM: trigger at 00:00.
    # θ*: P_B = 100 − 30θ, E = 10·P_B − 800, MM = 10 + 0.1·P_B → P_B = 810/9.9 ≈ 81.818182.
    # E_close = 10·P_B − 800 ≈ 18.181818; time to liquidation 0 s.
    data = _mixed_grid_bars((100, 100, 70, 90), [])
    account = cross("m", 200, pos("AAA", 1, 10, 100), pos("BBB", 1, 10, 100))
    out = run_replay(data, {"AAA": inst(), "BBB": inst()}, [account])
    assert_liquidated(only_row(out), trigger=t(0), e_close=10 * (810 / 9.9) - 800)


# ================================================================ isolated margin


def test_isolated_two_positions_one_liquidated(run_replay):
    # AAA long 10 @ 100 with its own C = 100 gaps to 85 at 01:00: E_close = 100 − 150 = −50.
    # BBB long 10 @ 100 with C = 500 stays flat: never liquidated.
    # The account-level collateral (1e6) is not used.
    # Account: liquidated, shortfall 50, negative, trigger 01:00, e_close = e_final = −50
    # (sums over the liquidated positions only).
    data = bars(series("AAA", [flat(100), (85, 86, 84, 85)]), series("BBB"))
    positions = (pos("AAA", 1, 10, 100, 100), pos("BBB", 1, 10, 100, 500))
    account = isolated("i", *positions, collateral=1e6)
    out = run_replay(data, {"AAA": inst(), "BBB": inst()}, [account])
    assert_liquidated(only_row(out), trigger=t(1), e_close=-50.0)


def test_isolated_aggregation_sums_shortfalls_and_takes_the_earliest_trigger(run_replay):
    # AAA long 10 @ 100, C = 100 (m = 1%): 03:00 gaps to 89 → E_close_A = 100 + 10·(89 − 100) = −10,
    #   shortfall 10.
    # BBB long 10 @ 100, C = 100, m = 5%: L_B = (1000 − 100) / (10·0.95) = 900/9.5 ≈ 94.736842.
    #   01:00 (100, 100, 90, 92): open E = 100 > MM = 50; low E = 0 ≤ 45: trigger, fill L_B,
    #   E_close_B = 100 + 10·(L_B − 100) = MM(L_B) = 0.5·L_B ≈ 47.368421, shortfall 0.
    # Account: shortfall = 10 + 0 = 10 (the sum of theirs, not max(0, −ΣE_close) = 0),
    #   negative since that sum > 0, although e_close = −10 + 47.368421 = 37.368421 > 0;
    #   time to liquidation the earliest: 01:00. No account-level collateral at all.
    data = bars(
        series("AAA", [flat(100), flat(100), flat(100), (89, 89, 88, 89)]),
        series("BBB", [flat(100), (100, 100, 90, 92)]),
    )
    account = isolated("i", pos("AAA", 1, 10, 100, 100), pos("BBB", 1, 10, 100, 100))
    instruments = {"AAA": inst(), "BBB": inst(tiers=[[None, 0.05, 0.0]])}
    out = run_replay(data, instruments, [account])
    e_close = -10 + 0.5 * (900 / 9.5)
    assert_liquidated(only_row(out), trigger=t(1), e_close=e_close, shortfall=10.0, negative=True)


def test_isolated_one_position_in_liquidation_makes_the_account_in_liquidation(run_replay):
    # AAA long 10 @ 109.5 with C = 100: E(100) = 100 − 95 = 5 ≤ MM = 10 → in liquidation.
    # BBB long 10 @ 100 with C = 100: fine, and its data ends at 05:00 (would be censored):
    # in_liquidation comes first.
    data = bars(series("AAA"), history("BBB"), walk("BBB", [], until=t(5)))
    account = isolated("i", pos("AAA", 1, 10, 109.5, 100), pos("BBB", 1, 10, 100, 100))
    out = run_replay(data, {"AAA": inst(), "BBB": inst()}, [account])
    assert_in_liquidation(only_row(out))


# ================================================================ latency


def test_latency_executes_at_the_open_n_bars_after_the_trigger(run_replay):
    # Base account, latency_bars = 2, λ = 0.5 (λ applies only to a close without latency).
    # 01:00 (95, 96, 80, 85) triggers (bar 0); 02:00 is bar 1; 03:00 (80, 82, 75, 77) is bar 2:
    # x = its open 80. E_close = 10·80 − 900 = −100; trigger and time to liquidation are
    # those of the trigger bar (01:00, 3600 s), not of the execution.
    rows = [flat(100), (95, 96, 80, 85), (85, 86, 78, 80), (80, 82, 75, 77)]
    out = run_replay(
        series("AAA", rows),
        {"AAA": inst(latency_bars=2, slippage_to_extreme=0.5)},
        [cross("a", 100, BASE)],
    )
    assert_liquidated(only_row(out), trigger=t(1), e_close=-100.0)


def test_latency_execution_may_fall_after_the_horizon(run_replay):
    # Horizon 3h: bars 00:00, 01:00, 02:00 are walked. 02:00 (95, 96, 80, 85) triggers;
    # latency 2 executes at the open of 04:00 (82, 83, 78, 79), after the horizon: x = 82.
    # E_close = 10·82 − 900 = −80.
    rows = [flat(100), flat(100), (95, 96, 80, 85), (85, 85, 80, 82), (82, 83, 78, 79)]
    out = run_replay(
        series("AAA", rows), {"AAA": inst(latency_bars=2)}, [cross("a", 100, BASE)], horizon="3h"
    )
    assert_liquidated(only_row(out), trigger=t(2), e_close=-80.0)


def test_latency_when_the_data_ends_executes_at_the_last_close(run_replay):
    # Latency 3; trigger at 01:00 (95, 96, 80, 85); the data ends with 02:00 (85, 86, 76, 77):
    # bar k+3 never comes, so x = the last close available, 77. E_close = 770 − 900 = −130.
    # A trigger happened, so the data ending inside the horizon censors nothing.
    rows = [flat(100), (95, 96, 80, 85), (85, 86, 76, 77)]
    data = bars(history("AAA"), walk("AAA", rows, until=None))
    out = run_replay(data, {"AAA": inst(latency_bars=3)}, [cross("a", 100, BASE)])
    assert_liquidated(only_row(out), trigger=t(1), e_close=-130.0)


def test_latency_counts_times_on_the_account_timeline_not_the_file(run_replay):
    # AAA trades 00:00–01:00, is closed 02:00–04:00, reopens 05:00 at (70, 72, 68, 71).
    # CCC (held by nobody) has bars every hour. Latency 1, trigger at 01:00 (95, 96, 80, 85):
    # the next time on the account's timeline (AAA's bars only) is 05:00 → x = 70.
    # E_close = 10·70 − 900 = −200.  (Counting CCC's 02:00 would give x = 85, E_close = −50.)
    aaa = bars(
        history("AAA"),
        walk("AAA", [flat(100), (95, 96, 80, 85)], until=None),
        walk("AAA", [(70, 72, 68, 71)], start=t(5)),
    )
    data = bars(aaa, series("CCC"))
    out = run_replay(data, {"AAA": inst(latency_bars=1), "CCC": inst()}, [cross("a", 100, BASE)])
    assert_liquidated(only_row(out), trigger=t(1), e_close=-200.0)


def test_latency_per_position_and_a_closed_symbol_executes_at_its_held_close(run_replay):
    # Cross C = 200, long AAA 10 @ 100 (latency 2), long BBB 10 @ 100 (latency 1); BBB is
    # closed 02:00–04:00.
    # 01:00  AAA (100, 100, 70, 75), BBB (100, 100, 99, 99): open E = 200 > MM; extremes
    #        E = 200 − 300 − 10 = −110 ≤ MM: trigger (bar 0).
    # 02:00  bar 1: BBB has no bar → executes at its held last close, 99.
    # 03:00  bar 2: AAA executes at the open of (73, 74, 70, 71): 73.
    # E_close = 200 + 10·(73 − 100) + 10·(99 − 100) = −80.
    bbb = bars(
        history("BBB"),
        walk("BBB", [flat(100), (100, 100, 99, 99)], until=None),
        walk("BBB", [flat(99)], start=t(5)),
    )
    aaa = [flat(100), (100, 100, 70, 75), (75, 76, 72, 73), (73, 74, 70, 71)]
    data = bars(series("AAA", aaa), bbb)
    account = cross("x", 200, pos("AAA", 1, 10, 100), pos("BBB", 1, 10, 100))
    instruments = {"AAA": inst(latency_bars=2), "BBB": inst(latency_bars=1)}
    out = run_replay(data, instruments, [account])
    assert_liquidated(only_row(out), trigger=t(1), e_close=-80.0)


# ================================================================ fast market (λ)


@pytest.mark.parametrize(
    "account, bar, e_close",
    [
        # Base long, λ = 0.5, intrabar: reference L ≈ 90.909091, extreme 80:
        # x = L + 0.5·(80 − L) = (L + 80)/2 ≈ 85.454545; E_close = 10·x − 900 ≈ −45.454545.
        pytest.param(
            cross("a", 100, BASE),
            (95, 96, 80, 85),
            10 * (L_BASE + 80) / 2 - 900,
            id="long-intrabar",
        ),
        # Base long, λ = 0.5, gap: reference = open 85, extreme 84: x = 84.5; E_close = −55.
        pytest.param(cross("a", 100, BASE), (85, 86, 84, 85), -55.0, id="long-gap"),
        # Short 10 @ 100, C = 100, λ = 0.5: L = 1100/10.1 ≈ 108.910891, extreme (high) 120:
        # x = (L + 120)/2 ≈ 114.455446; E_close = 1100 − 10·x ≈ −44.554455.
        pytest.param(
            cross("s", 100, pos("AAA", -1, 10, 100)),
            (105, 120, 104, 110),
            1100 - 10 * (1100 / 10.1 + 120) / 2,
            id="short-intrabar",
        ),
    ],
)
def test_fast_market_fills_past_the_reference(run_replay, account, bar, e_close):
    instruments = {"AAA": inst(slippage_to_extreme=0.5)}
    out = run_replay(series("AAA", [flat(100), bar]), instruments, [account])
    assert_liquidated(only_row(out), trigger=t(1), e_close=e_close)


# ================================================================ impact


GAP_TO_62 = [flat(100), (62, 63, 61, 62)]  # gap far below B = 90: x = open 62 (λ = 0)


def test_impact_from_volume_long(run_replay):
    # Base long, gap to 62 at 01:00: x = 62. Y = 0.1/σ_d, so Y·σ_d = 0.1.
    # q·x / V_d = 10·62 / 2480 = 1/4 → impact = 0.1·√(1/4) = 0.05.
    # fill = 62·(1 − 0.05) = 58.9; E_close = 100 + 10·(58.9 − 100) = −311.
    out = run_replay(
        series("AAA", GAP_TO_62), {"AAA": inst(impact_coef=0.1 / SIGMA_D)}, [cross("a", 100, BASE)]
    )
    assert_liquidated(only_row(out), trigger=t(1), e_close=-311.0)


def test_impact_from_volume_short(run_replay):
    # Short 5 @ 100, C = 50 (B = 110). Gap to 124 at 01:00: x = 124.
    # q·x / V_d = 5·124 / 2480 = 1/4 → impact 0.05 against a short: fill = 124·1.05 = 130.2.
    # E_close = 50 − 5·(130.2 − 100) = −101.
    out = run_replay(
        series("AAA", [flat(100), (124, 125, 123, 124)]),
        {"AAA": inst(impact_coef=0.1 / SIGMA_D)},
        [cross("s", 50, pos("AAA", -1, 5, 100))],
    )
    assert_liquidated(only_row(out), trigger=t(1), e_close=-101.0)


@pytest.mark.parametrize(
    "volume, depth",
    [
        # no volume at all (FX): V_d = depth_notional = 2480, same numbers as above → −311
        pytest.param(float("nan"), 2480.0, id="volume-missing"),
        pytest.param(0.0, 2480.0, id="volume-zero"),
        # volume present: V_d comes from it (2480); depth_notional is not used
        pytest.param(1.0, 1e12, id="volume-wins-over-depth"),
    ],
)
def test_impact_from_depth_notional(run_replay, volume, depth):
    data = bars(history("AAA", volume=volume), walk("AAA", GAP_TO_62, volume=volume))
    instruments = {"AAA": inst(asset_class="fx", impact_coef=0.1 / SIGMA_D, depth_notional=depth)}
    out = run_replay(data, instruments, [cross("a", 100, BASE)])
    assert_liquidated(only_row(out), trigger=t(1), e_close=-311.0)


def test_impact_day_without_volume_counts_in_the_mean(run_replay):
    # Day 2 (close 110) has NaN volume in every bar: it adds 0 but still counts.
    # V_d = (2400 + 0 + 2400) / 3 = 1600; σ_d unchanged (closes are there).
    # Gap to 40: q·x / V_d = 400/1600 = 1/4 → impact 0.1·0.5 = 0.05, fill = 38.
    # E_close = 100 + 10·(38 − 100) = −520. (depth_notional is ignored: some bars have volume.)
    hist = history("AAA")
    day2 = hist["ts"].dt.floor("D") == AS_OF - 2 * DAY
    hist.loc[day2, "volume"] = float("nan")
    data = bars(hist, walk("AAA", [flat(100), (40, 41, 39, 40)]))
    instruments = {"AAA": inst(impact_coef=0.1 / SIGMA_D, depth_notional=1e12)}
    out = run_replay(data, instruments, [cross("a", 100, BASE)])
    assert_liquidated(only_row(out), trigger=t(1), e_close=-520.0)


def test_impact_day_without_bars_is_skipped_not_filled(run_replay):
    # Four calendar days, the third without bars: closes 100, 110, —, 100.
    # Returns over consecutive days present: ln(110/100), ln(100/110) → σ_d = √2·ln 1.1 again;
    # V_d = mean over the 3 days present = 2480 again → same as the volume test: −311.
    # (Filling the day: a zero return / a zero-volume day would change σ_d or V_d.)
    data = bars(history("AAA", (100, 110, None, 100)), walk("AAA", GAP_TO_62))
    out = run_replay(data, {"AAA": inst(impact_coef=0.1 / SIGMA_D)}, [cross("a", 100, BASE)])
    assert_liquidated(only_row(out), trigger=t(1), e_close=-311.0)


def test_impact_window_starts_thirty_days_before_as_of(run_replay):
    # Days at as_of − 30d (close 100, ts ≥ as_of − 30 days: inside), as_of − 2d (110),
    # as_of − 1d (100): the same three closes and daily sums → −311 as above.
    closes = (100.0,) + (None,) * 27 + (110.0, 100.0)
    data = bars(history("AAA", closes), walk("AAA", GAP_TO_62))
    out = run_replay(data, {"AAA": inst(impact_coef=0.1 / SIGMA_D)}, [cross("a", 100, BASE)])
    assert_liquidated(only_row(out), trigger=t(1), e_close=-311.0)


@pytest.mark.parametrize(
    "account, bar, e_close",
    [
        # Y = 100/σ_d: Y·σ_d·√(1/4) = 50 → min(1, 50) = 1: the long fills at x − |x| = 0.
        # E_close = 100 + 10·(0 − 100) = −900.
        pytest.param(cross("a", 100, BASE), (62, 63, 61, 62), -900.0, id="long"),
        # the short fills at x + |x| = 248: E_close = 50 − 5·(248 − 100) = −690.
        pytest.param(
            cross("s", 50, pos("AAA", -1, 5, 100)), (124, 125, 123, 124), -690.0, id="short"
        ),
    ],
)
def test_impact_is_capped_at_the_price(run_replay, account, bar, e_close):
    out = run_replay(
        series("AAA", [flat(100), bar]), {"AAA": inst(impact_coef=100 / SIGMA_D)}, [account]
    )
    assert_liquidated(only_row(out), trigger=t(1), e_close=e_close)


def test_impact_on_a_negative_price_uses_its_absolute_value(run_replay):
    # WTI, April 2020. Long 31 @ 100, C = 310 (B = 90). Gap to −20 at 01:00: x = −20.
    # q·|x| / V_d = 31·20 / 2480 = 1/4 → impact 0.05·|x| = 1 against the long: fill = −21.
    # E_close = 310 + 31·(−21 − 100) = 310 − 3751 = −3441.
    out = run_replay(
        series("AAA", [flat(100), (-20, -19, -21, -20)]),
        {"AAA": inst(asset_class="commodity", impact_coef=0.1 / SIGMA_D)},
        [cross("w", 310, pos("AAA", 1, 31, 100))],
    )
    assert_liquidated(only_row(out), trigger=t(1), e_close=-3441.0)


# ================================================================ fees


@pytest.mark.parametrize(
    "bar, liquidation_fee, e_close, e_final",
    [
        # Intrabar at L ≈ 90.909091, taker 0.1%: E_close = 10·L − 900 − 0.001·10·L
        # = 9.99·L − 900 ≈ 8.181818; liquidation fee 0.5%·10·L ≈ 4.545455 < E_close:
        # E_final ≈ 3.636364.
        pytest.param(
            (95, 96, 80, 85),
            0.005,
            9.99 * L_BASE - 900,
            9.99 * L_BASE - 900 - 0.05 * L_BASE,
            id="fee-fits",
        ),
        # liquidation fee 2%·10·L ≈ 18.18 > E_close ≈ 8.18: it takes what is left, E_final = 0.
        pytest.param((95, 96, 80, 85), 0.02, 9.99 * L_BASE - 900, 0.0, id="fee-capped"),
        # Gap to 85: E_close = 100 − 150 − 0.001·850 = −50.85 < 0: min(17, max(−50.85, 0)) = 0,
        # so E_final = E_close = −50.85 and the shortfall includes the taker fee: 50.85.
        pytest.param((85, 86, 84, 85), 0.02, -50.85, -50.85, id="negative-no-liquidation-fee"),
    ],
)
def test_taker_and_liquidation_fees(run_replay, bar, liquidation_fee, e_close, e_final):
    instruments = {"AAA": inst(taker_fee=0.001, liquidation_fee=liquidation_fee)}
    out = run_replay(series("AAA", [flat(100), bar]), instruments, [cross("a", 100, BASE)])
    assert_liquidated(only_row(out), trigger=t(1), e_close=e_close, e_final=e_final)


def test_fees_are_per_position_in_a_cross_account(run_replay):
    # Cross C = 200, long AAA 10 @ 100 (taker 0.1%, liquidation 1%), long BBB 10 @ 100
    # (taker 0.2%, liquidation 0). 01:00 AAA (95, 95, 70, 80), BBB flat 100:
    # open E = 150 > MM 19.5; low E = −100: trigger. θ*: 10·P − 800 = 0.1·P + 10 → P = 810/9.9.
    # Before fees E = 10·P − 800 ≈ 18.181818.
    # taker = 0.001·10·P + 0.002·10·100 ≈ 0.818182 + 2 = 2.818182 → E_close ≈ 15.363636.
    # liquidation = 0.01·10·P + 0 ≈ 8.181818 → E_final ≈ 7.181818.
    p = 810 / 9.9
    e_close = 10 * p - 800 - (0.001 * 10 * p + 0.002 * 10 * 100)
    e_final = e_close - 0.01 * 10 * p
    data = bars(series("AAA", [flat(100), (95, 95, 70, 80)]), series("BBB"))
    instruments = {
        "AAA": inst(taker_fee=0.001, liquidation_fee=0.01),
        "BBB": inst(taker_fee=0.002, liquidation_fee=0.0),
    }
    account = cross("f", 200, pos("AAA", 1, 10, 100), pos("BBB", 1, 10, 100))
    out = run_replay(data, instruments, [account])
    assert_liquidated(only_row(out), trigger=t(1), e_close=e_close, e_final=e_final)


# ================================================================ as_of


@pytest.mark.parametrize(
    "account",
    [
        # long 10 @ 109.5, C = 100: E(100) = 100 − 95 = 5 ≤ MM(100) = 10
        pytest.param(cross("l", 100, pos("AAA", 1, 10, 109.5)), id="long"),
        # short 10 @ 90.5, C = 100: E(100) = 100 − 95 = 5 ≤ MM(100) = 10
        pytest.param(cross("s", 100, pos("AAA", -1, 10, 90.5)), id="short"),
    ],
)
def test_already_in_liquidation_at_as_of(run_replay, account):
    # Every outcome field empty, even though the walk would trigger at 01:00.
    out = run_replay(series("AAA", [flat(100), (50, 150, 50, 100)]), {"AAA": inst()}, [account])
    assert_in_liquidation(only_row(out))


def test_as_of_mid_bar_ignores_the_bar_in_progress(run_replay):
    # as_of = 00:30. The bar opening at 00:00 (100, 100, 50, 60) is in progress:
    # - it is not walked (it opened before as_of), although its low 50 would trigger;
    # - its close 60 is not the last close (E(60) = −300 would be in liquidation): the
    #   last close is 100, from the 23:00 bar, complete at 00:00 ≤ as_of;
    # - it is not in the impact window (ts + 1h > as_of): σ_d = √2·ln 1.1, V_d = 2480.
    # Walk: 01:00 flat 100, 02:00 (95, 96, 80, 85) triggers at L = 900/9.9.
    # Y = 0.1/σ_d: fill = L·(1 − 0.1·√(10·L/2480)) ≈ 85.405; E_close = 10·fill − 900 ≈ −45.95.
    # Time to liquidation: 02:00 − 00:30 = 5400 s. Bars go on to 01:00 the next day (≥ as_of + H).
    as_of = AS_OF + pd.Timedelta(minutes=30)
    rows = [(100, 100, 50, 60), flat(100), (95, 96, 80, 85)]
    data = bars(history("AAA"), walk("AAA", rows, until=as_of + H + HOUR))
    fill = L_BASE * (1 - 0.1 * math.sqrt(10 * L_BASE / V_D))
    instruments = {"AAA": inst(impact_coef=0.1 / SIGMA_D)}
    out = run_replay(data, instruments, [cross("a", 100, BASE, as_of=as_of)])
    row = only_row(out)
    assert_liquidated(row, trigger=t(2), e_close=10 * fill - 900, as_of=as_of)
    assert float(row["time_to_liquidation_s"]) == 5400


def test_walk_ends_before_as_of_plus_h(run_replay):
    # Horizon 3h: bars 00:00–02:00 are walked. A crash in the bar opening at as_of + H = 03:00
    # is outside [as_of, as_of + H): not liquidated, and that bar means not censored either.
    rows = [flat(100), flat(100), flat(100), (50, 50, 40, 45)]
    out = run_replay(series("AAA", rows), {"AAA": inst()}, [cross("a", 100, BASE)], horizon="3h")
    assert_not_liquidated(only_row(out))


def test_walk_starts_with_the_bar_opening_at_as_of(run_replay):
    # The bar opening exactly at as_of (95, 96, 80, 85) is walked: trigger at 00:00, 0 s,
    # fill = L, E_close = 10·L − 900 ≈ 9.090909.
    out = run_replay(series("AAA", [(95, 96, 80, 85)]), {"AAA": inst()}, [cross("a", 100, BASE)])
    row = only_row(out)
    assert_liquidated(row, trigger=t(0), e_close=10 * L_BASE - 900)
    assert float(row["time_to_liquidation_s"]) == 0


# ================================================================ errors


@pytest.mark.parametrize(
    "closes",
    [
        pytest.param((110.0, 100.0), id="two-days-one-return"),
        # three days, but the first ends before as_of − 30 days: outside the window
        pytest.param((100.0,) + (None,) * 28 + (110.0, 100.0), id="oldest-day-outside-30-days"),
    ],
)
@pytest.mark.parametrize("impact_coef", [1.0, 0.0])  # σ_d is needed even when Y = 0
def test_insufficient_history_is_an_error(run_replay, closes, impact_coef):
    data = bars(history("AAA", closes), walk("AAA", []))
    out = run_replay(data, {"AAA": inst(impact_coef=impact_coef)}, [cross("a", 100, BASE)])
    assert_error(only_row(out), "AAA", "history")


def test_non_positive_daily_close_in_the_window_is_an_error(run_replay):
    # closes 100, −5, 110, 100: ln(−5/100) is undefined → σ_d undefined → error.
    data = bars(history("AAA", (100.0, -5.0, 110.0, 100.0)), walk("AAA", []))
    instruments = {"AAA": inst(asset_class="commodity", impact_coef=1.0)}
    out = run_replay(data, instruments, [cross("a", 100, BASE)])
    assert_error(only_row(out), "AAA")


def test_no_liquidity_is_an_error(run_replay):
    # volume missing everywhere and crypto has no depth_notional: no V_d. The account would
    # be ok and never liquidated (flat bars, E = 100 > MM = 10).
    data = bars(history("AAA", volume=float("nan")), walk("AAA", [], volume=float("nan")))
    out = run_replay(data, {"AAA": inst(impact_coef=1.0)}, [cross("a", 100, BASE)])
    assert_error(only_row(out), "AAA")


def test_errors_come_before_in_liquidation(run_replay):
    # Each account would be in liquidation at as_of (AAA long 10 @ 109.5, C = 100: E = 5 ≤ 10).
    in_liq = pos("AAA", 1, 10, 109.5)
    data = bars(
        series("AAA"),
        history("NOLIQ", volume=float("nan")),
        walk("NOLIQ", [], volume=float("nan")),
        history("SHORT", (110.0, 100.0)),
        walk("SHORT", []),
    )
    instruments = {"AAA": inst(), "NOLIQ": inst(impact_coef=1.0), "SHORT": inst(impact_coef=1.0)}
    accounts = [
        cross("unknown-symbol", 100, in_liq, pos("ZZZ", 1, 1, 100)),
        cross("no-liquidity", 100, pos("NOLIQ", 1, 10, 109.5)),
        cross("short-history", 100, pos("SHORT", 1, 10, 109.5)),
        isolated("isolated", pos("AAA", 1, 10, 109.5, 100), pos("ZZZ", 1, 1, 100, 100)),
        cross("control", 100, in_liq),
    ]
    out = run_replay(data, instruments, accounts)
    assert out.attrs["exit_code"] == 0
    assert list(out["account_id"]) == [a["account_id"] for a in accounts]
    assert_error(out.iloc[0], "ZZZ")
    assert_error(out.iloc[1], "NOLIQ")
    assert_error(out.iloc[2], "SHORT")
    assert_error(out.iloc[3], "ZZZ")
    assert_in_liquidation(out.iloc[4])


def test_errors_come_before_a_liquidation(run_replay):
    # The base account gaps to 85 (would be liquidated, E_close = −50) but its history has
    # only one daily return.
    data = bars(history("AAA", (110.0, 100.0)), walk("AAA", [flat(100), (85, 86, 84, 85)]))
    out = run_replay(data, {"AAA": inst(impact_coef=1.0)}, [cross("a", 100, BASE)])
    assert_error(only_row(out), "AAA")


# ================================================================ censoring


def test_data_ending_before_the_horizon_without_trigger_is_censored(run_replay):
    # Last bar opens at as_of + H − 1h = 23:00: no bar at or after as_of + H.
    data = bars(history("AAA"), walk("AAA", [], until=AS_OF + H - HOUR))
    out = run_replay(data, {"AAA": inst()}, [cross("a", 100, BASE)])
    assert_error(only_row(out), "bars of AAA end before the horizon")


def test_data_with_a_bar_at_as_of_plus_h_is_not_censored(run_replay):
    data = bars(history("AAA"), walk("AAA", [], until=AS_OF + H))
    out = run_replay(data, {"AAA": inst()}, [cross("a", 100, BASE)])
    assert_not_liquidated(only_row(out))


def test_cross_account_censored_by_its_one_short_symbol(run_replay):
    data = bars(series("AAA"), history("BBB"), walk("BBB", [], until=t(5)))
    account = cross("x", 200, pos("AAA", 1, 10, 100), pos("BBB", 1, 10, 100))
    out = run_replay(data, {"AAA": inst(), "BBB": inst()}, [account])
    assert_error(only_row(out), "bars of BBB end before the horizon")


def test_isolated_one_censored_position_censors_the_account(run_replay):
    # AAA (C = 100) gaps to 85 and is liquidated; BBB (C = 100) has no trigger and its data
    # ends at 05:00: "one censored position makes the whole account censored".
    aaa = series("AAA", [flat(100), (85, 86, 84, 85)])
    data = bars(aaa, history("BBB"), walk("BBB", [], until=t(5)))
    account = isolated("i", pos("AAA", 1, 10, 100, 100), pos("BBB", 1, 10, 100, 100))
    out = run_replay(data, {"AAA": inst(), "BBB": inst()}, [account])
    assert_error(only_row(out), "bars of BBB end before the horizon")


# ================================================================ output format


def test_output_format(run_replay):
    # Rows in input order (ids deliberately unsorted), one of each status.
    data = bars(series("AAA", [flat(100), (85, 86, 84, 85)]))
    accounts = [
        cross("z-liquidated", 100, BASE),  # gap to 85: E_close = −50
        cross("a-safe", 1000, BASE),  # E(84) = 1000 − 160 = 840 > MM: never liquidated
        cross("m-in-liquidation", 100, pos("AAA", 1, 10, 109.5)),
        cross("b-error", 100, pos("ZZZ", 1, 1, 100)),
        {**cross("c-plus-offset", 100, BASE), "as_of": "2024-01-04T00:00:00+00:00"},
    ]
    out = run_replay(data, {"AAA": inst()}, accounts)
    assert out.attrs["exit_code"] == 0
    assert list(out.columns) == COLUMNS
    assert list(out["account_id"]) == [a["account_id"] for a in accounts]
    assert list(out["status"]) == ["ok", "ok", "in_liquidation", "error", "ok"]
    assert set(out["as_of"]) == {"2024-01-04T00:00:00Z"}  # written with Z, whatever came in

    liq = out.iloc[0]
    assert (liq["liquidated"], liq["negative"]) == ("true", "true")
    assert liq["trigger_ts"] == "2024-01-04T01:00:00Z"
    assert float(liq["time_to_liquidation_s"]) == 3600.0
    for field in MONEY:
        assert close_enough(liq[field], 50.0 if field == "shortfall" else -50.0), field
    assert liq["error"] == ""
    assert out.iloc[4].drop("account_id").equals(liq.drop("account_id"))

    assert_not_liquidated(out.iloc[1])  # false, false, 0 and the rest empty
    assert_in_liquidation(out.iloc[2])  # everything empty
    assert_error(out.iloc[3], "ZZZ")  # everything empty but the error


@pytest.mark.parametrize("bars_format", ["parquet", "csv"])
def test_bars_file_formats(run_replay, bars_format):
    out = run_replay(
        series("AAA", [flat(100), (85, 86, 84, 85)]),
        {"AAA": inst()},
        [cross("a", 100, BASE)],
        bars_format=bars_format,
    )
    assert_liquidated(only_row(out), trigger=t(1), e_close=-50.0)
