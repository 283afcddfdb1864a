"""Snapshot files: JSONL and Parquet give the same Snapshots; bad Parquet rows are errors that
name the row and the field, make their whole account an error and never stop the others.

Parquet layout (pipelines/accounts.py, ``read_snapshots``): one row per position,
``account_id, as_of, margin_mode, collateral`` repeated on each row of an account,
``symbol, side, qty, entry_price`` and ``position_collateral`` (isolated margin).
"""

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from liqrisk.features.errors import InputError
from liqrisk.features.market import market_from_bars
from liqrisk.pipelines.accounts import parse_accounts, read_snapshots, write_snapshots
from liqrisk.pipelines.bars import read_bars
from liqrisk.pipelines.generator import GeneratorConfig, generate_accounts
from liqrisk.pipelines.instruments_file import read_instruments

DATA = Path(__file__).resolve().parents[2] / "data"
AS_OF = "2024-01-04T00:00:00Z"


def row(account_id: Any = "acct", **overrides: Any) -> dict[str, Any]:
    """One Parquet row: a cross account's position (add position_collateral for isolated)."""
    base = {
        "account_id": account_id,
        "as_of": AS_OF,
        "margin_mode": "cross",
        "collateral": 1000.0,
        "symbol": "BTCUSDT",
        "side": 1,
        "qty": 0.5,
        "entry_price": 40000.0,
        "position_collateral": None,
    }
    return {**base, **overrides}


def write_rows(path: Path, rows: list[dict[str, Any]], schema: pa.Schema | None = None) -> Path:
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


GOOD_FIRST = [row("good-1"), row("good-1", symbol="ETHUSDT", side=-1, qty=3.0, entry_price=2000.0)]
GOOD_LAST = [row("good-2", margin_mode="isolated", collateral=None, position_collateral=250.0)]


# ------------------------------------------------------------------- same accounts, same result


@pytest.fixture(scope="module")
def generated() -> pd.DataFrame:
    catalog = read_instruments(DATA / "instruments.json")
    bars = read_bars(DATA / "crypto_1h.parquet").bars
    market = market_from_bars(bars)
    config = GeneratorConfig.from_dict({"event_share": 0.2})
    return generate_accounts(market, catalog.instruments, config, n_accounts=1500, seed=8)


def test_jsonl_and_parquet_of_the_same_accounts_give_the_same_snapshots(generated, tmp_path):
    assert set(generated["margin_mode"]) == {"cross", "isolated"}
    assert generated.groupby("account").size().max() > 1
    write_snapshots(generated, tmp_path / "accounts.jsonl")
    write_snapshots(generated, tmp_path / "accounts.parquet")
    from_jsonl = read_snapshots(tmp_path / "accounts.jsonl")
    from_parquet = read_snapshots(tmp_path / "accounts.parquet")
    pd.testing.assert_frame_equal(from_jsonl.positions, from_parquet.positions)
    common = ["account", "account_id", "as_of", "error"]
    pd.testing.assert_frame_equal(from_jsonl.accounts[common], from_parquet.accounts[common])
    assert (from_parquet.accounts["error"] == "").all() and len(from_parquet.accounts) == 1500
    # and both are the generator's accounts
    expected = generated[list(from_jsonl.positions.columns)].reset_index(drop=True)
    pd.testing.assert_frame_equal(from_parquet.positions, expected, check_dtype=False)
    # the metadata travels in the Parquet file, the reader ignores it
    assert "leverage_drawn" in pq.read_schema(tmp_path / "accounts.parquet").names


def test_rows_of_an_account_need_not_be_together_and_ids_may_be_integers(tmp_path):
    rows = [row(7), row(3), row(7, symbol="ETHUSDT", qty=2.0, entry_price=2000.0)]
    snaps = read_snapshots(write_rows(tmp_path / "s.parquet", rows))
    assert snaps.accounts["account_id"].tolist() == ["7", "3"]
    assert snaps.accounts["row"].tolist() == [0, 1]
    assert snaps.positions["account"].tolist() == [0, 0, 1]
    assert snaps.positions["symbol"].tolist() == ["BTCUSDT", "ETHUSDT", "BTCUSDT"]
    jsonl = parse_accounts(
        [
            json.dumps(
                {
                    "account_id": 7,
                    "as_of": AS_OF,
                    "margin_mode": "cross",
                    "collateral": 1000.0,
                    "positions": [
                        {"symbol": "BTCUSDT", "side": 1, "qty": 0.5, "entry_price": 40000.0},
                        {"symbol": "ETHUSDT", "side": 1, "qty": 2.0, "entry_price": 2000.0},
                    ],
                }
            ),
            json.dumps(
                {
                    "account_id": 3,
                    "as_of": AS_OF,
                    "margin_mode": "cross",
                    "collateral": 1000.0,
                    "positions": [
                        {"symbol": "BTCUSDT", "side": 1, "qty": 0.5, "entry_price": 40000.0}
                    ],
                }
            ),
        ]
    )
    pd.testing.assert_frame_equal(jsonl.positions, snaps.positions)


def test_timestamp_as_of_column_is_read_as_utc(tmp_path):
    frame = pd.DataFrame([row("a"), row("b")]).assign(
        as_of=pd.to_datetime(["2024-01-04 01:00", "2024-01-04 02:00"]).tz_localize("Europe/Zurich")
    )
    frame.to_parquet(tmp_path / "s.parquet", index=False)
    snaps = read_snapshots(tmp_path / "s.parquet")
    assert snaps.accounts["as_of"].tolist() == [
        pd.Timestamp("2024-01-04T00:00Z"),
        pd.Timestamp("2024-01-04T01:00Z"),
    ]
    assert str(snaps.positions["as_of"].dtype) == "datetime64[us, UTC]"


# ------------------------------------------------------------------------------ bad rows

BAD_ROWS = [
    pytest.param([row("bad", qty=-1.0)], 0, "qty", id="qty-negative"),
    pytest.param([row("bad", qty=0.0)], 0, "qty", id="qty-zero"),
    pytest.param([row("bad", qty=float("inf"))], 0, "qty", id="qty-infinite"),
    pytest.param([row("bad", qty=None)], 0, "qty", id="qty-missing"),
    pytest.param([row("bad", entry_price=-5.0)], 0, "entry_price", id="entry_price-negative"),
    pytest.param([row("bad", side=2)], 0, "side", id="side-2"),
    pytest.param([row("bad", side=0)], 0, "side", id="side-0"),
    pytest.param([row("bad", side=None)], 0, "side", id="side-missing"),
    pytest.param([row("bad", symbol="")], 0, "symbol", id="symbol-empty"),
    pytest.param([row("bad", symbol=None)], 0, "symbol", id="symbol-missing"),
    pytest.param([row("bad", margin_mode="portfolio")], 0, "margin_mode", id="margin_mode-unknown"),
    pytest.param([row("bad", margin_mode=None)], 0, "margin_mode", id="margin_mode-missing"),
    pytest.param([row("bad", as_of="yesterday")], 0, "as_of", id="as_of-not-a-time"),
    pytest.param([row("bad", as_of=None)], 0, "as_of", id="as_of-missing"),
    pytest.param([row("bad", collateral=-1.0)], 0, "collateral", id="collateral-negative"),
    pytest.param([row("bad", collateral=None)], 0, "collateral", id="cross-collateral-missing"),
    pytest.param(
        [row("bad", margin_mode="isolated", collateral=None)],
        0,
        "position_collateral",
        id="isolated-position_collateral-missing",
    ),
    pytest.param(
        [row("bad", margin_mode="isolated", collateral=None, position_collateral=-3.0)],
        0,
        "position_collateral",
        id="isolated-position_collateral-negative",
    ),
    pytest.param(
        [row("bad", margin_mode="isolated", collateral=-2.0, position_collateral=3.0)],
        0,
        "collateral",
        id="isolated-account-collateral-negative",
    ),
    # a good row does not save its account: the bad one is named by its row
    pytest.param(
        [row("bad"), row("bad", symbol="ETHUSDT", qty=-2.0)], 1, "qty", id="second-row-bad"
    ),
    pytest.param(
        [row("bad", qty=-1.0), row("bad", symbol="ETHUSDT", side=5)],
        0,
        "2 bad rows",
        id="two-bad-rows",
    ),
    # repeated account fields must agree
    pytest.param(
        [row("bad"), row("bad", as_of="2024-01-05T00:00:00Z")], 1, "as_of", id="as_of-differs"
    ),
    pytest.param(
        [row("bad"), row("bad", margin_mode="isolated", position_collateral=5.0)],
        1,
        "margin_mode",
        id="margin_mode-differs",
    ),
    pytest.param(
        [row("bad"), row("bad", collateral=999.0)], 1, "collateral", id="collateral-differs"
    ),
]


@pytest.mark.parametrize("bad, bad_row, needle", BAD_ROWS)
def test_a_bad_row_makes_its_account_an_error_naming_row_and_field(tmp_path, bad, bad_row, needle):
    rows = GOOD_FIRST + bad + GOOD_LAST
    snaps = read_snapshots(write_rows(tmp_path / "s.parquet", rows))
    table = snaps.accounts
    assert table["account_id"].tolist() == ["good-1", "bad", "good-2"]
    assert (table.loc[[0, 2], "error"] == "").all(), table["error"].tolist()
    error = table.loc[1, "error"]
    assert f"row {len(GOOD_FIRST) + bad_row}" in error, error
    assert needle in error, error
    # never silently dropped: the account is there, none of its rows reach the positions
    assert table.loc[1, "row"] == len(GOOD_FIRST)
    assert snaps.positions["account"].tolist() == [0, 0, 2]


def test_a_mistyped_column_makes_every_account_using_it_an_error(tmp_path):
    schema = pa.schema(
        [
            ("account_id", pa.string()),
            ("as_of", pa.string()),
            ("margin_mode", pa.string()),
            ("collateral", pa.float64()),
            ("symbol", pa.string()),
            ("side", pa.int8()),
            ("qty", pa.string()),
            ("entry_price", pa.float64()),
            ("position_collateral", pa.float64()),
        ]
    )
    rows = [row("a", qty="0.5"), row("b", qty="1")]
    snaps = read_snapshots(write_rows(tmp_path / "s.parquet", rows, schema))
    assert snaps.accounts["error"].tolist() == [
        "row 0 (symbol BTCUSDT): qty must be a number, got '0.5'",
        "row 1 (symbol BTCUSDT): qty must be a number, got '1'",
    ]
    assert snaps.positions.empty


def test_a_row_without_account_id_is_an_error_account_of_its_own(tmp_path):
    rows = [row("a"), row(None), row(None, symbol="ETHUSDT"), row("a", symbol="ETHUSDT")]
    snaps = read_snapshots(write_rows(tmp_path / "s.parquet", rows))
    assert snaps.accounts["account_id"].tolist() == ["a", "", ""]
    assert snaps.accounts["error"].tolist()[1:] == [
        "row 1 (symbol BTCUSDT): account_id is missing",
        "row 2 (symbol ETHUSDT): account_id is missing",
    ]
    assert snaps.positions["symbol"].tolist() == ["BTCUSDT", "ETHUSDT"]


# per field: values the rules accept, then values they refuse
VALUES = {
    "as_of": ([AS_OF, "2024-01-04 00:00", "2024-01-04T01:00:00+01:00"], ["yesterday", "", None]),
    "margin_mode": (["cross", "isolated"], ["portfolio", "", None]),
    "collateral": ([1000.0, 0.0, None], [-1.0, float("inf"), float("nan")]),
    "symbol": (["BTCUSDT"], ["", None]),
    "side": ([1, -1], [0, 2, None]),
    "qty": ([0.5, 1e-9], [0.0, -1.0, float("inf"), None]),
    "entry_price": ([40000.0], [-1.0, 0.0, None]),
    "position_collateral": ([10.0, 0.0, None], [-5.0, float("inf")]),
}


def test_the_vectorised_rules_agree_with_the_jsonl_rules_row_by_row(tmp_path):
    """Random mixes of good and bad field values, one account a row: a Parquet row is an error
    exactly when the same account as a JSONL line is, naming the same field."""
    rng = np.random.default_rng(0)

    def pick(good, bad):
        pool = bad if rng.random() < 0.15 else good
        return pool[rng.integers(len(pool))]

    rows = [
        {"account_id": f"a{i}", **{name: pick(*choices) for name, choices in VALUES.items()}}
        for i in range(2000)
    ]
    parquet = read_snapshots(write_rows(tmp_path / "s.parquet", rows)).accounts
    lines = [
        json.dumps(
            {
                "account_id": r["account_id"],
                "as_of": r["as_of"],
                "margin_mode": r["margin_mode"],
                "collateral": r["collateral"],
                "positions": [
                    {
                        "symbol": r["symbol"],
                        "side": r["side"],
                        "qty": r["qty"],
                        "entry_price": r["entry_price"],
                        "collateral": r["position_collateral"],
                    }
                ],
            }
        )
        for r in rows
    ]
    jsonl = parse_accounts(lines).accounts
    assert (parquet["error"] != "").sum() > 300 and (parquet["error"] == "").sum() > 100
    np.testing.assert_array_equal(parquet["error"] != "", jsonl["error"] != "")
    for p, j in zip(parquet["error"], jsonl["error"]):
        if p:
            assert _field(p).replace("position_collateral", "collateral") == _field(j), (p, j)
    valid = parquet["error"] == ""
    pd.testing.assert_series_equal(parquet.loc[valid, "as_of"], jsonl.loc[valid, "as_of"])


def _field(message: str) -> str:
    """The field a message names: its first word after the row/line prefix."""
    text = re.sub(r"^(line \d+|row \d+( \(symbol [^)]*\))?): ", "", message)
    return text.removeprefix("positions[0].").split(" ")[0]


def test_unreadable_files_stop_with_an_error_naming_the_file(tmp_path):
    (tmp_path / "s.parquet").write_text("not parquet")
    with pytest.raises(InputError, match="s.parquet"):
        read_snapshots(tmp_path / "s.parquet")
    (tmp_path / "s.csv").write_text("account_id\n")
    with pytest.raises(InputError, match="unknown snapshot format"):
        read_snapshots(tmp_path / "s.csv")


# ------------------------------------------------------------------- the lean product (scoring)

MIXED = [
    {"account_id": "x", "as_of": AS_OF, "margin_mode": "cross", "collateral": 10.0,
     "positions": [{"symbol": "BTCUSDT", "side": 1, "qty": 0.5, "entry_price": 40000.0},
                   {"symbol": "ETHUSDT", "side": -1, "qty": 2.0, "entry_price": 2000.0}]},
    {"account_id": 5, "as_of": "2024-01-04T03:00:00+02:00", "margin_mode": "cross", "positions": []},
    "not an object",
    {"account_id": "z", "as_of": AS_OF, "margin_mode": "isolated",
     "positions": [{"symbol": "SOLUSDT", "side": -1, "qty": 1.0, "entry_price": 90.0, "collateral": 5.0}]},
]


def test_snapshot_frames_have_the_dtypes_of_pandas_general_constructors():
    from liqrisk.features.accounts import snapshots_from_dicts

    snaps = snapshots_from_dicts(MIXED)
    text = ["account_id", "error"]
    general = pd.DataFrame(
        {c: pd.array(snaps.accounts[c].tolist(), dtype="str") for c in text}
    )
    pd.testing.assert_frame_equal(snaps.accounts[text], general)
    assert snaps.accounts["as_of"].tolist()[:2] == [pd.Timestamp(AS_OF), pd.Timestamp("2024-01-04T01:00Z")]
    assert snaps.accounts["as_of"].isna().tolist() == [False, False, True, False]
    assert snaps.accounts["error"].tolist()[1:3] == [
        "collateral is missing",
        "expected a JSON object, got str",
    ]
    assert {c: str(t) for c, t in snaps.positions.dtypes.items()} == {
        "account": "int64", "as_of": "datetime64[us, UTC]", "margin_mode": "str",
        "collateral": "float64", "symbol": "str", "side": "int8", "qty": "float64", "entry_price": "float64",
    }
    for c in ("margin_mode", "symbol"):
        pd.testing.assert_series_equal(snaps.positions[c], pd.Series(snaps.positions[c].tolist(), dtype="str", name=c))


def test_positions_of_some_accounts_with_ids_are_the_snapshot_positions_filtered():
    from liqrisk.features.accounts import accounts_from_dicts, snapshots_from_dicts

    parsed = accounts_from_dicts(MIXED)
    snaps = snapshots_from_dicts(MIXED)
    assert parsed.account_ids == snaps.accounts["account_id"].tolist() == ["x", "5", "", "z"]
    assert parsed.errors == snaps.accounts["error"].tolist()
    assert parsed.as_of[0] == snaps.accounts["as_of"].iat[0] and parsed.as_of[2] is pd.NaT
    pd.testing.assert_frame_equal(parsed.positions(), snaps.positions)
    keep = [False, True, True, True]  # an error account kept still has no positions
    expected = snaps.positions[snaps.positions["account"] == 3].reset_index(drop=True)
    expected["account_id"] = pd.array(["z"], dtype="str")
    pd.testing.assert_frame_equal(parsed.positions(keep, account_ids=True), expected)
    none = parsed.positions([False] * 4, account_ids=True)
    assert none.empty and list(none.columns) == [*snaps.positions.columns, "account_id"]
    pd.testing.assert_series_equal(none.dtypes, expected.dtypes)


@pytest.mark.parametrize("keep", [None, [True, True, False, True], [False] * 4])
def test_position_arrays_are_the_positions_frame_as_the_engine_reads_it(keep):
    from dataclasses import fields

    from liqrisk.features.accounts import accounts_from_dicts
    from liqrisk.features.replay import PositionArrays

    parsed = accounts_from_dicts(MIXED)
    frame = parsed.positions(keep, account_ids=True)
    direct, read = parsed.position_arrays(keep), PositionArrays.of(frame)
    for f in fields(PositionArrays):
        if f.name == "index":
            continue
        ours, theirs = getattr(direct, f.name), getattr(read, f.name)
        np.testing.assert_array_equal(np.asarray(ours, dtype=object), np.asarray(theirs, dtype=object), err_msg=f.name)
    np.testing.assert_array_equal(direct.positions_index, frame.index)
    rows = np.arange(len(frame))
    assert direct.account_ids(rows).tolist() == read.account_ids(rows).tolist() == frame["account_id"].tolist()
    assert direct.symbol_text(rows).tolist() == read.symbol_text(rows).tolist() == frame["symbol"].tolist()
    kept = direct.take(direct.account == 3)
    assert len(kept) == int((frame["account"] == 3).sum()) and set(kept.account_id.tolist()) <= {"z"}
