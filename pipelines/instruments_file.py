"""Instruments JSON: ``{symbol: {asset_class, tiers, ...}}``, keys left out from asset-class defaults."""

import json
from dataclasses import dataclass
from pathlib import Path

from liqrisk.features.errors import InputError
from liqrisk.features.instruments import Instrument, instrument_from_dict


@dataclass(frozen=True)
class InstrumentsFile:
    """Valid instruments, and for each bad entry the reason (its accounts become errors)."""

    instruments: dict[str, Instrument]
    errors: dict[str, str]


def read_instruments(path: Path) -> InstrumentsFile:
    """Read and validate an instruments file; a bad entry never stops the others.

    Raises ``InputError`` only when the file as a whole is unusable (not JSON, not an object).
    """
    try:
        raw = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected an object {{symbol: {{...}}}}, got {type(raw).__name__}")
    instruments: dict[str, Instrument] = {}
    errors: dict[str, str] = {}
    for symbol, entry in raw.items():
        try:
            instruments[symbol] = instrument_from_dict(symbol, entry)
        except InputError as exc:
            errors[symbol] = f"{path.name}: {exc}"
    return InstrumentsFile(instruments=instruments, errors=errors)
