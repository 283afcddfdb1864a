"""Bars laid out for the engine: one flat numpy array per column, a block per symbol.

Times are int64 microseconds since the epoch (UTC), the project's one unit. The
layout lets the engine find a symbol's bars with ``searchsorted`` on its block and
gather prices for a million positions at once.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from liqrisk.features.durations import infer_bar_length

US_PER_DAY = 86_400_000_000


@dataclass(frozen=True)
class Market:
    """Bars of many symbols, each symbol a contiguous block sorted by open time.

    ``done`` is each bar's completion time (``ts + bar_length``); ``bar_us`` is 0
    for a symbol whose bar length is unknown (a single bar and none given).
    ``day`` numbers each (symbol, UTC date) present, in bar order, so that
    ``day_close[day[i]]`` is the close of the last bar of bar ``i``'s date.
    ``notional_cum[i]`` is the sum of ``close·volume`` over the bars with volume > 0
    from the first bar of bar ``i``'s symbol to bar ``i`` inclusive: restarted per
    symbol, so that a window's sum depends on that symbol's bars alone (not, through
    rounding, on the symbols laid out before it). ``volume_bars_cum[i]`` counts the
    bars with volume > 0 before bar ``i`` over the whole layout.

    A market is never changed once laid out, so what is derived from it alone can be kept
    with it: ``code`` (computed once), and ``derived``, where the engine keeps its per-symbol
    tables (``liqrisk.features.replay``). Appending bars lays out a new market, and a new
    market (``dataclasses.replace`` too) starts with nothing derived.
    """

    symbols: tuple[str, ...]
    start: np.ndarray
    stop: np.ndarray
    bar_us: np.ndarray
    ts: np.ndarray
    done: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    day: np.ndarray
    day_close: np.ndarray
    notional_cum: np.ndarray
    volume_bars_cum: np.ndarray
    derived: dict[str, Any] = field(default_factory=dict, init=False, compare=False, repr=False)

    @cached_property
    def code(self) -> dict[str, int]:
        """Each symbol's code (its block's number); do not modify."""
        return {symbol: i for i, symbol in enumerate(self.symbols)}


def symbol_codes(market: Market, symbol: pd.Series) -> np.ndarray:
    """Each row's symbol code in ``market`` (int64, -1 where the market has no such symbol).

    Values are compared as text (``astype(str)``: a missing symbol is ``"nan"``); a category's
    own categories are looked up once, whatever the number of rows.
    """
    code = market.code
    if isinstance(symbol.dtype, pd.CategoricalDtype):
        names = [str(s) for s in symbol.cat.categories] + ["nan"]  # code -1: a missing value
        lookup = np.array([code.get(s, -1) for s in names], dtype=np.int64)
        return lookup[symbol.cat.codes.to_numpy(dtype=np.int64)]
    return np.array([code.get(str(s), -1) for s in symbol.tolist()], dtype=np.int64)


def market_from_bars(
    bars: pd.DataFrame, bar_lengths: Mapping[str, pd.Timedelta | None] | None = None
) -> Market:
    """Lay out validated bars (sorted by ``symbol, ts``; ``ts`` datetime64 UTC).

    ``bar_lengths`` overrides the inferred bar length per symbol (the instrument's
    ``bar_length``); the others are inferred from the data.
    """
    bar_lengths = bar_lengths or {}
    symbol, names = _symbol_codes(bars["symbol"])
    ts = to_us(bars["ts"])
    boundaries = np.flatnonzero(symbol[1:] != symbol[:-1]) + 1
    start = np.concatenate([[0], boundaries]).astype(np.int64) if len(symbol) else np.zeros(0, np.int64)
    stop = np.concatenate([boundaries, [len(symbol)]]).astype(np.int64) if len(symbol) else start
    symbols = tuple(str(names[c]) for c in symbol[start])
    bar_us = np.array(
        [_bar_us(bar_lengths.get(s), ts[a:b]) for s, a, b in zip(symbols, start, stop)], dtype=np.int64
    )
    done = ts + np.repeat(bar_us, stop - start)

    close = bars["close"].to_numpy(dtype=np.float64)
    volume = bars["volume"].to_numpy(dtype=np.float64) if "volume" in bars else np.full(len(ts), np.nan)
    date = ts // US_PER_DAY
    new_day = np.ones(len(ts), dtype=bool)
    new_day[1:] = (date[1:] != date[:-1]) | (symbol[1:] != symbol[:-1])
    day = np.cumsum(new_day) - 1
    last_of_day = np.append(new_day[1:], True)
    has_volume = volume > 0  # NaN compares False: missing volume adds nothing
    return Market(
        symbols=symbols,
        start=start,
        stop=stop,
        bar_us=bar_us,
        ts=ts,
        done=done,
        open=bars["open"].to_numpy(dtype=np.float64),
        high=bars["high"].to_numpy(dtype=np.float64),
        low=bars["low"].to_numpy(dtype=np.float64),
        close=close,
        day=day,
        day_close=close[last_of_day],
        notional_cum=_block_cumsum(np.where(has_volume, close * volume, 0.0), start, stop),
        volume_bars_cum=np.concatenate([[0], np.cumsum(has_volume)]),
    )


def _block_cumsum(values: np.ndarray, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """Running sums restarted at every block (inclusive)."""
    out = np.empty_like(values)
    for a, b in zip(start.tolist(), stop.tolist(), strict=True):
        out[a:b] = np.cumsum(values[a:b])
    return out


def _symbol_codes(symbol: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Each row's symbol as a code, and the names of the codes (a category's own codes: no
    string per row is made)."""
    if isinstance(symbol.dtype, pd.CategoricalDtype):
        return symbol.cat.codes.to_numpy(dtype=np.int64), symbol.cat.categories.to_numpy(dtype=object)
    codes, names = pd.factorize(symbol.astype(str), sort=False)
    return codes.astype(np.int64), names.to_numpy(dtype=object)


def search_blocks(
    market: Market, values: np.ndarray, sym: np.ndarray, times: np.ndarray, side: str = "left"
) -> np.ndarray:
    """``searchsorted`` of each time in its own symbol's block of ``values`` (a flat index).

    ``values`` is ``market.ts`` or ``market.done``; ``sym`` holds symbol codes.
    One vectorised search per symbol, never one per position.
    """
    if len(sym) and (sym == sym[0]).all():  # one symbol (one position): no grouping needed
        a, b = market.start[sym[0]], market.stop[sym[0]]
        return (a + np.searchsorted(values[a:b], times, side=side)).astype(np.int64)
    out = np.empty(len(times), dtype=np.int64)
    order = np.argsort(sym, kind="stable")
    present, first = np.unique(sym[order], return_index=True)
    bounds = np.append(first, len(sym)).tolist()
    for code, lo, hi in zip(present.tolist(), bounds[:-1], bounds[1:]):  # the symbols present
        rows = order[lo:hi]
        a, b = market.start[code], market.stop[code]
        out[rows] = a + np.searchsorted(values[a:b], times[rows], side=side)
    return out


def to_us(times: pd.Series) -> np.ndarray:
    """UTC timestamps as int64 microseconds since the epoch."""
    if isinstance(times.dtype, pd.DatetimeTZDtype):  # held as UTC whatever the zone shown
        return times.to_numpy(dtype="datetime64[us]").view(np.int64)
    return times.dt.tz_convert("UTC").to_numpy(dtype="datetime64[us]").view(np.int64)


def _bar_us(given: pd.Timedelta | None, ts: np.ndarray) -> int:
    length = given if given is not None else infer_bar_length(ts)
    return 0 if length is None else int(pd.Timedelta(length) // pd.Timedelta(microseconds=1))
