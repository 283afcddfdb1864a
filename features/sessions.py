"""Point-in-time closures of one symbol: past gaps across them, and the next one ahead.

Gaps (per bar, :func:`gap_features`)
    A gap is a step between bar opens longer than the bar length
    (``liqrisk.features.calendar.find_gaps``); its size is
    ``|open[next] / close[prev] - 1|`` (``gap_jumps``, NaN where the previous close
    is <= 0). A gap is known when the bar after it completes. Every gap counts,
    whatever ``find_gaps`` calls it: its ``kind`` is decided from the whole series
    (which future bars can change), so it is not point-in-time, while a gap's
    existence and size depend only on the two bars around it. With history
    covering the window but no gap in it, sizes are 0 (a market that never closes
    has no gap risk), not NaN.

The next closure (per as_of, :func:`closure_features`)
    Learnt from the symbol's own bars, no exchange calendar: an hour is *occupied*
    when some bar overlaps it. At ``as_of`` only the hours whose every possible bar
    has completed are used (hour ``h`` with ``h + 1h + bar_length <= as_of``; the
    last of them is ``e``). Hour ``g`` of the week is scheduled open when it was
    occupied in at least half of its last ``SCHEDULE_WEEKS`` occurrences up to
    ``g``; the schedule of the week ``(e - 168h, e]`` is then repeated forward from
    ``as_of`` to find the next scheduled-closed hour and how many closed hours follow
    it (the expected length of that closure). Hour granularity: a closure at 21:30
    shows as 22:00 (its first wholly empty hour). Holidays are not predicted (they
    are rare in 8 weeks, so the majority vote ignores them); a new summer/winter
    time moves the schedule after about four weeks. A symbol open every hour (crypto)
    has ``never_closes = 1`` and NaN time and length to the next closure.
"""

import numpy as np
import pandas as pd

from liqrisk.features._windows import (
    DAY,
    as_us,
    covered,
    mask,
    symbol_bars,
    window_count,
    window_max,
    window_start,
    window_sum,
)
from liqrisk.features.calendar import find_gaps, gap_jumps
from liqrisk.features.market import to_us

GAP_WINDOWS: dict[str, pd.Timedelta] = {"90d": 90 * DAY, "1y": 365 * DAY}
SCHEDULE_WEEKS = 8
HOUR_US = 3_600_000_000
WEEK_H = 168

GAP_FEATURES: dict[str, str] = {
    **{
        f"gap_count_{n}": f"number of gaps between bars (market closures, outages) in the last {n}"
        for n in GAP_WINDOWS
    },
    **{
        f"gap_mean_abs_{n}": f"mean |open / previous close - 1| over the gaps of the last {n} (0 if none)"
        for n in GAP_WINDOWS
    },
    **{
        f"gap_max_abs_{n}": f"largest |open / previous close - 1| of the gaps of the last {n} (0 if none)"
        for n in GAP_WINDOWS
    },
}
CLOSURE_FEATURES: dict[str, str] = {
    "last_bar_age_h": "hours from the end of the last complete bar to as_of",
    "closed_now": "1 if as_of falls in an hour the learnt weekly schedule has closed, else 0",
    "next_closure_in_h": "hours from as_of to the next scheduled closure (0 if closed now; NaN if none)",
    "next_closure_len_h": "scheduled length in hours of that closure (what remains if closed now; NaN if none)",
    "never_closes": "1 if no hour of the learnt weekly schedule is closed (e.g. crypto), else 0",
}


def gap_features(bars: pd.DataFrame, *, bar_length: pd.Timedelta) -> pd.DataFrame:
    """Count and size of the gaps of the last 90 days and year, per bar (see the module docstring).

    Row ``i`` is known when bar ``i`` completes: the gaps whose next bar lies wholly
    in ``[done[i] - window, done[i]]``.

    Parameters
    ----------
    bars : DataFrame
        One symbol, sorted by ``ts`` (bar open, datetime64 UTC), with ``open``, ``close``.
    bar_length : Timedelta

    Returns
    -------
    DataFrame aligned with ``bars``, float64 columns in ``GAP_FEATURES`` order; NaN
    until the history covers the window.
    """
    b = symbol_bars(bars, bar_length)
    gaps = find_gaps(b.ts, bar_length)
    after = gaps["next"].to_numpy(dtype=np.int64)
    is_gap = np.zeros(len(b), bool)
    is_gap[after] = True
    size = np.full(len(b), np.nan)
    size[after] = np.abs(gap_jumps(b.open, b.close, gaps))
    out = {}
    for name, window in GAP_WINDOWS.items():
        w = as_us(window)
        start, seen = window_start(b, w), covered(b, w)
        count = window_count(is_gap, start)
        sized = window_count(np.isfinite(size), start)
        none = np.where(count == 0, 0.0, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.where(sized > 0, window_sum(size, start) / sized, none)
        out[f"gap_count_{name}"] = mask(count.astype(float), seen)
        out[f"gap_mean_abs_{name}"] = mask(mean, seen)
        out[f"gap_max_abs_{name}"] = mask(np.where(sized > 0, window_max(size, start), none), seen)
    return pd.DataFrame(out, index=bars.index, columns=list(GAP_FEATURES))


def closure_features(
    bars: pd.DataFrame, as_of: pd.Series, *, bar_length: pd.Timedelta
) -> pd.DataFrame:
    """Age of the last bar and the next scheduled closure, as known at each ``as_of``.

    Only bars complete at or before ``as_of`` (``ts + bar_length <= as_of``) are used.

    Parameters
    ----------
    bars : DataFrame
        One symbol, sorted by ``ts`` (bar open, datetime64 UTC).
    as_of : Series of datetime64 UTC
        Any order; the result shares its index. NaT gives a row of NaN.
    bar_length : Timedelta

    Returns
    -------
    DataFrame aligned with ``as_of``, float64 columns in ``CLOSURE_FEATURES`` order.
        The schedule columns are NaN until the history spans ``SCHEDULE_WEEKS`` weeks
        of fully known hours before as_of.
    """
    out = pd.DataFrame(np.nan, index=as_of.index, columns=list(CLOSURE_FEATURES))
    b = symbol_bars(bars, bar_length)
    known = as_of.notna().to_numpy()
    if len(b) == 0 or not known.any():
        return out
    t = to_us(as_of[known])
    last = np.searchsorted(b.done, t, side="right") - 1
    age = np.where(last >= 0, (t - b.done[np.maximum(last, 0)]) / HOUR_US, np.nan)
    out.loc[known, "last_bar_age_h"] = age
    out.loc[known, list(CLOSURE_FEATURES)[1:]] = _next_closure(b.ts, b.bar_us, t)
    return out


def _next_closure(ts: np.ndarray, bar_us: int, t: np.ndarray) -> np.ndarray:
    """Columns closed_now, next_closure_in_h, next_closure_len_h, never_closes for times ``t``."""
    out = np.full((len(t), 4), np.nan)
    h_min = ts[0] // HOUR_US
    e = (t - bar_us) // HOUR_US - 1  # last hour whose every bar has completed by t
    # every hour of the week ending at e needs its SCHEDULE_WEEKS occurrences in the history
    ok = e - WEEK_H * SCHEDULE_WEEKS + 1 >= h_min
    if not ok.any():
        return out
    h_last = (ts[-1] + bar_us - 1) // HOUR_US
    top = min(int(e[ok].max()), int(h_last) + WEEK_H * (SCHEDULE_WEEKS + 1))  # beyond: all closed
    open_ = _scheduled_open(_occupied(ts, bar_us, h_min, top))
    t, e = t[ok], np.minimum(e[ok], top) - h_min
    next_closed, next_open = _next_index(~open_), _next_index(open_)

    h0 = t // HOUR_US - h_min  # the hour of as_of, mapped into the week ending at e
    first = e - WEEK_H + 1
    p = first + (h0 - first) % WEEK_H
    ahead = next_closed[p] <= e
    wrapped = next_closed[first] <= e
    start = np.where(ahead, next_closed[p], next_closed[first])
    offset = np.where(ahead, start - p, e - p + 1 + start - first)
    closes = ahead | wrapped
    start = np.where(closes, start, first)
    run = np.minimum(next_open[start], e + 1) - start
    wraps = (next_open[start] > e) & (start > first)
    run = run + np.where(wraps, np.minimum(next_open[first], start) - first, 0)

    begins = (h0 + h_min + offset) * HOUR_US  # start of the closure (this hour when closed now)
    closed_now = closes & (offset == 0)
    wait = np.where(closed_now, 0.0, (begins - t) / HOUR_US)
    length = np.where(closed_now, (begins + run * HOUR_US - t) / HOUR_US, run.astype(float))
    out[ok, 0] = closed_now.astype(float)
    out[ok, 1] = np.where(closes, wait, np.nan)
    out[ok, 2] = np.where(closes, length, np.nan)
    out[ok, 3] = (~closes).astype(float)
    return out


def _occupied(ts: np.ndarray, bar_us: int, h_min: int, h_top: int) -> np.ndarray:
    """Whether some bar overlaps each hour ``h_min..h_top``."""
    n = int(h_top - h_min + 1)
    first = np.clip(ts // HOUR_US - h_min, 0, n)
    last = np.clip((ts + bar_us - 1) // HOUR_US - h_min + 1, 0, n)
    edges = np.bincount(first, minlength=n + 1) - np.bincount(last, minlength=n + 1)
    return np.cumsum(edges[:n]) > 0


def _scheduled_open(occupied: np.ndarray) -> np.ndarray:
    """Whether each hour was occupied in at least half of its last ``SCHEDULE_WEEKS`` weekly occurrences."""
    n, pad = len(occupied), WEEK_H * SCHEDULE_WEEKS
    tail = (-(pad + n)) % WEEK_H
    chained = np.concatenate([np.zeros(pad, np.int64), occupied, np.zeros(tail, np.int64)])
    cum = np.cumsum(
        chained.reshape(-1, WEEK_H), axis=0
    ).ravel()  # cum[h] = sum of occupied[h - 168k]
    count = cum[pad : pad + n] - cum[:n]
    return 2 * count >= SCHEDULE_WEEKS


def _next_index(flag: np.ndarray) -> np.ndarray:
    """Index of the first true ``flag`` at or after each position (``len(flag)`` if none)."""
    n = len(flag)
    candidates = np.where(flag, np.arange(n), n)
    return np.append(np.minimum.accumulate(candidates[::-1])[::-1], n)
