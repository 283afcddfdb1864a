"""OUTCOMES.csv exactly as the replay interface writes it."""

import csv
import math
from pathlib import Path

import pandas as pd

from liqrisk.features.replay import OUTCOME_COLUMNS

OUTCOMES_HEADER = ("account_id", "as_of", *OUTCOME_COLUMNS)


def write_outcomes(outcomes: pd.DataFrame, path: Path) -> None:
    """One row per account in order: ``true``/``false``, ISO 8601 ``Z`` times, empty where n/a."""
    formats = {
        "as_of": iso_utc,
        "trigger_ts": iso_utc,
        "liquidated": lambda c: [_boolean(v) for v in c],
        "negative": lambda c: [_boolean(v) for v in c],
        "shortfall": lambda c: [_number(v) for v in c],
        "e_close": lambda c: [_number(v) for v in c],
        "e_final": lambda c: [_number(v) for v in c],
        "time_to_liquidation_s": lambda c: [_number(v) for v in c],
    }
    columns = [formats[c](outcomes[c]) if c in formats else outcomes[c].tolist() for c in OUTCOMES_HEADER]
    with Path(path).open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(OUTCOMES_HEADER)
        writer.writerows(zip(*columns))


def iso_utc(values: pd.Series) -> list[str]:
    """``2020-03-12T10:00:00Z`` per value (fractions of a second only where there are some), ``""`` for NaT."""
    ts = pd.to_datetime(values, utc=True)
    text = ts.dt.strftime("%Y-%m-%dT%H:%M:%S")
    micro = ts.dt.microsecond.fillna(0).astype("int64")
    fraction = ("." + micro.map("{:06d}".format).str.rstrip("0")).where(micro > 0, "")
    return (text + fraction + "Z").where(ts.notna(), "").tolist()


def _boolean(value: object) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    return "true" if value else "false"


def _number(value: object) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    number = float(value)
    return str(int(number)) if number.is_integer() and abs(number) < 1e15 else repr(number)
