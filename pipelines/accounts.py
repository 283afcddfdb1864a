"""Account snapshots from JSONL (the replay interface) and Parquet (one row per position).

Each malformed line (JSONL) or row (Parquet) makes its account an error row that
names the line or row and the field; it never stops the other accounts. Blank lines
are not accounts. Both formats are checked by the same field rules
(``liqrisk.features.accounts.account_fields``); Parquet finds its bad rows vectorised and
asks those rules only about them, for the message.
"""

import itertools
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from liqrisk.features.accounts import (
    MARGIN_MODES,
    Dialect,
    Snapshots,
    SnapshotsBuilder,
    account_fields,
    id_text,
    parse_as_of,
)
from liqrisk.features.errors import InputError
from liqrisk.features.replay import POSITION_COLUMNS

__all__ = ["MARGIN_MODES", "Snapshots", "parse_accounts", "parse_as_of", "read_snapshots", "write_snapshots"]

# Parquet snapshots: one row per position, the account fields repeated on each row.
PARQUET_ACCOUNT_COLUMNS = ("account_id", "as_of", "margin_mode", "collateral")
PARQUET_POSITION_COLUMNS = ("symbol", "side", "qty", "entry_price", "position_collateral")
PARQUET_POSITION_COLLATERAL = "position_collateral"  # a position's own collateral (isolated margin)


def parse_accounts(lines: Iterable[str]) -> Snapshots:
    """Parse JSONL account snapshots; never raises for a bad line."""
    builder = SnapshotsBuilder()
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            builder.add_error(f"line {number}: not valid JSON ({exc.msg} at column {exc.colno})", line=number)
            continue
        builder.add(raw, line=number)
    return builder.snapshots()


# Parquet: one row per position, so a position's fields are the row's own columns.
_PARQUET = Dialect(number="a number", prefix=lambda i: "", position_collateral=PARQUET_POSITION_COLLATERAL)


# --- Parquet snapshots and both formats on disk ------------------------------------------------

_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
_PARQUET_SUFFIXES = (".parquet", ".pq")


def read_snapshots(path: Path | str) -> Snapshots:
    """Account snapshots from ``.jsonl`` (``parse_accounts``) or ``.parquet``; never raises for a bad account.

    Parquet holds one row per position with the account fields repeated:
    ``account_id, as_of, margin_mode, collateral`` (the account's; cross margin) and
    ``symbol, side, qty, entry_price, position_collateral`` (the position's own;
    isolated margin). The rows sharing an ``account_id`` form one account, in order of
    first appearance, its positions in row order; other columns are ignored. A bad row
    makes its whole account an error naming the 0-based row and the field, and so does
    a repeated account field (``as_of``, ``margin_mode``, ``collateral``) that differs
    between the account's rows. A row without ``account_id`` is an account of its own.

    Raises ``InputError`` only when the file as a whole is unusable (unknown suffix,
    not Parquet).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in _JSONL_SUFFIXES:
        with path.open() as handle:
            return parse_accounts(handle)
    if suffix in _PARQUET_SUFFIXES:
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            raise InputError(f"{path}: not a readable Parquet file ({exc})") from None
        return parse_parquet_accounts(table)
    raise InputError(
        f"{path}: unknown snapshot format {suffix!r}; expected one of "
        f"{', '.join(_JSONL_SUFFIXES + _PARQUET_SUFFIXES)}"
    )


def parse_parquet_accounts(table: pa.Table) -> Snapshots:
    """Validate a Parquet snapshot table vectorised; see ``read_snapshots`` for the layout."""
    n = table.num_rows
    cols = _ParquetColumns(table)
    bad = cols.bad_rows()
    key, account_of_row, first_row = _group_rows(cols, n)
    n_accounts = len(first_row)

    messages = np.full(n_accounts, "", dtype=object)
    bad_rows = np.flatnonzero(bad)
    if bad_rows.size:
        counts = np.bincount(account_of_row[bad_rows], minlength=n_accounts)
        first_bad = np.full(n_accounts, n, dtype=np.int64)
        np.minimum.at(first_bad, account_of_row[bad_rows], bad_rows)
        for account in np.flatnonzero(counts):
            row = int(first_bad[account])
            more = f"; {counts[account]} bad rows in this account" if counts[account] > 1 else ""
            messages[account] = f"{_row_text(cols, row)}: {_row_problem(cols, row)}{more}"
    for account, text in _disagreements(cols, account_of_row, first_row, messages == ""):
        messages[account] = text

    valid_account = messages == ""
    rows = np.flatnonzero(valid_account[account_of_row])
    rows = rows[np.argsort(account_of_row[rows], kind="stable")]
    accounts = pd.DataFrame(
        {
            "account": np.arange(n_accounts, dtype=np.int64),
            "line": pd.arrays.IntegerArray(
                np.zeros(n_accounts, np.int64), np.ones(n_accounts, dtype=bool)
            ),
            "row": first_row.astype(np.int64),
            "account_id": pd.array(key, dtype="str"),
            "as_of": _utc_series(cols.as_of_us[first_row]),
            "error": pd.array(messages.astype(str), dtype="str"),
        }
    )
    cross = cols.mode[rows] == "cross"
    positions = pd.DataFrame(
        {
            "account": account_of_row[rows].astype(np.int64),
            "as_of": _utc_series(cols.as_of_us[rows]),
            "margin_mode": pd.array(cols.mode[rows], dtype="str"),
            "collateral": np.where(
                cross,
                cols.number("collateral")[rows],
                cols.number(PARQUET_POSITION_COLLATERAL)[rows],
            ),
            "symbol": pd.array(cols.text("symbol")[rows], dtype="str"),
            "side": cols.number("side")[rows].astype(np.int8),
            "qty": cols.number("qty")[rows],
            "entry_price": cols.number("entry_price")[rows],
        }
    )
    return Snapshots(accounts=accounts, positions=positions.reset_index(drop=True))


class _ParquetColumns:
    """The snapshot columns of a Parquet table, with per-row null masks and typed values."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self.n = table.num_rows
        self.present = set(table.column_names)
        self._texts: dict[str, np.ndarray] = {}
        self.as_of_us, self.as_of_bad = self._as_of()
        self.mode = self.text("margin_mode")

    def column(self, name: str) -> pa.ChunkedArray | None:
        return self.table.column(name) if name in self.present else None

    def null(self, name: str) -> np.ndarray:
        col = self.column(name)
        if col is None:
            return np.ones(self.n, dtype=bool)
        return col.is_null().to_numpy(zero_copy_only=False)

    def kind(self, name: str) -> str:
        col = self.column(name)
        if col is None:
            return "absent"
        t = col.type
        if pa.types.is_integer(t):
            return "integer"
        if pa.types.is_floating(t):
            return "float"
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            return "string"
        if pa.types.is_timestamp(t):
            return "timestamp"
        if pa.types.is_null(t):
            return "absent"
        return "other"

    def number(self, name: str) -> np.ndarray:
        """float64 values of a numeric column, NaN where null or not numeric."""
        if self.kind(name) not in ("integer", "float"):
            return np.full(self.n, np.nan)
        col = pc.cast(self.column(name), pa.float64())
        return col.to_numpy(zero_copy_only=False).astype(np.float64)

    def text(self, name: str) -> np.ndarray:
        """object array of a string column's values, None where null or not a string."""
        if name not in self._texts:
            if self.kind(name) != "string":
                self._texts[name] = np.full(self.n, None, dtype=object)
            else:
                self._texts[name] = np.asarray(
                    self.column(name).to_numpy(zero_copy_only=False), dtype=object
                )
        return self._texts[name]

    def _as_of(self) -> tuple[np.ndarray, np.ndarray]:
        """as_of as int64 µs UTC (NaT's value where unreadable) and a bad mask.

        Strings are parsed as ISO 8601 vectorised; the few that fail are asked of
        ``parse_as_of`` (which also accepts what ``pd.Timestamp`` reads).
        """
        nat = np.iinfo(np.int64).min
        kind = self.kind("as_of")
        if kind == "timestamp":
            col = self.column("as_of")
            values = pd.Series(col.to_pandas(), copy=False)
            if values.dt.tz is None:
                values = values.dt.tz_localize("UTC")
            us = values.dt.tz_convert("UTC").dt.as_unit("us").array.asi8.copy()
            bad = self.null("as_of")
            us[bad] = nat
            return us, bad
        if kind != "string":
            return np.full(self.n, nat, dtype=np.int64), np.ones(self.n, dtype=bool)
        raw = pd.Series(self.text("as_of"), dtype=object)
        parsed = pd.to_datetime(raw, format="ISO8601", utc=True, errors="coerce")
        us = parsed.dt.as_unit("us").array.asi8.copy()
        retry = np.flatnonzero(parsed.isna().to_numpy() & raw.notna().to_numpy())
        for i in retry:  # rare: only strings the ISO 8601 parser refused
            try:
                us[i] = parse_as_of(raw.iloc[i]).value // 1000  # .value is nanoseconds
            except InputError:
                us[i] = nat
        return us, us == nat

    def bad_rows(self) -> np.ndarray:
        """Rows that break a rule of ``account_fields`` (their message comes from it)."""
        n = self.n
        bad = np.zeros(n, dtype=bool)
        id_kind = self.kind("account_id")
        bad |= self.null("account_id") | (id_kind not in ("string", "integer"))
        bad |= self.as_of_bad
        mode = self.mode
        is_cross = mode == "cross"
        is_isolated = mode == "isolated"
        bad |= ~(is_cross | is_isolated)
        account_collateral_ok = self._amount_ok("collateral")
        bad |= is_cross & ~account_collateral_ok
        bad |= is_isolated & ~self.null("collateral") & ~account_collateral_ok
        bad |= ~self._non_empty_text("symbol")
        side = self.number("side")
        bad |= ~((side == 1) | (side == -1))
        for name in ("qty", "entry_price"):
            value = self.number(name)
            bad |= ~(np.isfinite(value) & (value > 0))
        bad |= is_isolated & ~self._amount_ok(PARQUET_POSITION_COLLATERAL)
        return bad

    def _non_empty_text(self, name: str) -> np.ndarray:
        if self.kind(name) != "string":
            return np.zeros(self.n, dtype=bool)
        empty = pc.fill_null(pc.equal(pc.utf8_length(self.column(name)), 0), True)
        return ~empty.to_numpy(zero_copy_only=False)

    def _amount_ok(self, name: str) -> np.ndarray:
        value = self.number(name)
        return np.isfinite(value) & (value >= 0)

    def row_values(self, row: int) -> dict[str, Any]:
        """One row as Python values (only for bad rows: messages)."""
        values = {}
        for name in (*PARQUET_ACCOUNT_COLUMNS, *PARQUET_POSITION_COLUMNS):
            if name in self.present:
                value = self.table.column(name)[row].as_py()
                if hasattr(value, "isoformat") and name == "as_of":
                    value = pd.Timestamp(value).isoformat()
                values[name] = value
        return values


def _row_problem(cols: _ParquetColumns, row: int) -> str:
    """The field rules' message for a bad row: the JSONL rules, spelt the Parquet way."""
    values = cols.row_values(row)
    raw = {k: values[k] for k in PARQUET_ACCOUNT_COLUMNS if k in values}
    raw["positions"] = [{k: values[k] for k in PARQUET_POSITION_COLUMNS if k in values}]
    try:
        account_fields(raw, _PARQUET)
    except InputError as exc:
        return str(exc)
    return (
        "invalid row"  # the vectorised rules and the field rules disagree: a bug, but never silent
    )


def _row_text(cols: _ParquetColumns, row: int) -> str:
    symbol = cols.text("symbol")[row]
    return f"row {row} (symbol {symbol})" if symbol else f"row {row}"


def _group_rows(cols: _ParquetColumns, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Accounts by ``account_id`` in order of first appearance: their id text, the account of
    each row and each account's first row. Rows without an id are accounts of their own."""
    kind = cols.kind("account_id")
    missing = cols.null("account_id") | (kind not in ("string", "integer"))
    codes = np.full(n, -1, dtype=np.int64)
    ids = np.full(n, None, dtype=object)
    if kind in ("string", "integer") and n:
        encoded = (
            cols.column("account_id").combine_chunks().dictionary_encode()
        )  # first-appearance order
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        codes = np.where(missing, -1, codes).astype(np.int64)
        ids = (
            encoded.dictionary.to_numpy(zero_copy_only=False)[np.where(missing, 0, codes)]
            if len(encoded.dictionary)
            else ids
        )
    # rows without an id get codes after the others, then everything is renumbered by first row
    lone = np.flatnonzero(missing)
    codes[lone] = codes.max(initial=-1) + 1 + np.arange(lone.size)
    first_row = np.full(codes.max(initial=-1) + 1, n, dtype=np.int64)
    np.minimum.at(first_row, codes, np.arange(n))
    order = np.argsort(first_row, kind="stable")
    renumber = np.empty_like(order)
    renumber[order] = np.arange(order.size)
    account_of_row = renumber[codes] if n else codes
    first_row = first_row[order]
    key = pd.Series(ids[first_row], dtype=object).astype(str).to_numpy(dtype=object)
    key[missing[first_row]] = ""
    return key, account_of_row, first_row


def _disagreements(
    cols: _ParquetColumns, account_of_row: np.ndarray, first_row: np.ndarray, candidates: np.ndarray
) -> list[tuple[int, str]]:
    """Accounts (among ``candidates``) whose rows disagree on a repeated account field."""
    found: dict[int, str] = {}
    head = first_row[account_of_row]
    collateral = cols.number("collateral")
    collateral_null = cols.null("collateral")
    checks = (
        ("as_of", cols.as_of_us, None),
        ("margin_mode", cols.mode, None),
        ("collateral", collateral, collateral_null),
    )
    for field, values, null in checks:
        if null is None:
            differs = values != values[head]
        else:
            differs = (null != null[head]) | (~null & ~null[head] & (values != values[head]))
        differs &= candidates[account_of_row]
        for row in np.flatnonzero(differs):
            account = int(account_of_row[row])
            if account in found:
                continue
            first = int(head[row])
            found[account] = (
                f"{_row_text(cols, int(row))}: {field} {_shown(cols, field, row)} differs from "
                f"{_shown(cols, field, first)} on row {first}, the first row of account "
                f"{id_text(cols.row_values(first).get('account_id'))!r}: "
                "the account fields must be the same on every row of an account"
            )
    return sorted(found.items())


def _shown(cols: _ParquetColumns, field: str, row: int) -> str:
    return repr(cols.row_values(row).get(field))


def _utc_series(us: np.ndarray) -> pd.Series:
    return pd.Series(np.asarray(us, dtype=np.int64).astype("datetime64[us]")).dt.tz_localize("UTC")


def write_snapshots(positions: pd.DataFrame, path: Path | str) -> None:
    """Write positions (``POSITION_COLUMNS``, optional ``account_id``) as snapshots that
    ``read_snapshots`` reads back to the same ``Snapshots``.

    ``.jsonl``: one account a line, as the replay interface defines. ``.parquet``: one
    row per position, the account fields repeated, ``collateral`` null for isolated and
    ``position_collateral`` null for cross accounts; any further columns (e.g. the
    generator's metadata) are kept. Accounts are written in order of first appearance.
    """
    path = Path(path)
    frame = (
        positions
        if "account_id" in positions
        else positions.assign(account_id=positions["account"].astype(str))
    )
    suffix = path.suffix.lower()
    if suffix in _JSONL_SUFFIXES:
        _write_jsonl(frame, path)
    elif suffix in _PARQUET_SUFFIXES:
        _parquet_frame(frame).to_parquet(path, index=False)
    else:
        raise InputError(f"{path}: unknown snapshot format {suffix!r}")


def _parquet_frame(frame: pd.DataFrame) -> pd.DataFrame:
    cross = (frame["margin_mode"] == "cross").to_numpy()
    extra = [
        c
        for c in frame.columns
        if c not in (*POSITION_COLUMNS, *PARQUET_ACCOUNT_COLUMNS, *PARQUET_POSITION_COLUMNS)
    ]
    out = pd.DataFrame(
        {
            "account_id": frame["account_id"].astype(str).to_numpy(),
            "as_of": frame["as_of"].dt.tz_convert("UTC").dt.as_unit("us").to_numpy(),
            "margin_mode": frame["margin_mode"].astype(str).to_numpy(),
            "collateral": np.where(cross, frame["collateral"].to_numpy(dtype=np.float64), np.nan),
            "symbol": frame["symbol"].astype(str).to_numpy(),
            "side": frame["side"].to_numpy(dtype=np.int8),
            "qty": frame["qty"].to_numpy(dtype=np.float64),
            "entry_price": frame["entry_price"].to_numpy(dtype=np.float64),
            PARQUET_POSITION_COLLATERAL: np.where(
                cross, np.nan, frame["collateral"].to_numpy(dtype=np.float64)
            ),
        }
    )
    out["as_of"] = (
        out["as_of"].dt.tz_localize("UTC") if out["as_of"].dt.tz is None else out["as_of"]
    )
    for column in extra:
        out[column] = frame[column].to_numpy()
    return out


def _write_jsonl(frame: pd.DataFrame, path: Path) -> None:
    cols = {c: frame[c].tolist() for c in ("account_id", *POSITION_COLUMNS) if c != "as_of"}
    as_of = [t.isoformat() for t in frame["as_of"].dt.tz_convert("UTC")]
    codes = pd.factorize(frame["account"], sort=False)[0]
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[order], prepend=-1, append=-1))  # where each account starts
    with path.open("w") as handle:
        for start, stop in itertools.pairwise(bounds):
            rows = order[start:stop]
            first = rows[0]
            cross = cols["margin_mode"][first] == "cross"
            account = {
                "account_id": cols["account_id"][first],
                "as_of": as_of[first],
                "margin_mode": cols["margin_mode"][first],
                **({"collateral": float(cols["collateral"][first])} if cross else {}),
                "positions": [
                    {
                        "symbol": cols["symbol"][r],
                        "side": int(cols["side"][r]),
                        "qty": float(cols["qty"][r]),
                        "entry_price": float(cols["entry_price"][r]),
                        **({} if cross else {"collateral": float(cols["collateral"][r])}),
                    }
                    for r in rows
                ],
            }
            handle.write(json.dumps(account) + "\n")
