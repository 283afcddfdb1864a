"""The liquidation engine: replays account snapshots over the bars that follow them.

Implements ``docs/liquidation-contract.md`` exactly, vectorised: every step works
on numpy arrays over all accounts at once. The only Python loops run over time
steps of the walk (24 for a day of hourly bars, whatever the number of
accounts) and over symbols (for block searches), never per account per bar.

A *unit* is what the contract replays as one account: a cross account, or one
position of an isolated account. Units are walked together; isolated accounts
are aggregated from their units at the end.
"""

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from liqrisk.features._frames import Columns, frame_from_arrays
from liqrisk.features.instruments import Instrument
from liqrisk.features.liquidity import impact_inputs
from liqrisk.features.margin import replay_units
from liqrisk.features.market import Market, search_blocks, symbol_codes, to_us
from liqrisk.features.position import group_starts, is_isolated

OUTCOME_COLUMNS = (
    "status",
    "liquidated",
    "negative",
    "shortfall",
    "time_to_liquidation_s",
    "trigger_ts",
    "e_close",
    "e_final",
    "error",
)
POSITION_COLUMNS = (
    "account",
    "as_of",
    "margin_mode",
    "collateral",
    "symbol",
    "side",
    "qty",
    "entry_price",
)
_STATE_COLUMNS = Columns.of(("price", "tier", "mmr", "amount", "sigma_d", "liquidity", "error"))
_DECISION_COLUMNS = Columns.of(("status", "error"))
_NEVER = np.iinfo(np.int64).max
# the scalar instrument parameters the engine reads: per-position name -> (value, default)
_SCALARS: dict[str, tuple[Callable[[Instrument], float], float]] = {
    "taker_fee": (lambda i: i.taker_fee, 0.0),
    "liquidation_fee": (lambda i: i.liquidation_fee, 0.0),
    "latency": (lambda i: i.latency_bars, 0.0),
    "slippage": (lambda i: i.slippage_to_extreme, 0.0),
    "impact_coef": (lambda i: i.impact_coef, 0.0),
    "depth": (lambda i: np.nan if i.depth_notional is None else i.depth_notional, np.nan),
    "multiplier": (lambda i: i.contract_multiplier, 1.0),
}


@dataclass(frozen=True)
class PositionArrays:
    """Positions as the arrays the engine and the snapshot features read: ``POSITION_COLUMNS``
    (``as_of`` also as int64 µs), ``account_id`` where known, and the index of the positions.

    :meth:`of` reads a positions frame once; the service builds these straight from parsed
    requests (``SnapshotsBuilder.position_arrays``), since for one account the frame would cost
    more to build and to read back than the features. Do not modify the arrays.
    """

    account: np.ndarray  # any key, the rows of an account together
    as_of: pd.api.extensions.ExtensionArray  # datetime64 UTC
    as_of_us: np.ndarray  # int64
    margin_mode: np.ndarray  # object
    collateral: np.ndarray  # float64, as are side, qty and entry_price
    symbol: pd.Series | np.ndarray  # as given (a frame's column: a category stays one)
    side: np.ndarray
    qty: np.ndarray
    entry_price: np.ndarray
    account_id: pd.Series | np.ndarray | None = None  # text; None: the account key, as text
    index: pd.Index | None = None  # of the positions; None: 0..n-1

    @classmethod
    def of(cls, positions: "pd.DataFrame | PositionArrays") -> "PositionArrays":
        """The arrays of a positions frame (``POSITION_COLUMNS``, optionally ``account_id``)."""
        if isinstance(positions, PositionArrays):
            return positions
        return cls(
            account=positions["account"].to_numpy(),
            as_of=positions["as_of"].array,
            as_of_us=to_us(positions["as_of"]),
            margin_mode=positions["margin_mode"].to_numpy(dtype=object),
            symbol=positions["symbol"],
            account_id=positions.get("account_id"),
            index=positions.index,
            **{c: positions[c].to_numpy(dtype=np.float64) for c in ("collateral", "side", "qty", "entry_price")},
        )

    def __len__(self) -> int:
        return len(self.account)

    @property
    def positions_index(self) -> pd.Index:
        """The index of the per-position state: the frame's, else 0..n-1."""
        return self.index if self.index is not None else pd.RangeIndex(len(self))

    def take(self, keep: np.ndarray) -> "PositionArrays":
        """The positions where the mask ``keep`` is true."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return PositionArrays(**{k: v if v is None else v[keep] for k, v in values.items()})

    def account_ids(self, rows: np.ndarray) -> np.ndarray:
        """The ``account_id`` of ``rows`` (positions), else their account key as text; objects."""
        return account_ids(self.account, self.account_id, rows)

    def symbol_text(self, rows: np.ndarray) -> np.ndarray:
        """The symbols of ``rows`` (positions) as text, an object array."""
        if isinstance(self.symbol, np.ndarray):
            return self.symbol[rows].astype(object)
        return self.symbol.array[rows].astype(str).to_numpy(dtype=object)

    def inputs(self) -> dict[str, np.ndarray]:
        """The columns the engine reads (but ``symbol``), by name (``as_of`` as ``as_of_us``)."""
        return {
            "account": self.account,
            "as_of_us": self.as_of_us,
            "margin_mode": self.margin_mode,
            "collateral": self.collateral,
            "side": self.side,
            "qty": self.qty,
            "entry_price": self.entry_price,
        }


def account_ids(account: np.ndarray, account_id: pd.Series | np.ndarray | None, rows: np.ndarray) -> np.ndarray:
    """The ``account_id`` of ``rows`` (positions), else their ``account`` key as text; objects."""
    if account_id is None:
        return account[rows].astype(str).astype(object)
    return (account_id if isinstance(account_id, np.ndarray) else account_id.to_numpy())[rows]


def replay(
    market: Market,
    instruments: Mapping[str, Instrument],
    positions: pd.DataFrame,
    *,
    horizon: pd.Timedelta,
) -> pd.DataFrame:
    """Outcome of every account over ``horizon``, one row per account code.

    Parameters
    ----------
    market : Market
        The bars (``market_from_bars``), bar lengths resolved.
    instruments : mapping of symbol to Instrument
        Symbols missing here or in ``market`` are unknown: an error for their accounts.
    positions : DataFrame
        One row per position, the rows of an account together (``account``: any key):
        ``account, as_of`` (datetime64 UTC), ``margin_mode`` (``cross``/``isolated``),
        ``collateral`` (the account's for cross, the position's own for isolated),
        ``symbol, side`` (+1/-1), ``qty, entry_price``.
    horizon : Timedelta

    Returns
    -------
    DataFrame indexed by the accounts of ``positions`` (in order) with ``OUTCOME_COLUMNS``: ``status`` is ``ok``,
    ``in_liquidation`` or ``error``; outcome fields are NA where they don't apply.
    """
    return replay_horizons(market, instruments, positions, horizons=[horizon])[0]


def replay_horizons(
    market: Market,
    instruments: Mapping[str, Instrument],
    positions: pd.DataFrame,
    *,
    horizons: Sequence[pd.Timedelta],
) -> list[pd.DataFrame]:
    """``replay`` for several horizons: the pre-walk work (tiers, impact inputs) is done once."""
    columns = PositionArrays.of(positions)
    inputs = columns.inputs()
    codes, accounts = _account_codes(inputs["account"])
    book = _book(market, instruments, columns.symbol, codes, inputs)
    units = _units(book)
    index = pd.Index(accounts, name="account")
    return [
        _outcomes(market, book, units, _walk(market, book, units, int(h // pd.Timedelta(microseconds=1))), len(accounts))
        .set_index(index)
        for h in horizons
    ]


def position_state(market: Market, instruments: Mapping[str, Instrument], positions: pd.DataFrame) -> pd.DataFrame:
    """What the engine knows of each position at as_of, aligned with ``positions``.

    ``price`` (last close complete at or before as_of), the tier (``tier``, ``mmr``,
    ``amount``), ``sigma_d`` and ``liquidity`` (V_d, or depth_notional) of the
    contract's impact window, and ``error`` (``""`` where the position is replayable).
    Features use these so that they see exactly what the engine sees.
    """
    return state_at_as_of(market, instruments, positions)[0]


def state_at_as_of(
    market: Market, instruments: Mapping[str, Instrument], positions: "pd.DataFrame | PositionArrays"
) -> "EngineState":
    """:func:`position_state`, and per account (index ``account``, in order) what the engine
    decides before it walks: ``status`` (``ok``, ``in_liquidation`` or ``error``, errors first)
    and ``error`` (the first position's message, ``""`` where none).

    ``in_liquidation`` is the walk's own test: ``E <= MM`` at the last close complete at or
    before as_of, per replay unit (any unit of an isolated account).

    The pair is an :class:`EngineState`: it also holds the arrays behind the two frames.
    """
    columns = PositionArrays.of(positions)
    inputs = columns.inputs()
    codes, accounts = _account_codes(inputs["account"])
    book = _book(market, instruments, columns.symbol, codes, inputs)
    per_position = {  # the columns of the per-position frame
        "price": book.last_close,
        "tier": book.tier,
        "mmr": book.mmr,
        "amount": book.amount,
        "sigma_d": book.sigma_d,
        "liquidity": book.notional_d,
        "error": book.error,
    }
    units = _units(book)
    has_error, in_liquidation = _before_walk(book, units)
    n = len(accounts)
    error = np.bincount(units.account, weights=has_error.astype(np.float64), minlength=n) > 0
    in_liq = np.bincount(units.account, weights=in_liquidation.astype(np.float64), minlength=n) > 0
    per_account = {
        "status": np.where(error, "error", np.where(in_liq, "in_liquidation", "ok")).astype(object),
        "error": _first_errors(book, n),
    }
    return EngineState(
        positions=positions,
        columns=columns,
        arrays={**inputs, **per_position, "status": per_account["status"], "account_error": per_account["error"]},
        accounts=accounts,
    )


class EngineState(Sequence[pd.DataFrame]):
    """:func:`state_at_as_of`'s pair ``(per position, per account)``: two frames, each built on first use.

    ``arrays`` holds the frames' columns (the per-account ``error`` as ``account_error``) and
    the columns of ``positions`` the engine read (:meth:`PositionArrays.inputs`), so that the snapshot
    features of the same ``positions`` read them without going through pandas: a frame costs
    ~50 µs to build and a column ~10 µs to read back, and one account's features read some
    twenty. Do not modify them.
    """

    def __init__(
        self,
        *,
        positions: "pd.DataFrame | PositionArrays",
        columns: PositionArrays,
        arrays: dict[str, np.ndarray],
        accounts: np.ndarray,
    ) -> None:
        self.positions = positions  # as given
        self.columns = columns  # the same, as arrays
        self.arrays = arrays
        self.accounts = accounts  # the account of each per-account row, in order
        self._frames: list[pd.DataFrame | None] = [None, None]

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> pd.DataFrame:  # type: ignore[override]
        if not -2 <= i < 2:
            raise IndexError(i)
        frame = self._frames[i]
        if frame is None:
            frame = self._per_position() if i % 2 == 0 else self._per_account()
            self._frames[i] = frame
        return frame

    @property
    def account_index(self) -> pd.Index:
        """The per-account frame's index (``account``), without building that frame."""
        return self[1].index if self._frames[1] is not None else pd.Index(self.accounts, name="account")

    def arrays_of(self, positions: "pd.DataFrame | PositionArrays") -> dict[str, np.ndarray] | None:
        """``arrays`` if this is the state of ``positions`` (the same object), else None."""
        return self.arrays if self.positions is positions else None

    def _per_position(self) -> pd.DataFrame:
        columns = {c: self.arrays[c] for c in _STATE_COLUMNS.names}
        return frame_from_arrays(columns, index=self.columns.positions_index, names=_STATE_COLUMNS)

    def _per_account(self) -> pd.DataFrame:
        columns = {"status": self.arrays["status"], "error": self.arrays["account_error"]}
        return frame_from_arrays(columns, index=pd.Index(self.accounts, name="account"), names=_DECISION_COLUMNS)


def _account_codes(account: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each position's account code (0, 1, ... in order of appearance) and the accounts."""
    return pd.factorize(account, sort=False)


@dataclass
class _Book:
    """Per-position arrays, instrument parameters resolved and pre-walk checks done."""

    account: np.ndarray
    as_of: np.ndarray
    isolated: np.ndarray
    collateral: np.ndarray
    sym: np.ndarray
    side: np.ndarray
    qty: np.ndarray
    entry: np.ndarray
    tier: np.ndarray
    mmr: np.ndarray
    amount: np.ndarray
    taker_fee: np.ndarray
    liquidation_fee: np.ndarray
    latency: np.ndarray
    slippage: np.ndarray
    impact_coef: np.ndarray
    sigma_d: np.ndarray
    notional_d: np.ndarray
    last_close: np.ndarray
    error: np.ndarray


def _book(
    market: Market,
    instruments: Mapping[str, Instrument],
    symbol: pd.Series | np.ndarray,
    account: np.ndarray,
    inputs: dict[str, np.ndarray],
) -> _Book:
    """``symbol``, ``account`` (the account codes) and ``inputs`` (:meth:`PositionArrays.inputs`) of the positions."""
    n = len(account)
    table = _parameters(market, instruments)
    sym = symbol_codes(market, symbol)
    known = sym >= 0
    known[known] = table.known[sym[known]]  # in the market and with an instrument
    first_row = group_starts(account)
    index_in_account = np.arange(n) - np.repeat(first_row, np.diff(np.r_[first_row, n]))
    error = np.full(n, "", dtype=object)
    if not known.all():
        error[~known] = [
            f"positions[{i}].symbol: unknown symbol {str(s)!r}"
            for i, s in zip(index_in_account[~known], np.asarray(symbol, dtype=object)[~known])
        ]
    sym = np.where(known, sym, 0)

    params = _instrument_arrays(table, sym, known)
    qty = inputs["qty"]
    as_of = inputs["as_of_us"]
    impact = impact_inputs(market, sym, as_of)
    last_close = np.where(impact.last >= 0, market.close[np.maximum(impact.last, 0)], np.nan)

    use_depth = ~impact.has_volume
    notional_d = np.where(use_depth, params.pop("depth"), impact.notional_d * params.pop("multiplier"))
    problem = impact.problem.copy()
    problem[(problem == "") & ~np.isfinite(notional_d)] = (
        "no liquidity: no bar in the 30 days before as_of has volume > 0 and the instrument has no depth_notional"
    )
    tier, mmr, amount, over_cap = _tiers(table, sym, known, qty * last_close)
    problem[(problem == "") & over_cap] = "notional at as_of is above the last tier's notional_cap"
    bad = known & (problem != "")
    error[bad] = [
        f"positions[{i}] ({market.symbols[s]}): {p}"
        for i, s, p in zip(index_in_account[bad], sym[bad], problem[bad])
    ]
    return _Book(
        account=account.astype(np.int64),
        as_of=as_of,
        isolated=is_isolated(inputs["margin_mode"]),
        collateral=inputs["collateral"],
        sym=sym,
        side=inputs["side"],
        qty=qty,
        entry=inputs["entry_price"],
        tier=tier,
        mmr=mmr,
        amount=amount,
        sigma_d=impact.sigma_d,
        notional_d=notional_d,
        last_close=last_close,
        error=error,
        **params,
    )


@dataclass(frozen=True)
class _Parameters:
    """The instruments' parameters per symbol code of a market, as arrays (:func:`_parameters`)."""

    instruments: tuple[Instrument | None, ...]  # per code; None where the symbol has none
    known: np.ndarray  # per code: the symbol has an instrument
    scalars: dict[str, np.ndarray]  # ``_SCALARS`` per code, float64 (the default where none)
    tiers: tuple[tuple[np.ndarray, np.ndarray, np.ndarray] | None, ...]  # caps, mmr, amount

    @classmethod
    def of(cls, instruments: tuple[Instrument | None, ...]) -> "_Parameters":
        def per_code(get: Callable[[Instrument], float], default: float) -> np.ndarray:
            return np.array([default if i is None else get(i) for i in instruments], dtype=np.float64)

        return cls(
            instruments=instruments,
            known=np.array([i is not None for i in instruments], dtype=bool),
            scalars={name: per_code(*how) for name, how in _SCALARS.items()},
            tiers=tuple(
                None if i is None else (np.asarray(i.tier_caps), np.asarray(i.tier_mmr), np.asarray(i.tier_amount))
                for i in instruments
            ),
        )


def _parameters(market: Market, instruments: Mapping[str, Instrument]) -> _Parameters:
    """:class:`_Parameters` of ``instruments`` on ``market``'s symbols, kept with the market.

    A market is replayed against one set of instruments (the build's, the service's), so one
    is kept; it is used only while every symbol's instrument is the same (equal) one, and a
    different set replaces it. Building it loops over every symbol: once, not per call.
    """
    per_symbol = tuple(instruments.get(s) for s in market.symbols)
    kept = market.derived.get("parameters")
    if kept is None or kept.instruments != per_symbol:
        kept = _Parameters.of(per_symbol)
        market.derived["parameters"] = kept
    return kept


def _instrument_arrays(table: _Parameters, sym: np.ndarray, known: np.ndarray) -> dict[str, np.ndarray]:
    """Per-position copies of the scalar instrument parameters (by symbol code)."""

    def column(name: str, per_symbol: np.ndarray) -> np.ndarray:
        default = _SCALARS[name][1]
        return np.where(known, per_symbol[sym], default) if len(per_symbol) else np.zeros(len(sym))

    out = {name: column(name, per_symbol) for name, per_symbol in table.scalars.items()}
    out["latency"] = out["latency"].astype(np.int64)
    return out


def _tiers(
    table: _Parameters, sym: np.ndarray, known: np.ndarray, notional: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Tier by notional at as_of (first cap at or above it), kept for the whole horizon."""
    tier = np.zeros(len(sym), dtype=np.int64)
    mmr = np.zeros(len(sym))
    amount = np.zeros(len(sym))
    over = np.zeros(len(sym), dtype=bool)
    for code in np.unique(sym[known]).tolist():
        caps, rates, amounts = table.tiers[code]
        rows = np.flatnonzero(known & (sym == code))
        t = np.searchsorted(caps, notional[rows], side="left")
        over[rows] = t >= len(caps)
        t = np.minimum(t, len(caps) - 1)
        tier[rows] = t
        mmr[rows] = rates[t]
        amount[rows] = amounts[t]
    return tier, mmr, amount, over


@dataclass
class _Units:
    """Positions grouped into replay units (a cross account, or one isolated position)."""

    of_position: np.ndarray
    start: np.ndarray
    count: np.ndarray
    account: np.ndarray
    collateral: np.ndarray
    as_of: np.ndarray


def _units(book: _Book) -> _Units:
    of_position = replay_units(book.account, book.isolated)
    start = np.flatnonzero(np.diff(of_position, prepend=-1))
    count = np.diff(np.append(start, len(of_position)))
    return _Units(
        of_position=of_position,
        start=start,
        count=count,
        account=book.account[start],
        collateral=book.collateral[start],
        as_of=book.as_of[start],
    )


@dataclass
class _Walk:
    """What the walk found per unit, and per position the execution price."""

    status: np.ndarray  # per unit: "error", "in_liquidation", "censored", "liquidated", "survived"
    trigger_ts: np.ndarray  # per unit, int64 us (or _NEVER)
    e_close: np.ndarray
    e_final: np.ndarray
    censored_position: np.ndarray  # per position: its symbol has no bar opening at or after as_of + H


def _unit_sum(values: np.ndarray, units: _Units, rows: np.ndarray | None = None) -> np.ndarray:
    """Sum per unit of per-position ``values`` (positions of the given unit rows, in order)."""
    starts = units.start if rows is None else None
    if rows is None:
        return np.add.reduceat(values, starts) if len(values) else values
    counts = units.count[rows]
    if np.all(counts == 1):
        return values
    seg = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return np.add.reduceat(values, seg)


def _positions_of(units: _Units, rows: np.ndarray) -> np.ndarray:
    """Flat position indices of the given units, unit by unit."""
    counts = units.count[rows]
    if np.all(counts == 1):
        return units.start[rows]
    offsets = np.repeat(units.start[rows] - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    return offsets + np.arange(counts.sum())


def _walk(market: Market, book: _Book, units: _Units, horizon_us: int) -> _Walk:
    n_units = len(units.start)
    status = np.full(n_units, "survived", dtype=object)
    trigger_ts = np.full(n_units, _NEVER, dtype=np.int64)
    e_close = np.full(n_units, np.nan)
    e_final = np.full(n_units, np.nan)

    has_error, in_liquidation = _before_walk(book, units)
    status[has_error] = "error"
    status[in_liquidation] = "in_liquidation"

    start_us = book.as_of
    end_us = book.as_of + horizon_us
    block_stop = market.stop[book.sym]
    first = search_blocks(market, market.ts, book.sym, start_us, side="left")
    horizon_end = search_blocks(market, market.ts, book.sym, end_us, side="left")
    censored_position = horizon_end >= block_stop  # no bar opening at or after as_of + H

    walking = np.flatnonzero(status == "survived")
    state = _Cursor(ptr=first.copy(), end=horizon_end)
    execution = np.full(len(book.account), np.nan)
    while walking.size:
        pos = _positions_of(units, walking)
        t_unit, at_bar = _step(market, book, units, state, walking, pos)
        alive = t_unit < _NEVER
        walking, pos, t_unit, at_bar = _keep_units(units, walking, pos, t_unit, at_bar, alive)
        if not walking.size:
            break
        t_pos = np.repeat(t_unit, units.count[walking])
        open_, extreme = _prices(market, book, state, pos, t_pos, at_bar)
        g1 = _unit_sum(_excess(book, extreme, pos), units, walking) + units.collateral[walking]
        hit = g1 <= 0
        if hit.any():
            hit_pos = np.repeat(hit, units.count[walking])
            rows, p = walking[hit], pos[hit_pos]
            g0 = _unit_sum(_excess(book, open_[hit_pos], p), units, rows) + units.collateral[rows]
            g1h = g1[hit]
            theta = np.where(g0 <= 0, 0.0, g0 / np.where(g0 <= 0, 1.0, g0 - g1h))
            theta_p = np.repeat(theta, units.count[rows])
            o, x = open_[hit_pos], extreme[hit_pos]
            reference = o + theta_p * (x - o)
            execution[p] = reference + book.slippage[p] * (x - reference)
            trigger_ts[rows] = t_unit[hit]
            status[rows] = "liquidated"
        state.ptr[pos] += at_bar
        walking = walking[~hit]

    status[(status == "survived") & (_unit_sum(censored_position.astype(np.int64), units) > 0)] = "censored"
    liquidated = np.flatnonzero(status == "liquidated")
    late = liquidated[_unit_sum(book.latency.astype(np.float64), units)[liquidated] > 0]
    if late.size:
        _execute_late(market, book, units, state, late, execution)
    if liquidated.size:
        e_close[liquidated], e_final[liquidated] = _close(book, units, liquidated, execution)
    return _Walk(
        status=status,
        trigger_ts=trigger_ts,
        e_close=e_close,
        e_final=e_final,
        censored_position=censored_position,
    )


def _before_walk(book: _Book, units: _Units) -> tuple[np.ndarray, np.ndarray]:
    """Per unit: has an error; else already meets ``E <= MM`` at the last close (in liquidation)."""
    has_error = _unit_sum((book.error != "").astype(np.int64), units) > 0
    last_close = np.where(np.isfinite(book.last_close), book.last_close, 0.0)
    now = _unit_sum(_excess(book, last_close), units) + units.collateral
    return has_error, ~has_error & (now <= 0)


@dataclass
class _Cursor:
    """Per position: the next bar to walk (``ptr``) and the first bar not to walk (``end``)."""

    ptr: np.ndarray
    end: np.ndarray


def _step(
    market: Market, book: _Book, units: _Units, state: _Cursor, rows: np.ndarray, pos: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The next time on each unit's walk timeline and which positions have a bar opening then.

    The timeline is the union of the open times of the unit's symbols' bars.
    ``_NEVER`` where the unit has no bar left to walk.
    """
    has_next = state.ptr[pos] < state.end[pos]
    next_ts = np.where(has_next, market.ts[np.where(has_next, state.ptr[pos], 0)], _NEVER)
    counts = units.count[rows]
    if np.all(counts == 1):
        t_unit = next_ts
    else:
        t_unit = np.minimum.reduceat(next_ts, np.concatenate([[0], np.cumsum(counts)[:-1]]))
    at_bar = has_next & (next_ts == np.repeat(t_unit, counts))
    return t_unit, at_bar


def _keep_units(
    units: _Units, rows: np.ndarray, pos: np.ndarray, t_unit: np.ndarray, at_bar: np.ndarray, keep: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The units in ``keep`` (per unit) with their positions' entries."""
    if keep.all():
        return rows, pos, t_unit, at_bar
    keep_pos = np.repeat(keep, units.count[rows])
    return rows[keep], pos[keep_pos], t_unit[keep], at_bar[keep_pos]


def _prices(
    market: Market, book: _Book, state: _Cursor, pos: np.ndarray, t_pos: np.ndarray, at_bar: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Open and adverse extreme of each position at time ``t_pos``.

    A symbol with no bar opening then is held at the close of its last bar
    complete at or before that time: open and extreme alike.
    """
    bar = np.where(at_bar, state.ptr[pos], 0)
    adverse = np.where(book.side[pos] > 0, market.low[bar], market.high[bar])
    held = np.flatnonzero(~at_bar)
    open_ = market.open[bar].copy()
    extreme = adverse.copy()
    if held.size:
        price = market.close[_last_complete(market, state.ptr[pos[held]] - 1, book.sym[pos[held]], t_pos[held])]
        open_[held] = price
        extreme[held] = price
    return open_, extreme


def _last_complete(market: Market, candidate: np.ndarray, sym: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Step back from ``candidate`` (a bar opened before ``t``) to the last bar complete at ``t``."""
    j = candidate.copy()
    floor = market.start[sym]
    while True:
        back = (j >= floor) & (market.done[np.maximum(j, 0)] > t)
        if not back.any():
            return j
        j[back] -= 1


def _excess(book: _Book, price: np.ndarray, pos: np.ndarray | None = None) -> np.ndarray:
    """Per position ``s·q·(P − e) − (m·q·P − a)``: its part of ``E − MM`` beyond collateral."""
    p = slice(None) if pos is None else pos
    s, q = book.side[p], book.qty[p]
    return s * q * (price - book.entry[p]) - (book.mmr[p] * q * price - book.amount[p])


def _execute_late(
    market: Market, book: _Book, units: _Units, state: _Cursor, rows: np.ndarray, execution: np.ndarray
) -> None:
    """Positions with ``latency_bars = n > 0`` execute at the open of the n-th time after the trigger.

    The walk goes on past the horizon; if the data ends first, the last close available.
    """
    pos_all = _positions_of(units, rows)
    late = book.latency[pos_all] > 0
    execution[pos_all[late]] = market.close[market.stop[book.sym[pos_all[late]]] - 1]
    state.end[pos_all] = market.stop[book.sym[pos_all]]
    for n in range(1, int(book.latency[pos_all].max()) + 1):
        pos = _positions_of(units, rows)
        t_unit, at_bar = _step(market, book, units, state, rows, pos)
        rows, pos, t_unit, at_bar = _keep_units(units, rows, pos, t_unit, at_bar, t_unit < _NEVER)
        if not rows.size:
            return
        t_pos = np.repeat(t_unit, units.count[rows])
        due = book.latency[pos] == n
        if due.any():
            open_, _ = _prices(market, book, state, pos[due], t_pos[due], at_bar[due])
            execution[pos[due]] = open_
        state.ptr[pos] += at_bar


def _close(book: _Book, units: _Units, rows: np.ndarray, execution: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Impact, fees and the closing equity of liquidated units."""
    p = _positions_of(units, rows)
    x, s, q = execution[p], book.side[p], book.qty[p]
    impact = np.minimum(1.0, book.impact_coef[p] * book.sigma_d[p] * np.sqrt(q * np.abs(x) / book.notional_d[p]))
    fill = x - s * np.abs(x) * impact
    e_close = (
        units.collateral[rows]
        + _unit_sum(s * q * (fill - book.entry[p]), units, rows)
        - _unit_sum(book.taker_fee[p] * q * fill, units, rows)
    )
    fee = _unit_sum(book.liquidation_fee[p] * q * fill, units, rows)
    return e_close, e_close - np.minimum(fee, np.maximum(e_close, 0.0))


def _outcomes(market: Market, book: _Book, units: _Units, walk: _Walk, n_accounts: int) -> pd.DataFrame:
    """Aggregate units to accounts (isolated: any/sum/earliest) in the contract's order of precedence."""
    acct = units.account

    def any_(mask: np.ndarray) -> np.ndarray:
        return np.bincount(acct, weights=mask.astype(np.float64), minlength=n_accounts) > 0

    error = any_(walk.status == "error")
    in_liq = any_(walk.status == "in_liquidation")
    censored = any_(walk.status == "censored")
    liq_units = walk.status == "liquidated"
    liquidated = any_(liq_units)
    e_close = np.bincount(acct, weights=np.where(liq_units, walk.e_close, 0.0), minlength=n_accounts)
    e_final = np.bincount(acct, weights=np.where(liq_units, walk.e_final, 0.0), minlength=n_accounts)
    shortfall = np.bincount(
        acct, weights=np.where(liq_units, np.maximum(0.0, -np.nan_to_num(walk.e_close)), 0.0), minlength=n_accounts
    )
    trigger = np.full(n_accounts, _NEVER, dtype=np.int64)
    np.minimum.at(trigger, acct, walk.trigger_ts)
    as_of = np.zeros(n_accounts, dtype=np.int64)
    as_of[acct] = units.as_of

    messages = _first_errors(book, n_accounts)
    status = np.where(error, "error", np.where(in_liq, "in_liquidation", np.where(censored, "error", "ok")))
    cens_rows = censored & ~error & ~in_liq
    messages[cens_rows] = _censoring_messages(market, book, units, walk, cens_rows)

    ok = status == "ok"
    hit = ok & liquidated
    out = pd.DataFrame(
        {
            "status": status,
            "liquidated": pd.array(np.where(ok, liquidated, False), dtype="boolean"),
            "negative": pd.array(hit & (shortfall > 0), dtype="boolean"),
            "shortfall": np.where(ok, np.where(hit, shortfall, 0.0), np.nan),
            "time_to_liquidation_s": np.where(hit, (trigger - as_of) / 1e6, np.nan),
            "trigger_ts": pd.Series(np.where(hit, trigger, 0).astype("datetime64[us]"))
            .dt.tz_localize("UTC")
            .where(hit),
            "e_close": np.where(hit, e_close, np.nan),
            "e_final": np.where(hit, e_final, np.nan),
            "error": messages,
        }
    )
    out.loc[~ok, ["liquidated", "negative"]] = pd.NA
    return out


def _first_errors(book: _Book, n_accounts: int) -> np.ndarray:
    """Per account code, the message of its first position with an error (``""`` if none)."""
    messages = np.full(n_accounts, "", dtype=object)
    for a, message in zip(book.account[book.error != ""], book.error[book.error != ""]):
        if not messages[a]:
            messages[a] = message
    return messages


def _censoring_messages(
    market: Market, book: _Book, units: _Units, walk: _Walk, accounts: np.ndarray
) -> list[str]:
    """"bars of SYMBOL end before the horizon", naming the first such symbol of each account."""
    censored_unit = np.repeat(walk.status == "censored", units.count)
    flagged = np.flatnonzero(censored_unit & walk.censored_position)
    first = {}
    for p in flagged:
        first.setdefault(book.account[p], market.symbols[book.sym[p]])
    return [
        f"bars of {first[a]} end before the horizon: outcome unknown" for a in np.flatnonzero(accounts)
    ]
