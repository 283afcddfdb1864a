"""Point-in-time market features for (symbol, as_of) keys: the bar-level families joined as of.

Each symbol's bar-level features are computed once (:func:`bar_features`: row ``i``
is what is known when bar ``i`` completes), then each key takes the row of the last
bar complete at or before its ``as_of`` (``merge_asof`` on completion time
``ts + bar_length``, both sides pinned to ``datetime64[us, UTC]``). A bar that opens
before ``as_of`` but completes after it is not seen. The as_of-dependent closure
features (``liqrisk.features.sessions.closure_features``) are added per key.

Bar-level values are as of the last complete bar, not as of ``as_of``: over a
weekend they are Friday's. ``last_bar_age_h`` says how stale they are.
"""

from collections.abc import Mapping

import numpy as np
import pandas as pd

from liqrisk.features.activity import ACTIVITY_FEATURES, activity_features
from liqrisk.features.durations import infer_bar_length
from liqrisk.features.jumps import JUMP_FEATURES, jump_features
from liqrisk.features.market import to_us
from liqrisk.features.sessions import CLOSURE_FEATURES, GAP_FEATURES, closure_features, gap_features
from liqrisk.features.trend import TREND_FEATURES, trend_features
from liqrisk.features.volatility import VOLATILITY_FEATURES, volatility_features

BAR_FEATURES: dict[str, str] = {
    **VOLATILITY_FEATURES,
    **JUMP_FEATURES,
    **GAP_FEATURES,
    **ACTIVITY_FEATURES,
    **TREND_FEATURES,
    "bar_hours": "the symbol's bar length in hours (per-bar figures such as max_abs_ret grow with it)",
}
MARKET_FEATURES: dict[str, str] = {**BAR_FEATURES, **CLOSURE_FEATURES}
_NEVER = np.iinfo(np.int64).max
_FAMILIES = (volatility_features, jump_features, gap_features, activity_features, trend_features)


def bar_features(bars: pd.DataFrame, *, bar_length: pd.Timedelta) -> pd.DataFrame:
    """Every column of ``BAR_FEATURES`` for one symbol's bars; row ``i`` is known when bar ``i`` ends.

    Parameters
    ----------
    bars : DataFrame
        One symbol, sorted by ``ts`` (bar open, datetime64 UTC), with OHLC and ``volume``.
    bar_length : Timedelta

    Returns
    -------
    DataFrame aligned with ``bars``, float64 columns in ``BAR_FEATURES`` order.
    """
    frames = [family(bars, bar_length=bar_length) for family in _FAMILIES]
    hours = pd.Timedelta(bar_length) / pd.Timedelta(hours=1)
    frames.append(pd.DataFrame({"bar_hours": np.full(len(bars), hours)}, index=bars.index))
    return pd.concat(frames, axis=1)[list(BAR_FEATURES)]


def market_features(
    bars: pd.DataFrame, bar_lengths: Mapping[str, pd.Timedelta], keys: pd.DataFrame
) -> pd.DataFrame:
    """``MARKET_FEATURES`` for each (symbol, as_of) key, from bars complete at or before as_of.

    Parameters
    ----------
    bars : DataFrame
        Many symbols (``symbol``, ``ts`` bar open datetime64 UTC, OHLC, ``volume``),
        as ``liqrisk.pipelines.bars.read_bars`` returns them; sorted here if needed.
    bar_lengths : Mapping of symbol to Timedelta
        A symbol not in it gets its inferred bar length (most common step); a symbol
        with a single bar and none given has no features.
    keys : DataFrame
        ``symbol`` and ``as_of`` (datetime64 UTC, any unit; NaT allowed), any order.

    Returns
    -------
    DataFrame aligned with ``keys`` (same index), float64 columns in
    ``MARKET_FEATURES`` order. A key whose symbol has no bars, or no bar complete
    by its as_of, gets NaN bar-level features.
    """
    names, code = _codes(bars["symbol"])
    ts = to_us(bars["ts"])
    order = np.lexsort((ts, code))
    order = order[code[order] >= 0]  # a bar without a symbol belongs to no key
    if len(order) != len(code) or not (np.diff(order) == 1).all():
        bars, code, ts = bars.iloc[order], code[order], ts[order]
    bounds = np.searchsorted(code, np.arange(len(names) + 1))
    lengths = [
        _bar_length(bar_lengths.get(s), ts[a:b]) for s, a, b in zip(names, bounds[:-1], bounds[1:])
    ]
    done = _completion(ts, bounds, lengths)

    key_code = _key_codes(keys["symbol"], names)
    as_of = pd.to_datetime(keys["as_of"], utc=True).dt.as_unit("us").reset_index(drop=True)
    row = _last_complete(done, code, key_code, as_of)

    values = np.full((len(keys), len(MARKET_FEATURES)), np.nan)
    by_symbol = np.argsort(key_code, kind="stable")
    cuts = np.searchsorted(key_code[by_symbol], np.arange(len(names) + 1))
    for c, length in enumerate(lengths):
        mine = by_symbol[cuts[c] : cuts[c + 1]]  # this symbol's keys
        if length is None or mine.size == 0:
            continue
        last = np.where(row[mine] >= 0, row[mine] - bounds[c], -1)
        one = bars.iloc[bounds[c] : bounds[c + 1]]
        values[mine] = symbol_market_features(one, as_of.iloc[mine], bar_length=length, last=last)
    return pd.DataFrame(values, index=keys.index, columns=list(MARKET_FEATURES))


def symbol_market_features(
    bars: pd.DataFrame,
    as_of: pd.Series,
    *,
    bar_length: pd.Timedelta,
    last: np.ndarray,
    table: np.ndarray | None = None,
) -> np.ndarray:
    """``MARKET_FEATURES`` of one symbol at each ``as_of``: a float64 array, one row per as_of.

    Parameters
    ----------
    bars : DataFrame
        One symbol, sorted by ``ts``, with OHLC and ``volume``.
    as_of : Series of datetime64 UTC
    bar_length : Timedelta
    last : array of int
        Per as_of, the position in ``bars`` of the last bar complete at or before it
        (``ts + bar_length <= as_of``), -1 where none: its bar-level features are NaN.
    table : array, optional
        ``bar_features(bars)`` as float64, for a caller that keeps it between calls;
        computed here (only if some as_of sees a bar) when not given.
    """
    values = np.full((len(as_of), len(MARKET_FEATURES)), np.nan)
    seen = np.flatnonzero(last >= 0)
    if seen.size:  # a symbol's bar-level features: computed once, if some key sees a bar
        if table is None:
            table = bar_features(bars, bar_length=bar_length).to_numpy(dtype=np.float64)
        values[seen, : len(BAR_FEATURES)] = table[last[seen]]
    closures = closure_features(bars, as_of, bar_length=bar_length)
    values[:, len(BAR_FEATURES) :] = closures.to_numpy(dtype=np.float64)
    return values


def _codes(symbol: pd.Series) -> tuple[list[str], np.ndarray]:
    """Symbol names and each row's code (a category's own codes, no string conversion)."""
    if isinstance(symbol.dtype, pd.CategoricalDtype):
        return [str(s) for s in symbol.cat.categories], symbol.cat.codes.to_numpy(dtype=np.int64)
    codes, names = pd.factorize(symbol, sort=True)
    return [str(s) for s in names], codes.astype(np.int64)


def _key_codes(symbol: pd.Series, names: list[str]) -> np.ndarray:
    """Each key's symbol code in ``names`` (-1 when the bars have no such symbol)."""
    key_names, key_code = _codes(symbol)
    lookup = pd.Index(names).get_indexer(key_names)
    return (
        np.where(key_code >= 0, lookup[key_code], -1)
        if len(key_names)
        else np.full(len(symbol), -1)
    )


def _bar_length(given: pd.Timedelta | None, ts: np.ndarray) -> pd.Timedelta | None:
    return pd.Timedelta(given).as_unit("us") if given is not None else infer_bar_length(ts)


def _completion(
    ts: np.ndarray, bounds: np.ndarray, lengths: list[pd.Timedelta | None]
) -> np.ndarray:
    """Each bar's completion time (us); a symbol without a bar length never completes."""
    step = [
        _NEVER if length is None else int(length // pd.Timedelta(microseconds=1))
        for length in lengths
    ]
    bar_us = np.repeat(np.array(step, dtype=np.int64), np.diff(bounds))
    return np.where(bar_us == _NEVER, _NEVER, ts + np.where(bar_us == _NEVER, 0, bar_us))


def _last_complete(
    done: np.ndarray, code: np.ndarray, key_code: np.ndarray, as_of: pd.Series
) -> np.ndarray:
    """Row of the last bar of each key's symbol complete at or before its as_of (-1 if none)."""
    usable = (key_code >= 0) & as_of.notna().to_numpy()
    left = pd.DataFrame(
        {
            "t": as_of[usable].reset_index(drop=True),
            "code": key_code[usable],
            "key": np.flatnonzero(usable),
        }
    ).sort_values("t", kind="stable")
    finite = done < _NEVER
    right = pd.DataFrame(
        {
            "t": pd.to_datetime(done[finite], unit="us", utc=True).as_unit("us"),
            "code": code[finite],
            "row": np.flatnonzero(finite),
        }
    ).sort_values("t", kind="stable")
    # merge_asof refuses mixed units (us vs ns): both sides are datetime64[us, UTC]
    joined = pd.merge_asof(
        left, right, on="t", by="code", direction="backward", allow_exact_matches=True
    )
    row = np.full(len(as_of), -1, dtype=np.int64)
    row[joined["key"].to_numpy()] = joined["row"].fillna(-1).to_numpy(dtype=np.int64)
    return row
