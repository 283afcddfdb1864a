"""Bars checks: a frame of OHLCV bars parsed, checked row by row and normalised.

The rules of the bars loader (``liqrisk.pipelines.bars.read_bars``, which reads the files) and
of the scoring service's ``POST /v1/bars`` (``liqrisk.serve.market``): the same checks, and the
same messages naming the source, row, symbol, ts, field and value.

Checks (each has a name, the ``problem`` of a reject)
-----------------------------------------------------
``missing ts``, ``unparseable ts``, ``ts out of range`` (outside the years
:data:`FIRST_YEAR` to :data:`LAST_YEAR`, UTC), ``missing symbol``, ``missing price``,
``unparseable price`` (text that is not a number), ``non-finite price``,
``duplicate (symbol, ts)`` (every copy is flagged: which one is right is unknown),
``high < low``, ``high < max(open, close)``, ``low > min(open, close)``,
``non-positive price`` (unless the symbol is in ``negative_ok``), ``unparseable
volume``, ``non-finite volume``, ``negative volume``.

``checks="contract"`` enforces only what the liquidation contract makes bars invalid for
(:data:`CONTRACT_PROBLEMS`); the other findings become notes with counts and the rows are
kept (an unparseable or non-finite volume is set to NaN, i.e. missing).
"""

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from liqrisk.features.errors import InputError
from liqrisk.features.schema import BARS_COLUMNS, Bars

PRICES: tuple[str, ...] = ("open", "high", "low", "close")
REQUIRED: tuple[str, ...] = ("symbol", "ts", *PRICES)
REJECT_COLUMNS: tuple[str, ...] = ("row", "symbol", "ts", "field", "problem")
# Bar times (UTC) the project computes with. Well inside pandas' nanosecond range (1677-2262),
# which lookbacks, horizons and nanosecond tools need, and inside what Python's datetime and
# strftime can print (years 1-9999): a ts of year 1, 9999 or 1e12 seconds is a data error,
# not a bar. The service's own times (a score's ``as_of``) keep to the same years.
FIRST_YEAR, LAST_YEAR = 1900, 2199

# Every check, in the order a row's problems are reported.
PROBLEMS: tuple[str, ...] = (
    "missing ts",
    "unparseable ts",
    "ts out of range",
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
# What the liquidation contract ("Malformed input") makes the bars file invalid for: a bad
# ts or symbol, a missing or non-finite price, a duplicate, high < low.
CONTRACT_PROBLEMS: frozenset[str] = frozenset(PROBLEMS[: PROBLEMS.index("high < low") + 1])
# In contract mode these volumes are not errors; they become missing (NaN).
_VOLUME_TO_NAN: frozenset[str] = frozenset({"unparseable volume", "non-finite volume"})

_TS_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# Text that means "no value" (compared stripped and lower-cased). A symbol is missing only
# when empty: "NA" is a real ticker (National Bank of Canada).
_EMPTY_NUMBER = frozenset({"", "nan", "na", "n/a", "null", "none"})
_EMPTY_TS = frozenset({"", "nat", "nan", "na", "n/a", "null", "none"})


class BadRowsError(InputError):
    """Strict mode found bad rows (as opposed to a file that cannot be read as bars at all)."""


def ts_as_us(ts: pd.Series) -> np.ndarray:
    """A ``datetime64[us, UTC]`` Series as int64 microseconds since the epoch (NaT -> min int)."""
    return ts.to_numpy(dtype="datetime64[us]").view(np.int64)


@dataclass(frozen=True)
class CheckedBars:
    """Bars that passed :func:`check_bars`: ``bars`` normalised (``Bars``, sorted by symbol and
    ts), ``rows`` the input row of each, and what was changed or noticed (``notes``)."""

    bars: pd.DataFrame
    rows: np.ndarray
    notes: list[str]


def check_bars(
    raw: pd.DataFrame,
    *,
    source: str = "bars",
    negative_ok: Collection[str] = (),
    checks: Literal["full", "contract"] = "full",
) -> CheckedBars:
    """Check a frame of bars as the strict loader does (row ``i`` is the frame's ``i``-th row).

    ``raw`` has ``symbol, ts`` (timestamps, or ISO 8601 text), ``open, high, low, close``
    (numbers, or text) and optionally ``volume``; other columns are ignored.
    Raises ``InputError`` for a missing column and :class:`BadRowsError` for the first bad row
    (naming ``source``, row, symbol, ts, field, value and how many rows share the problem).
    """
    require_columns(source, list(raw.columns))
    parsed = parse_bars_frame(raw[[c for c in (*REQUIRED, "volume") if c in raw.columns]], source=source)
    errors, kept = screen(parsed, negative_ok=negative_ok, checks=checks)
    if not errors.empty:
        raise BadRowsError(error_message(parsed, errors))
    notes = parsed.notes + kept_notes(parsed, kept)
    bars, rows = normalise_bars(parsed, ~parsed.blank)
    if not is_sorted(rows):
        notes.append("input was not sorted: sorted by (symbol, ts)")
    return CheckedBars(bars=Bars.validate(bars), rows=rows, notes=notes)


def screen(
    parsed: "ParsedBars", *, negative_ok: Collection[str] = (), checks: Literal["full", "contract"] = "full"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every problem found, split into the errors ``checks`` enforces and the issues it keeps
    (of rows without an error), both as :func:`find_problems` frames."""
    if checks not in ("full", "contract"):
        raise ValueError(f"checks must be 'full' or 'contract', got {checks!r}")
    if isinstance(negative_ok, str):  # one symbol, not its characters
        negative_ok = (negative_ok,)
    found = find_problems(parsed, negative_ok=negative_ok)
    enforced = PROBLEMS if checks == "full" else CONTRACT_PROBLEMS
    is_error = found["problem"].isin(list(enforced)).to_numpy()
    errors, kept = found[is_error], found[~is_error]
    return errors, kept[~kept["row"].isin(errors["row"]).to_numpy()]


@dataclass
class ParsedBars:
    """Bars columns parsed (:func:`parse_bars_frame`), with where each was missing or unreadable."""

    source: str
    is_csv: bool
    raw: pd.DataFrame  # the used columns as read (CSV: text); RangeIndex = data row
    symbol: pd.Series  # str, NaN where missing
    symbol_missing: np.ndarray
    ts: pd.Series  # datetime64[us, UTC], NaT where missing, unparseable or out of range
    ts_missing: np.ndarray
    ts_unparseable: np.ndarray
    ts_out_of_range: np.ndarray
    ts_outside: pd.Series  # the out-of-range ts as UTC text, indexed by row
    numbers: dict[str, np.ndarray]  # open/high/low/close (and volume) as float64
    missing: dict[str, np.ndarray]
    unparseable: dict[str, np.ndarray]
    has_volume: bool
    blank: np.ndarray  # CSV lines with every used cell empty: skipped, not errors
    notes: list[str]

    def where(self, row: int) -> str:
        return f"row {row} (line {row + 2})" if self.is_csv else f"row {row}"


def parse_bars_frame(
    raw: pd.DataFrame, *, source: str = "bars", is_csv: bool = False, notes: Sequence[str] = ()
) -> ParsedBars:
    """Parse the bars columns of ``raw`` (one row per data row, a ``RangeIndex``): ``symbol``,
    ``ts``, the prices and optional ``volume``, typed (timestamps, numbers) or text (CSV cells).

    Nothing is rejected here: :func:`find_problems` says what is wrong. ``source`` names the
    input in messages (a file, or ``bars`` for a frame); ``is_csv`` adds line numbers to row
    numbers and skips blank lines; ``notes`` are carried over (e.g. the reader's).
    """
    notes = list(notes)
    raw = raw.reset_index(drop=True)
    symbol = raw["symbol"].astype("str")
    no_symbol = (symbol.isna() | (symbol.str.strip() == "")).to_numpy()
    blank = _blank_lines(raw, no_symbol) if is_csv else np.zeros(len(raw), bool)
    if blank.any():
        notes.append(f"{int(blank.sum())} blank line(s) skipped")
    symbol_missing = no_symbol & ~blank
    ts, ts_missing, ts_unparseable, ts_notes = _parse_ts(raw["ts"], source=source)
    notes += ts_notes
    ts, ts_out_of_range, ts_outside = _within_years(ts)

    has_volume = "volume" in raw.columns
    numbers, missing, unparseable = {}, {}, {}
    for col in (*PRICES, "volume") if has_volume else PRICES:
        numbers[col], is_missing, unparseable[col] = _parse_number(raw[col], source=source)
        missing[col] = is_missing & ~blank
    if not has_volume:
        numbers["volume"] = np.full(len(raw), np.nan)
        notes.append("no volume column: volume set to NaN")
    return ParsedBars(
        source=source,
        is_csv=is_csv,
        raw=raw,
        symbol=symbol,
        symbol_missing=symbol_missing,
        ts=ts,
        ts_missing=ts_missing & ~blank,
        ts_unparseable=ts_unparseable,
        ts_out_of_range=ts_out_of_range,
        ts_outside=ts_outside,
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


def require_columns(source: str, columns: Sequence) -> None:
    """Raise ``InputError`` naming ``source`` and the missing columns (with a hint for names
    that differ only in case)."""
    missing = [c for c in REQUIRED if c not in columns]
    if not missing:
        return
    lower = {str(c).strip().lower(): str(c) for c in columns}
    hints = [f"{lower[c]!r} for {c!r}" for c in missing if c in lower]
    hint = f" (names are case-sensitive: found {', '.join(hints)})" if hints else ""
    raise InputError(
        f"{source}: missing required column{'s' if len(missing) > 1 else ''} "
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
    """``ts`` as UTC datetimes in their own unit (NaT where bad), missing and unparseable
    masks, notes."""
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
        return ts, missing, np.zeros(len(ts), bool), notes
    if not _is_text(raw.dtype):
        raise InputError(
            f"{source}: column ts has type {raw.dtype}; expected timestamps or ISO 8601 text "
            f"(e.g. 2024-01-01T00:00:00Z)"
        )
    text = raw.astype("str")
    ts = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
    failed = ts.isna().to_numpy()
    missing = _empty_text(text, failed, _EMPTY_TS)
    unparseable = failed & ~missing
    naive = int((~_has_utc_offset(text) & ~failed).sum())
    if naive:
        notes.append(f"{naive} ts without a UTC offset: taken as UTC")
    return ts, missing, unparseable, notes


def _within_years(ts: pd.Series) -> tuple[pd.Series, np.ndarray, pd.Series]:
    """``ts`` (UTC, any unit) as ``datetime64[us, UTC]`` with NaT outside the years
    :data:`FIRST_YEAR` to :data:`LAST_YEAR`; where that was, and those values as UTC text
    (indexed by row).

    Compared in ``ts``' own unit, before any conversion: 1e15 seconds has no microsecond form.
    """
    naive = ts.dt.tz_localize(None).to_numpy()
    unit = np.datetime_data(naive.dtype)[0]
    first = np.datetime64(f"{FIRST_YEAR}-01-01", unit)
    end = np.datetime64(f"{LAST_YEAR + 1}-01-01", unit)
    outside = ~np.isnat(naive) & ((naive < first) | (naive >= end))
    text = pd.Series(_utc_text(naive[outside]), index=np.flatnonzero(outside), dtype=object)
    return ts.mask(outside).dt.as_unit("us"), outside, text


def _utc_text(naive: np.ndarray) -> np.ndarray:
    """UTC wall times (``datetime64``, any unit) as ``YYYY-MM-DDTHH:MM:SSZ``, ``""`` for NaT,
    in any year (``strftime`` refuses years outside 1-9999)."""
    seconds = np.datetime_as_string(naive.astype("datetime64[s]"), unit="s")
    return np.where(np.isnat(naive), "", np.char.add(seconds, "Z")).astype(object)


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


def find_problems(p: ParsedBars, *, negative_ok: Collection[str]) -> pd.DataFrame:
    """Every (row, field, problem) found, sorted by row and then by check order."""
    n = p.numbers
    o, h, lo, c = (n[col] for col in PRICES)
    found: list[tuple[str, str, np.ndarray]] = [
        ("missing ts", "ts", p.ts_missing),
        ("unparseable ts", "ts", p.ts_unparseable),
        ("ts out of range", "ts", p.ts_out_of_range),
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


def _valid_key(p: ParsedBars) -> np.ndarray:
    return ~(p.ts_missing | p.ts_unparseable | p.ts_out_of_range | p.symbol_missing | p.blank)


def _duplicated(p: ParsedBars) -> np.ndarray:
    valid = _valid_key(p)
    keys = pd.DataFrame({"symbol": pd.factorize(p.symbol)[0], "ts": ts_as_us(p.ts)})
    dup = np.zeros(len(keys), bool)
    dup[valid] = keys[valid].duplicated(keep=False).to_numpy()
    return dup


def _same_key_rows(p: ParsedBars, row: int) -> list[int]:
    valid = _valid_key(p)
    same = (p.symbol.to_numpy() == p.symbol.iloc[row]) & (ts_as_us(p.ts) == ts_as_us(p.ts)[row])
    return [int(r) for r in np.flatnonzero(same & valid) if r != row]


# --------------------------------------------------------------------------- reporting


def error_message(p: ParsedBars, errors: pd.DataFrame) -> str:
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


def _symbol_text(p: ParsedBars, row: int) -> str:
    value = p.symbol.iloc[row]
    return "<missing>" if p.symbol_missing[row] or pd.isna(value) else str(value)


def _ts_text(p: ParsedBars, row: int) -> str:
    if p.ts_missing[row]:
        return "<missing>"
    if p.ts_unparseable[row]:
        return repr(str(p.raw["ts"].iloc[row]))
    if p.ts_out_of_range[row]:
        return p.ts_outside[row]
    return p.ts.iloc[row].strftime(_TS_FORMAT)


def _number(value: float) -> str:
    return repr(float(value))


def _value_text(p: ParsedBars, problem: str, col: str, row: int) -> str:
    n = p.numbers
    if problem in ("missing ts", "missing symbol", "missing price"):
        return f"{col} is empty"
    if problem.startswith("unparseable"):
        return f"{col}={str(p.raw[col].iloc[row])!r}"
    if problem == "ts out of range":
        as_read = p.raw["ts"].iloc[row]
        given = p.ts_outside[row] if _is_datetime(p.raw["ts"].dtype) else repr(str(as_read))
        return f"ts={given} is outside the years {FIRST_YEAR} to {LAST_YEAR} (UTC)"
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


def kept_notes(p: ParsedBars, issues: pd.DataFrame) -> list[str]:
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


def rejects_frame(p: ParsedBars, errors: pd.DataFrame) -> pd.DataFrame:
    rows = errors["row"].to_numpy()
    return pd.DataFrame(
        {
            "row": rows.astype(np.int64),
            "symbol": cell_text(p.raw["symbol"].iloc[rows]),
            "ts": cell_text(p.raw["ts"].iloc[rows]),
            "field": errors["field"].to_numpy(),
            "problem": errors["problem"].to_numpy(),
        },
        columns=list(REJECT_COLUMNS),
    ).astype({"field": "str", "problem": "str"})


def cell_text(values: pd.Series) -> np.ndarray:
    """Cells as the rejects show them: text as read (``""`` where missing), timestamps as UTC
    ``YYYY-MM-DDTHH:MM:SSZ`` in any year."""
    if _is_datetime(values.dtype):
        ts = values if values.dt.tz is not None else values.dt.tz_localize("UTC")
        return _utc_text(ts.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy())
    return values.astype("str").to_numpy(dtype=object, na_value="")


# --------------------------------------------------------------------------- output


def normalise_bars(p: ParsedBars, keep: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    """The kept rows as ``Bars`` sorted by (symbol, ts), and the input row of each
    (increasing where the input was sorted already)."""
    symbol = p.symbol[keep]
    categories = pd.Index(pd.unique(symbol), dtype="str").sort_values()
    cat = pd.Categorical(symbol, categories=categories)
    ts = p.ts[keep].reset_index(drop=True)
    columns = {"symbol": cat, "ts": ts}
    columns.update({col: p.numbers[col][keep] for col in (*PRICES, "volume")})
    bars = pd.DataFrame(columns, columns=list(BARS_COLUMNS))
    rows = np.flatnonzero(keep)

    codes, ts_us = cat.codes.astype(np.int64), ts_as_us(ts)
    step_code, step_ts = np.diff(codes), np.diff(ts_us)
    was_sorted = bool(np.all((step_code > 0) | ((step_code == 0) & (step_ts >= 0))))
    if not was_sorted:
        order = np.lexsort((ts_us, codes))
        bars = bars.iloc[order].reset_index(drop=True)
        rows = rows[order]
    return bars, rows


def is_sorted(rows: np.ndarray) -> bool:
    """Whether :func:`normalise_bars` kept the input order."""
    return bool(np.all(np.diff(rows) > 0))
