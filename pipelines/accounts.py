"""Account snapshots from JSONL, as the replay interface defines them.

Each malformed line becomes an error row that names the line and the field;
it never stops the other accounts. Blank lines are not accounts.
"""

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from liqrisk.features.errors import InputError
from liqrisk.features.replay import POSITION_COLUMNS

MARGIN_MODES = ("cross", "isolated")


@dataclass(frozen=True)
class Snapshots:
    """Accounts in input order and their positions.

    ``accounts`` has one row per account line: ``account`` (0-based order),
    ``line`` (1-based line number), ``account_id``, ``as_of`` (NaT where it could not
    be read) and ``error`` (``""`` for a valid line). ``positions`` holds the
    positions of the valid accounts with ``POSITION_COLUMNS``.
    """

    accounts: pd.DataFrame
    positions: pd.DataFrame


def parse_accounts(lines: Iterable[str]) -> Snapshots:
    """Parse JSONL account snapshots; never raises for a bad line."""
    accounts: list[dict[str, Any]] = []
    rows: list[tuple] = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        code = len(accounts)
        record: dict[str, Any] = {"account": code, "line": number, "account_id": "", "as_of": pd.NaT}
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            record["error"] = f"line {number}: not valid JSON ({exc.msg} at column {exc.colno})"
            accounts.append(record)
            continue
        if isinstance(raw, dict):
            record["account_id"] = _id_text(raw.get("account_id"))
        try:
            account = _account(raw)
        except InputError as exc:
            if isinstance(raw, dict):
                record["as_of"] = _as_of_or_nat(raw.get("as_of"))
            record["error"] = f"line {number}: {exc}"
            accounts.append(record)
            continue
        record.update(as_of=account["as_of"], error="")
        accounts.append(record)
        for pos in account["positions"]:
            rows.append(
                (
                    code,
                    account["as_of"],
                    account["margin_mode"],
                    pos["collateral"],
                    pos["symbol"],
                    pos["side"],
                    pos["qty"],
                    pos["entry_price"],
                )
            )
    frame = pd.DataFrame.from_records(rows, columns=list(POSITION_COLUMNS))
    frame["as_of"] = pd.to_datetime(frame["as_of"], utc=True).dt.as_unit("us")
    table = pd.DataFrame.from_records(
        accounts, columns=["account", "line", "account_id", "as_of", "error"]
    )
    table["as_of"] = pd.to_datetime(table["as_of"], utc=True).dt.as_unit("us")
    return Snapshots(accounts=table, positions=frame.astype({"side": "int8"}))


def parse_as_of(value: Any, field: str = "as_of") -> pd.Timestamp:
    """An ISO 8601 timestamp as UTC; one without an offset is read as UTC."""
    if not isinstance(value, str):
        raise InputError(f"{field} must be an ISO 8601 string, got {value!r}")
    try:
        ts = pd.Timestamp(value)
    except ValueError:
        raise InputError(f"{field} is not an ISO 8601 timestamp: {value!r}") from None
    if ts is pd.NaT:
        raise InputError(f"{field} is not an ISO 8601 timestamp: {value!r}")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.as_unit("us")


def _account(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise InputError(f"expected a JSON object, got {type(raw).__name__}")
    _require(raw, "account_id", "")
    if not isinstance(raw["account_id"], str | int) or isinstance(raw["account_id"], bool):
        raise InputError(f"account_id must be a string or an integer, got {raw['account_id']!r}")
    _require(raw, "as_of", "")
    as_of = parse_as_of(raw["as_of"])
    _require(raw, "margin_mode", "")
    mode = raw["margin_mode"]
    if mode not in MARGIN_MODES:
        raise InputError(f"margin_mode must be 'cross' or 'isolated', got {mode!r}")
    collateral = None
    if mode == "cross":
        _require(raw, "collateral", "")
        collateral = _amount(raw["collateral"], "collateral")
    elif raw.get("collateral") is not None:
        _amount(raw["collateral"], "collateral")  # not used for isolated, but never negative
    _require(raw, "positions", "")
    if not isinstance(raw["positions"], list):
        raise InputError(f"positions must be a list, got {type(raw['positions']).__name__}")
    if not raw["positions"]:
        raise InputError("positions is empty: an account needs at least one position")
    positions = [_position(p, f"positions[{i}]", mode, collateral) for i, p in enumerate(raw["positions"])]
    return {"as_of": as_of, "margin_mode": mode, "positions": positions}


def _position(raw: Any, where: str, mode: str, account_collateral: float | None) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise InputError(f"{where} must be an object, got {type(raw).__name__}")
    for key in ("symbol", "side", "qty", "entry_price"):
        _require(raw, key, f"{where}.")
    if not isinstance(raw["symbol"], str) or not raw["symbol"]:
        raise InputError(f"{where}.symbol must be a non-empty string, got {raw['symbol']!r}")
    side = raw["side"]
    # JSON has one number type; like JSON Schema's "integer", 1.0 counts as the integer 1.
    if isinstance(side, bool) or not isinstance(side, int | float) or side not in (1, -1):
        raise InputError(f"{where}.side must be 1 (long) or -1 (short), got {side!r}")
    qty = _number(raw["qty"], f"{where}.qty")
    entry = _number(raw["entry_price"], f"{where}.entry_price")
    for field, value in (("qty", qty), ("entry_price", entry)):
        if not value > 0:
            raise InputError(f"{where}.{field} must be > 0, got {raw[field]!r}")
    if mode == "isolated":
        _require(raw, "collateral", f"{where}.", why=" (isolated margin: each position carries its own)")
        collateral = _amount(raw["collateral"], f"{where}.collateral")
    else:
        collateral = account_collateral
    return {"symbol": raw["symbol"], "side": int(side), "qty": qty, "entry_price": entry, "collateral": collateral}


def _require(raw: dict[str, Any], key: str, prefix: str, why: str = "") -> None:
    if key not in raw or raw[key] is None:
        raise InputError(f"{prefix}{key} is missing{why}")


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{field} must be a JSON number, got {value!r}")
    if not math.isfinite(value):
        raise InputError(f"{field} must be finite, got {value!r}")
    return float(value)


def _amount(value: Any, field: str) -> float:
    number = _number(value, field)
    if number < 0:
        raise InputError(f"{field} must be >= 0, got {value!r}")
    return number


def _id_text(value: Any) -> str:
    return "" if value is None or isinstance(value, dict | list) else str(value)


def _as_of_or_nat(value: Any) -> pd.Timestamp:
    try:
        return parse_as_of(value)
    except InputError:
        return pd.NaT
