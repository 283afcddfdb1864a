"""Seeded synthetic account snapshots over real bars, drawn from documented distributions.

Real position books are private, so the training set is built from accounts drawn
here: for each account an ``as_of`` (a bar open), one to four symbols, and per
position a holding time, an entry at a past close, a side, a size against the
symbol's point-in-time liquidity and a leverage within what the venue or regulator
allows for that size. ``docs/generator.md`` gives every distribution, its
parameters, where they come from and which are judgements.

Pure computation given a ``Market`` and instruments: the only randomness is one
``numpy.random.Generator`` seeded from ``seed``, so the same inputs, config and seed
give the same accounts. Everything is vectorised over accounts; the Python loops run
over asset classes, symbols, events and redraw rounds, never over accounts.
"""

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy.special import ndtr, ndtri

from liqrisk.features.durations import format_duration, parse_duration
from liqrisk.features.errors import InputError
from liqrisk.features.instrument_defaults import ASSET_CLASSES
from liqrisk.features.instruments import Instrument
from liqrisk.features.liquidity import impact_inputs
from liqrisk.features.market import Market, search_blocks
from liqrisk.features.replay import POSITION_COLUMNS

US_PER_HOUR = 3_600_000_000

# Per-position generator metadata, kept in separate columns that the engine ignores.
META_COLUMNS = (
    "asset_class",
    "quote_currency",
    "n_positions",
    "leverage_drawn",
    "leverage_cap",
    "at_max_leverage",
    "holding_hours",
    "entry_ts",
    "size_fraction",
    "daily_notional",
    "notional_entry",
    "oversampled_event",
    "event_window",
    "sampling_weight",
    "survived",
    "redraws",
)
GENERATED_COLUMNS = (*POSITION_COLUMNS, "account_id", *META_COLUMNS)


@dataclass(frozen=True)
class Event:
    """A historic crash or gap (``data/events.md``); its window is ``[start − before, end + after)``."""

    name: str
    start: pd.Timestamp
    end: pd.Timestamp | None = None


def _utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text).tz_convert("UTC").as_unit("us")


# The events of data/events.md (start = the table's date or start time, UTC).
DEFAULT_EVENTS: tuple[Event, ...] = (
    Event("SNB removes the EUR/CHF floor", _utc("2015-01-15T00:00Z")),
    Event("Brexit referendum result", _utc("2016-06-24T00:00Z")),
    Event("GBP flash crash", _utc("2016-10-06T23:00Z")),
    Event("JPY flash crash", _utc("2019-01-03T00:00Z")),
    Event("COVID crash (Black Thursday)", _utc("2020-03-12T00:00Z")),
    Event("COVID crash, S&P 500 -12% day", _utc("2020-03-16T00:00Z")),
    Event("WTI May-20 future settles negative", _utc("2020-04-20T00:00Z")),
    Event("Crypto leverage flush", _utc("2021-05-19T00:00Z")),
    Event("META earnings gap", _utc("2022-02-03T00:00Z")),
    Event("FTX collapse", _utc("2022-11-08T00:00Z"), _utc("2022-11-09T00:00Z")),
    Event("NVDA earnings gap up", _utc("2023-05-25T00:00Z")),
    Event("US tariff crash", _utc("2025-04-03T00:00Z"), _utc("2025-04-07T00:00Z")),
    Event("Crypto liquidation cascade", _utc("2025-10-10T21:00Z")),
)


@dataclass(frozen=True)
class AssetClassMix:
    """What accounts of one asset class look like; ``docs/generator.md`` says why each value.

    Leverage ``L`` (notional at entry over initial collateral): with probability
    ``leverage_at_cap`` exactly the cap, else lognormal (``leverage_median``,
    ``leverage_sigma`` on the log) truncated to ``[1, cap]``, where the cap is
    ``min(max_leverage, 1 / (k·mmr))`` for the tier of the drawn notional.
    Holding time log-uniform on ``holding_hours``. Size ``f`` (notional at entry over
    the symbol's daily traded notional) is a mixture: lognormal body (``size_median``,
    ``size_sigma``) with weight ``1 − size_tail_share``, Pareto tail (``size_tail_min``,
    ``size_tail_alpha``) with weight ``size_tail_share``, truncated at ``size_max``.
    ``positions[k]`` is the probability of ``k + 1`` positions; ``cross_share`` the
    probability of cross margin; ``weight`` the class's share of accounts when a market
    holds several classes.
    """

    max_leverage: float
    leverage_median: float
    leverage_sigma: float
    leverage_at_cap: float
    long_share: float
    cross_share: float
    positions: tuple[float, ...]
    holding_hours: tuple[float, float] = (1.0, 672.0)
    size_median: float = 5e-6
    size_sigma: float = 1.5
    size_tail_share: float = 0.02
    size_tail_min: float = 1e-4
    size_tail_alpha: float = 1.5
    size_max: float = 0.05
    weight: float = 1.0

    def __post_init__(self) -> None:
        where = "AssetClassMix"
        object.__setattr__(self, "positions", tuple(float(p) for p in self.positions))
        object.__setattr__(self, "holding_hours", tuple(float(h) for h in self.holding_hours))
        for name in (
            "max_leverage",
            "leverage_median",
            "leverage_sigma",
            "size_median",
            "size_sigma",
            "size_tail_min",
            "size_tail_alpha",
            "size_max",
        ):
            _check(
                getattr(self, name) > 0, f"{where}.{name} must be > 0, got {getattr(self, name)!r}"
            )
        _check(
            self.max_leverage >= 1, f"{where}.max_leverage must be >= 1, got {self.max_leverage!r}"
        )
        for name in ("leverage_at_cap", "long_share", "cross_share", "size_tail_share"):
            value = getattr(self, name)
            _check(0 <= value <= 1, f"{where}.{name} must be in [0, 1], got {value!r}")
        _check(self.weight >= 0, f"{where}.weight must be >= 0, got {self.weight!r}")
        _check(
            len(self.positions) >= 1
            and all(p >= 0 for p in self.positions)
            and math.isclose(sum(self.positions), 1.0),
            f"{where}.positions must be probabilities of 1, 2, ... positions summing to 1, got {list(self.positions)}",
        )
        low, high = self.holding_hours
        _check(
            len(self.holding_hours) == 2 and 0 < low <= high,
            f"{where}.holding_hours must be [low, high] with 0 < low <= high, got {list(self.holding_hours)}",
        )


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise InputError(f"generator config: {message}")


# docs/generator.md, "Parameters": sources per value, judgements marked there.
DEFAULT_MIXES: dict[str, AssetClassMix] = {
    "crypto": AssetClassMix(
        max_leverage=125.0,
        leverage_median=15.0,
        leverage_sigma=0.9,
        leverage_at_cap=0.10,
        long_share=0.55,
        cross_share=0.5,
        positions=(0.6, 0.2, 0.12, 0.08),
        size_median=5e-6,
    ),
    "fx": AssetClassMix(
        max_leverage=30.0,
        leverage_median=10.0,
        leverage_sigma=0.8,
        leverage_at_cap=0.20,
        long_share=0.5,
        cross_share=1.0,
        positions=(0.5, 0.25, 0.15, 0.10),
        size_median=1e-5,
    ),
    "index": AssetClassMix(
        max_leverage=20.0,
        leverage_median=8.0,
        leverage_sigma=0.7,
        leverage_at_cap=0.15,
        long_share=0.6,
        cross_share=1.0,
        positions=(0.5, 0.25, 0.15, 0.10),
        size_median=1e-6,
    ),
    "commodity": AssetClassMix(
        max_leverage=20.0,
        leverage_median=5.0,
        leverage_sigma=0.7,
        leverage_at_cap=0.15,
        long_share=0.6,
        cross_share=1.0,
        positions=(0.5, 0.25, 0.15, 0.10),
        size_median=2e-6,
    ),
    "equity": AssetClassMix(
        max_leverage=2.0,
        leverage_median=1.5,
        leverage_sigma=0.3,
        leverage_at_cap=0.25,
        long_share=0.9,
        cross_share=1.0,
        positions=(0.4, 0.25, 0.2, 0.15),
        size_median=1e-6,
    ),
}


_DAYS_1, _DAYS_3, _DAYS_7, _DAYS_31 = (pd.Timedelta(days=d).as_unit("us") for d in (1, 3, 7, 31))


@dataclass(frozen=True)
class GeneratorConfig:
    """Everything the generator draws from, built from a plain dict (``from_dict``).

    ``horizon`` is the longest label horizon: every ``as_of`` leaves at least that much
    data after it (no censored outcomes), and ``warmup`` before it (the impact window
    needs 30 days). ``initial_to_maintenance`` is ``k`` in the leverage cap
    ``1 / (k·mmr)``. ``event_share`` of the accounts draw their ``as_of`` inside the
    event windows (an oversampling; ``sampling_weight`` undoes it). ``survivors_only``
    keeps only accounts whose positions were not liquidated between entry and as_of.
    """

    classes: dict[str, AssetClassMix] = field(default_factory=lambda: dict(DEFAULT_MIXES))
    horizon: pd.Timedelta = _DAYS_7
    warmup: pd.Timedelta = _DAYS_31
    initial_to_maintenance: float = 2.0
    event_share: float = 0.0
    events: tuple[Event, ...] = DEFAULT_EVENTS
    event_before: pd.Timedelta = _DAYS_3
    event_after: pd.Timedelta = _DAYS_1
    survivors_only: bool = True
    max_redraws: int = 50
    quote_currencies: dict[str, str] = field(default_factory=dict)
    id_prefix: str | None = None

    def __post_init__(self) -> None:
        for name in ("horizon", "warmup", "event_before", "event_after"):
            value = pd.Timedelta(getattr(self, name)).as_unit("us")
            object.__setattr__(self, name, value)
            _check(value >= pd.Timedelta(0), f"{name} must not be negative, got {value}")
        _check(
            self.warmup >= pd.Timedelta(days=31),
            f"warmup must be at least 31d (the 30-day impact window plus a day), got {self.warmup}",
        )
        _check(
            self.initial_to_maintenance >= 1,
            f"initial_to_maintenance must be >= 1, got {self.initial_to_maintenance!r}",
        )
        _check(
            0 <= self.event_share <= 1, f"event_share must be in [0, 1], got {self.event_share!r}"
        )
        _check(self.max_redraws >= 0, f"max_redraws must be >= 0, got {self.max_redraws!r}")
        unknown = set(self.classes) - set(ASSET_CLASSES)
        _check(
            not unknown,
            f"classes: unknown asset class(es) {sorted(unknown)}; known: {list(ASSET_CLASSES)}",
        )
        for name, mix in self.classes.items():
            _check(
                mix.holding_hours[1] * US_PER_HOUR <= self.warmup / pd.Timedelta(microseconds=1),
                f"classes.{name}.holding_hours: the longest holding time must fit in warmup ({self.warmup})",
            )

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> "GeneratorConfig":
        """Build from plain values (a TOML table): durations as ``"7d"``, events as
        ``[{name, start, end?}]``, ``classes.<asset_class>.<field>`` overriding that class's
        defaults. Unknown keys are errors naming the key."""
        raw = dict(raw or {})
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        _check(not unknown, f"unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
        kwargs: dict[str, Any] = {}
        for name in ("horizon", "warmup", "event_before", "event_after"):
            if name in raw:
                kwargs[name] = _duration(raw[name], name)
        for name in ("initial_to_maintenance", "event_share"):
            if name in raw:
                kwargs[name] = _float(raw[name], name)
        if "survivors_only" in raw:
            _check(
                isinstance(raw["survivors_only"], bool),
                f"survivors_only must be true or false, got {raw['survivors_only']!r}",
            )
            kwargs["survivors_only"] = raw["survivors_only"]
        if "max_redraws" in raw:
            value = raw["max_redraws"]
            _check(
                isinstance(value, int) and not isinstance(value, bool),
                f"max_redraws must be an integer, got {value!r}",
            )
            kwargs["max_redraws"] = value
        if "id_prefix" in raw:
            _check(
                raw["id_prefix"] is None or isinstance(raw["id_prefix"], str),
                f"id_prefix must be a string, got {raw['id_prefix']!r}",
            )
            kwargs["id_prefix"] = raw["id_prefix"]
        if "quote_currencies" in raw:
            value = raw["quote_currencies"]
            _check(
                isinstance(value, Mapping) and all(isinstance(v, str) for v in value.values()),
                f"quote_currencies must map symbols to currency codes, got {value!r}",
            )
            kwargs["quote_currencies"] = dict(value)
        if "events" in raw:
            kwargs["events"] = tuple(_event(e, i) for i, e in enumerate(raw["events"]))
        if "classes" in raw:
            kwargs["classes"] = _classes(raw["classes"])
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Plain values that ``from_dict`` reads back to an equal config (for data cards and hashes)."""
        return {
            "classes": {name: _mix_dict(mix) for name, mix in sorted(self.classes.items())},
            "horizon": format_duration(self.horizon),
            "warmup": format_duration(self.warmup),
            "initial_to_maintenance": self.initial_to_maintenance,
            "event_share": self.event_share,
            "events": [
                {
                    "name": e.name,
                    "start": _iso(e.start),
                    **({} if e.end is None else {"end": _iso(e.end)}),
                }
                for e in self.events
            ],
            "event_before": format_duration(self.event_before),
            "event_after": format_duration(self.event_after),
            "survivors_only": self.survivors_only,
            "max_redraws": self.max_redraws,
            "quote_currencies": dict(sorted(self.quote_currencies.items())),
            **({} if self.id_prefix is None else {"id_prefix": self.id_prefix}),  # TOML has no null
        }


def _classes(raw: Any) -> dict[str, AssetClassMix]:
    _check(isinstance(raw, Mapping), f"classes must be a table of asset classes, got {raw!r}")
    out = dict(DEFAULT_MIXES)
    names = {f.name for f in fields(AssetClassMix)}
    for name, entry in raw.items():
        _check(
            name in ASSET_CLASSES,
            f"classes: unknown asset class {name!r}; known: {list(ASSET_CLASSES)}",
        )
        _check(isinstance(entry, Mapping), f"classes.{name} must be a table, got {entry!r}")
        unknown = set(entry) - names
        _check(
            not unknown, f"classes.{name}: unknown key(s) {sorted(unknown)}; known: {sorted(names)}"
        )
        values: dict[str, Any] = {}
        for key, value in entry.items():
            where = f"classes.{name}.{key}"
            if key in ("positions", "holding_hours"):
                _check(
                    isinstance(value, Sequence) and not isinstance(value, str),
                    f"{where} must be a list, got {value!r}",
                )
                values[key] = tuple(_float(v, where) for v in value)
            else:
                values[key] = _float(value, where)
        try:
            out[name] = replace(DEFAULT_MIXES[name], **values)
        except InputError as exc:
            raise InputError(str(exc).replace("AssetClassMix.", f"classes.{name}.")) from None
    return out


def _mix_dict(mix: AssetClassMix) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(mix).items()}


def _float(value: Any, where: str) -> float:
    _check(
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value),
        f"{where} must be a finite number, got {value!r}",
    )
    return float(value)


def _duration(value: Any, where: str) -> pd.Timedelta:
    if isinstance(value, timedelta):  # pd.Timedelta is one
        return pd.Timedelta(value)
    try:
        return parse_duration(value, field=f"generator config: {where}")
    except InputError:
        raise
    except (TypeError, ValueError):
        raise InputError(
            f"generator config: {where} must be a duration like 7d, got {value!r}"
        ) from None


def _event(raw: Any, i: int) -> Event:
    where = f"events[{i}]"
    _check(
        isinstance(raw, Mapping) and isinstance(raw.get("name"), str) and "start" in raw,
        f"{where} must be a table with name and start, got {raw!r}",
    )
    unknown = set(raw) - {"name", "start", "end"}
    _check(not unknown, f"{where}: unknown key(s) {sorted(unknown)}")

    def ts(key: str) -> pd.Timestamp:
        try:
            t = pd.Timestamp(raw[key])
        except (TypeError, ValueError):
            raise InputError(
                f"generator config: {where}.{key} is not an ISO 8601 time: {raw[key]!r}"
            ) from None
        return (t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")).as_unit("us")

    return Event(raw["name"], ts("start"), ts("end") if raw.get("end") is not None else None)




def _iso(t: pd.Timestamp) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def quote_currency(
    symbol: str, asset_class: str, overrides: Mapping[str, str] | None = None
) -> str:
    """The currency a symbol's prices (and so its account's amounts) are in.

    FX pairs: the last three letters; crypto: USDT for ``…USDT`` pairs; the European
    cash indices of the bundled data: EUR or GBP; everything else USD. ``overrides``
    (the config's ``quote_currencies``) win.
    """
    if overrides and symbol in overrides:
        return overrides[symbol]
    if asset_class == "fx" and len(symbol) >= 6:
        return symbol[3:6]
    if asset_class == "crypto":
        base = symbol.removesuffix("-PERP")
        for quote in ("USDT", "USDC", "BUSD", "USD", "BTC"):
            if base.endswith(quote):
                return quote
    return _INDEX_CURRENCY.get(symbol, "USD")


_INDEX_CURRENCY = {
    "^FTSE": "GBP",
    "^GDAXI": "EUR",
    "^FCHI": "EUR",
    "^STOXX50E": "EUR",
    "^N225": "JPY",
}


def leverage_cap(
    mmr: np.ndarray, max_leverage: np.ndarray, initial_to_maintenance: float
) -> np.ndarray:
    """``min(max_leverage, 1 / (k·mmr))``: initial margin is ``k`` times maintenance.

    With ``k = 2`` this is ESMA's rule (close-out at 50% of initial margin), Reg T /
    FINRA 4210 (50% initial, 25% maintenance) and Binance's tier tables
    (``max leverage = 1 / (2·mmr)``, e.g. 0.4% → 125x, 1% → 50x, 2.5% → 20x).
    """
    with np.errstate(divide="ignore"):
        return np.minimum(
            max_leverage, 1.0 / (initial_to_maintenance * np.asarray(mmr, dtype=np.float64))
        )


def file_seed(seed: int, name: str) -> int:
    """One reproducible stream per bars file, stable whatever other files are built."""
    return int(np.random.SeedSequence([seed, zlib.crc32(name.encode())]).generate_state(1)[0])


def generate_accounts(
    market: Market,
    instruments: Mapping[str, Instrument],
    config: GeneratorConfig | None = None,
    *,
    n_accounts: int,
    seed: int,
    symbols: Sequence[str] = (),
) -> pd.DataFrame:
    """``n_accounts`` synthetic account snapshots over ``market``, one row per position.

    Parameters
    ----------
    market : Market
        The bars (``market_from_bars``); only symbols also in ``instruments`` (and in
        ``symbols`` when given) are drawn.
    instruments : mapping of symbol to Instrument
        Tiers (for the leverage cap and tier of each size), depth and contract multiplier.
    config : GeneratorConfig
        Distributions per asset class, horizon, events; the defaults when ``None``.
    n_accounts, seed : int
    symbols : sequence of str
        Restrict the draw to these symbols (all when empty).

    Returns
    -------
    DataFrame
        ``POSITION_COLUMNS`` (``account`` = 0 … n−1, the rows of an account together,
        its first row the anchor symbol), ``account_id`` (str, deterministic) and the
        generator metadata ``META_COLUMNS`` (the engine ignores them). Every account
        replays with status ``ok`` or ``in_liquidation`` for horizons up to
        ``config.horizon``: its symbols have the 30 days of history the impact inputs
        need and bars beyond the horizon.
    """
    config = config or GeneratorConfig()
    if n_accounts < 0:
        raise ValueError(f"n_accounts must be >= 0, got {n_accounts}")
    rng = np.random.default_rng(seed)
    setup = _setup(market, instruments, config, symbols)
    cls = _assign_classes(rng, setup, n_accounts)
    accepted: list[_Batch] = []
    todo = np.arange(n_accounts)
    redraws = np.zeros(n_accounts, dtype=np.int64)
    for round_ in range(config.max_redraws + 1):
        if not todo.size:
            break
        batch = _draw(rng, setup, config, todo, cls[todo])
        keep = batch.valid & (
            batch.survived | (not config.survivors_only) | (round_ == config.max_redraws)
        )
        accepted.append(batch.select(keep))
        todo = todo[~keep]
        redraws[todo] += 1
    if not accepted:  # no accounts asked for: an empty frame with the columns and dtypes
        accepted.append(_draw(rng, setup, config, todo, cls[todo]))
    if todo.size:
        raise ValueError(
            f"generator: {todo.size} account(s) still without valid history after {config.max_redraws} "
            "redraws; check that the market has symbols with warmup + horizon of history"
        )
    return _frame(_Batch.concat(accepted), redraws, setup, config, seed)


@dataclass
class _Setup:
    """Per market: which bars may be an as_of, per class and stratum, and per-symbol arrays."""

    market: Market
    classes: list[str]
    mixes: list[AssetClassMix]
    mix: dict[str, np.ndarray]  # per class index: the mix's numbers as arrays
    sym_class: np.ndarray  # per symbol code: class index, -1 when not drawn
    quote: np.ndarray  # per symbol code: quote currency code
    quote_names: list[str]
    pool_uniform: list[np.ndarray]  # per class: flat indices of the bars that may open an as_of
    pool_event: list[np.ndarray]  # per class: those inside an event window
    window_of_bar: np.ndarray  # per flat bar: event index, -1 outside every window
    event_names: list[str]
    first_ok: np.ndarray  # per symbol: earliest as_of (warmup after its first bar)
    last_ok: np.ndarray  # per symbol: latest as_of (horizon before its last bar)
    tiers: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # per symbol: caps, mmr, amounts
    depth: np.ndarray
    multiplier: np.ndarray
    symbol_of_bar: np.ndarray
    extremes: "_RangeExtremes"


def _setup(
    market: Market,
    instruments: Mapping[str, Instrument],
    config: GeneratorConfig,
    symbols: Sequence[str],
) -> _Setup:
    names = [c for c in ASSET_CLASSES if c in config.classes and config.classes[c].weight > 0]
    wanted = set(symbols) if symbols else None
    n_sym = len(market.symbols)
    sym_class = np.full(n_sym, -1, dtype=np.int64)
    for code, s in enumerate(market.symbols):
        inst = instruments.get(s)
        if inst is None or inst.asset_class not in names or market.bar_us[code] <= 0:
            continue
        has_volume = (
            market.volume_bars_cum[market.stop[code]] > market.volume_bars_cum[market.start[code]]
        )
        if not has_volume and inst.depth_notional is None:
            continue  # no liquidity ever: the engine would refuse every account on it
        if wanted is None or s in wanted:
            sym_class[code] = names.index(inst.asset_class)
    quotes = [
        quote_currency(s, instruments[s].asset_class, config.quote_currencies)
        if sym_class[c] >= 0
        else ""
        for c, s in enumerate(market.symbols)
    ]
    quote_names = sorted(set(quotes))
    first_ok = market.ts[market.start] + _us(config.warmup)
    last_ok = market.ts[market.stop - 1] - _us(config.horizon)
    symbol_of_bar = np.repeat(np.arange(n_sym), market.stop - market.start)
    eligible = (
        (sym_class[symbol_of_bar] >= 0)
        & (market.ts >= first_ok[symbol_of_bar])
        & (market.ts <= last_ok[symbol_of_bar])
    )
    window = _event_windows(market, config)
    bar_class = sym_class[symbol_of_bar]
    mixes = [config.classes[c] for c in names]
    table = [instruments.get(s) for s in market.symbols]
    return _Setup(
        market=market,
        classes=names,
        mixes=mixes,
        mix=_mix_arrays(mixes),
        sym_class=sym_class,
        quote=np.array([quote_names.index(q) for q in quotes], dtype=np.int64),
        quote_names=quote_names,
        pool_uniform=[np.flatnonzero(eligible & (bar_class == k)) for k in range(len(names))],
        pool_event=[
            np.flatnonzero(eligible & (bar_class == k) & (window >= 0)) for k in range(len(names))
        ],
        window_of_bar=window,
        event_names=[e.name for e in config.events],
        first_ok=first_ok,
        last_ok=last_ok,
        tiers=[
            (np.asarray(i.tier_caps), np.asarray(i.tier_mmr), np.asarray(i.tier_amount))
            if i is not None
            else (np.array([np.inf]), np.zeros(1), np.zeros(1))
            for i in table
        ],
        depth=np.array(
            [np.nan if (i is None or i.depth_notional is None) else i.depth_notional for i in table]
        ),
        multiplier=np.array([1.0 if i is None else i.contract_multiplier for i in table]),
        symbol_of_bar=symbol_of_bar,
        extremes=_RangeExtremes(market.low, market.high),
    )


def _us(value: pd.Timedelta | pd.Timestamp) -> int:
    if isinstance(value, pd.Timestamp):
        return int(value.value // 1000)  # .value is nanoseconds whatever the unit
    return int(value // pd.Timedelta(microseconds=1))


def _event_windows(market: Market, config: GeneratorConfig) -> np.ndarray:
    """Per flat bar, the index of the event window its open lies in (``-1``: none).

    Overlapping windows: the event listed first names the bar.
    """
    window = np.full(len(market.ts), -1, dtype=np.int64)
    for i, event in enumerate(config.events):
        lo = _us(event.start) - _us(config.event_before)
        hi = _us(event.end if event.end is not None else event.start) + _us(config.event_after)
        for code in range(len(market.symbols)):
            a, b = market.start[code], market.stop[code]
            i0 = a + np.searchsorted(market.ts[a:b], lo, side="left")
            i1 = a + np.searchsorted(market.ts[a:b], hi, side="left")
            span = window[i0:i1]
            span[span < 0] = i
    return window


def _mix_arrays(mixes: list[AssetClassMix]) -> dict[str, np.ndarray]:
    def col(get) -> np.ndarray:
        return np.array([get(m) for m in mixes], dtype=np.float64)

    return {
        "max_leverage": col(lambda m: m.max_leverage),
        "lev_median": col(lambda m: m.leverage_median),
        "lev_sigma": col(lambda m: m.leverage_sigma),
        "lev_at_cap": col(lambda m: m.leverage_at_cap),
        "long": col(lambda m: m.long_share),
        "cross": col(lambda m: m.cross_share),
        "hold_lo": col(lambda m: m.holding_hours[0]),
        "hold_hi": col(lambda m: m.holding_hours[1]),
        "size_median": col(lambda m: m.size_median),
        "size_sigma": col(lambda m: m.size_sigma),
        "tail_share": col(lambda m: m.size_tail_share),
        "tail_min": col(lambda m: m.size_tail_min),
        "tail_alpha": col(lambda m: m.size_tail_alpha),
        "size_max": col(lambda m: m.size_max),
    }


def _assign_classes(rng: np.random.Generator, setup: _Setup, n: int) -> np.ndarray:
    """Each account's asset class, by the classes' weights among those with bars to draw from."""
    weights = np.array(
        [m.weight if setup.pool_uniform[k].size else 0.0 for k, m in enumerate(setup.mixes)]
    )
    if not n:
        return np.zeros(0, dtype=np.int64)
    if weights.sum() <= 0:
        raise ValueError(
            "generator: no symbol of the market has an instrument and warmup + horizon of history"
        )
    return rng.choice(len(weights), size=n, p=weights / weights.sum())


@dataclass
class _Batch:
    """Draws of one round: per-account arrays and per-position arrays (``pos_*``)."""

    account: np.ndarray
    valid: np.ndarray
    survived: np.ndarray
    as_of: np.ndarray
    cross: np.ndarray
    cls: np.ndarray
    n_positions: np.ndarray
    oversampled: np.ndarray
    window: np.ndarray
    weight: np.ndarray
    pos_account: np.ndarray  # index into the per-account arrays
    pos: dict[str, np.ndarray]

    def select(self, keep: np.ndarray) -> "_Batch":
        keep_pos = keep[self.pos_account]
        renumber = np.cumsum(keep) - 1
        per_account = {
            f.name: getattr(self, f.name)[keep]
            for f in fields(self)
            if f.name not in ("pos_account", "pos")
        }
        return _Batch(
            **per_account,
            pos_account=renumber[self.pos_account[keep_pos]],
            pos={k: v[keep_pos] for k, v in self.pos.items()},
        )

    @staticmethod
    def concat(batches: list["_Batch"]) -> "_Batch":
        """All accepted accounts, in account order, the positions of each together."""
        offsets = np.cumsum([0] + [len(b.account) for b in batches[:-1]])
        account = np.concatenate([b.account for b in batches]) if batches else np.zeros(0, np.int64)
        order = np.argsort(account, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        pos_account = (
            rank[np.concatenate([b.pos_account + o for b, o in zip(batches, offsets)])]
            if batches
            else np.zeros(0, np.int64)
        )
        pos_order = np.argsort(pos_account, kind="stable")
        per_account = {
            f.name: np.concatenate([getattr(b, f.name) for b in batches])[order]
            for f in fields(_Batch)
            if f.name not in ("pos_account", "pos")
        }
        keys = batches[0].pos.keys() if batches else ()
        return _Batch(
            **per_account,
            pos_account=pos_account[pos_order],
            pos={k: np.concatenate([b.pos[k] for b in batches])[pos_order] for k in keys},
        )


def _draw(
    rng: np.random.Generator,
    setup: _Setup,
    config: GeneratorConfig,
    accounts: np.ndarray,
    cls: np.ndarray,
) -> _Batch:
    """One round of draws for ``accounts`` (their classes fixed)."""
    market = setup.market
    n = len(accounts)
    anchor_bar, oversampled = _draw_as_of(rng, setup, config, cls)
    anchor = setup.symbol_of_bar[anchor_bar]
    as_of = market.ts[anchor_bar]
    cross = rng.random(n) < setup.mix["cross"][cls]
    sym, pos_account, n_positions = _draw_symbols(rng, setup, cls, anchor, as_of)
    pos, valid, survived = _draw_positions(
        rng, setup, config, sym, as_of[pos_account], cls[pos_account]
    )
    account_collateral = np.bincount(pos_account, weights=pos["own_collateral"], minlength=n)
    pos["collateral"] = np.where(
        cross[pos_account], account_collateral[pos_account], pos["own_collateral"]
    )
    window = setup.window_of_bar[anchor_bar]
    return _Batch(
        account=accounts,
        valid=_all_per_account(valid, pos_account, n),
        survived=_all_per_account(survived, pos_account, n),
        as_of=as_of,
        cross=cross,
        cls=cls,
        n_positions=n_positions,
        oversampled=oversampled,
        window=window,
        weight=_sampling_weight(setup, config, cls, window),
        pos_account=pos_account,
        pos=pos,
    )


def _all_per_account(flags: np.ndarray, pos_account: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(pos_account, weights=(~flags).astype(np.float64), minlength=n) == 0


def _draw_as_of(
    rng: np.random.Generator, setup: _Setup, config: GeneratorConfig, cls: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The anchor bar of each account: with probability ``event_share`` uniform over the
    eligible bar opens of its class inside an event window, else uniform over all of them."""
    n = len(cls)
    u_stratum, u_bar = rng.random(n), rng.random(n)
    bar = np.zeros(n, dtype=np.int64)
    oversampled = np.zeros(n, dtype=bool)
    for k in range(len(setup.classes)):
        rows = np.flatnonzero(cls == k)
        if not rows.size:
            continue
        uniform, event = setup.pool_uniform[k], setup.pool_event[k]
        in_event = u_stratum[rows] < (config.event_share if event.size else 0.0)
        oversampled[rows] = in_event
        pool_size = np.where(in_event, event.size, uniform.size)
        pick = np.minimum((u_bar[rows] * pool_size).astype(np.int64), pool_size - 1)
        from_event = (
            event[np.where(in_event, pick, 0)] if event.size else np.zeros(rows.size, np.int64)
        )
        bar[rows] = np.where(in_event, from_event, uniform[np.where(in_event, 0, pick)])
    return bar, oversampled


def _sampling_weight(
    setup: _Setup, config: GeneratorConfig, cls: np.ndarray, window: np.ndarray
) -> np.ndarray:
    """``p_uniform(x) / p_design(x)`` of each account's anchor bar: the importance weight that
    turns the oversampled design back into uniform-over-bar-opens (self-normalise before use)."""
    n_uniform = np.array([p.size for p in setup.pool_uniform], dtype=np.float64)[cls]
    n_event = np.array([p.size for p in setup.pool_event], dtype=np.float64)[cls]
    share = np.where(n_event > 0, config.event_share, 0.0)
    p_uniform = 1.0 / np.maximum(n_uniform, 1.0)
    p_design = (1 - share) * p_uniform + np.where(
        window >= 0, share / np.maximum(n_event, 1.0), 0.0
    )
    return p_uniform / p_design


def _draw_symbols(
    rng: np.random.Generator, setup: _Setup, cls: np.ndarray, anchor: np.ndarray, as_of: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per account 1–4 symbols: the anchor, then distinct others of the same class and quote
    currency with warmup before and the horizon after as_of, uniformly without replacement."""
    n = len(cls)
    u_count = rng.random(n)
    keys = rng.random((n, len(setup.sym_class)))
    wanted = np.empty(n, dtype=np.int64)
    for k, mix in enumerate(setup.mixes):
        rows = cls == k
        wanted[rows] = 1 + np.searchsorted(
            np.cumsum(mix.positions)[:-1], u_count[rows], side="right"
        )
    eligible = (
        (setup.sym_class[None, :] == setup.sym_class[anchor][:, None])
        & (setup.quote[None, :] == setup.quote[anchor][:, None])
        & (setup.first_ok[None, :] <= as_of[:, None])
        & (setup.last_ok[None, :] >= as_of[:, None])
    )
    eligible[np.arange(n), anchor] = False
    keys[~eligible] = np.inf
    order = np.argsort(keys, axis=1, kind="stable")
    n_positions = 1 + np.minimum(wanted - 1, eligible.sum(axis=1))
    pos_account = np.repeat(np.arange(n), n_positions)
    first = (np.cumsum(n_positions) - n_positions).astype(np.int64)
    rank = np.arange(len(pos_account)) - np.repeat(first, n_positions)
    sym = np.where(rank == 0, anchor[pos_account], order[pos_account, np.maximum(rank - 1, 0)])
    return sym.astype(np.int64), pos_account, n_positions


def _draw_positions(
    rng: np.random.Generator,
    setup: _Setup,
    config: GeneratorConfig,
    sym: np.ndarray,
    as_of: np.ndarray,
    cls: np.ndarray,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Holding time, entry, size, leverage and side of each position; whether its inputs are
    valid for the engine and whether it survived from entry to as_of."""
    market, mix = setup.market, setup.mix
    m = len(sym)
    u_hold, u_side, u_cap, u_lev, u_part, u_size = (rng.random(m) for _ in range(6))

    holding = loguniform_ppf(u_hold, mix["hold_lo"][cls], mix["hold_hi"][cls])
    entry_time = as_of - np.round(holding * US_PER_HOUR).astype(np.int64)
    entry_bar = search_blocks(market, market.done, sym, entry_time, side="right") - 1
    has_entry = entry_bar >= market.start[sym]
    entry_bar = np.where(has_entry, entry_bar, market.start[sym])
    entry = market.close[entry_bar]

    inputs = impact_inputs(market, sym, as_of)
    last = np.maximum(inputs.last, 0)
    price = market.close[last]
    daily = np.where(inputs.has_volume, inputs.notional_d * setup.multiplier[sym], setup.depth[sym])
    valid = (
        has_entry
        & (inputs.problem == "")
        & (inputs.last >= 0)
        & np.isfinite(daily)
        & (daily > 0)
        & (entry > 0)
        & (price > 0)
    )
    daily_ok = np.where(valid, daily, 1.0)
    entry_ok = np.where(valid, entry, 1.0)
    # The engine refuses a notional at as_of above the last tier's cap: keep q·P below it.
    last_cap = np.array([caps[-1] for caps, _, _ in setup.tiers])[sym]
    room = last_cap * entry_ok / np.where(valid, price, 1.0) / daily_ok * (1 - 1e-9)
    size = size_ppf(
        u_part,
        u_size,
        median=mix["size_median"][cls],
        sigma=mix["size_sigma"][cls],
        tail_share=mix["tail_share"][cls],
        tail_min=mix["tail_min"][cls],
        tail_alpha=mix["tail_alpha"][cls],
        upper=np.minimum(mix["size_max"][cls], room),
    )
    notional = size * daily_ok
    qty = notional / entry_ok

    mmr, amount = _tier(setup, sym, notional)
    cap = leverage_cap(mmr, mix["max_leverage"][cls], config.initial_to_maintenance)
    at_cap = (u_cap < mix["lev_at_cap"][cls]) | (cap <= 1.0)
    body = truncated_lognormal_ppf(
        u_lev, median=mix["lev_median"][cls], sigma=mix["lev_sigma"][cls], low=1.0, high=cap
    )
    leverage = np.where(at_cap, cap, body)
    own_collateral = notional / leverage
    side = np.where(u_side < mix["long"][cls], 1, -1).astype(np.int8)

    survived = ~valid | _survived(
        setup, sym, side, qty, entry_ok, own_collateral, mmr, amount, entry_bar, last
    )
    pos = {
        "sym": sym,
        "side": side,
        "qty": qty,
        "entry": entry,
        "own_collateral": own_collateral,
        "leverage": leverage,
        "cap": cap,
        "at_cap": at_cap,
        "holding": holding,
        "entry_ts": market.ts[entry_bar],
        "size": size,
        "daily": daily,
        "notional": notional,
        "position_survived": survived,
    }
    return pos, valid, survived


def _tier(setup: _Setup, sym: np.ndarray, notional: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maintenance rate and amount of the tier the notional falls in (first cap at or above it)."""
    mmr = np.zeros(len(sym))
    amount = np.zeros(len(sym))
    for code in np.unique(sym):
        rows = np.flatnonzero(sym == code)
        caps, rates, amounts = setup.tiers[code]
        t = np.minimum(np.searchsorted(caps, notional[rows], side="left"), len(caps) - 1)
        mmr[rows], amount[rows] = rates[t], amounts[t]
    return mmr, amount


def _survived(
    setup: _Setup,
    sym: np.ndarray,
    side: np.ndarray,
    qty: np.ndarray,
    entry: np.ndarray,
    collateral: np.ndarray,
    mmr: np.ndarray,
    amount: np.ndarray,
    entry_bar: np.ndarray,
    last: np.ndarray,
) -> np.ndarray:
    """Whether the position, margined with its own initial collateral, never met ``E ≤ MM``
    at the adverse extreme of a bar after its entry bar and complete by as_of.

    For a cross account, every position surviving on its own is sufficient (not necessary)
    for the account to have survived: the sum of positive margins is positive.
    """
    first = entry_bar + 1
    has_bars = last >= first
    low, high = setup.extremes.query(np.where(has_bars, first, last), last)
    extreme = np.where(side > 0, low, high)
    excess = collateral + side * qty * (extreme - entry) - (mmr * qty * extreme - amount)
    return ~has_bars | (excess > 0)


class _RangeExtremes:
    """Range minimum of ``low`` and maximum of ``high`` over flat bar indices (a sparse table).

    Levels are built as long queries need them: level ``k`` holds the extreme of the
    ``2**k`` bars starting at each index.
    """

    def __init__(self, low: np.ndarray, high: np.ndarray) -> None:
        self._min = [np.asarray(low, dtype=np.float64)]
        self._max = [np.asarray(high, dtype=np.float64)]

    def query(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Min of ``low`` and max of ``high`` over ``a..b`` inclusive (``a <= b``)."""
        length = b - a + 1
        level = np.zeros(len(a), dtype=np.int64)
        if len(a):
            level = (
                np.frexp(length.astype(np.float64))[1] - 1
            )  # floor(log2(length)), exact for ints
            self._grow(int(level.max()))
        lows, highs = np.empty(len(a)), np.empty(len(a))
        for k in np.unique(level):
            rows = np.flatnonzero(level == k)
            right = b[rows] - (1 << int(k)) + 1
            lows[rows] = np.minimum(self._min[k][a[rows]], self._min[k][right])
            highs[rows] = np.maximum(self._max[k][a[rows]], self._max[k][right])
        return lows, highs

    def _grow(self, top: int) -> None:
        while len(self._min) <= top:
            half = 1 << (len(self._min) - 1)
            lo, hi = self._min[-1], self._max[-1]
            self._min.append(np.minimum(lo[:-half], lo[half:]))
            self._max.append(np.maximum(hi[:-half], hi[half:]))


# --- the documented distributions, as inverse CDFs of uniforms (docs/generator.md) ------------


def loguniform_ppf(u: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Log-uniform on ``[low, high]``: ``exp(ln low + u·(ln high − ln low))``."""
    return np.exp(np.log(low) + u * (np.log(high) - np.log(low)))


def truncated_lognormal_ppf(
    u: np.ndarray,
    *,
    median: np.ndarray,
    sigma: np.ndarray,
    low: float | np.ndarray,
    high: np.ndarray,
) -> np.ndarray:
    """Lognormal (``ln X ~ N(ln median, sigma²)``) truncated to ``[low, high]``, by inversion."""
    mu = np.log(median)
    a = ndtr((np.log(low) - mu) / sigma)
    b = ndtr((np.log(np.maximum(high, low)) - mu) / sigma)
    p = a + u * (b - a)
    inside = b - a > 1e-300
    z = ndtri(np.clip(np.where(inside, p, 0.5), 1e-300, 1 - 1e-16))
    x = np.exp(mu + sigma * z)
    upper = np.maximum(high, low)
    if not inside.all():
        # Where the truncation leaves no mass the numerics can resolve, fall back to log-uniform.
        shape = np.shape(x)
        x = np.where(
            inside, x, loguniform_ppf(u, np.broadcast_to(low, shape), np.broadcast_to(upper, shape))
        )
    return np.clip(x, low, upper)


def size_ppf(
    u_part: np.ndarray,
    u: np.ndarray,
    *,
    median: np.ndarray,
    sigma: np.ndarray,
    tail_share: np.ndarray,
    tail_min: np.ndarray,
    tail_alpha: np.ndarray,
    upper: np.ndarray,
) -> np.ndarray:
    """The size mixture truncated at ``upper``, drawn exactly.

    ``F(x) = (1 − p)·Φ((ln x − ln median)/σ) + p·max(0, 1 − (x_m/x)^α)``; the part is
    chosen with its probability mass below ``upper``, then drawn by inversion below it.
    """
    body_mass = (1 - tail_share) * ndtr((np.log(upper) - np.log(median)) / sigma)
    tail_cdf_upper = np.where(
        upper > tail_min, 1 - (tail_min / np.maximum(upper, tail_min)) ** tail_alpha, 0.0
    )
    tail_mass = tail_share * tail_cdf_upper
    in_tail = u_part * (body_mass + tail_mass) >= body_mass
    body = truncated_lognormal_ppf(
        u, median=median, sigma=sigma, low=0.0 + np.finfo(float).tiny, high=upper
    )
    tail = tail_min * (1 - u * tail_cdf_upper) ** (-1 / tail_alpha)
    return np.minimum(np.where(in_tail, tail, body), upper)


def _frame(
    batch: _Batch, redraws: np.ndarray, setup: _Setup, config: GeneratorConfig, seed: int
) -> pd.DataFrame:
    """The positions frame: engine columns, then account_id and the metadata."""
    pos, acc = batch.pos, batch.pos_account
    account = batch.account[acc]
    window = batch.window[acc]
    events = [*setup.event_names, ""]
    frame = pd.DataFrame(
        {
            "account": account.astype(np.int64),
            "as_of": _utc_us(batch.as_of[acc]),
            "margin_mode": _text(batch.cross[acc].astype(np.int64), ["isolated", "cross"]),
            "collateral": pos["collateral"],
            "symbol": _text(pos["sym"], list(setup.market.symbols)),
            "side": pos["side"].astype(np.int8),
            "qty": pos["qty"],
            "entry_price": pos["entry"],
            "account_id": _account_ids(len(batch.account), config, seed).take(account),
            "asset_class": _text(batch.cls[acc], setup.classes),
            "quote_currency": _text(setup.quote[pos["sym"]], setup.quote_names),
            "n_positions": batch.n_positions[acc].astype(np.int64),
            "leverage_drawn": pos["leverage"],
            "leverage_cap": pos["cap"],
            "at_max_leverage": pos["at_cap"],
            "holding_hours": pos["holding"],
            "entry_ts": _utc_us(pos["entry_ts"]),
            "size_fraction": pos["size"],
            "daily_notional": pos["daily"],
            "notional_entry": pos["notional"],
            "oversampled_event": _text(np.where(batch.oversampled[acc], window, -1), events),
            "event_window": _text(window, events),
            "sampling_weight": batch.weight[acc],
            "survived": pos["position_survived"],
            "redraws": redraws[account],
        }
    )
    return frame[list(GENERATED_COLUMNS)]


def _text(codes: np.ndarray, names: Sequence[str]) -> pd.api.extensions.ExtensionArray:
    """``names[codes]`` as a pandas ``str`` array (``-1`` picks the last name), built in Arrow."""
    codes = np.where(np.asarray(codes) < 0, len(names) - 1, codes).astype(np.int32)
    dictionary = pa.DictionaryArray.from_arrays(
        pa.array(codes), pa.array(list(names), type=pa.string())
    )
    return pd.array(dictionary.cast(pa.large_string()), dtype="str")


def _account_ids(n: int, config: GeneratorConfig, seed: int) -> pd.api.extensions.ExtensionArray:
    """``<prefix><index>``, the index zero-padded to at least 7 digits; prefix ``s<seed>-`` by default."""
    prefix = f"s{seed}-" if config.id_prefix is None else config.id_prefix
    width = max(7, len(str(max(n - 1, 0))))
    digits = pc.utf8_lpad(pc.cast(pa.array(np.arange(n, dtype=np.int64)), pa.string()), width, "0")
    return pd.array(pc.binary_join_element_wise(prefix, digits, ""), dtype="str")


def _utc_us(values: np.ndarray) -> pd.Series:
    return pd.Series(np.asarray(values, dtype=np.int64).astype("datetime64[us]")).dt.tz_localize(
        "UTC"
    )
