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

Checks
------
Every row is checked by the rules of ``liqrisk.features.bars`` (listed there; the scoring
service checks posted bars by the same rules): ``checks="full"`` enforces them all,
``checks="contract"`` only what the liquidation contract makes the file invalid for (a bad
``ts``/``symbol``, a missing or non-finite price, a duplicate ``(symbol, ts)``, ``high <
low``), the other findings becoming notes with counts while the rows are kept.

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
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from liqrisk.features.bars import (
    CONTRACT_PROBLEMS,
    PRICES,
    PROBLEMS,
    REJECT_COLUMNS,
    REQUIRED,
    BadRowsError,
    ParsedBars,
    cell_text,
    error_message,
    is_sorted,
    kept_notes,
    normalise_bars,
    parse_bars_frame,
    problem_counts,
    rejects_frame,
    require_columns,
    screen,
    ts_as_us,
)
from liqrisk.features.durations import infer_bar_length
from liqrisk.features.errors import InputError
from liqrisk.features.schema import Bars

__all__ = [
    "CONTRACT_PROBLEMS",
    "PRICES",
    "PROBLEMS",
    "REJECT_COLUMNS",
    "REQUIRED",
    "BadRowsError",
    "BarsLoad",
    "bar_lengths",
    "default_rejects_path",
    "problem_counts",
    "read_bars",
    "ts_as_us",
]

_PARQUET_SUFFIXES = (".parquet", ".pq")
_CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zst")  # what pyarrow's streams decompress
_BLANK_LINE = re.compile(rb"\n[ \t\r]*\n")


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
    parsed = _parse(path)
    notes = list(parsed.notes)
    errors, kept_issues = screen(parsed, negative_ok=negative_ok, checks=checks)
    if not errors.empty and not lenient:
        raise BadRowsError(error_message(parsed, errors))

    keep = ~parsed.blank
    written: Path | None = None
    if lenient:
        written = _quarantine(parsed, errors, path=path, rejects_path=rejects_path)
        keep[errors["row"].to_numpy()] = False
        notes.append(_rejected_note(errors, written))
    notes += kept_notes(parsed, kept_issues)

    bars, rows = normalise_bars(parsed, keep)
    if not is_sorted(rows):
        notes.append("input was not sorted: sorted by (symbol, ts)")
    return BarsLoad(
        bars=Bars.validate(bars),
        rejects=rejects_frame(parsed, errors),
        notes=notes,
        rejects_path=written,
    )


def _quarantine(
    p: ParsedBars, errors: pd.DataFrame, *, path: Path, rejects_path: Path | None
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


# --------------------------------------------------------------------------- reading


def _parse(path: Path) -> ParsedBars:
    raw, is_csv, notes = _read_table(path)
    return parse_bars_frame(raw, source=str(path), is_csv=is_csv, notes=notes)


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
    require_columns(str(path), columns)
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


def _rejected_note(errors: pd.DataFrame, written: Path) -> str:
    per_problem = problem_counts(errors)
    if not per_problem:
        return f"0 rows rejected (empty rejects file written to {written})"
    breakdown = ", ".join(f"{k} {name}" for name, k in per_problem.items())
    return f"{errors['row'].nunique()} row(s) rejected: {breakdown} (written to {written})"


def _write_rejects(p: ParsedBars, errors: pd.DataFrame, out: Path) -> None:
    """One line per rejected row: its original values, then every field and problem found."""
    joined = errors.groupby("row", sort=True).agg({"field": "; ".join, "problem": "; ".join})
    rows = joined.index.to_numpy(dtype=np.int64)
    frame = p.raw.iloc[rows].reset_index(drop=True)
    frame["ts"] = cell_text(frame["ts"])  # to_csv cannot print a Timestamp outside years 1-9999
    frame.insert(0, "row", rows)
    if p.is_csv:
        frame.insert(1, "line", rows + 2)
    frame["field"] = joined["field"].to_numpy()
    frame["problem"] = joined["problem"].to_numpy()
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False)
