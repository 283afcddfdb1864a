"""OUTCOMES.csv exactly as the replay interface writes it."""

import csv
import math
from pathlib import Path

import pandas as pd

from liqrisk.features.replay import OUTCOME_COLUMNS

OUTCOMES_HEADER = ("account_id", "as_of", *OUTCOME_COLUMNS)


def write_outcomes(outcomes: pd.DataFrame, path: Path) -> None:
    """One row per account in order: ``true``/``false``, ISO 8601 ``Z`` times, empty where n/a."""
    columns = [outcomes[c].tolist() for c in OUTCOMES_HEADER]
    formats = {
        "as_of": iso_utc,
        "trigger_ts": iso_utc,
        "liquidated": _boolean,
        "negative": _boolean,
        "shortfall": _number,
        "e_close": _number,
        "e_final": _number,
        "time_to_liquidation_s": _number,
    }
    for i, name in enumerate(OUTCOMES_HEADER):
        if name in formats:
            columns[i] = [formats[name](v) for v in columns[i]]
    with Path(path).open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(OUTCOMES_HEADER)
        writer.writerows(zip(*columns))


def iso_utc(value: object) -> str:
    """``2020-03-12T10:00:00Z`` (fractions of a second only where there are some)."""
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return ""
    ts = pd.Timestamp(value).tz_convert("UTC")
    text = ts.strftime("%Y-%m-%dT%H:%M:%S")
    if ts.microsecond:
        text += f".{ts.microsecond:06d}".rstrip("0")
    return text + "Z"


def _boolean(value: object) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    return "true" if value else "false"


def _number(value: object) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    number = float(value)
    return str(int(number)) if number.is_integer() and abs(number) < 1e15 else repr(number)
