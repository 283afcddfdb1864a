"""Instrument / venue parameters: one typed record per symbol, built from JSON-like dicts.

Keys an instrument leaves out take its asset class's defaults
(``liqrisk.features.instrument_defaults``).
"""

import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from liqrisk.features.durations import parse_duration
from liqrisk.features.errors import InputError
from liqrisk.features.instrument_defaults import ASSET_CLASS_DEFAULTS, ASSET_CLASSES

KEYS = (
    "asset_class",
    "tiers",
    "taker_fee",
    "liquidation_fee",
    "latency_bars",
    "slippage_to_extreme",
    "impact_coef",
    "depth_notional",
    "bar_length",
    "negative_prices",
    "contract_multiplier",
)


@dataclass(frozen=True)
class Instrument:
    """Venue parameters of one symbol, as the liquidation contract names them.

    Two keys extend the contract, and leave it exact when absent:
    ``negative_prices`` says the instrument really traded at or below zero (WTI,
    April 2020), so the data loader accepts such bars; ``contract_multiplier``
    turns a volume counted in contracts into units (CME futures: V_d is then
    ``Σ close·volume·multiplier``). Its default, 1, is the contract's formula.

    ``tier_caps`` ascend; the last may be ``inf`` (no cap). A flat ``mmr`` is one
    tier with amount 0.
    """

    symbol: str
    asset_class: str
    tier_caps: tuple[float, ...]
    tier_mmr: tuple[float, ...]
    tier_amount: tuple[float, ...]
    taker_fee: float
    liquidation_fee: float
    latency_bars: int
    slippage_to_extreme: float
    impact_coef: float
    depth_notional: float | None = None
    bar_length: pd.Timedelta | None = None
    negative_prices: bool = False
    contract_multiplier: float = 1.0


@dataclass(frozen=True)
class InstrumentsFile:
    """Valid instruments, and for each bad entry the reason (its accounts become errors)."""

    instruments: dict[str, Instrument]
    errors: dict[str, str]

    def bar_lengths(self) -> dict[str, pd.Timedelta]:
        """The bar lengths the instruments give; the others are inferred from the bars."""
        return {s: i.bar_length for s, i in self.instruments.items() if i.bar_length is not None}


def instruments_from_json(text: str, *, source: str, name: str) -> InstrumentsFile:
    """Validate the text of an instruments file, ``{symbol: {asset_class, tiers, ...}}``; a bad
    entry never stops the others (its error starts with ``name``, e.g. the file's name).

    Raises ``InputError`` (naming ``source``) only when the text as a whole is unusable: not
    JSON, not an object.
    """
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(raw, dict):
        raise InputError(f"{source}: expected an object {{symbol: {{...}}}}, got {type(raw).__name__}")
    instruments: dict[str, Instrument] = {}
    errors: dict[str, str] = {}
    for symbol, entry in raw.items():
        try:
            instruments[symbol] = instrument_from_dict(symbol, entry)
        except InputError as exc:
            errors[symbol] = f"{name}: {exc}"
    return InstrumentsFile(instruments=instruments, errors=errors)


def instrument_from_dict(symbol: str, raw: Mapping[str, Any]) -> Instrument:
    """Validate one instrument entry and fill what it leaves out from its asset class.

    Raises ``InputError`` naming the symbol and the field.
    """
    if not isinstance(raw, Mapping):
        raise InputError(f"instrument {symbol}: expected an object, got {type(raw).__name__}")
    asset_class = raw.get("asset_class")
    if asset_class not in ASSET_CLASSES:
        raise InputError(
            f"instrument {symbol}: asset_class must be one of {', '.join(ASSET_CLASSES)}, "
            f"got {asset_class!r}"
        )
    merged = {**ASSET_CLASS_DEFAULTS[asset_class], **raw}
    where = f"instrument {symbol}"
    caps, mmr, amount = _tiers(merged["tiers"], where=where)
    depth = merged.get("depth_notional")
    bar_length = merged.get("bar_length")
    return Instrument(
        symbol=symbol,
        asset_class=asset_class,
        tier_caps=caps,
        tier_mmr=mmr,
        tier_amount=amount,
        taker_fee=_number(merged["taker_fee"], f"{where}: taker_fee", low=0.0),
        liquidation_fee=_number(merged["liquidation_fee"], f"{where}: liquidation_fee", low=0.0),
        latency_bars=_whole(merged["latency_bars"], f"{where}: latency_bars"),
        slippage_to_extreme=_number(
            merged["slippage_to_extreme"], f"{where}: slippage_to_extreme", low=0.0, high=1.0
        ),
        impact_coef=_number(merged["impact_coef"], f"{where}: impact_coef", low=0.0),
        depth_notional=None
        if depth is None
        else _number(depth, f"{where}: depth_notional", low=0.0, strict_low=True),
        bar_length=None
        if bar_length is None
        else parse_duration(bar_length, field=f"{where}: bar_length"),
        negative_prices=_flag(merged.get("negative_prices", False), f"{where}: negative_prices"),
        contract_multiplier=_number(
            merged.get("contract_multiplier", 1.0), f"{where}: contract_multiplier", low=0.0, strict_low=True
        ),
    )


def _tiers(
    value: Any, *, where: str
) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    if not isinstance(value, list) or not value:
        raise InputError(f"{where}: tiers must be a non-empty list of [notional_cap, mmr, maintenance_amount]")
    caps, mmr, amount = [], [], []
    for i, tier in enumerate(value):
        field = f"{where}: tiers[{i}]"
        if not isinstance(tier, list | tuple) or len(tier) != 3:
            raise InputError(f"{field} must be [notional_cap, mmr, maintenance_amount], got {tier!r}")
        cap = math.inf if tier[0] is None and i == len(value) - 1 else tier[0]
        caps.append(_number(cap, f"{field}.notional_cap", low=0.0, strict_low=True, finite=False))
        mmr.append(_number(tier[1], f"{field}.mmr", low=0.0, high=1.0, strict_high=True))
        amount.append(_number(tier[2], f"{field}.maintenance_amount", low=0.0))
    if any(b <= a for a, b in itertools.pairwise(caps)):
        raise InputError(f"{where}: tiers must have strictly ascending notional_cap, got {caps}")
    return tuple(caps), tuple(mmr), tuple(amount)


def _number(
    value: Any,
    field: str,
    *,
    low: float | None = None,
    high: float | None = None,
    strict_low: bool = False,
    strict_high: bool = False,
    finite: bool = True,
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{field} must be a number, got {value!r}")
    value = float(value)
    if math.isnan(value) or (finite and math.isinf(value)):
        raise InputError(f"{field} must be a finite number, got {value!r}")
    if low is not None and (value < low or (strict_low and value == low)):
        raise InputError(f"{field} must be {'>' if strict_low else '>='} {low:g}, got {value!r}")
    if high is not None and (value > high or (strict_high and value == high)):
        raise InputError(f"{field} must be {'<' if strict_high else '<='} {high:g}, got {value!r}")
    return value


def _flag(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"{field} must be true or false, got {value!r}")
    return value


def _whole(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value) or value < 0:
        raise InputError(f"{field} must be a whole number >= 0, got {value!r}")
    return int(value)
