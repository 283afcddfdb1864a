"""Account snapshots as the replay interface shapes them (JSON objects), checked and turned into
the engine's positions frame.

An account is ``{"account_id", "as_of", "margin_mode", "collateral", "positions": [{"symbol",
"side", "qty", "entry_price", "collateral"?}]}`` (``docs/liquidation-contract.md``). Each bad
account becomes an error row naming the field (``positions[1].qty must be > 0, got -1``) and
never stops the others. The field rules are written once (:func:`account_fields`); the file
readers (``liqrisk.pipelines.accounts``: JSONL lines, Parquet rows) and the scoring service use
them, a file format only changing how fields are spelt (:class:`Dialect`).
"""

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from liqrisk.features.errors import InputError
from liqrisk.features.replay import POSITION_COLUMNS, PositionArrays

MARGIN_MODES = ("cross", "isolated")
ACCOUNT_COLUMNS = ("account", "line", "account_id", "as_of", "error")


@dataclass(frozen=True)
class Snapshots:
    """Accounts in input order and their positions.

    ``accounts`` has one row per account: ``account`` (0-based order), ``line``
    (JSONL: 1-based line number), ``account_id``, ``as_of`` (NaT where it could not
    be read) and ``error`` (``""`` for a valid account). Read from Parquet it also has
    ``row``, the 0-based row of the account's first position, and ``line`` is NA.
    ``positions`` holds the positions of the valid accounts with ``POSITION_COLUMNS``.
    """

    accounts: pd.DataFrame
    positions: pd.DataFrame


@dataclass(frozen=True)
class Dialect:
    """How an input format names what the validators check: one set of rules, several spellings."""

    number: str  # how a number is called in messages
    prefix: Callable[[int], str]  # the field prefix of position i
    position_collateral: str  # the key of a position's own collateral


JSON = Dialect(number="a JSON number", prefix=lambda i: f"positions[{i}].", position_collateral="collateral")


def snapshots_from_dicts(raws: Iterable[Any]) -> Snapshots:
    """Account objects (already decoded from JSON) as :class:`Snapshots`; never raises for a bad one.

    ``line`` is NA; an error names the field path (``positions[0].qty``) but no line.
    """
    return accounts_from_dicts(raws).snapshots()


def accounts_from_dicts(raws: Iterable[Any]) -> "SnapshotsBuilder":
    """Account objects (already decoded from JSON) checked, before any frame is built: the
    per-account lists and :meth:`SnapshotsBuilder.positions` of a subset cost less than
    :class:`Snapshots` when the caller drops accounts first (the scoring service)."""
    builder = SnapshotsBuilder()
    for raw in raws:
        builder.add(raw)
    return builder


class SnapshotsBuilder:
    """Collects accounts one by one (valid or not) into :class:`Snapshots`.

    The per-account lists (:attr:`account_ids`, :attr:`as_of`, :attr:`errors`) and
    :meth:`positions` are the lean product a caller of one account at a time wants (the scoring
    service); :meth:`snapshots` is both as frames.
    """

    def __init__(self) -> None:
        self._lines: list[int | None] = []
        self._ids: list[str] = []
        self._as_of: list[pd.Timestamp] = []  # NaT where it could not be read
        self._errors: list[str] = []
        self._rows: list[tuple] = []  # one per position of a valid account, in POSITION_COLUMNS

    @property
    def account_ids(self) -> list[str]:
        """Per account, in order: its id as text (``""`` where missing)."""
        return self._ids

    @property
    def as_of(self) -> list[pd.Timestamp]:
        """Per account, in order: its as_of (UTC, ``us``), NaT where it could not be read."""
        return self._as_of

    @property
    def errors(self) -> list[str]:
        """Per account, in order: what is wrong with it, ``""`` for a valid account."""
        return self._errors

    def add(self, raw: Any, *, line: int | None = None) -> None:
        """One account object; a bad one is an error row (prefixed ``line N: `` when ``line``)."""
        account_id = id_text(raw.get("account_id")) if isinstance(raw, dict) else ""
        try:
            as_of, _, rows = _account_rows(raw, JSON, len(self._errors))
        except InputError as exc:
            as_of = _as_of_or_nat(raw.get("as_of")) if isinstance(raw, dict) else pd.NaT
            where = "" if line is None else f"line {line}: "
            self._append(line, account_id, as_of, f"{where}{exc}")
            return
        self._append(line, account_id, as_of, "")
        self._rows.extend(rows)

    def add_error(self, message: str, *, line: int | None = None) -> None:
        """An account that could not even be read as an object (e.g. a line that is not JSON)."""
        self._append(line, "", pd.NaT, message)

    def _append(self, line: int | None, account_id: str, as_of: pd.Timestamp, error: str) -> None:
        self._lines.append(line)
        self._ids.append(account_id)
        self._as_of.append(as_of)
        self._errors.append(error)

    def positions(self, keep: Sequence[bool] | None = None, *, account_ids: bool = False) -> pd.DataFrame:
        """The positions (``POSITION_COLUMNS``) of the valid accounts, or only of those whose
        ``keep[code]`` is true; with ``account_id`` (text) last when ``account_ids``."""
        account, as_of, mode, collateral, symbol, side, qty, entry = self._columns(keep)
        arrays = (
            np.array(account, dtype=np.int64),
            _utc(as_of),
            _text(mode),
            np.array(collateral, dtype=np.float64),
            _text(symbol),
            np.array(side, dtype=np.int8),
            np.array(qty, dtype=np.float64),
            np.array(entry, dtype=np.float64),
        )
        columns = dict(zip(POSITION_COLUMNS, arrays, strict=True))
        if account_ids:
            columns["account_id"] = _text([self._ids[code] for code in account])
        return _frame(columns)

    def position_arrays(self, keep: Sequence[bool] | None = None) -> PositionArrays:
        """:meth:`positions` (with ``account_id``) as the engine's arrays, without a frame: what
        the service scores (for one account the frame costs more than the features)."""
        account, as_of, mode, collateral, symbol, side, qty, entry = self._columns(keep)
        times = _utc(as_of)
        return PositionArrays(
            account=np.array(account, dtype=np.int64),
            as_of=times.array,
            as_of_us=times.asi8,
            margin_mode=np.array(mode, dtype=object),
            collateral=np.array(collateral, dtype=np.float64),
            symbol=np.array(symbol, dtype=object),
            side=np.array(side, dtype=np.float64),
            qty=np.array(qty, dtype=np.float64),
            entry_price=np.array(entry, dtype=np.float64),
            account_id=np.array([self._ids[code] for code in account], dtype=object),
        )

    def _columns(self, keep: Sequence[bool] | None) -> list[tuple[Any, ...]]:
        """The ``POSITION_COLUMNS`` values of the kept accounts' positions, one tuple a column."""
        rows = self._rows if keep is None else [r for r in self._rows if keep[r[0]]]
        return list(zip(*rows, strict=True)) if rows else [()] * len(POSITION_COLUMNS)

    def snapshots(self) -> Snapshots:
        arrays = (
            np.arange(len(self._errors), dtype=np.int64),
            np.array(self._lines, dtype=object),
            _text(self._ids),
            _utc(self._as_of),
            _text(self._errors),
        )
        accounts = _frame(dict(zip(ACCOUNT_COLUMNS, arrays, strict=True)))
        return Snapshots(accounts=accounts, positions=self.positions())


# Frames are built column by column with their final dtypes and around pandas' general paths: a
# scored request of one account pays this on every call (``columns=`` reindexes, ~0.1 ms a frame;
# ``pd.array(..., dtype="str")`` infers, ~25 us a column).
_TEXT = pd.StringDtype(storage="pyarrow", na_value=np.nan)  # what dtype="str" means with pyarrow


def _frame(columns: dict[str, Any]) -> pd.DataFrame:
    """Freshly made column arrays as a frame, in the dict's order (``copy=False``: no copy into
    consolidated blocks, ``columns=`` would reindex and costs twice the frame itself)."""
    return pd.DataFrame(columns, copy=False)


def _text(values: Sequence[str]) -> pd.api.extensions.ExtensionArray:
    """Python strings as a ``str`` column (``pd.array(values, dtype="str")``, in a quarter of
    the time)."""
    return pd.arrays.ArrowStringArray(pa.array(values, type=pa.large_string()), dtype=_TEXT)


def _utc(values: Sequence[Any]) -> pd.DatetimeIndex:
    """Timestamps already in UTC (or NaT) as ``datetime64[us, UTC]``."""
    index = pd.DatetimeIndex(values)
    return (index.tz_localize("UTC") if index.tz is None else index).as_unit("us")


def parse_as_of(value: Any, field: str = "as_of") -> pd.Timestamp:
    """An ISO 8601 timestamp (or a ``datetime``) as UTC; one without an offset is read as UTC."""
    if isinstance(value, datetime):  # pd.Timestamp too; never from JSON, but from an API layer
        ts = pd.Timestamp(value)
        return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).as_unit("us")
    if not isinstance(value, str):
        raise InputError(f"{field} must be an ISO 8601 string, got {value!r}")
    try:  # the fast path, ten times quicker than pd.Timestamp for the common forms
        parsed = datetime.fromisoformat(value)
    except ValueError:
        pass
    else:
        try:  # an offset can push year 1 or 9999 out of datetime's range
            parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
        except OverflowError:
            raise InputError(f"{field} is out of range: {value!r}") from None
        return pd.Timestamp(parsed).as_unit("us")
    try:
        ts = pd.Timestamp(value)
    except ValueError:
        raise InputError(f"{field} is not an ISO 8601 timestamp: {value!r}") from None
    if ts is pd.NaT:
        raise InputError(f"{field} is not an ISO 8601 timestamp: {value!r}")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.as_unit("us")


def _as_of(value: Any) -> pd.Timestamp:
    """:func:`parse_as_of` of an account's as_of, remembered for text and datetimes: the
    accounts of a batch share a few values (the service gives each one without its own the
    request's), and parsing each again cost ~4 µs an account."""
    return _remembered_as_of(value) if isinstance(value, str | datetime) else parse_as_of(value)


@functools.lru_cache(maxsize=1024)
def _remembered_as_of(value: str | datetime) -> pd.Timestamp:
    return parse_as_of(value)


def account_fields(raw: Any, dialect: Dialect = JSON) -> dict[str, Any]:
    """The checked fields of one account object: ``as_of``, ``margin_mode`` and ``positions``
    (dicts of ``symbol, side, qty, entry_price, collateral``, the account's collateral for cross).

    Raises ``InputError`` naming the first bad field (``positions[1].qty must be > 0, got -1``).
    """
    as_of, mode, rows = _account_rows(raw, dialect)
    positions = [
        {"symbol": symbol, "side": side, "qty": qty, "entry_price": entry, "collateral": collateral}
        for _, _, _, collateral, symbol, side, qty, entry in rows
    ]
    return {"as_of": as_of, "margin_mode": mode, "positions": positions}


# The rules of an account, written once (:func:`account_fields` and :class:`SnapshotsBuilder`
# use them). A batch of 1,000 accounts checks ~2,000 positions, so each field is first tested
# for the plain JSON case inline (exact ``str``/``int``/``float``: no call, no name spelt); only
# a value failing that asks the field's rule (``_positive``, ``_amount``, ...), which raises the
# message or accepts it (a ``float`` subclass, ``1.0`` as side, an ``int`` qty). The inline tests
# only ever accept less than the rules, in the rules' order (``tests/features/test_accounts.py``).
_INF = math.inf
_SIDES = (1, -1)


def _account_rows(
    raw: Any, dialect: Dialect = JSON, code: int = 0
) -> tuple[pd.Timestamp, str, list[tuple[Any, ...]]]:
    """One account's ``as_of``, ``margin_mode`` and its positions as rows in ``POSITION_COLUMNS``
    order (``account`` = ``code``), what :class:`SnapshotsBuilder` keeps; raises ``InputError``
    naming the first bad field."""
    if not isinstance(raw, dict):
        raise InputError(f"expected a JSON object, got {type(raw).__name__}")
    # only a value that is not plain goes on to the rules
    account_id = raw.get("account_id")
    if type(account_id) is not str and type(account_id) is not int:
        _require(raw, "account_id", "")
        _account_id(account_id)
    value = raw.get("as_of")
    if type(value) is str:
        as_of = _remembered_as_of(value)
    else:
        _require(raw, "as_of", "")
        as_of = _as_of(value)
    mode = raw.get("margin_mode")
    if mode not in MARGIN_MODES:
        _require(raw, "margin_mode", "")
        raise InputError(f"margin_mode must be 'cross' or 'isolated', got {mode!r}")
    value = raw.get("collateral")
    collateral = None
    if mode == "cross":
        if type(value) is float and 0.0 <= value < _INF:
            collateral = value
        else:
            _require(raw, "collateral", "")
            collateral = _amount(value, "collateral", dialect)
    elif value is not None:
        _amount(value, "collateral", dialect)  # not used for isolated, but never negative
    positions = raw.get("positions")
    if type(positions) is not list or not positions:
        _require(raw, "positions", "")
        _position_list(positions)
    return as_of, mode, _position_rows(positions, code, as_of, mode, collateral, dialect)


def _position_rows(
    positions: list[Any],
    code: int,
    as_of: pd.Timestamp,
    mode: str,
    collateral: float | None,
    dialect: Dialect,
) -> list[tuple[Any, ...]]:
    """The rows of an account's positions, in ``POSITION_COLUMNS`` order: the account's ``code``,
    ``as_of`` and ``mode``, then ``collateral`` (the account's for cross, each position's own for
    isolated), ``symbol``, ``side``, ``qty``, ``entry_price``."""
    isolated = mode == "isolated"
    rows = []
    for i, raw in enumerate(positions):
        # field names are spelt (dialect.prefix) only for a message
        if not isinstance(raw, dict):
            raise InputError(f"{dialect.prefix(i).rstrip('.')} must be an object, got {type(raw).__name__}")
        symbol, side, qty, entry = raw.get("symbol"), raw.get("side"), raw.get("qty"), raw.get("entry_price")
        if symbol is None or side is None or qty is None or entry is None:
            for key in _POSITION_KEYS:
                _require(raw, key, dialect.prefix(i))
        if type(symbol) is not str or not symbol:
            symbol = _symbol(symbol, i, dialect)
        if type(side) is not int or side not in _SIDES:
            side = _side(side, i, dialect)
        if type(qty) is not float or not 0.0 < qty < _INF:
            qty = _positive(qty, "qty", i, dialect)
        if type(entry) is not float or not 0.0 < entry < _INF:
            entry = _positive(entry, "entry_price", i, dialect)
        if isolated:
            collateral = _position_collateral(raw, i, dialect)
        rows.append((code, as_of, mode, collateral, symbol, side, qty, entry))
    return rows


_POSITION_KEYS = ("symbol", "side", "qty", "entry_price")


def _position_list(value: Any) -> None:
    """The rule for a present ``positions``: a non-empty list."""
    if not isinstance(value, list):
        raise InputError(f"positions must be a list, got {type(value).__name__}")
    if not value:
        raise InputError("positions is empty: an account needs at least one position")


def _account_id(value: Any) -> None:
    """The rule for a present ``account_id``: a string or an integer (not a bool)."""
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise InputError(f"account_id must be a string or an integer, got {value!r}")


def _symbol(value: Any, i: int, dialect: Dialect) -> str:
    """The rule for a position's present ``symbol``: a non-empty string."""
    if not isinstance(value, str) or not value:
        raise InputError(f"{dialect.prefix(i)}symbol must be a non-empty string, got {value!r}")
    return value


def _side(value: Any, i: int, dialect: Dialect) -> int:
    """The rule for a position's present ``side``: 1 (long) or -1 (short), as an ``int``."""
    # JSON has one number type; like JSON Schema's "integer", 1.0 counts as the integer 1.
    if isinstance(value, bool) or not isinstance(value, int | float) or value not in _SIDES:
        raise InputError(f"{dialect.prefix(i)}side must be 1 (long) or -1 (short), got {value!r}")
    return int(value)


def _position_collateral(raw: dict[str, Any], i: int, dialect: Dialect) -> float:
    """An isolated position's own collateral (``>= 0``), which it must carry."""
    key = dialect.position_collateral
    value = raw.get(key)
    if type(value) is float and 0.0 <= value < _INF:
        return value
    if value is None:
        _require(raw, key, dialect.prefix(i), why=" (isolated margin: each position carries its own)")
    return _amount(value, f"{dialect.prefix(i)}{key}", dialect)


def _positive(value: Any, key: str, i: int, dialect: Dialect) -> float:
    """A position's number that must be > 0 (``qty``, ``entry_price``)."""
    number = _number(value, f"{dialect.prefix(i)}{key}", dialect)
    if not number > 0:
        raise InputError(f"{dialect.prefix(i)}{key} must be > 0, got {value!r}")
    return number


def _require(raw: dict[str, Any], key: str, prefix: str, why: str = "") -> None:
    if key not in raw or raw[key] is None:
        raise InputError(f"{prefix}{key} is missing{why}")


def _number(value: Any, field: str, dialect: Dialect = JSON) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{field} must be {dialect.number}, got {value!r}")
    try:
        number = float(value)
    except OverflowError:  # JSON numbers have any number of digits; a float holds ~309
        raise InputError(f"{field} must be finite, got an integer too large for a float") from None
    if not math.isfinite(number):
        raise InputError(f"{field} must be finite, got {value!r}")
    return number


def _amount(value: Any, field: str, dialect: Dialect = JSON) -> float:
    number = _number(value, field, dialect)
    if number < 0:
        raise InputError(f"{field} must be >= 0, got {value!r}")
    return number


def id_text(value: Any) -> str:
    """An account id as text (``""`` where it is missing or not a scalar)."""
    return "" if value is None or isinstance(value, dict | list) else str(value)


def _as_of_or_nat(value: Any) -> pd.Timestamp:
    try:
        return parse_as_of(value)
    except InputError:
        return pd.NaT
