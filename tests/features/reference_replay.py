"""The liquidation contract as a plain loop: the readable specification of ``liqrisk replay``.

Written from ``docs/liquidation-contract.md`` alone, without looking at the engine, so
that the two can be compared (``test_replay_vs_reference.py``). One account at a time,
one bar at a time, nothing vectorised and nothing clever: every step below names the
contract sentence it implements, and where the contract leaves room for two readings
the comment says which one this file takes ("Reading: ...").

Entry point: :func:`reference_replay`. It returns one dict per account with the
OUTCOMES.csv columns as Python values (``None`` where the CSV field is empty,
``bool`` for booleans, ``pd.Timestamp`` for timestamps, ``float`` for money and seconds)
plus one private key, ``_near_tie``: ``True`` when a decision ``E ≤ MM`` or a tier
boundary was within the contract's 1e-9 rounding band, where "either answer is
accepted" and a comparison must not insist on this file's answer.

Readings taken where the contract leaves room (each is also at its place below):

- latency: when the account's timeline has fewer than n times after the trigger,
  "the last close available" is the close of the symbol's last bar in the data;
- isolated: one censored position makes the account an error even when another
  position was liquidated; ``trigger_ts`` is the earliest trigger, like
  ``time_to_liquidation``;
- fees: ``q·fill`` as written, so a negative fill (WTI) gives a negative fee;
- instruments: keys left out take the asset class defaults of
  ``liqrisk.features.instrument_defaults`` (data, documented in docs/instruments.md);
- accounts: a time without offset is UTC; ``side`` 1.0 is the integer 1; an integer
  ``account_id`` is accepted; a position's collateral in a cross account is ignored;
  an isolated account's unused account-level collateral must still not be negative
  (the last three as docs/engine.md decides them).
"""

from __future__ import annotations

import bisect
import json
import math
import re
import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pandas as pd

from liqrisk.features.instrument_defaults import ASSET_CLASS_DEFAULTS

COLUMNS = (
    "account_id",
    "as_of",
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

# "Where the decision E ≤ MM or a tier boundary is within 1e-9 of the notional,
# either answer is accepted."
ROUNDING = 1e-9

IMPACT_WINDOW = pd.Timedelta(days=30)


class AccountError(Exception):
    """This account (or this position of an isolated account) gets status ``error``."""


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Bar:
    ts: pd.Timestamp  # the bar's OPEN time, UTC
    open: float
    high: float
    low: float
    close: float
    volume: float  # NaN where missing


@dataclass
class Symbol:
    """One symbol: its instrument parameters and its bars, sorted by open time."""

    name: str
    params: dict[str, Any]
    bars: list[Bar]
    bar_length: pd.Timedelta | None  # None: could not be inferred (fewer than two bars)

    def __post_init__(self) -> None:
        # Two lookup helpers, only so that 200-account cases run in seconds: the bar
        # opening at a time, and the sorted completion times ``ts + bar_length``.
        self._by_open = {bar.ts: bar for bar in self.bars}
        self._opens = [bar.ts for bar in self.bars]
        length = self.bar_length
        self._completions = [bar.ts + length for bar in self.bars] if length is not None else []

    def bars_within(self, *, opening_from: pd.Timestamp, complete_by: pd.Timestamp) -> list[Bar]:
        """The bars with ``ts ≥ opening_from`` and ``ts + bar_length ≤ complete_by``."""
        # Both lists are sorted, so the bars meeting each condition form one run:
        # bisect finds where it starts and where it stops.
        first = bisect.bisect_left(self._opens, opening_from)
        stop = bisect.bisect_right(self._completions, complete_by)
        return self.bars[first:stop]

    def open_times_between(self, start: pd.Timestamp, stop: pd.Timestamp) -> list[pd.Timestamp]:
        """The open times of the bars with ``start ≤ ts < stop``."""
        first = bisect.bisect_left(self._opens, start)
        return self._opens[first : bisect.bisect_left(self._opens, stop)]

    def open_times_after(self, t: pd.Timestamp, n: int) -> list[pd.Timestamp]:
        """The open times of the first ``n`` bars with ``ts > t``."""
        first = bisect.bisect_right(self._opens, t)
        return self._opens[first : first + n]

    def has_bar_opening_from(self, t: pd.Timestamp) -> bool:
        return bisect.bisect_left(self._opens, t) < len(self._opens)

    def bar_opening_at(self, t: pd.Timestamp) -> Bar | None:
        return self._by_open.get(t)

    def held_close(self, t: pd.Timestamp) -> float | None:
        """"The close of its last bar complete at or before that time (a bar still in
        progress is not seen)": complete means ``ts + bar_length ≤ t``."""
        # completions are sorted like the bars; bisect_right counts those ≤ t
        n_complete = bisect.bisect_right(self._completions, t)
        return self.bars[n_complete - 1].close if n_complete else None

    def open_and_extreme(self, t: pd.Timestamp, side: int) -> tuple[float, float]:
        """The position's price path inside the walk step at ``t``: (open, adverse extreme).

        "A symbol with no bar at a time (its market is closed) is held at its last
        close, which is then its open and its extreme alike."
        """
        bar = self.bar_opening_at(t)
        if bar is None:
            held = self.held_close(t)
            return held, held
        return bar.open, (bar.low if side == 1 else bar.high)


@dataclass(frozen=True)
class Position:
    symbol: str
    side: int
    qty: float
    entry: float
    collateral: float | None  # isolated margin only


@dataclass(frozen=True)
class Account:
    account_id: str
    as_of: pd.Timestamp
    margin_mode: str
    collateral: float | None  # cross margin only
    positions: tuple[Position, ...]


def parse_duration(text: str) -> pd.Timedelta:
    """"Durations (--horizon, bar_length) are an integer and a unit: s, m (minutes), h, d or w"."""
    match = re.fullmatch(r"(\d+)([smhdw])", str(text).strip())
    if match is None or int(match.group(1)) <= 0:
        raise ValueError(f"not a duration: {text!r}")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[match.group(2)]
    return pd.Timedelta(**{unit: int(match.group(1))})


def infer_bar_length(bars: list[Bar]) -> pd.Timedelta | None:
    """"The most common step between consecutive bars of the symbol; a tie goes to the
    smaller step." ``None`` when there is no step at all (fewer than two bars)."""
    steps = [b.ts - a.ts for a, b in zip(bars, bars[1:])]
    if not steps:
        return None
    counts = Counter(steps)
    most = max(counts.values())
    return min(step for step, n in counts.items() if n == most)


def build_symbols(bars: pd.DataFrame, instruments: dict[str, dict[str, Any]]) -> dict[str, Symbol]:
    """Every instrument, with its bars (possibly none) and its bar length."""
    frame = bars.copy()
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    symbols = {}
    for name, given_params in instruments.items():
        # "keys left out take the asset class's documented defaults": the defaults are
        # data (docs/instruments.md), not a rule of the contract, so they come from the
        # package's table.
        params = {**ASSET_CLASS_DEFAULTS[given_params["asset_class"]], **given_params}
        rows = frame[frame["symbol"] == name].sort_values("ts")
        symbol_bars = [
            Bar(
                ts=pd.Timestamp(r.ts),
                open=float(r.open),
                high=float(r.high),
                low=float(r.low),
                close=float(r.close),
                volume=float(r.volume) if pd.notna(r.volume) else math.nan,
            )
            for r in rows.itertuples(index=False)
        ]
        # "bar_length: the bars' length; inferred from the data (the most common step
        # between consecutive bars) when not given."
        given = params.get("bar_length")
        bar_length = parse_duration(given) if given is not None else infer_bar_length(symbol_bars)
        symbols[name] = Symbol(name=name, params=params, bars=symbol_bars, bar_length=bar_length)
    return symbols


def _is_number(value: Any) -> bool:
    # "numbers are JSON numbers, not strings" (and JSON true/false are not numbers)
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def parse_account(raw: dict[str, Any], symbols: dict[str, Symbol]) -> Account:
    """The "Malformed input" list of the contract, one check at a time."""
    if not isinstance(raw, dict):
        raise AccountError("account: expected a JSON object")
    account_id = raw.get("account_id")
    # Reading (docs/engine.md, "Readings of the contract"): a string or an integer.
    if isinstance(account_id, bool) or not isinstance(account_id, str | int) or account_id == "":
        raise AccountError("account_id: missing, or not a string or an integer")
    as_of_text = raw.get("as_of")
    if not isinstance(as_of_text, str):
        raise AccountError("as_of: missing or not a string")
    try:
        as_of = pd.Timestamp(as_of_text)
    except ValueError as exc:
        raise AccountError(f"as_of: not an ISO 8601 time: {as_of_text!r}") from exc
    # Reading: "as_of (ISO 8601 UTC)". A time without an offset is taken as UTC; the
    # tests only write times with "Z".
    as_of = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of.tz_convert("UTC")

    margin_mode = raw.get("margin_mode")
    if margin_mode not in ("cross", "isolated"):
        raise AccountError(f"margin_mode: unknown margin mode {margin_mode!r}")

    collateral = None
    if margin_mode == "cross":
        collateral = raw.get("collateral")
        if not _is_number(collateral) or collateral < 0:
            raise AccountError("collateral: missing, not a number or negative")
    else:
        # "Isolated accounts. The account-level collateral is not used (it may be left
        # out)". Reading (docs/engine.md): when present it is still input, and "negative
        # collateral" is malformed input.
        unused = raw.get("collateral")
        if unused is not None and (not _is_number(unused) or unused < 0):
            raise AccountError("collateral: not a number or negative")

    positions_raw = raw.get("positions")
    if not isinstance(positions_raw, list) or not positions_raw:
        raise AccountError("positions: missing or empty")
    positions = []
    for i, p in enumerate(positions_raw):
        where = f"positions[{i}]"
        if not isinstance(p, dict):
            raise AccountError(f"{where}: expected an object")
        symbol = p.get("symbol")
        if not isinstance(symbol, str):
            raise AccountError(f"{where}.symbol: missing or not a string")
        if symbol not in symbols:
            raise AccountError(f"{where}.symbol: unknown symbol {symbol}")
        side = p.get("side")
        # "side other than the integers 1 or -1". Reading (docs/engine.md): JSON has one
        # number type, so 1.0 is the integer 1; true, "1", 2, 0 and 1.5 are not.
        if not _is_number(side) or side not in (1, -1):
            raise AccountError(f"{where}.side: must be 1 or -1")
        qty, entry = p.get("qty"), p.get("entry_price")
        if not _is_number(qty) or qty <= 0:
            raise AccountError(f"{where}.qty: must be a number above zero")
        if not _is_number(entry) or entry <= 0:
            raise AccountError(f"{where}.entry_price: must be a number above zero")
        own = None
        if margin_mode == "isolated":
            # "For isolated margin each position carries its own collateral"
            own = p.get("collateral")
            if not _is_number(own) or own < 0:
                raise AccountError(f"{where}.collateral: missing, not a number or negative")
        # Reading: a position's own collateral in a cross account is ignored (cross
        # margin uses the account's collateral only).
        positions.append(Position(symbol, int(side), float(qty), float(entry), own))
    cross_collateral = None if collateral is None else float(collateral)
    return Account(account_id, as_of, margin_mode, cross_collateral, tuple(positions))


# --------------------------------------------------------------------------- impact window


def impact_parameters(symbol: Symbol, as_of: pd.Timestamp) -> tuple[float, float]:
    """(σ_d, V_d) of one symbol as known at ``as_of``, exactly as step 3 says.

    "Exactly: the window holds the bars with ts ≥ as_of − 30 days and
    ts + bar_length ≤ as_of; they are grouped by the UTC date of ts; a day's close is
    the close of its last bar in the window; σ_d is the sample standard deviation
    (ddof = 1) of log(close_d / close_prev) over consecutive days present (a day with
    no bars is skipped, not filled); V_d is the mean over the days present of
    Σ close·volume. Fewer than two such returns is an error for that account."
    """
    window = symbol.bars_within(opening_from=as_of - IMPACT_WINDOW, complete_by=as_of)
    days: dict[Any, list[Bar]] = {}
    for bar in window:  # bars are sorted, so each day's list is sorted too
        days.setdefault(bar.ts.date(), []).append(bar)
    day_keys = sorted(days)
    day_close = [days[d][-1].close for d in day_keys]

    if len(day_close) - 1 < 2:
        raise AccountError(f"insufficient history for {symbol.name}: fewer than two daily returns")
    # "A daily close ≤ 0 in the impact window makes σ_d undefined: an error for the account."
    if any(c <= 0 for c in day_close):
        raise AccountError(f"daily close <= 0 in the impact window of {symbol.name}")
    returns = [math.log(b / a) for a, b in zip(day_close, day_close[1:])]
    sigma = statistics.stdev(returns)  # sample standard deviation, ddof = 1

    # "A bar whose volume is missing or zero adds nothing to its day's sum, and the day
    # still counts in the mean. When no bar of the window has a volume above zero, V_d
    # is depth_notional; with neither, the account is an error (no liquidity)."
    if any(bar.volume > 0 for bar in window):  # NaN > 0 is False
        day_sums = []
        for d in day_keys:
            total = 0.0
            for bar in days[d]:
                if bar.volume > 0:
                    total += bar.close * bar.volume
            day_sums.append(total)
        volume_notional = sum(day_sums) / len(day_sums)
    else:
        depth = symbol.params.get("depth_notional")
        if depth is None:
            raise AccountError(f"no liquidity for {symbol.name}: no volume and no depth_notional")
        volume_notional = float(depth)
    return sigma, volume_notional


def impact_fill(x: float, side: int, qty: float, coef: float, sigma: float, depth: float) -> float:
    """"fill = x − s · |x| · min(1, Y · σ_d · sqrt(q·|x| / V_d))"; the min(1, ...) is the
    cap, "The impact is capped at 100% of the price"."""
    return x - side * abs(x) * min(1.0, coef * sigma * math.sqrt(qty * abs(x) / depth))


# --------------------------------------------------------------------------- one book


@dataclass
class Leg:
    """A position with everything fixed at as_of: its tier and its impact parameters."""

    position: Position
    symbol: Symbol
    mmr: float
    amount: float
    sigma: float
    depth: float


@dataclass
class BookResult:
    """Outcome of one book: a cross account, or one position of an isolated account."""

    kind: str  # "error", "in_liquidation", "censored", "ok"
    error: str | None = None
    liquidated: bool = False
    trigger_ts: pd.Timestamp | None = None
    e_close: float | None = None
    e_final: float | None = None
    near_tie: bool = False


def equity(collateral: float, legs: list[Leg], prices: list[float]) -> float:
    """E = C + Σ s_i·q_i·(P_i − e_i)."""
    return collateral + sum(pnl(leg, p) for leg, p in zip(legs, prices))


def pnl(leg: Leg, price: float) -> float:
    """s·q·(P − e)"""
    return leg.position.side * leg.position.qty * (price - leg.position.entry)


def maintenance(legs: list[Leg], prices: list[float]) -> float:
    """MM = Σ (m_i·q_i·P_i − a_i)."""
    return sum(leg.mmr * leg.position.qty * p - leg.amount for leg, p in zip(legs, prices))


def meets_liquidation(collateral: float, legs: list[Leg], prices: list[float]) -> tuple[bool, bool]:
    """(E ≤ MM, whether that decision is within the contract's 1e-9 rounding band)."""
    e, mm = equity(collateral, legs, prices), maintenance(legs, prices)
    # The band is "1e-9 of the notional"; the largest of the amounts that enter E - MM
    # is used as the scale, so floating-point noise of either side is inside it.
    scale = max(
        sum(leg.position.qty * abs(p) for leg, p in zip(legs, prices)),
        sum(leg.position.qty * leg.position.entry for leg in legs),
        abs(collateral),
        1.0,
    )
    return e <= mm, abs(e - mm) <= ROUNDING * scale


def build_legs(
    positions: list[Position], symbols: dict[str, Symbol], as_of: pd.Timestamp
) -> tuple[list[Leg], list[float], bool]:
    """Tier, impact parameters and the price at as_of of every position; raises AccountError.

    "Errors come first. Bad input, an unknown symbol, insufficient history or no
    liquidity make the account's status error ...: σ_d and V_d are needed for every
    position, not only when a close executes."
    """
    legs, prices_now, near_tie = [], [], False
    for position in positions:
        symbol = symbols[position.symbol]
        if symbol.bar_length is None:
            raise AccountError(f"bar_length of {symbol.name}: fewer than two bars to infer it from")
        sigma, depth = impact_parameters(symbol, as_of)
        # "The maintenance tier of a position is chosen by its notional at as_of (the
        # close of the last bar complete at or before as_of)"
        price_now = symbol.held_close(as_of)
        if price_now is None:
            raise AccountError(f"no bar of {symbol.name} complete at or before as_of")
        notional = position.qty * price_now
        tiers = symbol.params["tiers"]
        chosen = None
        for cap, mmr, amount in tiers:
            # "the first tier whose notional_cap is at or above it"; "a last cap of null
            # has no limit"
            if cap is not None and abs(notional - cap) <= ROUNDING * abs(notional):
                near_tie = True
            if chosen is None and (cap is None or cap >= notional):
                chosen = (float(mmr), float(amount))
        if chosen is None:
            # "A notional at as_of above the last tier's cap is an error for the account"
            raise AccountError(f"notional {notional} of {symbol.name} is above the last tier's cap")
        legs.append(Leg(position, symbol, chosen[0], chosen[1], sigma, depth))
        prices_now.append(price_now)
    return legs, prices_now, near_tie


def replay_book(
    positions: list[Position],
    collateral: float,
    symbols: dict[str, Symbol],
    as_of: pd.Timestamp,
    horizon: pd.Timedelta,
) -> BookResult:
    """The contract's bar-by-bar walk for one margin book (all its positions together)."""
    try:
        legs, prices_now, near_tie = build_legs(positions, symbols, as_of)
    except AccountError as exc:
        return BookResult(kind="error", error=str(exc))
    result = BookResult(kind="ok", near_tie=near_tie)

    # "An account that already meets E ≤ MM at as_of is in liquidation now"; "The same
    # last close decides whether the account is already in liquidation."
    now, tie = meets_liquidation(collateral, legs, prices_now)
    result.near_tie |= tie
    if now:
        result.kind = "in_liquidation"
        return result

    # "walk the bars that open at or after as_of and before as_of + H"; "Cross margin
    # over several symbols walks the union of their bar times"
    book_symbols = {leg.symbol.name: leg.symbol for leg in legs}
    walk = sorted(
        {t for s in book_symbols.values() for t in s.open_times_between(as_of, as_of + horizon)}
    )

    for k, t in enumerate(walk):
        paths = [leg.symbol.open_and_extreme(t, leg.position.side) for leg in legs]
        # 1. Trigger: "E ≤ MM at the bar's adverse extreme (low for a long, high for a
        # short). For cross margin every position is taken at its own adverse extreme
        # of the same bar"
        hit, tie = meets_liquidation(collateral, legs, [extreme for _, extreme in paths])
        result.near_tie |= tie
        if hit:
            return close_book(result, legs, collateral, paths, t, list(book_symbols.values()))

    # "Censoring. If no trigger happens and one of the account's symbols has no bar
    # opening at or after as_of + H (its data ends inside the horizon), the outcome is
    # unknown: status error"
    for name, symbol in book_symbols.items():
        if not symbol.has_bar_opening_from(as_of + horizon):
            result.kind = "censored"
            result.error = f"bars of {name} end before the horizon"
            return result
    return result


def timeline_after(book_symbols: list[Symbol], t: pd.Timestamp, n: int) -> list[pd.Timestamp]:
    """The first ``n`` times after ``t`` on the union of the symbols' bar opens (fewer
    where the data ends). The n smallest of a union are among the n smallest of each
    of its sets, so each symbol contributes only its next ``n`` opens."""
    candidates = {u for symbol in book_symbols for u in symbol.open_times_after(t, n)}
    return sorted(candidates)[:n]


def close_book(
    result: BookResult,
    legs: list[Leg],
    collateral: float,
    paths: list[tuple[float, float]],
    trigger_ts: pd.Timestamp,
    book_symbols: list[Symbol],
) -> BookResult:
    """Steps 2 to 4 for the trigger bar at ``trigger_ts``."""
    opens = [o for o, _ in paths]
    extremes = [x for _, x in paths]

    # 2. Reference price. "If the account already meets E ≤ MM at θ = 0 (the bar OPENED
    # beyond the trigger: a gap), the reference is the open. Otherwise the reference is
    # P_i(θ*), the θ* at which E = MM (E and MM are linear in θ, so θ* has a closed form)."
    gap, tie = meets_liquidation(collateral, legs, opens)
    result.near_tie |= tie
    if gap:
        references = opens
    else:
        # E − MM at θ is linear: g(θ) = g0 + θ·(g1 − g0); g0 > 0 ≥ g1 here.
        g0 = equity(collateral, legs, opens) - maintenance(legs, opens)
        g1 = equity(collateral, legs, extremes) - maintenance(legs, extremes)
        theta = g0 / (g0 - g1)
        references = [o + theta * (x - o) for o, x in zip(opens, extremes)]

    # Execution. The timeline used for latency is the account's walk timeline continued
    # past the horizon: "the execution may fall after the horizon, the trigger may not";
    # "Each position executes at the open of the n-th time after the trigger bar on the
    # account's walk timeline (n its own latency_bars; the trigger bar is the 0-th)".
    reach = max(int(leg.symbol.params["latency_bars"]) for leg in legs)
    after = timeline_after(book_symbols, trigger_ts, reach)
    fills = []
    for leg, reference, extreme in zip(legs, references, extremes):
        p, symbol = leg.position, leg.symbol
        n = int(symbol.params["latency_bars"])
        if n == 0:
            # "x_i = reference_i + λ_i · (extreme_i − reference_i)"
            x = reference + float(symbol.params["slippage_to_extreme"]) * (extreme - reference)
        elif n <= len(after):
            t_exec = after[n - 1]
            bar = symbol.bar_opening_at(t_exec)
            # "a symbol with no bar at that time executes at its held last close"
            x = bar.open if bar is not None else symbol.held_close(t_exec)
        else:
            # "if the data ends first, at the last close available". Reading: the close of
            # the symbol's last bar in the data (every bar is complete by then).
            x = symbol.bars[-1].close
        # 3. Impact
        coef = float(symbol.params["impact_coef"])
        fills.append(impact_fill(x, p.side, p.qty, coef, leg.sigma, leg.depth))

    # 4. Close. "Fees are per position: its own taker_fee and liquidation_fee on its own
    # closed notional q·fill." Reading: the formulas are used as written, with q·fill
    # (not |q·fill|), also for the negative prices the contract allows inside the walk.
    closed = list(zip(legs, fills))
    taker = sum(float(leg.symbol.params["taker_fee"]) * leg.position.qty * f for leg, f in closed)
    liq_fee = sum(
        float(leg.symbol.params["liquidation_fee"]) * leg.position.qty * f for leg, f in closed
    )
    # "E_close = C + Σ s·q·(fill − e) − taker_fee · Σ q·fill"
    e_close = collateral + sum(pnl(leg, f) for leg, f in closed) - taker
    # "E_final = E_close − min(liquidation_fee · Σ q·fill, max(E_close, 0))"
    e_final = e_close - min(liq_fee, max(e_close, 0.0))

    result.liquidated = True
    result.trigger_ts = trigger_ts
    result.e_close = e_close
    result.e_final = e_final
    return result


# --------------------------------------------------------------------------- accounts


def outcome_row(account_id: Any, as_of: Any, status: str, **fields: Any) -> dict[str, Any]:
    row = dict.fromkeys(COLUMNS)
    row.update(account_id=account_id, as_of=as_of, status=status, _near_tie=False)
    row.update(fields)
    return row


def in_liquidation_row(account: Account, near_tie: bool) -> dict[str, Any]:
    """"For in_liquidation and error, every outcome field is empty." """
    return outcome_row(account.account_id, account.as_of, "in_liquidation", _near_tie=near_tie)


def error_row(account: Account, error: str | None, near_tie: bool) -> dict[str, Any]:
    return outcome_row(account.account_id, account.as_of, "error", error=error, _near_tie=near_tie)


def ok_row(
    account: Account, liquidated: bool, trigger_ts, e_close, e_final, shortfall, near_tie
) -> dict[str, Any]:
    """"For ok and not liquidated: liquidated=false, negative=false, shortfall=0, the
    other outcome fields empty." """
    if not liquidated:
        return outcome_row(
            account.account_id, account.as_of, "ok",
            liquidated=False, negative=False, shortfall=0.0, _near_tie=near_tie,
        )
    return outcome_row(
        account.account_id,
        account.as_of,
        "ok",
        liquidated=True,
        # "negative: liquidated and E_close < 0"; isolated: "negative when that sum is
        # above zero" (the sum of the shortfalls)
        negative=shortfall > 0,
        shortfall=shortfall,
        # "time_to_liquidation: from as_of to the trigger bar's open"
        time_to_liquidation_s=(trigger_ts - account.as_of).total_seconds(),
        trigger_ts=trigger_ts,
        e_close=e_close,
        e_final=e_final,
        _near_tie=near_tie,
    )


def replay_cross(account: Account, symbols, horizon) -> dict[str, Any]:
    r = replay_book(list(account.positions), account.collateral, symbols, account.as_of, horizon)
    if r.kind in ("error", "censored"):
        return error_row(account, r.error, r.near_tie)
    if r.kind == "in_liquidation":
        return in_liquidation_row(account, r.near_tie)
    # "shortfall = max(0, −E_close)"
    shortfall = max(0.0, -r.e_close) if r.liquidated else 0.0
    return ok_row(account, r.liquidated, r.trigger_ts, r.e_close, r.e_final, shortfall, r.near_tie)


def replay_isolated(account: Account, symbols, horizon) -> dict[str, Any]:
    """"each position ... is replayed as a one-position account of its own; the
    account's outcome then aggregates its positions"."""
    results = [
        replay_book([p], p.collateral, symbols, account.as_of, horizon) for p in account.positions
    ]
    near_tie = any(r.near_tie for r in results)
    # "Errors come first."
    for r in results:
        if r.kind == "error":
            return error_row(account, r.error, near_tie)
    # "One position already in liquidation at as_of makes the whole account in_liquidation."
    if any(r.kind == "in_liquidation" for r in results):
        return in_liquidation_row(account, near_tie)
    # "In an isolated account one censored position makes the whole account censored,
    # unless the account is in_liquidation at as_of, which comes first." Reading: this
    # holds even when another position of the account was liquidated.
    for r in results:
        if r.kind == "censored":
            return error_row(account, r.error, near_tie)
    liquidated = [r for r in results if r.liquidated]
    if not liquidated:
        return ok_row(account, False, None, None, None, 0.0, near_tie)
    # "liquidated if any is, shortfall the sum of theirs, negative when that sum is above
    # zero, time_to_liquidation the earliest"; "e_close and e_final are the sums over the
    # liquidated positions." Reading: trigger_ts is the earliest trigger too, so that
    # time_to_liquidation_s = trigger_ts − as_of holds on every row.
    return ok_row(
        account,
        True,
        min(r.trigger_ts for r in liquidated),
        sum(r.e_close for r in liquidated),
        sum(r.e_final for r in liquidated),
        sum(max(0.0, -r.e_close) for r in liquidated),
        near_tie,
    )


def reference_replay(
    bars: pd.DataFrame,
    instruments: dict[str, dict[str, Any]],
    accounts: list[dict[str, Any] | str],
    horizon: pd.Timedelta,
) -> list[dict[str, Any]]:
    """One outcome dict per account, in input order (see the module docstring).

    ``accounts`` may hold JSON text lines as the command reads them: a line that is not
    JSON is an error row; "Blank lines are not accounts and are skipped."
    """
    return replay_accounts(build_symbols(bars, instruments), accounts, horizon)


def replay_accounts(
    symbols: dict[str, Symbol], accounts: list[dict[str, Any] | str], horizon: pd.Timedelta
) -> list[dict[str, Any]]:
    """:func:`reference_replay` on symbols already built (a benchmark can time the two apart)."""
    rows = []
    for raw in accounts:
        if isinstance(raw, str):
            if not raw.strip():
                continue
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError:
                rows.append(outcome_row(None, None, "error", error="line is not JSON"))
                continue
        try:
            account = parse_account(raw, symbols)
        except AccountError as exc:
            account_id = raw.get("account_id") if isinstance(raw, dict) else None
            as_of = raw.get("as_of") if isinstance(raw, dict) else None
            rows.append(outcome_row(account_id, as_of, "error", error=str(exc)))
            continue
        if account.margin_mode == "cross":
            rows.append(replay_cross(account, symbols, horizon))
        else:
            rows.append(replay_isolated(account, symbols, horizon))
    return rows
