"""Malformed accounts, bars, instruments and arguments given to ``liqrisk replay``.

docs/liquidation-contract.md, "Malformed input": a bad account line becomes an ``error``
row that names the line and the field and never stops the other accounts; a bad bars
file stops the command before replaying, naming file, row and symbol.

Readings chosen where the contract leaves room (see each test):
- line numbers are the file's physical 1-based line numbers, blank lines included;
- ``side`` must equal 1 or -1 as a JSON number: ``1.0`` / ``-1.0`` are the same numbers
  (JSON has one number type; JSON Schema's "integer" accepts 1.0) and are accepted, while
  ``2``, ``0``, ``1.5``, ``"1"`` and ``true`` are errors;
- collateral 0 is not negative, so it is valid.

Every case sits between two good accounts (a liquidated one and a safe one) whose rows
must come out exactly as without it. The history is flat hourly bars over three days
(closes 100, 110, 100, volume 1), so every symbol has σ_d and V_d.
"""

import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from liqrisk.pipelines.cli import main

AS_OF = pd.Timestamp("2024-01-04T00:00:00Z")
HOUR = pd.Timedelta(hours=1)
OUTCOME_FIELDS = (
    "liquidated",
    "negative",
    "shortfall",
    "time_to_liquidation_s",
    "trigger_ts",
    "e_close",
    "e_final",
)


def hourly(symbol: str, closes: list[float]) -> pd.DataFrame:
    ts = pd.DatetimeIndex([AS_OF - 72 * HOUR + i * HOUR for i in range(len(closes))]).as_unit("us")
    return pd.DataFrame(
        {
            "symbol": symbol,
            "ts": ts,
            **{column: closes for column in ("open", "high", "low", "close")},
            "volume": 1.0,
        }
    )


def symbol_bars(symbol: str, gap_to: float | None = None) -> pd.DataFrame:
    """72 h of history (days closing 100, 110, 100), then 25 walk bars at 100 from as_of;
    with ``gap_to`` the 01:00 bar and all after sit at that price."""
    history = [100.0] * 24 + [110.0] * 24 + [100.0] * 24
    walk = [100.0] + [100.0 if gap_to is None else gap_to] * 24
    return hourly(symbol, history + walk)


def default_bars() -> pd.DataFrame:
    # AAA gaps to 85 at 01:00 (liquidates the good account); BBB and LIM stay at 100.
    frames = [symbol_bars("AAA", gap_to=85.0), symbol_bars("BBB"), symbol_bars("LIM")]
    return pd.concat(frames, ignore_index=True)


def inst(**overrides: Any) -> dict[str, Any]:
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


# LIM's only tier stops at notional 1000 (a capped last tier: venues refuse larger positions)
INSTRUMENTS = {"AAA": inst(), "BBB": inst(), "LIM": inst(tiers=[[1000.0, 0.01, 0.0]])}


def position(**overrides: Any) -> dict[str, Any]:
    return {"symbol": "BBB", "side": 1, "qty": 10, "entry_price": 100} | overrides


def account(account_id: str = "bad", **overrides: Any) -> dict[str, Any]:
    base = {
        "account_id": account_id,
        "as_of": "2024-01-04T00:00:00Z",
        "margin_mode": "cross",
        "collateral": 100,
        "positions": [position()],
    }
    return base | overrides


def without(d: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != key}


def with_position(**overrides: Any) -> dict[str, Any]:
    """The default bad-candidate account with one position changed."""
    return account(positions=[position(**overrides)])


def missing_in_position(key: str) -> dict[str, Any]:
    return account(positions=[without(position(), key)])


# Long AAA 10 @ 100, C = 100: gaps to 85 at 01:00, E_close = 100 + 10·(85 − 100) = −50.
GOOD_LIQUIDATED = account("good-1", positions=[position(symbol="AAA")])
# Long BBB 10 @ 100, C = 100 on flat bars: never liquidated.
GOOD_SAFE = account("good-2")


def assert_good_rows(first: pd.Series, last: pd.Series) -> None:
    assert first["account_id"] == "good-1" and first["status"] == "ok", first.to_dict()
    assert (first["liquidated"], first["negative"]) == ("true", "true"), first.to_dict()
    assert abs(float(first["e_close"]) + 50) <= 0.01, first.to_dict()
    assert last["account_id"] == "good-2" and last["status"] == "ok", last.to_dict()
    assert last["liquidated"] == "false", last.to_dict()


def assert_error_row(row: pd.Series, *, line: int | None, needles: tuple[str, ...]) -> None:
    report = row.to_dict()
    assert row["status"] == "error", report
    for field in OUTCOME_FIELDS:
        assert row[field] == "", (report, field)
    message = row["error"]
    if line is not None:
        named = re.search(rf"\bline\W{{0,3}}{line}\b", message, re.IGNORECASE)
        assert named, (report, f"line {line}")
    for needle in needles:
        assert needle.lower() in message.lower(), (report, needle)


def run_sandwiched(run_replay, bad: dict[str, Any] | str, needles: tuple[str, ...]) -> pd.Series:
    """good-1 on line 1, the bad account on line 2, good-2 on line 3."""
    out = run_replay(default_bars(), INSTRUMENTS, [GOOD_LIQUIDATED, bad, GOOD_SAFE])
    assert out.attrs["exit_code"] == 0
    assert len(out) == 3, out
    assert_good_rows(out.iloc[0], out.iloc[2])
    assert_error_row(out.iloc[1], line=2, needles=needles)
    return out.iloc[1]


# ================================================================ account lines


BAD_LINES = [
    pytest.param('{"account_id": "bad", "as_of": ', (), id="not-json-truncated"),
    pytest.param("account bad, long 10 BBB", (), id="not-json-text"),
    pytest.param("[1, 2, 3]", (), id="json-but-not-an-object"),
    pytest.param(without(account(), "account_id"), ("account_id",), id="missing-account_id"),
    pytest.param(without(account(), "as_of"), ("as_of",), id="missing-as_of"),
    pytest.param(account(as_of="yesterday"), ("as_of",), id="as_of-not-a-timestamp"),
    pytest.param(account(as_of=1704326400), ("as_of",), id="as_of-a-number"),
    pytest.param(without(account(), "margin_mode"), ("margin_mode",), id="missing-margin_mode"),
    pytest.param(account(margin_mode="portfolio"), ("margin_mode",), id="unknown-margin_mode"),
    pytest.param(without(account(), "collateral"), ("collateral",), id="cross-missing-collateral"),
    pytest.param(account(collateral="100"), ("collateral",), id="collateral-a-string"),
    pytest.param(account(collateral=True), ("collateral",), id="collateral-a-bool"),
    pytest.param(account(collateral=-1), ("collateral",), id="collateral-negative"),
    pytest.param(without(account(), "positions"), ("positions",), id="missing-positions"),
    pytest.param(account(positions=[]), ("positions",), id="positions-empty"),
    pytest.param(account(positions={"symbol": "BBB"}), ("positions",), id="positions-not-a-list"),
    pytest.param(account(positions=["BBB"]), ("positions",), id="position-not-an-object"),
    pytest.param(missing_in_position("symbol"), ("symbol",), id="missing-symbol"),
    pytest.param(missing_in_position("side"), ("side",), id="missing-side"),
    pytest.param(missing_in_position("qty"), ("qty",), id="missing-qty"),
    pytest.param(missing_in_position("entry_price"), ("entry_price",), id="missing-entry_price"),
    pytest.param(with_position(side=2), ("side",), id="side-2"),
    pytest.param(with_position(side=0), ("side",), id="side-0"),
    pytest.param(with_position(side=-2), ("side",), id="side-minus-2"),
    pytest.param(with_position(side=1.5), ("side",), id="side-1.5"),
    pytest.param(with_position(side="1"), ("side",), id="side-a-string"),
    pytest.param(with_position(side="long"), ("side",), id="side-long"),
    pytest.param(with_position(side=True), ("side",), id="side-a-bool"),
    pytest.param(with_position(qty="10"), ("qty",), id="qty-a-string"),
    pytest.param(with_position(qty=0), ("qty",), id="qty-zero"),
    pytest.param(with_position(qty=-10), ("qty",), id="qty-negative"),
    pytest.param(with_position(entry_price="100"), ("entry_price",), id="entry_price-a-string"),
    pytest.param(with_position(entry_price=0), ("entry_price",), id="entry_price-zero"),
    pytest.param(with_position(entry_price=-100), ("entry_price",), id="entry_price-negative"),
    pytest.param(with_position(symbol="ZZZ"), ("ZZZ",), id="unknown-symbol"),
    pytest.param(with_position(symbol=7), ("symbol",), id="symbol-a-number"),
    # a good position does not save the account: the bad one is named
    pytest.param(
        account(positions=[position(), position(qty=-1)]), ("qty",), id="second-position-bad"
    ),
    pytest.param(
        without(account(margin_mode="isolated"), "collateral"),
        ("collateral",),
        id="isolated-position-without-collateral",
    ),
    # the account-level collateral is not used for isolated margin, not even as a fallback
    pytest.param(
        account(margin_mode="isolated"),
        ("collateral",),
        id="isolated-position-without-collateral-account-has-one",
    ),
    pytest.param(
        account(margin_mode="isolated", positions=[position(collateral=-5)]),
        ("collateral",),
        id="isolated-position-collateral-negative",
    ),
    pytest.param(
        account(margin_mode="isolated", positions=[position(collateral="100")]),
        ("collateral",),
        id="isolated-position-collateral-a-string",
    ),
    # LIM's only tier stops at notional 1000; 11·100 = 1100 at as_of is above it
    pytest.param(
        with_position(symbol="LIM", qty=11), ("LIM", "notional"), id="tier-overflow"
    ),
]


@pytest.mark.parametrize("bad, needles", BAD_LINES)
def test_malformed_account_line_is_an_error_row_that_stops_nothing(run_replay, bad, needles):
    run_sandwiched(run_replay, bad, needles)


@pytest.mark.parametrize("side", [1.0, -1.0])
def test_side_as_a_float_equal_to_one_is_accepted(run_replay, side):
    # Reading: 1.0 is the number 1 (JSON has one number type). The account is then exactly
    # the integer-side account: long (or short) BBB 10 @ 100 on flat bars, never liquidated.
    out = run_replay(default_bars(), INSTRUMENTS, [account("f", positions=[position(side=side)])])
    assert out.attrs["exit_code"] == 0
    row = out.iloc[0]
    assert (row["status"], row["liquidated"], row["error"]) == ("ok", "false", ""), row.to_dict()


def test_zero_collateral_is_valid(run_replay):
    # Not negative, so not an error: long BBB 10 @ 100 with C = 0 has E = 0 ≤ MM = 10 at as_of.
    out = run_replay(default_bars(), INSTRUMENTS, [account("z", collateral=0)])
    assert out.attrs["exit_code"] == 0
    assert out.iloc[0]["status"] == "in_liquidation", out.iloc[0].to_dict()


def test_notional_within_a_capped_last_tier_is_valid(run_replay):
    # LIM's last cap is 1000; 9·100 = 900 at as_of is inside it: ok, never liquidated.
    lim = account("lim", positions=[position(symbol="LIM", qty=9)])
    out = run_replay(default_bars(), INSTRUMENTS, [lim])
    assert out.attrs["exit_code"] == 0
    row = out.iloc[0]
    assert (row["status"], row["liquidated"]) == ("ok", "false"), row.to_dict()


def test_isolated_account_level_collateral_may_be_left_out(run_replay):
    iso = account("iso", margin_mode="isolated", positions=[position(collateral=100)])
    out = run_replay(default_bars(), INSTRUMENTS, [without(iso, "collateral")])
    assert out.attrs["exit_code"] == 0
    row = out.iloc[0]
    assert (row["status"], row["liquidated"]) == ("ok", "false"), row.to_dict()


def test_blank_lines_are_skipped_and_line_numbers_count_them(run_replay):
    # Lines: 1 good-1, 2 blank, 3 whitespace, 4 not JSON, 5 blank, 6 good-2.
    lines = [GOOD_LIQUIDATED, "", "   ", "{nope", "", GOOD_SAFE]
    out = run_replay(default_bars(), INSTRUMENTS, lines)
    assert out.attrs["exit_code"] == 0
    assert len(out) == 3, out  # blank lines are not accounts
    assert_good_rows(out.iloc[0], out.iloc[2])
    assert_error_row(out.iloc[1], line=4, needles=())


def test_many_bad_lines_each_get_their_row_in_order(run_replay):
    accounts = [
        "not json",
        GOOD_LIQUIDATED,
        account("b1", positions=[position(side=2)]),
        account("b2", collateral=-1),
        GOOD_SAFE,
        account("b3", positions=[position(symbol="ZZZ")]),
    ]
    out = run_replay(default_bars(), INSTRUMENTS, accounts)
    assert out.attrs["exit_code"] == 0
    assert list(out["status"]) == ["error", "ok", "error", "error", "ok", "error"]
    assert list(out["account_id"])[1:] == ["good-1", "b1", "b2", "good-2", "b3"]
    assert_error_row(out.iloc[0], line=1, needles=())
    assert_error_row(out.iloc[2], line=3, needles=("side",))
    assert_error_row(out.iloc[3], line=4, needles=("collateral",))
    assert_error_row(out.iloc[5], line=6, needles=("ZZZ",))
    assert_good_rows(out.iloc[1], out.iloc[4])


# ================================================================ bars file


def _break_duplicate(frame: pd.DataFrame) -> tuple[pd.DataFrame, set[int]]:
    # row 5 repeated: rows 5 and 6 share (AAA, ts)
    out = pd.concat([frame.iloc[:6], frame.iloc[5:6], frame.iloc[6:]], ignore_index=True)
    return out, {5, 6}


def _break_missing_close(frame: pd.DataFrame) -> tuple[pd.DataFrame, set[int]]:
    frame = frame.copy()
    frame.loc[5, "close"] = math.nan
    return frame, {5}


def _break_missing_open(frame: pd.DataFrame) -> tuple[pd.DataFrame, set[int]]:
    frame = frame.copy()
    frame.loc[5, "open"] = math.nan
    return frame, {5}


def _break_high_below_low(frame: pd.DataFrame) -> tuple[pd.DataFrame, set[int]]:
    frame = frame.copy()
    frame.loc[5, ["high", "low"]] = [99.0, 101.0]
    return frame, {5}


@pytest.mark.parametrize("bars_format", ["parquet", "csv"])
@pytest.mark.parametrize(
    "breaker",
    [_break_duplicate, _break_missing_close, _break_missing_open, _break_high_below_low],
    ids=["duplicate-symbol-ts", "missing-close", "missing-open", "high-below-low"],
)
def test_malformed_bars_stop_before_replaying(run_replay, tmp_path, capsys, breaker, bars_format):
    broken, rows = breaker(default_bars())  # row 5 is AAA's 05:00 bar of its first day
    out = run_replay(broken, INSTRUMENTS, [GOOD_LIQUIDATED, GOOD_SAFE], bars_format=bars_format)
    err = capsys.readouterr().err
    assert out.attrs["exit_code"] != 0, "a malformed bars file must stop the command"
    assert not (tmp_path / "outcomes.csv").exists(), "nothing may be replayed or written"
    assert f"bars.{bars_format}" in err, err  # the file
    assert "AAA" in err, err  # the symbol
    # the row: 0-based position, 1-based row, or CSV line (header is line 1)
    named = {int(n) for n in re.findall(r"\brows?\W{0,3}(\d+)", err, re.IGNORECASE)}
    plausible = {r + k for r in rows for k in (0, 1, 2)}
    assert named & plausible, (err, sorted(plausible))


def test_missing_volume_does_not_make_bars_invalid(run_replay):
    # Volume may be missing (FX); only prices are required.
    frame = default_bars()
    frame.loc[5, "volume"] = math.nan
    out = run_replay(frame, INSTRUMENTS, [GOOD_LIQUIDATED, GOOD_SAFE])
    assert out.attrs["exit_code"] == 0
    assert_good_rows(out.iloc[0], out.iloc[1])


# ================================================================ instruments file


BAD_INSTRUMENTS = [
    pytest.param(inst(taker_fee=-0.001), "taker_fee", id="negative-taker_fee"),
    pytest.param(inst(liquidation_fee=-0.01), "liquidation_fee", id="negative-liquidation_fee"),
    pytest.param(inst(tiers=[[None, 1.0, 0.0]]), "mmr", id="mmr-1"),
    pytest.param(inst(tiers=[[None, 1.5, 0.0]]), "mmr", id="mmr-above-1"),
    pytest.param(
        inst(tiers=[[5000.0, 0.01, 0.0], [1000.0, 0.02, 10.0], [None, 0.05, 40.0]]),
        "tiers",
        id="tiers-not-ascending",
    ),
    pytest.param(without(inst(), "asset_class"), "asset_class", id="missing-asset_class"),
    pytest.param(inst(asset_class="bonds"), "asset_class", id="unknown-asset_class"),
    pytest.param(inst(slippage_to_extreme=1.5), "slippage_to_extreme", id="lambda-above-1"),
    pytest.param(inst(latency_bars=-1), "latency_bars", id="negative-latency"),
    pytest.param(inst(latency_bars=1.5), "latency_bars", id="fractional-latency"),
    pytest.param(inst(impact_coef="1"), "impact_coef", id="impact_coef-a-string"),
    pytest.param(inst(depth_notional=-1.0), "depth_notional", id="negative-depth"),
    pytest.param(inst(bar_length="1 hour"), "bar_length", id="bad-bar_length"),
]


@pytest.mark.parametrize("bad, field", BAD_INSTRUMENTS)
def test_bad_instrument_errors_only_the_accounts_using_it(run_replay, bad, field):
    instruments = {**INSTRUMENTS, "AAA": bad}
    accounts = [
        GOOD_SAFE,  # BBB only
        account("uses-aaa", positions=[position(symbol="AAA")]),
        account("cross-both", collateral=200, positions=[position(symbol="AAA"), position()]),
        account(
            "iso-both",
            margin_mode="isolated",
            positions=[position(symbol="AAA", collateral=100), position(collateral=100)],
        ),
        account("bbb-again", collateral=50),
    ]
    out = run_replay(default_bars(), instruments, accounts)
    assert out.attrs["exit_code"] == 0
    assert list(out["account_id"]) == [a["account_id"] for a in accounts]
    for i in (1, 2, 3):
        assert_error_row(out.iloc[i], line=None, needles=("AAA", field))
    for i in (0, 4):
        row = out.iloc[i]
        outcome = (row["status"], row["liquidated"], row["error"])
        assert outcome == ("ok", "false", ""), row.to_dict()


def _write_inputs(tmp_path: Path, instruments_text: str) -> list[str]:
    bars_path = tmp_path / "bars.parquet"
    default_bars().to_parquet(bars_path, index=False)
    (tmp_path / "instruments.json").write_text(instruments_text)
    (tmp_path / "accounts.jsonl").write_text(json.dumps(GOOD_SAFE) + "\n")
    return [
        "replay",
        "--bars", str(bars_path),
        "--instruments", str(tmp_path / "instruments.json"),
        "--accounts", str(tmp_path / "accounts.jsonl"),
        "--horizon", "24h",
        "--out", str(tmp_path / "outcomes.csv"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('{"AAA": {"asset_class": "crypto",}', id="truncated"),
        pytest.param("", id="empty"),
        pytest.param("asset_class: crypto", id="yaml"),
    ],
)
def test_instruments_file_not_json_stops_with_a_clear_error(tmp_path, capsys, text):
    code = main(_write_inputs(tmp_path, text))  # must return, not raise a traceback
    err = capsys.readouterr().err
    assert code != 0
    assert "instruments" in err.lower(), err
    assert not (tmp_path / "outcomes.csv").exists()


# ================================================================ --horizon


@pytest.mark.parametrize("horizon", ["24 hours", "0h", "24", "h", "1.5h", "24x", "1y", ""])
def test_horizon_garbage_exits_2_naming_the_option(run_replay, capsys, horizon):
    out = run_replay(default_bars(), INSTRUMENTS, [GOOD_SAFE], horizon=horizon)
    err = capsys.readouterr().err
    assert out.attrs["exit_code"] == 2
    assert "--horizon" in err, err
