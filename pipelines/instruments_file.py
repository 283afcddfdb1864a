"""Instruments JSON: ``{symbol: {asset_class, tiers, ...}}``, keys left out from asset-class defaults."""

from pathlib import Path

from liqrisk.features.instruments import InstrumentsFile, instruments_from_json

__all__ = ["InstrumentsFile", "read_instruments"]


def read_instruments(path: Path) -> InstrumentsFile:
    """Read and validate an instruments file; a bad entry never stops the others.

    Raises ``InputError`` only when the file as a whole is unusable (not JSON, not an object).
    """
    path = Path(path)
    return instruments_from_json(path.read_text(), source=str(path), name=path.name)
