"""Durations as the contract writes them (``90m``, ``24h``, ``7d``) and bar-length inference."""

import re

import numpy as np
import pandas as pd

from liqrisk.features.errors import InputError

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")


def parse_duration(text: str, *, field: str = "duration") -> pd.Timedelta:
    """An integer and a unit (``s``, ``m`` for minutes, ``h``, ``d``, ``w``) as a Timedelta.

    The unit is pinned to microseconds, the project's one timestamp unit.
    """
    match = _DURATION.match(str(text))
    if match is None or int(match.group(1)) <= 0:
        raise InputError(
            f"{field}: expected a positive integer and a unit s, m, h, d or w "
            f"(e.g. 90m, 24h, 7d), got {text!r}"
        )
    value, unit = int(match.group(1)), match.group(2)
    return pd.Timedelta(**{_UNITS[unit]: value}).as_unit("us")


def format_duration(value: pd.Timedelta) -> str:
    """The contract's notation for a duration (``7d``, ``90m``): the largest unit that divides it.

    ``parse_duration(format_duration(d)) == d`` for every positive whole number of seconds.
    """
    us = int(pd.Timedelta(value) // pd.Timedelta(microseconds=1))
    for unit, size in (("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        if us and us % (size * 1_000_000) == 0:
            return f"{us // (size * 1_000_000)}{unit}"
    return str(value)


def infer_bar_length(ts_us: np.ndarray) -> pd.Timedelta | None:
    """The most common step between consecutive bar opens; a tie goes to the smaller step.

    ``ts_us`` holds one symbol's sorted open times as int64 microseconds. ``None``
    when there are fewer than two bars (nothing to infer from).
    """
    steps = np.diff(np.asarray(ts_us, dtype=np.int64))
    steps = steps[steps > 0]
    if steps.size == 0:
        return None
    values, counts = np.unique(steps, return_counts=True)  # values ascending: argmax takes the smaller on a tie
    return pd.Timedelta(int(values[np.argmax(counts)]), unit="us")
