"""Gaps in one symbol's bars: where the market was closed, and whether that was expected.

A *gap* is a step between consecutive bar opens longer than the bar length; the
market was closed (or the data has a hole) from the previous bar's end
(``ts + bar_length``) to the next bar's open. Gaps are where accounts go negative
(liquidation contract, "Inputs"), so the data check reports them.

Which closures are expected is decided without an exchange calendar, simply:

- ``weekend``: the closed period overlaps a Saturday (UTC) and lasts at most
  4 days (a weekend plus a holiday or two next to it; FX, futures and stocks all
  close over Saturday in UTC).
  A symbol with bars on Saturdays (at least ``WEEKEND_TRADING_SHARE`` of its bars,
  e.g. crypto) trades every day: it has no weekend or holiday closures.
- ``holiday``: for daily or longer bars, any other closure of at most 2 days (one or
  two non-trading days, e.g. Thanksgiving, Christmas and Boxing Day); for intraday
  bars, a closure of at most 2 days that overlaps 25 December or 1 January (UTC),
  the days when FX and most other markets close.
- ``session break`` (intraday bars): a closure shorter than a day that starts at a
  UTC time of day where the symbol's closures recur: on at least
  ``MIN_BREAK_DAYS`` days and ``BREAK_SHARE`` of the days with bars (daily breaks
  of index and commodity CFDs; a summer and a winter time both qualify).
- ``hole``: anything else (an outage, missing data): unexpected.

For daily or longer bars a step at most one hour longer than the bar length is
not a gap: sessions anchored in local time move by an hour at DST changes.
"""

import numpy as np
import pandas as pd

DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000
WEEKEND_MAX_US = 4 * DAY_US
HOLIDAY_MAX_US = 2 * DAY_US
MIN_BREAK_DAYS = 5
BREAK_SHARE = 0.10
WEEKEND_TRADING_SHARE = 1 / 14  # half the share of bars a 7-day market has on Saturdays
_SATURDAY = 5  # Monday = 0; 1970-01-01 (day 0) was a Thursday (3)

GAP_COLUMNS = ("prev", "next", "closed_from", "closed_to", "closed", "kind", "expected")


def find_gaps(ts_us: np.ndarray, bar_length: pd.Timedelta) -> pd.DataFrame:
    """Every gap in one symbol's sorted bar opens, classified (see the module docstring).

    Parameters
    ----------
    ts_us : array of int64
        One symbol's bar open times, microseconds since the epoch (UTC), sorted.
    bar_length : Timedelta

    Returns
    -------
    DataFrame, one row per gap in time order
        ``prev``, ``next`` (positions in ``ts_us`` of the bars around the gap),
        ``closed_from`` (previous bar's end), ``closed_to`` (next bar's open), both
        ``datetime64[us, UTC]``; ``closed`` (Timedelta, ``closed_to - closed_from``);
        ``kind`` (``weekend``, ``holiday``, ``session break`` or ``hole``);
        ``expected`` (every kind but ``hole``).
    """
    ts_us = np.asarray(ts_us, dtype=np.int64)
    length_us = int(pd.Timedelta(bar_length) // pd.Timedelta(microseconds=1))
    daily = length_us >= DAY_US
    closed = np.diff(ts_us) - length_us
    nexts = np.flatnonzero(closed > (HOUR_US if daily else 0)) + 1
    closed_from = ts_us[nexts - 1] + length_us
    closed_to = ts_us[nexts]
    length = closed_to - closed_from

    closes = not _trades_weekends(ts_us)
    weekend = _overlaps_saturday(closed_from, closed_to) & (length <= WEEKEND_MAX_US) & closes
    holiday = ~weekend & (length <= HOLIDAY_MAX_US) & closes
    if not daily:
        holiday &= _overlaps_new_year_or_christmas(closed_from, closed_to)
    short = ~weekend & ~holiday & (length < DAY_US)
    session_break = short & _recurring_start(closed_from, short, ts_us)
    kind = np.select(
        [weekend, holiday, session_break], ["weekend", "holiday", "session break"], default="hole"
    )

    return pd.DataFrame(
        {
            "prev": nexts - 1,
            "next": nexts,
            "closed_from": _utc(closed_from),
            "closed_to": _utc(closed_to),
            "closed": pd.to_timedelta(length, unit="us").as_unit("us"),
            "kind": pd.array(kind, dtype="str"),
            "expected": kind != "hole",
        },
        columns=list(GAP_COLUMNS),
    )


def gap_jumps(open_: np.ndarray, close: np.ndarray, gaps: pd.DataFrame) -> np.ndarray:
    """Relative move across each gap: ``open[next] / close[prev] - 1``.

    NaN where the previous close is not above zero (a relative move is meaningless
    there, e.g. WTI in April 2020).
    """
    before = np.asarray(close, dtype=np.float64)[gaps["prev"].to_numpy(dtype=np.int64)]
    after = np.asarray(open_, dtype=np.float64)[gaps["next"].to_numpy(dtype=np.int64)]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(before > 0, after / before - 1.0, np.nan)


def _utc(us: np.ndarray) -> pd.Series:
    return pd.Series(pd.to_datetime(us, unit="us", utc=True)).dt.as_unit("us")


def _overlaps_saturday(start_us: np.ndarray, end_us: np.ndarray) -> np.ndarray:
    """Whether ``[start, end)`` shares any instant with a Saturday (UTC)."""
    day = np.floor_divide(start_us, DAY_US)
    weekday = (day + 3) % 7
    saturday_start = (day + (_SATURDAY - weekday) % 7) * DAY_US  # this or the next Saturday
    return np.maximum(start_us, saturday_start) < end_us


def _trades_weekends(ts_us: np.ndarray) -> bool:
    if ts_us.size == 0:
        return False
    saturday = (np.floor_divide(ts_us, DAY_US) + 3) % 7 == _SATURDAY
    return bool(saturday.mean() >= WEEKEND_TRADING_SHARE)


def _overlaps_new_year_or_christmas(start_us: np.ndarray, end_us: np.ndarray) -> np.ndarray:
    """Whether ``[start, end)`` (at most 2 days long) touches 25 December or 1 January (UTC)."""
    out = np.zeros(len(start_us), bool)
    first_day = np.floor_divide(start_us, DAY_US)
    for k in range(3):
        day = first_day + k
        date = day.astype("datetime64[D]")
        month_start = date.astype("datetime64[M]")
        month = month_start.astype(np.int64) % 12 + 1
        dom = (date - month_start).astype(np.int64) + 1
        special = ((month == 12) & (dom == 25)) | ((month == 1) & (dom == 1))
        out |= special & (day * DAY_US < end_us)
    return out


def _recurring_start(start_us: np.ndarray, candidates: np.ndarray, ts_us: np.ndarray) -> np.ndarray:
    """Whether each closure starts at a UTC time of day where closures recur (a daily break)."""
    if not candidates.any():
        return np.zeros(len(start_us), bool)
    time_of_day = np.mod(start_us, DAY_US)
    values, counts = np.unique(time_of_day[candidates], return_counts=True)
    days = np.unique(np.floor_divide(ts_us, DAY_US)).size
    recurring = values[counts >= max(MIN_BREAK_DAYS, BREAK_SHARE * days)]
    return np.isin(time_of_day, recurring)
