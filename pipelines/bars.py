"""Load a bars file (Parquet or CSV), check every row, and normalise it.

The one entry point is :func:`read_bars`. It returns the bars as the ``Bars`` pandera
model describes them (``liqrisk.features.schema``): ``symbol`` category, ``ts``
``datetime64[us, UTC]`` (bar OPEN time), prices and volume ``float64``, sorted by
``(symbol, ts)`` with a fresh index.

Reading
-------
- By suffix: ``.parquet``/``.pq`` is Parquet; ``.csv`` (also compressed, ``.csv.gz``,
  ``.csv.bz2``, ``.csv.zst``) is CSV.
- Required columns ``symbol, ts, open, high, low, close`` (names are case-sensitive);
  ``volume`` is optional (NaN when absent). Other columns are ignored (a note says so).
- CSV cells are read as text and parsed here, so a bad cell is reported as a bad
  cell instead of turning its whole column into text. ``ts`` is ISO 8601: ``Z``,
  ``+00:00`` or any other offset is converted to UTC; a time without an offset is
  taken as UTC (the contract's ``ts`` is UTC, so that is the only reading that can be
  right; a note counts such rows). A date alone is midnight UTC.
- Parquet ``ts`` may be tz-aware (any zone, converted to UTC) or naive (taken as
  UTC), in any unit (``ns`` is truncated to ``us``; a note counts rows that had
  sub-microsecond parts). Text ``ts`` columns are parsed as in CSV.
- Rows are numbered as the file's 0-based data rows (``row``); for CSV the error also
  gives the line number (header = line 1, so ``line = row + 2``). Blank CSV lines keep
  their number and are skipped with a note.

Checks (each has a name, the ``problem`` of a reject)
-----------------------------------------------------
``missing ts``, ``unparseable ts``, ``missing symbol``, ``missing price``,
``unparseable price`` (CSV text that is not a number), ``non-finite price``,
``duplicate (symbol, ts)`` (every copy is flagged: which one is right is unknown),
``high < low``, ``high < max(open, close)``, ``low > min(open, close)``,
``non-positive price`` (unless the symbol is in ``negative_ok``), ``unparseable
volume``, ``non-finite volume``, ``negative volume``.

``checks="contract"`` enforces only what the liquidation contract makes the file
invalid for (a bad ``ts``/``symbol``, a missing or non-finite price, a duplicate
``(symbol, ts)``, ``high < low``); the other findings become notes with counts and
the rows are kept (an unparseable or non-finite volume is set to NaN, i.e. missing).

Strict mode raises one ``InputError`` for the first bad row of the file (naming the
file, row, line, symbol, ts, field and value, how many rows share the problem and
the totals). Lenient mode drops the bad rows, writes them to a rejects CSV (default
``<stem>.rejects.csv`` in the current directory: input folders such as ``data/`` may
be read-only or shared, and runtime output stays out of ``data/``) and says so in the
notes. Nothing is dropped without a note.
"""

import csv
import io
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from liqrisk.features.durations import infer_bar_length
from liqrisk.features.errors import InputError
from liqrisk.features.schema import BARS_COLUMNS, Bars

PRICES: tuple[str, ...] = ("open", "high", "low", "close")
REQUIRED: tuple[str, ...] = ("symbol", "ts", *PRICES)
REJECT_COLUMNS: tuple[str, ...] = ("row", "symbol", "ts", "field", "problem")

# Every check, in the order a row's problems are reported.
PROBLEMS: tuple[str, ...] = (
    "missing ts",
    "unparseable ts",
    "missing symbol",
    "missing price",
    "unparseable price",
    "non-finite price",
    "duplicate (symbol, ts)",
    "high < low",
    "high < max(open, close)",
    "low > min(open, close)",
    "non-positive price",
    "unparseable volume",
    "non-finite volume",
    "negative volume",
)
# What the liquidation contract ("Malformed input") makes the bars file invalid for.
CONTRACT_PROBLEMS: frozenset[str] = frozenset(PROBLEMS[:8])
# In contract mode these volumes are not errors; they become missing (NaN).
_VOLUME_TO_NAN: frozenset[str] = frozenset({"unparseable volume", "non-finite volume"})

_PARQUET_SUFFIXES = (".parquet", ".pq")
_CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zst")  # what pyarrow's streams decompress
_TS_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_BLANK_LINE = re.compile(rb"\n[ \t\r]*\n")
# Text that means "no value" (compared stripped and lower-cased). A symbol is missing only
# when empty: "NA" is a real ticker (National Bank of Canada).
_EMPTY_NUMBER = frozenset({"", "nan", "na", "n/a", "null", "none"})
_EMPTY_TS = frozenset({"", "nat", "nan", "na", "n/a", "null", "none"})


class BadRowsError(InputError):
    """Strict mode found bad rows (as opposed to a file that cannot be read as bars at all)."""


@dataclass(frozen=True)
class BarsLoad:
    """What :func:`read_bars` found.

    bars : DataFrame
        Valid bars, normalised (``liqrisk.features.schema.Bars``), sorted by
        ``(symbol, ts)``, index reset.
    rejects : DataFrame
        One row per (rejected row, field, problem): ``row`` (0-based data row of the
        file), ``symbol`` and ``ts`` as text from the file, ``field``, ``problem``.
        Empty unless ``lenient``. ``rejects["row"].nunique()`` rows were dropped.
    notes : list of str
        Everything the loader changed or noticed, in words.
    rejects_path : Path or None
        Where the rejects CSV was written (lenient mode only).
    """

    bars: pd.DataFrame
    rejects: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    rejects_path: Path | None = None


def read_bars(
    path: Path,
    *,
    lenient: bool = False,
    negative_ok: Collection[str] = (),
    rejects_path: Path | None = None,
    checks: Literal["full", "contract"] = "full",
) -> BarsLoad:
    """Read, check and normalise a bars file (see the module docstring for the rules).

    Raises ``InputError`` for an unsupported suffix, an unreadable file or a missing
    required column (naming the file and the column), and, unless ``lenient``,
    ``BadRowsError`` (an ``InputError``) for the first bad row (naming file, row,
    symbol, ts, field, value and counts).
    ``FileNotFoundError`` when ``path`` does not exist.
    """
    if checks not in ("full", "contract"):
        raise ValueError(f"checks must be 'full' or 'contract', got {checks!r}")
    path = Path(path)
    if isinstance(negative_ok, str):  # one symbol, not its characters
        negative_ok = (negative_ok,)
    parsed = _parse(path)
    found = _find_problems(parsed, negative_ok=negative_ok)
    notes = list(parsed.notes)

    enforced = PROBLEMS if checks == "full" else CONTRACT_PROBLEMS
    is_error = found["problem"].isin(list(enforced)).to_numpy()
    errors, kept_issues = found[is_error], found[~is_error]
    if not errors.empty and not lenient:
        raise BadRowsError(_error_message(parsed, errors))
    kept_issues = kept_issues[~kept_issues["row"].isin(errors["row"]).to_numpy()]

    keep = ~parsed.blank
    written: Path | None = None
    if lenient:
        written = _quarantine(parsed, errors, path=path, rejects_path=rejects_path)
        keep[errors["row"].to_numpy()] = False
        notes.append(_rejected_note(errors, written))
    notes += _kept_notes(parsed, kept_issues)

    bars, was_sorted = _normalise(parsed, keep)
    if not was_sorted:
        notes.append("input was not sorted: sorted by (symbol, ts)")
    return BarsLoad(
        bars=Bars.validate(bars),
        rejects=_rejects_frame(parsed, errors),
        notes=notes,
        rejects_path=written,
    )


def _quarantine(
    p: "_Parsed", errors: pd.DataFrame, *, path: Path, rejects_path: Path | None
) -> Path:
    """Write the rejects file (lenient mode); where it went."""
    out = Path(rejects_path) if rejects_path is not None else default_rejects_path(path)
    if out.resolve() == path.resolve():
        raise InputError(f"{path}: the rejects file would overwrite the input; pass another path")
    _write_rejects(p, errors, out)
    return out


def default_rejects_path(path: Path) -> Path:
    """``<stem>.rejects.csv`` in the current directory (``bars.csv.gz`` -> ``bars.rejects.csv``)."""
    name = Path(path).name
    for suffix in (*_CSV_SUFFIXES, *_PARQUET_SUFFIXES):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return Path.cwd() / f"{name}.rejects.csv"


def bar_lengths(bars: pd.DataFrame) -> dict[str, pd.Timedelta | None]:
    """Each symbol's inferred bar length (most common step; a tie goes to the smaller).

    ``bars`` is normalised and sorted by ``(symbol, ts)``. ``None`` for a symbol with
    fewer than two bars.
    """
    out: dict[str, pd.Timedelta | None] = {}
    for symbol, ts in bars.groupby("symbol", observed=True, sort=True)["ts"]:
        out[str(symbol)] = infer_bar_length(ts_as_us(ts))
    return out


def ts_as_us(ts: pd.Series) -> np.ndarray:
    """A ``datetime64[us, UTC]`` Series as int64 microseconds since the epoch (NaT -> min int)."""
    return ts.to_numpy(dtype="datetime64[us]").view(np.int64)


# --------------------------------------------------------------------------- reading


@dataclass
class _Parsed:
    source: str
    is_csv: bool
    raw: pd.DataFrame  # the used columns as read (CSV: text); RangeIndex = data row
    symbol: pd.Series  # str, NaN where missing
    symbol_missing: np.ndarray
    ts: pd.Series  # datetime64[us, UTC], NaT where missing or unparseable
    ts_missing: np.ndarray
    ts_unparseable: np.ndarray
    numbers: dict[str, np.ndarray]  # open/high/low/close (and volume) as float64
    missing: dict[str, np.ndarray]
    unparseable: dict[str, np.ndarray]
    has_volume: bool
    blank: np.ndarray  # CSV lines with every used cell empty: skipped, not errors
    notes: list[str]

    def where(self, row: int) -> str:
        return f"row {row} (line {row + 2})" if self.is_csv else f"row {row}"


def _parse(path: Path) -> _Parsed:
    raw, is_csv, notes = _read_table(path)
    source = str(path)
    symbol = raw["symbol"].astype("str")
    no_symbol = (symbol.isna() | (symbol.str.strip() == "")).to_numpy()
    blank = _blank_lines(raw, no_symbol) if is_csv else np.zeros(len(raw), bool)
    if blank.any():
        notes.append(f"{int(blank.sum())} blank line(s) skipped")
    symbol_missing = no_symbol & ~blank
    ts, ts_missing, ts_unparseable, ts_notes = _parse_ts(raw["ts"], source=source)
    notes += ts_notes

    has_volume = "volume" in raw.columns
    numbers, missing, unparseable = {}, {}, {}
    for col in (*PRICES, "volume") if has_volume else PRICES:
        numbers[col], is_missing, unparseable[col] = _parse_number(raw[col], source=source)
        missing[col] = is_missing & ~blank
    if not has_volume:
        numbers["volume"] = np.full(len(raw), np.nan)
        notes.append("no volume column: volume set to NaN")
    return _Parsed(
        source=source,
        is_csv=is_csv,
        raw=raw,
        symbol=symbol,
        symbol_missing=symbol_missing,
        ts=ts,
        ts_missing=ts_missing & ~blank,
        ts_unparseable=ts_unparseable,
        numbers=numbers,
        missing=missing,
        unparseable=unparseable,
        has_volume=has_volume,
        blank=blank,
        notes=notes,
    )


def _blank_lines(raw: pd.DataFrame, candidates: np.ndarray) -> np.ndarray:
    """CSV lines whose used cells are all empty; only ``candidates`` (no symbol) are looked at."""
    blank = candidates.copy()
    rows = np.flatnonzero(candidates)
    for col in raw.columns:
        blank[rows] &= (raw[col].iloc[rows].str.strip() == "").to_numpy(dtype=bool)
    return blank


def _read_table(path: Path) -> tuple[pd.DataFrame, bool, list[str]]:
    """The used columns as read (CSV: every cell as text, empty cells as ""), and notes."""
    name = path.name.lower()
    if name.endswith(_PARQUET_SUFFIXES):
        is_csv = False
    elif name.endswith(_CSV_SUFFIXES):
        is_csv = True
    else:
        raise InputError(
            f"{path}: unsupported file type; expected .parquet, .pq, .csv, .csv.gz, .csv.bz2 "
            f"or .csv.zst"
        )
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        raw, columns = _read_csv(path) if is_csv else _read_parquet(path)
    except InputError:
        raise
    except (ValueError, OSError) as exc:  # ArrowInvalid and pandas' ParserError are ValueErrors
        kind = "CSV" if is_csv else "Parquet"
        raise InputError(f"{path}: cannot read as {kind}: {str(exc).strip()}") from exc
    ignored = [str(c) for c in columns if c not in raw.columns]
    notes = [f"ignored columns: {', '.join(ignored)}"] if ignored else []
    return raw.reset_index(drop=True), is_csv, notes


def _used_columns(path: Path, columns: list) -> list[str]:
    _require_columns(path, columns)
    return [c for c in (*REQUIRED, "volume") if c in columns]


def _read_parquet(path: Path) -> tuple[pd.DataFrame, list]:
    columns = list(pq.read_schema(path).names)
    used = _used_columns(path, columns)
    return pd.read_parquet(path, columns=used)[used], columns


def _read_csv(path: Path) -> tuple[pd.DataFrame, list]:
    """Every cell as text. pyarrow reads fast but skips blank lines, which would shift the
    row numbers that errors report; files with a blank line (rare) take pandas' slower
    reader, which keeps them as empty rows."""
    with pa.input_stream(str(path), compression="detect") as stream:
        data = stream.read()
    end = data.find(b"\n")
    first_line = data[: end if end >= 0 else len(data)].decode("utf-8-sig", errors="replace")
    first_line = first_line.rstrip("\r")
    columns = next(csv.reader([first_line]), []) if first_line.strip() else []
    used = _used_columns(path, columns)
    if _BLANK_LINE.search(data) is None:
        try:
            return _read_csv_arrow(data, used), columns
        except pa.ArrowInvalid:
            pass  # let pandas find and word the problem (it names the line)
    # every column, not usecols: pandas then refuses a line with too many fields
    raw = pd.read_csv(io.BytesIO(data), dtype=str, na_filter=False, skip_blank_lines=False)
    return raw[used], columns


def _read_csv_arrow(data: bytes, used: list[str]) -> pd.DataFrame:
    table = pacsv.read_csv(
        pa.BufferReader(data),
        convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in used},
            include_columns=used,
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    return table.to_pandas(types_mapper={pa.string(): pd.StringDtype(na_value=np.nan)}.get)[used]


def _require_columns(path: Path, columns: list) -> None:
    missing = [c for c in REQUIRED if c not in columns]
    if not missing:
        return
    lower = {str(c).strip().lower(): str(c) for c in columns}
    hints = [f"{lower[c]!r} for {c!r}" for c in missing if c in lower]
    hint = f" (names are case-sensitive: found {', '.join(hints)})" if hints else ""
    raise InputError(
        f"{path}: missing required column{'s' if len(missing) > 1 else ''} "
        f"{', '.join(missing)}{hint}; the file has {', '.join(map(str, columns)) or 'no columns'}; "
        f"bars need {', '.join(REQUIRED)} and optionally volume"
    )


def _is_datetime(dtype) -> bool:
    return isinstance(dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(dtype)


def _is_text(dtype) -> bool:
    return pd.api.types.is_string_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype)


def _empty_text(text: pd.Series, candidates: np.ndarray, empty_words: frozenset[str]) -> np.ndarray:
    """Where ``text`` is null, blank or a word for "nothing"; only ``candidates`` are looked at."""
    out = np.zeros(len(text), bool)
    rows = np.flatnonzero(candidates)
    if rows.size:
        sub = text.iloc[rows]
        out[rows] = (sub.isna() | sub.str.strip().str.lower().isin(list(empty_words))).to_numpy()
    return out


def _parse_ts(
    raw: pd.Series, *, source: str
) -> tuple[pd.Series, np.ndarray, np.ndarray, list[str]]:
    """``ts`` as ``datetime64[us, UTC]`` (NaT where bad), missing and unparseable masks, notes."""
    notes: list[str] = []
    if _is_datetime(raw.dtype):
        ts = raw
        if ts.dt.tz is None:
            ts = ts.dt.tz_localize("UTC")
            notes.append("ts has no time zone: taken as UTC")
        elif str(ts.dt.tz) != "UTC":
            notes.append(f"ts converted from {ts.dt.tz} to UTC")
            ts = ts.dt.tz_convert("UTC")
        if ts.dt.unit == "ns":
            sub_us = int((ts.to_numpy(dtype="datetime64[ns]").view(np.int64) % 1000 != 0).sum())
            if sub_us:
                notes.append(f"{sub_us} ts with sub-microsecond parts truncated to microseconds")
        missing = ts.isna().to_numpy()
        return ts.dt.as_unit("us"), missing, np.zeros(len(ts), bool), notes
    if not _is_text(raw.dtype):
        raise InputError(
            f"{source}: column ts has type {raw.dtype}; expected timestamps or ISO 8601 text "
            f"(e.g. 2024-01-01T00:00:00Z)"
        )
    text = raw.astype("str")
    ts = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce").dt.as_unit("us")
    failed = ts.isna().to_numpy()
    missing = _empty_text(text, failed, _EMPTY_TS)
    unparseable = failed & ~missing
    naive = int((~_has_utc_offset(text) & ~failed).sum())
    if naive:
        notes.append(f"{naive} ts without a UTC offset: taken as UTC")
    return ts, missing, unparseable, notes


def _has_utc_offset(text: pd.Series) -> np.ndarray:
    """ISO 8601 text with a time and ``Z`` or a ``+hh[:mm]``/``-hh[:mm]`` offset after it.

    (A cheap test rather than a regex: the sign must be in the last 6 characters, which a
    bare date such as ``2024-01-01`` never passes because it has no ``:``.)"""
    tail = text.str.slice(-6)
    signed = tail.str.contains("+", regex=False) | tail.str.contains("-", regex=False)
    zulu = text.str.strip().str.endswith(("Z", "z"))
    has_time = text.str.contains(":", regex=False)
    return (has_time & (signed | zulu)).to_numpy(dtype=bool, na_value=False)


def _arrow_floats(text: pd.Series) -> np.ndarray | None:
    """Text to float64 with pyarrow (several times faster than ``pd.to_numeric`` on text),
    empty cells as NaN; ``None`` when any other cell fails to parse."""
    cells = pa.array(text, type=pa.string(), from_pandas=True)
    cells = pc.if_else(pc.equal(cells, ""), pa.scalar(None, pa.string()), cells)
    try:
        floats = pc.cast(cells, pa.float64())
    except pa.ArrowInvalid:
        return None
    return floats.to_numpy(zero_copy_only=False).astype(np.float64, copy=True)


def _parse_number(raw: pd.Series, *, source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if pd.api.types.is_bool_dtype(raw.dtype):
        raise InputError(f"{source}: column {raw.name} has type {raw.dtype}; expected numbers")
    if pd.api.types.is_numeric_dtype(raw.dtype):
        values = raw.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)  # writable
        return values, np.isnan(values), np.zeros(len(values), bool)
    if not _is_text(raw.dtype):
        raise InputError(f"{source}: column {raw.name} has type {raw.dtype}; expected numbers")
    text = raw.astype("str")
    values = _arrow_floats(text)
    if values is None:  # some cell is not a plain number: let pandas coerce cell by cell
        coerced = pd.to_numeric(text, errors="coerce")
        values = coerced.to_numpy(np.float64, na_value=np.nan, copy=True)
    failed = np.isnan(values)
    missing = _empty_text(text, failed, _EMPTY_NUMBER)
    return values, missing, failed & ~missing


# --------------------------------------------------------------------------- checks


def _find_problems(p: _Parsed, *, negative_ok: Collection[str]) -> pd.DataFrame:
    """Every (row, field, problem) found, sorted by row and then by check order."""
    n = p.numbers
    o, h, lo, c = (n[col] for col in PRICES)
    found: list[tuple[str, str, np.ndarray]] = [
        ("missing ts", "ts", p.ts_missing),
        ("unparseable ts", "ts", p.ts_unparseable),
        ("missing symbol", "symbol", p.symbol_missing),
    ]
    found += [("missing price", col, p.missing[col]) for col in PRICES]
    found += [("unparseable price", col, p.unparseable[col]) for col in PRICES]
    found += [("non-finite price", col, np.isinf(n[col])) for col in PRICES]
    found.append(("duplicate (symbol, ts)", "ts", _duplicated(p)))
    with np.errstate(invalid="ignore"):
        inverted = h < lo
        found.append(("high < low", "high", inverted))
        # an inverted bar fails these too; they would only repeat it
        found.append(("high < max(open, close)", "high", (h < np.maximum(o, c)) & ~inverted))
        found.append(("low > min(open, close)", "low", (lo > np.minimum(o, c)) & ~inverted))
        allowed = p.symbol.isin(list(negative_ok)).to_numpy()
        found += [("non-positive price", col, (n[col] <= 0) & ~allowed) for col in PRICES]
        if p.has_volume:
            v = n["volume"]
            found.append(("unparseable volume", "volume", p.unparseable["volume"]))
            found.append(("non-finite volume", "volume", np.isinf(v)))
            found.append(("negative volume", "volume", v < 0))

    parts = []
    for rank, (problem, col, mask) in enumerate(found):
        rows = np.flatnonzero(mask)
        if rows.size:
            part = {"row": rows, "field": col, "problem": problem, "_rank": rank}
            parts.append(pd.DataFrame(part))
    if not parts:
        return pd.DataFrame({"row": np.array([], np.int64), "field": [], "problem": []}).astype(
            {"field": "str", "problem": "str"}
        )
    out = pd.concat(parts, ignore_index=True).sort_values(["row", "_rank"], kind="stable")
    return out.drop(columns="_rank").reset_index(drop=True)


def _valid_key(p: _Parsed) -> np.ndarray:
    return ~(p.ts_missing | p.ts_unparseable | p.symbol_missing | p.blank)


def _duplicated(p: _Parsed) -> np.ndarray:
    valid = _valid_key(p)
    keys = pd.DataFrame({"symbol": pd.factorize(p.symbol)[0], "ts": ts_as_us(p.ts)})
    dup = np.zeros(len(keys), bool)
    dup[valid] = keys[valid].duplicated(keep=False).to_numpy()
    return dup


def _same_key_rows(p: _Parsed, row: int) -> list[int]:
    valid = _valid_key(p)
    same = (p.symbol.to_numpy() == p.symbol.iloc[row]) & (ts_as_us(p.ts) == ts_as_us(p.ts)[row])
    return [int(r) for r in np.flatnonzero(same & valid) if r != row]


# --------------------------------------------------------------------------- reporting


def _error_message(p: _Parsed, errors: pd.DataFrame) -> str:
    first = errors.iloc[0]
    row, col, problem = int(first["row"]), str(first["field"]), str(first["problem"])
    per_problem = problem_counts(errors)
    breakdown = ", ".join(f"{k} {name}" for name, k in per_problem.items())
    return (
        f"{p.source}: {problem} at {p.where(row)}, symbol={_symbol_text(p, row)}, "
        f"ts={_ts_text(p, row)}, field {col}: {_value_text(p, problem, col, row)}; "
        f"{per_problem[problem]} row(s) with this problem; in all {sum(per_problem.values())} "
        f"problem(s) in {errors['row'].nunique()} row(s): {breakdown}"
    )


def problem_counts(found: pd.DataFrame) -> dict[str, int]:
    """Rows per problem (a row counts once per problem), in check order."""
    counts = found.drop_duplicates(["row", "problem"])["problem"].value_counts()
    return {name: int(counts[name]) for name in PROBLEMS if name in counts.index}


def _symbol_text(p: _Parsed, row: int) -> str:
    value = p.symbol.iloc[row]
    return "<missing>" if p.symbol_missing[row] or pd.isna(value) else str(value)


def _ts_text(p: _Parsed, row: int) -> str:
    if p.ts_missing[row]:
        return "<missing>"
    if p.ts_unparseable[row]:
        return repr(str(p.raw["ts"].iloc[row]))
    return p.ts.iloc[row].strftime(_TS_FORMAT)


def _number(value: float) -> str:
    return repr(float(value))


def _value_text(p: _Parsed, problem: str, col: str, row: int) -> str:
    n = p.numbers
    if problem in ("missing ts", "missing symbol", "missing price"):
        return f"{col} is empty"
    if problem.startswith("unparseable"):
        return f"{col}={str(p.raw[col].iloc[row])!r}"
    if problem == "duplicate (symbol, ts)":
        others = _same_key_rows(p, row)
        shown = ", ".join(p.where(r) for r in others[:5]) + (" ..." if len(others) > 5 else "")
        return f"same (symbol, ts) also at {shown}"
    if problem == "high < low":
        return f"high={_number(n['high'][row])}, low={_number(n['low'][row])}"
    if problem in ("high < max(open, close)", "low > min(open, close)"):
        return (
            f"{col}={_number(n[col][row])}, open={_number(n['open'][row])}, "
            f"close={_number(n['close'][row])}"
        )
    if problem == "non-positive price":
        return (
            f"{col}={_number(n[col][row])} (prices <= 0 are allowed only for symbols marked "
            f"negative_ok / \"negative_prices\": true)"
        )
    return f"{col}={_number(n[col][row])}"


def _kept_notes(p: _Parsed, issues: pd.DataFrame) -> list[str]:
    """Contract mode: what was found but is not an error; volumes that cannot be used -> NaN."""
    notes = []
    for problem, k in problem_counts(issues).items():
        rows = issues.loc[issues["problem"] == problem, "row"].unique()
        symbols = sorted(p.symbol.iloc[rows].dropna().unique().astype(str))
        where = f" ({', '.join(symbols[:5])}{', ...' if len(symbols) > 5 else ''})"
        if problem in _VOLUME_TO_NAN:
            p.numbers["volume"][rows] = np.nan
            notes.append(f"{k} row(s) with {problem}: volume set to NaN{where}")
        else:
            notes.append(f"{k} row(s) with {problem} kept{where}")
    return notes


def _rejected_note(errors: pd.DataFrame, written: Path) -> str:
    per_problem = problem_counts(errors)
    if not per_problem:
        return f"0 rows rejected (empty rejects file written to {written})"
    breakdown = ", ".join(f"{k} {name}" for name, k in per_problem.items())
    return f"{errors['row'].nunique()} row(s) rejected: {breakdown} (written to {written})"


def _rejects_frame(p: _Parsed, errors: pd.DataFrame) -> pd.DataFrame:
    rows = errors["row"].to_numpy()
    return pd.DataFrame(
        {
            "row": rows.astype(np.int64),
            "symbol": _text(p.raw["symbol"].iloc[rows]),
            "ts": _text(p.raw["ts"].iloc[rows]),
            "field": errors["field"].to_numpy(),
            "problem": errors["problem"].to_numpy(),
        },
        columns=list(REJECT_COLUMNS),
    ).astype({"field": "str", "problem": "str"})


def _text(values: pd.Series) -> np.ndarray:
    if _is_datetime(values.dtype):
        ts = values if values.dt.tz is not None else values.dt.tz_localize("UTC")
        return ts.dt.tz_convert("UTC").dt.strftime(_TS_FORMAT).to_numpy(dtype=object, na_value="")
    return values.astype("str").to_numpy(dtype=object, na_value="")


def _write_rejects(p: _Parsed, errors: pd.DataFrame, out: Path) -> None:
    """One line per rejected row: its original values, then every field and problem found."""
    joined = errors.groupby("row", sort=True).agg({"field": "; ".join, "problem": "; ".join})
    rows = joined.index.to_numpy(dtype=np.int64)
    frame = p.raw.iloc[rows].reset_index(drop=True)
    frame.insert(0, "row", rows)
    if p.is_csv:
        frame.insert(1, "line", rows + 2)
    frame["field"] = joined["field"].to_numpy()
    frame["problem"] = joined["problem"].to_numpy()
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False)


# --------------------------------------------------------------------------- output


def _normalise(p: _Parsed, keep: np.ndarray) -> tuple[pd.DataFrame, bool]:
    """The kept rows as ``Bars`` sorted by (symbol, ts); also whether they were sorted already."""
    symbol = p.symbol[keep]
    categories = pd.Index(pd.unique(symbol), dtype="str").sort_values()
    cat = pd.Categorical(symbol, categories=categories)
    ts = p.ts[keep].reset_index(drop=True)
    columns = {"symbol": cat, "ts": ts}
    columns.update({col: p.numbers[col][keep] for col in (*PRICES, "volume")})
    bars = pd.DataFrame(columns, columns=list(BARS_COLUMNS))

    codes, ts_us = cat.codes.astype(np.int64), ts_as_us(ts)
    step_code, step_ts = np.diff(codes), np.diff(ts_us)
    was_sorted = bool(np.all((step_code > 0) | ((step_code == 0) & (step_ts >= 0))))
    if not was_sorted:
        order = np.lexsort((ts_us, codes))
        bars = bars.iloc[order].reset_index(drop=True)
    return bars, was_sorted
