"""``liqrisk data check FILE``: validate a bars file and print what it holds.

The report gives, per symbol, its span, inferred bar length, how much of it has a
volume, and its gaps (``liqrisk.features.calendar``): expected closures (weekends,
holidays, daily session breaks) versus unexpected holes, the longest closure and the
largest move from a close to the next open across a gap. Then rejects and notes.

Exit codes: 0 when the file is valid, or when ``--lenient`` wrote its bad rows to a
rejects file; 1 when strict validation failed (the error is printed). Bad arguments
(no such file, unreadable instruments JSON) raise, and the CLI exits with 2.
"""

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from liqrisk.features.calendar import find_gaps, gap_jumps
from liqrisk.features.errors import InputError
from liqrisk.pipelines.bars import (
    BadRowsError,
    BarsLoad,
    bar_lengths,
    problem_counts,
    read_bars,
    ts_as_us,
)

_TS = "%Y-%m-%dT%H:%M:%SZ"
_GAP_KINDS = ("weekend", "holiday", "session break")


@dataclass(frozen=True)
class SymbolSummary:
    """What the data check reports for one symbol (all times UTC)."""

    symbol: str
    rows: int
    first_ts: pd.Timestamp
    last_ts: pd.Timestamp
    bar_length: pd.Timedelta | None
    volume_share: float  # share of bars with volume > 0
    gaps: int
    gap_kinds: dict[str, int]  # weekend / holiday / session break / hole -> count
    largest_gap: pd.Series | None  # a row of find_gaps
    largest_jump: float | None  # open after the gap / close before - 1
    largest_jump_gap: pd.Series | None
    largest_jump_prices: tuple[float, float] | None  # (close before, open after)

    @property
    def unexpected(self) -> int:
        return self.gap_kinds.get("hole", 0)

    @property
    def expected(self) -> int:
        return self.gaps - self.unexpected


def data_check_command(
    path: Path, *, lenient: bool, rejects: Path | None, instruments: Path | None
) -> int:
    """Run the check and print the report; 0 valid (or lenient), 1 strict validation failed."""
    negative_ok = negative_price_symbols(instruments) if instruments is not None else ()
    try:
        load = read_bars(path, lenient=lenient, negative_ok=negative_ok, rejects_path=rejects)
    except InputError as exc:
        print(f"liqrisk: error: {exc}", file=sys.stderr)
        if isinstance(exc, BadRowsError):
            print(
                "liqrisk: run with --lenient to write the bad rows to a rejects file "
                "and check the rest",
                file=sys.stderr,
            )
        return 1
    print(format_report(path, load, lenient=lenient))
    return 0


def negative_price_symbols(instruments: Path) -> list[str]:
    """Symbols whose entry in the instruments JSON has ``"negative_prices": true``."""
    try:
        with open(instruments, encoding="utf-8") as handle:
            raw = json.load(handle)
    except json.JSONDecodeError as exc:
        raise InputError(f"{instruments}: not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise InputError(
            f"{instruments}: expected an object {{symbol: {{...}}}}, got {type(raw).__name__}"
        )
    out = []
    for symbol, entry in raw.items():
        if not isinstance(entry, dict):
            raise InputError(
                f"{instruments}: instrument {symbol}: expected an object, got {entry!r}"
            )
        flag = entry.get("negative_prices", False)
        if not isinstance(flag, bool):
            raise InputError(
                f"{instruments}: instrument {symbol}: negative_prices must be true or false, "
                f"got {flag!r}"
            )
        if flag:
            out.append(str(symbol))
    return out


def summarise(bars: pd.DataFrame) -> list[SymbolSummary]:
    """One summary per symbol of normalised bars sorted by (symbol, ts)."""
    lengths = bar_lengths(bars)
    out = []
    for symbol, one in bars.groupby("symbol", observed=True, sort=True):
        out.append(
            summarise_symbol(
                str(symbol),
                ts_us=ts_as_us(one["ts"]),
                open_=one["open"].to_numpy(),
                close=one["close"].to_numpy(),
                volume=one["volume"].to_numpy(),
                bar_length=lengths[str(symbol)],
            )
        )
    return out


def summarise_symbol(
    symbol: str,
    *,
    ts_us: np.ndarray,
    open_: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    bar_length: pd.Timedelta | None,
) -> SymbolSummary:
    """The figures of one symbol; ``ts_us`` sorted int64 microseconds (UTC)."""
    with np.errstate(invalid="ignore"):
        volume_share = float(np.mean(volume > 0)) if len(volume) else 0.0
    first, last = (pd.Timestamp(int(ts_us[i]), unit="us", tz="UTC") for i in (0, -1))
    gaps = find_gaps(ts_us, bar_length) if bar_length is not None else None
    if gaps is None or gaps.empty:
        return SymbolSummary(
            symbol, len(ts_us), first, last, bar_length, volume_share, 0, {}, None, None, None, None
        )
    largest_gap = gaps.iloc[int(np.argmax(gaps["closed"].to_numpy()))]
    jumps = gap_jumps(open_, close, gaps)
    jump, jump_gap, prices = None, None, None
    if np.isfinite(jumps).any():
        at = int(np.nanargmax(np.abs(jumps)))
        jump, jump_gap = float(jumps[at]), gaps.iloc[at]
        prices = (float(close[int(jump_gap["prev"])]), float(open_[int(jump_gap["next"])]))
    return SymbolSummary(
        symbol=symbol,
        rows=len(ts_us),
        first_ts=first,
        last_ts=last,
        bar_length=bar_length,
        volume_share=volume_share,
        gaps=len(gaps),
        gap_kinds={str(k): int(v) for k, v in gaps["kind"].value_counts().items()},
        largest_gap=largest_gap,
        largest_jump=jump,
        largest_jump_gap=jump_gap,
        largest_jump_prices=prices,
    )


def format_report(path: Path, load: BarsLoad, *, lenient: bool) -> str:
    """The printed report: file, rows, symbols, one block per symbol, rejects, notes."""
    summaries = summarise(load.bars)
    rejected = int(load.rejects["row"].nunique())
    lines = [
        f"file: {path}",
        f"rows: {len(load.bars) + rejected} ({len(load.bars)} valid, {rejected} rejected)",
        f"symbols: {len(summaries)}",
        f"mode: {'lenient' if lenient else 'strict'}",
    ]
    for s in summaries:
        lines += ["", *_symbol_lines(s)]
    lines += ["", *_rejects_lines(load), *_notes_lines(load)]
    return "\n".join(lines)


def _symbol_lines(s: SymbolSummary) -> list[str]:
    length = human_duration(s.bar_length) if s.bar_length is not None else "unknown (one bar)"
    lines = [
        f"{s.symbol}",
        f"  bars: {s.rows} from {s.first_ts:{_TS}} to {s.last_ts:{_TS}}, bar length {length}",
        f"  volume: {s.volume_share:.1%} of bars have volume > 0",
    ]
    if s.gaps == 0:
        return [*lines, "  gaps: none"]
    kinds = ", ".join(f"{s.gap_kinds.get(k, 0)} {k}" for k in _GAP_KINDS)
    lines.append(
        f"  gaps: {s.gaps} ({s.expected} expected: {kinds}; {s.unexpected} unexpected hole(s))"
    )
    g = s.largest_gap
    lines.append(
        f"  largest gap: {human_duration(g['closed'])} closed from {g['closed_from']:{_TS}} "
        f"to {g['closed_to']:{_TS}} ({g['kind']})"
    )
    if s.largest_jump is not None:
        j, (before, after) = s.largest_jump_gap, s.largest_jump_prices
        lines.append(
            f"  largest jump across a gap: {s.largest_jump:+.2%} at {j['closed_to']:{_TS}} "
            f"(close {before:.10g} -> open {after:.10g}, after {human_duration(j['closed'])} "
            f"closed, {j['kind']})"
        )
    return lines


def _rejects_lines(load: BarsLoad) -> list[str]:
    if load.rejects.empty:
        tail = f" (empty rejects file written to {load.rejects_path})" if load.rejects_path else ""
        return [f"rejects: none{tail}"]
    lines = [f"rejects: {load.rejects['row'].nunique()} row(s) written to {load.rejects_path}"]
    lines += [f"  {n} {problem}" for problem, n in problem_counts(load.rejects).items()]
    return lines


def _notes_lines(load: BarsLoad) -> list[str]:
    if not load.notes:
        return ["notes: none"]
    return ["notes:", *(f"  - {note}" for note in load.notes)]


def human_duration(duration: pd.Timedelta) -> str:
    """Compact ``2d1h``, ``90m`` -> ``1h30m``, ``5m``, ``0s`` (units of the contract)."""
    seconds = int(pd.Timedelta(duration) // pd.Timedelta(seconds=1))
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    parts = []
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return sign + ("".join(parts) or "0s")
