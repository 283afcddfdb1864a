"""The service's market state: every bar of every served symbol, as of the latest append.

- **Load.** :meth:`MarketState.load` reads the bundled Parquet bars files (every ``*.parquet``
  of the data folder with the bars columns, or the ``files`` given), checks them by the
  loader's rules (``liqrisk.features.bars``, strict) and keeps the symbols that have an
  instrument. A symbol found in several files (``BTCUSDT`` in ``crypto_1h`` and
  ``crypto_5m``) is taken from the file whose bars end latest (ties: the shorter bar, then
  the first file in name order, or in the order given), and its whole history is kept: the features of a snapshot (EWMA
  volatilities, one-year windows) depend on all bars before it, so trimming history would
  break the equality with the offline pipeline.
- **History.** Where another file holds a symbol's bars from earlier than the chosen one
  (``BTCUSDT``: ``crypto_5m`` from 2024-12-31, ``crypto_1h`` from 2020), the longest series
  of every symbol is also kept, as a second market (:attr:`MarketState.history`, never
  appended to): an account the chosen bars cannot score for want of history is scored on it
  (``liqrisk.serve.scoring``), so a 2022 snapshot of a BTC position is answered from the
  hourly bars instead of refused.
- **Append.** :meth:`MarketState.append` checks posted bars by the same rules and three more,
  then applies all of them or none:

  1. the symbol has an instrument (the service scores nothing else);
  2. history is append-only: a bar whose ``(symbol, ts)`` is already held is accepted only
     when every value is identical (an idempotent re-send; it adds nothing), a different one
     is refused, and so is a new bar opening before the symbol's last bar;
  3. bars never overlap: a new bar opens at least one bar length after the previous bar of
     its symbol (not on a fixed grid: daily sessions move with summer time).

  Post complete bars only: a bar is final once posted. The service logs the bars it accepts in
  its database before applying them (``record``), and every process applies that log
  (:meth:`MarketState.catch_up`), so replicas and restarts serve the same bars.
- **Readers** take an immutable :class:`MarketView` (:meth:`MarketState.view`): the engine's
  :class:`~liqrisk.features.market.Market`, built once per version before the view is
  published, and per-symbol market-feature caches. An append builds the next view aside and
  swaps it in one assignment, so a request scores against one consistent version while
  appends go on. Caches of symbols an append did not touch are carried over.
"""

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from liqrisk.features.bars import REQUIRED, check_bars
from liqrisk.features.durations import infer_bar_length
from liqrisk.features.errors import InputError
from liqrisk.features.instruments import Instrument, instruments_from_json
from liqrisk.features.market import Market, market_from_bars, to_us
from liqrisk.features.market_features import MARKET_FEATURES, bar_features, symbol_market_features
from liqrisk.features.schema import BARS_COLUMNS

VALUES: tuple[str, ...] = ("open", "high", "low", "close", "volume")
MAX_CACHED_AS_OF = 2048  # market-feature rows kept per symbol (LRU)
_MARKET_INDEX = pd.Index(list(MARKET_FEATURES))  # copied per frame: renaming one frame's columns changes no other
_NAT = np.datetime64("NaT").astype("datetime64[us]").view(np.int64)  # NaT, as int64 us
_TS = "%Y-%m-%dT%H:%M:%SZ"
Record = Callable[[pd.DataFrame, int], int]  # (new bars, log position) -> their log position


class _SymbolFeatures:
    """One symbol's bars and its market-feature caches: the bar-level table (computed once, on
    first use) and the rows at recent as_of values (LRU). Values are those of
    ``liqrisk.features.market_features.market_features`` on the same bars."""

    def __init__(self, bars: pd.DataFrame, bar_length: pd.Timedelta | None) -> None:
        self.bars = bars
        self.bar_length = bar_length
        self.ts_us = to_us(bars["ts"])
        step = 0 if bar_length is None else int(bar_length // pd.Timedelta(microseconds=1))
        self.done = self.ts_us + step
        self._lock = threading.Lock()
        self._table: np.ndarray | None = None
        self._rows: OrderedDict[int, np.ndarray] = OrderedDict()

    @property
    def warm(self) -> bool:
        return self._table is not None

    def table(self) -> np.ndarray:
        with self._lock:
            return self._table_locked()

    def _table_locked(self) -> np.ndarray:
        if self._table is None:
            frame = bar_features(self.bars, bar_length=self.bar_length)
            self._table = frame.to_numpy(dtype=np.float64)
        return self._table

    def at(self, as_of_us: np.ndarray) -> np.ndarray:
        """``MARKET_FEATURES`` rows at each as_of (int64 µs)."""
        out = np.full((len(as_of_us), len(MARKET_FEATURES)), np.nan)
        if self.bar_length is None or len(as_of_us) == 0:
            return out
        times, inverse = np.unique(as_of_us, return_inverse=True)
        found = np.full((len(times), len(MARKET_FEATURES)), np.nan)
        with self._lock:
            missing = []
            for i, t in enumerate(times.tolist()):
                row = self._rows.get(t)
                if row is None:
                    missing.append(i)
                else:
                    self._rows.move_to_end(t)
                    found[i] = row
            if missing:
                t = times[missing]
                last = np.searchsorted(self.done, t, side="right") - 1
                table = self._table_locked() if (last >= 0).any() else None
                as_of = pd.Series(t.astype("datetime64[us]")).dt.tz_localize("UTC")
                found[missing] = symbol_market_features(
                    self.bars, as_of, bar_length=self.bar_length, last=last, table=table
                )
                for i in missing:
                    self._rows[int(times[i])] = found[i]
                while len(self._rows) > MAX_CACHED_AS_OF:
                    self._rows.popitem(last=False)
        out[:] = found[inverse]
        return out


@dataclass(frozen=True)
class MarketView:
    """One version of the market, never changed once published.

    ``market`` lays out every symbol's bars for the engine; ``latest`` is the latest bar
    completion (``ts + bar_length``) over all symbols (None without bars); ``logged``: how far
    the service's bars log is applied (:meth:`MarketState.catch_up`).
    """

    version: int
    market: Market
    bar_lengths: Mapping[str, pd.Timedelta | None]
    latest: pd.Timestamp | None
    sources: Mapping[str, str]
    _symbols: Mapping[str, _SymbolFeatures] = field(repr=False)
    logged: int = 0  # the service's bars log is applied up to this position (0: nothing logged)

    def symbols(self) -> tuple[str, ...]:
        return self.market.symbols

    def bars_of(self, symbol: str) -> pd.DataFrame:
        """The bars held for ``symbol`` (``Bars`` columns, sorted by ``ts``); do not modify."""
        return self._symbols[symbol].bars

    def first_of(self, symbol: str) -> pd.Timestamp | None:
        """Open time of the symbol's first bar (None if unknown)."""
        held = self._symbols.get(symbol)
        return None if held is None or len(held.bars) == 0 else held.bars["ts"].iat[0]

    def latest_of(self, symbol: str) -> pd.Timestamp | None:
        """Completion time of the symbol's last bar (None if unknown or without a bar length)."""
        held = self._symbols.get(symbol)
        if held is None or held.bar_length is None or len(held.done) == 0:
            return None
        return _timestamp(int(held.done[-1]))

    @property
    def market_features(self) -> "MarketFeatureLookup":
        """``MARKET_FEATURES`` of ``(symbol, as_of)`` keys from the caches: call it with a keys frame
        (``view.market_features(keys)``, a ``market_part`` of ``snapshot_features``), or on arrays
        (``view.market_features.rows(symbol, as_of_us)``)."""
        return MarketFeatureLookup(self._symbols)


class MarketFeatureLookup:
    """``MARKET_FEATURES`` of ``(symbol, as_of)`` keys from one view's per-symbol caches: the values
    of ``liqrisk.features.market_features.market_features`` on the same bars."""

    def __init__(self, symbols: Mapping[str, _SymbolFeatures]) -> None:
        self._symbols = symbols

    def __call__(self, keys: pd.DataFrame) -> pd.DataFrame:
        """Aligned with ``keys`` (columns ``symbol``, ``as_of``; any index)."""
        symbol = keys["symbol"].array.astype(str).to_numpy(dtype=object)  # as Series.astype(str)
        as_of = keys["as_of"]
        if not isinstance(as_of.dtype, pd.DatetimeTZDtype):
            as_of = pd.to_datetime(as_of, utc=True)
        return pd.DataFrame(self.rows(symbol, to_us(as_of)), index=keys.index, columns=_MARKET_INDEX.copy())

    def rows(self, symbol: np.ndarray, as_of_us: np.ndarray) -> np.ndarray:
        """One row of ``MARKET_FEATURES`` (float64) per key: ``symbol`` as text (objects), ``as_of_us``
        int64 µs (NaT: a row of NaN, as for a symbol not held)."""
        values = np.full((len(symbol), len(MARKET_FEATURES)), np.nan)
        known = as_of_us != _NAT
        for name in dict.fromkeys(symbol[known].tolist()):
            held = self._symbols.get(name)
            if held is not None:
                rows = np.flatnonzero(known & (symbol == name))
                values[rows] = held.at(as_of_us[rows])
        return values


class MarketState:
    """The latest bars per symbol, thread-safe: one writer at a time, readers on views.

    Parameters
    ----------
    bars : DataFrame
        Checked bars (``liqrisk.features.bars.check_bars``) of any symbols; those without an
        instrument are left out.
    instruments : mapping of symbol to Instrument
    sources : mapping of symbol to str, optional
        Where each symbol's bars came from (a file name), for the record.
    history : MarketState, optional
        The longest series of every symbol, where a file holds one from earlier than these
        bars (:meth:`load`); never appended to.
    held : mapping of symbol to _SymbolFeatures, optional
        Symbols taken as another market holds them (shared with it, caches included; a
        history market shares every symbol whose longest series is the served one).
    """

    def __init__(
        self,
        bars: pd.DataFrame,
        instruments: Mapping[str, Instrument],
        *,
        sources: Mapping[str, str] | None = None,
        history: "MarketState | None" = None,
        held: Mapping[str, _SymbolFeatures] | None = None,
    ) -> None:
        self.history = history
        self._instruments = dict(instruments)
        self._given = {s: i.bar_length for s, i in self._instruments.items() if i.bar_length is not None}
        self._negative_ok = [s for s, i in self._instruments.items() if i.negative_prices]
        self._write = threading.Lock()
        served = bars[bars["symbol"].astype(str).isin(list(self._instruments))]
        blocks = {str(s): _own(g) for s, g in served.groupby("symbol", observed=True, sort=True)}
        symbols = {s: self._symbol(b) for s, b in blocks.items()} | dict(held or {})
        self._view = self._make_view(0, symbols, dict(sources or {}))

    @classmethod
    def load(
        cls, data_dir: Path, *, instruments_path: Path | None = None, files: Sequence[str] = ()
    ) -> "MarketState":
        """The bundled bars of ``data_dir`` (see the module docstring) and its instruments file
        (``instruments_path``, default ``data_dir/instruments.json``).

        Raises ``InputError`` for a bad instruments file or bars file (naming the file, row,
        symbol and field) and ``FileNotFoundError`` for a missing one.
        """
        data_dir = Path(data_dir)
        path = Path(instruments_path) if instruments_path is not None else data_dir / "instruments.json"
        catalog = instruments_from_json(path.read_text(), source=str(path), name=path.name)
        if catalog.errors:
            raise InputError("; ".join(catalog.errors.values()))
        negative_ok = [s for s, i in catalog.instruments.items() if i.negative_prices]
        paths = [data_dir / f for f in files] if files else _bars_files(data_dir)
        chosen: dict[str, tuple[tuple, pd.DataFrame, str]] = {}
        longest: dict[str, tuple[int, pd.DataFrame, str]] = {}  # the earliest first bar
        for p in paths:
            if not p.exists():
                raise FileNotFoundError(f"{p}: no such file")
            if p.suffix.lower() not in (".parquet", ".pq"):
                raise InputError(f"{p}: the service reads Parquet bars files (.parquet or .pq)")
            raw = pd.read_parquet(p, columns=[c for c in BARS_COLUMNS if c in pq.read_schema(p).names])
            bars = check_bars(raw, source=str(p), negative_ok=negative_ok).bars
            for symbol, block in bars.groupby("symbol", observed=True, sort=True):
                symbol = str(symbol)
                if symbol not in catalog.instruments:
                    continue
                rank = _rank(block, catalog.instruments[symbol].bar_length)
                if symbol not in chosen or rank > chosen[symbol][0]:  # a tie keeps the first file
                    chosen[symbol] = (rank, block, p.name)
                first = int(to_us(block["ts"])[0])
                if symbol not in longest or first < longest[symbol][0]:
                    longest[symbol] = (first, block, p.name)
        frames = [block for _, block, _ in chosen.values()]
        bars = pd.concat(frames, ignore_index=True) if frames else _empty_bars()
        sources = {s: name for s, (_, _, name) in chosen.items()}
        state = cls(bars, catalog.instruments, sources=sources)
        served_from = {s: int(to_us(block["ts"])[0]) for s, (_, block, _) in chosen.items()}
        earlier = [s for s, (first, _, _) in longest.items() if first < served_from[s]]
        if earlier:  # every symbol, so that an account's other positions are priced there too
            shared = {s: f for s, f in state.view()._symbols.items() if s not in earlier}
            state.history = cls(
                pd.concat([longest[s][1] for s in earlier], ignore_index=True),
                catalog.instruments,
                sources=sources | {s: longest[s][2] for s in earlier},
                held=shared,
            )
        return state

    # --- readers ------------------------------------------------------------------------

    @property
    def instruments(self) -> Mapping[str, Instrument]:
        return self._instruments

    def view(self) -> MarketView:
        """The current version: score a whole request against one view."""
        return self._view

    @property
    def version(self) -> int:
        return self._view.version

    @property
    def latest(self) -> pd.Timestamp | None:
        """The latest bar completion time over all symbols (None without bars)."""
        return self._view.latest

    def latest_of(self, symbol: str) -> pd.Timestamp | None:
        return self._view.latest_of(symbol)

    def symbols(self) -> tuple[str, ...]:
        return self._view.symbols()

    def warm(self, symbols: Sequence[str] | None = None) -> None:
        """Compute the bar-level feature tables now, and the features at the latest bar (else on
        first use: 0.05-0.5 s per symbol); warming every symbol warms the history market's own
        series too. Appends keep warm symbols warm."""
        view = self._view
        for symbol in symbols if symbols is not None else view.symbols():
            view._symbols[symbol].table()
        _warm_latest(view)
        if self.history is not None and symbols is None:  # its own series; it shares the rest
            for held in self.history.view()._symbols.values():
                held.table()

    # --- the writer -----------------------------------------------------------------------

    def append(self, bars: pd.DataFrame, *, record: Record | None = None) -> int:
        """Append bars (``symbol, ts, open, high, low, close`` and optional ``volume``): all of
        them or none. Returns how many were added (identical re-sends add nothing).

        ``record``, if given, is called with the bars that are new and the view's log position
        (:attr:`MarketView.logged`) before they are applied, and returns the position it logged
        them at (the service's bars log: ``liqrisk.serve.store.BarsWriter.record``); whatever
        it raises leaves the market as it was.

        Raises ``InputError`` naming the row (0-based, in ``bars``' order), symbol, ts and field
        of the first bad bar, how many share its problem, and that nothing was appended.
        """
        with self._write:
            view = self._view
            checked = check_bars(bars, source="bars", negative_ok=self._negative_ok)
            fresh = self._screen(view, checked.bars, checked.rows)
            if not fresh.any():
                return 0
            added = checked.bars.loc[fresh]
            # recorded before the next view is built (the slow part), so a recorder holding the
            # log for other processes releases it sooner; should building fail after the commit,
            # the next catch_up applies the bars from the log
            logged = view.logged if record is None else record(added, view.logged)
            self._view = dataclasses.replace(self._following(view, added), logged=logged)
            return int(fresh.sum())

    def catch_up(self, bars: pd.DataFrame, through: int) -> int:
        """Apply the service's bars log up to position ``through``: ``bars`` are the bars logged
        after :attr:`MarketView.logged`, in log order. A bar opening at or before its symbol's
        last bar held is skipped (held already, or superseded by the data files a restarted
        service loaded); the rest are checked as :meth:`append` checks them, all or none.
        Returns how many were applied. The position moves to ``through`` even when the bars are
        refused (``InputError``, e.g. a symbol this process has no instrument for), so each
        refusal is raised once, not on every call.
        """
        with self._write:
            view = self._view
            if through <= view.logged:
                return 0
            later = bars[_after_last_held(view, bars)]
            following, applied = view, 0
            try:
                if len(later):
                    checked = check_bars(later, source="logged bars", negative_ok=self._negative_ok)
                    fresh = self._screen(view, checked.bars, checked.rows)
                    if fresh.any():
                        following = self._following(view, checked.bars.loc[fresh])
                        applied = int(fresh.sum())
            finally:
                self._view = dataclasses.replace(following, logged=through)
            return applied

    def _following(self, view: MarketView, added: pd.DataFrame) -> MarketView:
        """The next version: ``view`` with ``added`` (checked, screened) appended, warm where
        ``view`` was (the writer pays, not the next request)."""
        symbols = dict(view._symbols)
        for symbol, rows in added.groupby("symbol", observed=True, sort=False):
            symbol = str(symbol)
            held = symbols.get(symbol)
            block = rows if held is None else pd.concat([held.bars, rows], ignore_index=True)
            symbols[symbol] = self._symbol(_own(block))
            if held is not None and held.warm:
                symbols[symbol].table()
        sources = dict(view.sources)
        for symbol in added["symbol"].astype(str).unique():
            sources.setdefault(symbol, "appended")
        following = self._make_view(view.version + 1, symbols, sources, logged=view.logged)
        if following.latest != view.latest:
            _warm_latest(following)  # the default as_of moved
        return following

    def _screen(self, view: MarketView, new: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
        """Raise for the service's own rules (module docstring); else which bars are new."""
        problems: list[_Problem] = []
        fresh = np.ones(len(new), dtype=bool)
        symbol = new["symbol"].astype(str).to_numpy()
        ts = to_us(new["ts"])
        for name in pd.unique(symbol):
            mine = np.flatnonzero(symbol == name)  # sorted by ts, no duplicates (checked)
            if name not in self._instruments:
                detail = f"symbol={name!r} is not in the service's instruments; its bars are not kept"
                problems += [_Problem(rows[i], name, ts[i], "symbol", "symbol without an instrument", detail) for i in mine]
                continue
            held = view._symbols.get(name)
            resent = _resent(held, new, mine)
            fresh[mine[resent >= 0]] = False
            problems += _rewrites(held, new, mine, resent, rows)
            problems += self._ordering(name, held, ts, mine[resent < 0], rows)
        if problems:
            raise InputError(_rejection(problems))
        return fresh

    def _ordering(
        self, name: str, held: "_SymbolFeatures | None", ts: np.ndarray, mine: np.ndarray, rows: np.ndarray
    ) -> list["_Problem"]:
        """New bars (not held) must open after the last bar held and not overlap the previous one."""
        out = []
        last = int(held.ts_us[-1]) if held is not None and len(held.ts_us) else None
        length = self._bar_us(name, held, ts[mine])
        previous = last
        for i in mine:
            if last is not None and ts[i] < last:
                detail = f"the last bar held opens at {_us_text(last)} (history is append-only)"
                out.append(_Problem(rows[i], name, ts[i], "ts", "bar before the symbol's last bar", detail))
            elif previous is not None and length and ts[i] - previous < length:
                detail = (
                    f"opens {(ts[i] - previous) / 60e6:g} min after the previous bar "
                    f"({_us_text(previous)}); the bar length is {length / 60e6:g} min"
                )
                out.append(_Problem(rows[i], name, ts[i], "ts", "bar overlaps the previous bar", detail))
            previous = int(ts[i])
        return out

    def _bar_us(self, symbol: str, held: _SymbolFeatures | None, new_ts: np.ndarray) -> int:
        length = self._given.get(symbol) or (held.bar_length if held is not None else None)
        if length is None:
            length = infer_bar_length(new_ts)
        return 0 if length is None else int(length // pd.Timedelta(microseconds=1))

    def _symbol(self, bars: pd.DataFrame) -> _SymbolFeatures:
        symbol = str(bars["symbol"].iat[0])
        length = self._given.get(symbol)
        if length is None:
            length = infer_bar_length(to_us(bars["ts"]))
        return _SymbolFeatures(bars, None if length is None else pd.Timedelta(length).as_unit("us"))

    def _make_view(
        self, version: int, symbols: dict[str, _SymbolFeatures], sources: dict[str, str], *, logged: int = 0
    ) -> MarketView:
        order = sorted(symbols)
        frames = [symbols[s].bars for s in order]
        bars = pd.concat(frames, ignore_index=True) if frames else _empty_bars()
        bars["symbol"] = pd.Categorical.from_codes(
            np.repeat(np.arange(len(order)), [len(f) for f in frames]),
            categories=pd.Index(order, dtype="str"),
        )
        market = market_from_bars(bars, self._given)
        done = [int(symbols[s].done[-1]) for s in order if symbols[s].bar_length is not None and len(symbols[s].done)]
        return MarketView(
            version=version,
            market=market,
            bar_lengths={s: symbols[s].bar_length for s in order},
            latest=_timestamp(max(done)) if done else None,
            sources=sources,
            _symbols=symbols,
            logged=logged,
        )


def _warm_latest(view: MarketView) -> None:
    """The market features at the view's latest bar of every symbol whose bar table is computed."""
    if view.latest is None:
        return
    t = np.array([view.latest.value // 1000], dtype=np.int64)
    for held in view._symbols.values():
        if held.warm:
            held.at(t)


class _Problem(NamedTuple):
    row: int
    symbol: str
    ts: int
    field: str
    problem: str
    detail: str


def _after_last_held(view: MarketView, bars: pd.DataFrame) -> np.ndarray:
    """Which of ``bars`` open after the last bar ``view`` holds of their symbol."""
    symbol = bars["symbol"].astype(str).to_numpy(dtype=object)
    ts = to_us(bars["ts"])
    keep = np.ones(len(bars), dtype=bool)
    for name in pd.unique(symbol):
        held = view._symbols.get(name)
        if held is not None and len(held.ts_us):
            mine = symbol == name
            keep[mine] = ts[mine] > held.ts_us[-1]
    return keep


def _resent(held: _SymbolFeatures | None, new: pd.DataFrame, mine: np.ndarray) -> np.ndarray:
    """For each of ``new``'s rows ``mine``, the position of the held bar with the same ``ts``
    (-1 where none)."""
    out = np.full(len(mine), -1, dtype=np.int64)
    if held is None or not len(held.ts_us):
        return out
    t = to_us(new["ts"].iloc[mine])
    at = np.searchsorted(held.ts_us, t)
    inside = at < len(held.ts_us)
    match = np.zeros(len(mine), dtype=bool)
    match[inside] = held.ts_us[at[inside]] == t[inside]
    out[match] = at[match]
    return out


def _rewrites(
    held: _SymbolFeatures | None, new: pd.DataFrame, mine: np.ndarray, resent: np.ndarray, rows: np.ndarray
) -> list[_Problem]:
    """Re-sent bars whose values differ from the bar held (the first differing field)."""
    out = []
    for i, j in zip(mine[resent >= 0], resent[resent >= 0]):
        for c in VALUES:
            sent, kept = float(new[c].iat[i]), float(held.bars[c].iat[j])
            if not (sent == kept or (np.isnan(sent) and np.isnan(kept))):
                detail = f"{c}={sent!r}, the bar held has {kept!r} (history is append-only)"
                ts = int(held.ts_us[j])
                out.append(_Problem(rows[i], str(new["symbol"].iat[i]), ts, c, "rewrites a bar already held", detail))
                break
    return out


def _bars_files(data_dir: Path) -> list[Path]:
    """The Parquet files of ``data_dir`` with the bars columns (not e.g. funding rates)."""
    return sorted(p for p in data_dir.glob("*.parquet") if set(REQUIRED) <= set(pq.read_schema(p).names))


def _rank(block: pd.DataFrame, given: pd.Timedelta | None) -> tuple[int, int]:
    """Higher is preferred: the later last bar completion, then the shorter bar."""
    ts = to_us(block["ts"])
    length = given if given is not None else infer_bar_length(ts)
    step = int(length // pd.Timedelta(microseconds=1)) if length is not None else 0
    return (int(ts[-1]) + step, -step)


def _own(block: pd.DataFrame) -> pd.DataFrame:
    """A symbol's bars as a frame of its own (no reference to a larger frame), index reset."""
    out = block.reset_index(drop=True).copy()
    out["symbol"] = out["symbol"].astype(str)
    return out


def _empty_bars() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in BARS_COLUMNS})
    frame["symbol"] = pd.Series(dtype="str")
    frame["ts"] = pd.Series(dtype="datetime64[us, UTC]")
    return frame


def _timestamp(us: int) -> pd.Timestamp:
    return pd.Timestamp(us, unit="us", tz="UTC")


def _us_text(us: int) -> str:
    return _timestamp(int(us)).strftime(_TS)


def _rejection(problems: list[_Problem]) -> str:
    """The first bad bar by row, worded as the loader words it, with the counts."""
    problems.sort(key=lambda p: p.row)
    first = problems[0]
    counts: dict[str, int] = {}
    for p in problems:
        counts[p.problem] = counts.get(p.problem, 0) + 1
    breakdown = ", ".join(f"{n} {name}" for name, n in counts.items())
    return (
        f"bars: {first.problem} at row {first.row}, symbol={first.symbol}, ts={_us_text(first.ts)}, "
        f"field {first.field}: {first.detail}; {counts[first.problem]} row(s) with this problem; "
        f"in all {len({p.row for p in problems})} bad row(s): {breakdown}; nothing was appended"
    )
