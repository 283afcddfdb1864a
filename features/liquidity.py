"""Point-in-time daily volatility and traded notional: the inputs of the impact law.

The contract fixes the window exactly: bars with ``ts >= as_of - 30 days`` and
``ts + bar_length <= as_of``, grouped by the UTC date of ``ts``; a day's close is
its last bar's close in the window. Nothing here sees a bar that completes after
``as_of``.
"""

from dataclasses import dataclass

import numpy as np

from liqrisk.features.market import US_PER_DAY, Market, search_blocks

WINDOW_US = 30 * US_PER_DAY
# the most days a window touches: the width of every row of daily closes, whatever the batch,
# so that a row's σ_d is summed in the same order alone or beside longer rows (a batch-wide
# width made an account's features differ in the last bits between a batch and alone)
_WINDOW_DAYS = WINDOW_US // US_PER_DAY + 1


@dataclass(frozen=True)
class ImpactInputs:
    """Per (symbol, as_of): daily σ, daily traded notional, the last close and what went wrong.

    ``problem`` is ``""`` where the inputs are defined, else the reason (the caller
    adds the account and symbol). ``last`` is the flat index of the last bar complete
    at or before as_of (``-1`` if none).
    """

    sigma_d: np.ndarray
    notional_d: np.ndarray
    has_volume: np.ndarray
    last: np.ndarray
    problem: np.ndarray


def impact_inputs(market: Market, sym: np.ndarray, as_of_us: np.ndarray) -> ImpactInputs:
    """σ_d, V_d (from volume; the caller falls back to ``depth_notional``) and the last close index.

    Computed once per distinct (symbol, as_of): snapshots on a time grid share them. A call of
    at most :data:`REMEMBERED_CALL` pairs (a service scoring a few accounts) reads and keeps
    each pair's inputs in the market (``Market.derived``; a market's bars never change): the
    same symbols are scored at the same latest bar request after request.
    """
    if len(sym) <= 1:  # nothing to share (and a sort costs more than one position's inputs)
        return _distinct_inputs(market, sym, as_of_us)
    order = np.lexsort((as_of_us, sym))
    s, t = sym[order], as_of_us[order]
    first_of_pair = np.r_[True, (s[1:] != s[:-1]) | (t[1:] != t[:-1])]
    inverse = np.empty(len(sym), dtype=np.int64)
    inverse[order] = np.cumsum(first_of_pair) - 1
    distinct = _distinct_inputs(market, s[first_of_pair], t[first_of_pair])
    return ImpactInputs(**{name: getattr(distinct, name)[inverse] for name in _FIELDS})


REMEMBERED_CALL = 16  # pairs: a larger call (a dataset build) computes them all at once
REMEMBERED_PAIRS = 4096  # pairs kept per market, at most (then forgotten all at once)
_FIELDS = tuple(ImpactInputs.__dataclass_fields__)


def _distinct_inputs(market: Market, sym: np.ndarray, as_of_us: np.ndarray) -> ImpactInputs:
    """The inputs of distinct pairs: read back and kept for a few, computed for many."""
    if 0 < len(sym) <= REMEMBERED_CALL:
        return _remembered(market, sym, as_of_us)
    return _impact_inputs(market, sym, as_of_us)


def _remembered(market: Market, sym: np.ndarray, as_of_us: np.ndarray) -> ImpactInputs:
    """:func:`_impact_inputs` of distinct pairs, each computed once per market and kept as its
    one-row arrays (so the rows put together have the computed dtypes and bits)."""
    kept: dict[tuple[int, int], tuple[np.ndarray, ...]] = market.derived.setdefault("impact_inputs", {})
    keys = list(zip(sym.tolist(), as_of_us.tolist(), strict=True))
    rows = [kept.get(key) for key in keys]  # read once: another thread may forget them meanwhile
    missing = [i for i, row in enumerate(rows) if row is None]
    if missing:
        fresh = _impact_inputs(market, sym[missing], as_of_us[missing])
        if len(kept) + len(missing) > REMEMBERED_PAIRS:
            kept.clear()
        for j, i in enumerate(missing):
            rows[i] = kept[keys[i]] = tuple(getattr(fresh, name)[j : j + 1] for name in _FIELDS)
    if len(rows) == 1:  # copies: the kept arrays must not change with what a caller does
        return ImpactInputs(*(part.copy() for part in rows[0]))
    return ImpactInputs(*(np.concatenate(parts) for parts in zip(*rows, strict=True)))


def _impact_inputs(market: Market, sym: np.ndarray, as_of_us: np.ndarray) -> ImpactInputs:
    first = search_blocks(market, market.ts, sym, as_of_us - WINDOW_US, side="left")
    end = search_blocks(market, market.done, sym, as_of_us, side="right")
    start = market.start[sym]
    last = np.where(end > start, end - 1, -1)
    in_window = end > first
    safe_last = np.where(in_window, end - 1, 0)
    safe_first = np.where(in_window, first, 0)
    n_days = np.where(in_window, market.day[safe_last] - market.day[safe_first] + 1, 0)

    closes = _daily_closes(market, safe_first, safe_last, n_days)
    non_positive = np.any(closes <= 0, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        returns = np.diff(np.log(closes), axis=1)
    enough = n_days >= 3
    sigma = np.full(len(sym), np.nan)
    ok = enough & ~non_positive
    if ok.any():
        sigma[ok] = np.nanstd(returns[ok], axis=1, ddof=1)

    notional_sum = _through(market, end, start) - _through(market, first, start)
    volume_bars = market.volume_bars_cum[end] - market.volume_bars_cum[first]
    with np.errstate(divide="ignore", invalid="ignore"):
        notional_d = np.where(n_days > 0, notional_sum / np.maximum(n_days, 1), np.nan)

    problem = np.full(len(sym), "", dtype=object)
    problem[~enough] = [
        f"insufficient history: {max(int(n) - 1, 0)} daily return(s) in the 30 days before as_of, 2 needed"
        for n in n_days[~enough]
    ]
    problem[enough & non_positive] = "a daily close <= 0 in the 30 days before as_of leaves sigma_d undefined"
    no_bar = market.bar_us[sym] <= 0
    problem[no_bar] = "bar_length unknown (a single bar): give bar_length in the instruments file"
    return ImpactInputs(
        sigma_d=sigma, notional_d=notional_d, has_volume=volume_bars > 0, last=last, problem=problem
    )


def _through(market: Market, index: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Sum of ``close·volume`` of the block's bars before ``index`` (0 at the block's start)."""
    if not len(market.notional_cum):
        return np.zeros(len(index))
    return np.where(index > start, market.notional_cum[np.maximum(index - 1, 0)], 0.0)


def _daily_closes(market: Market, first: np.ndarray, last: np.ndarray, n_days: np.ndarray) -> np.ndarray:
    """Rows of daily closes (NaN-padded on the right), the last day's close from the last bar in the window.

    Days before the last are whole inside the window (bars are sorted), so their
    close is the day's own last close.
    """
    width = max(int(n_days.max()) if len(n_days) else 0, _WINDOW_DAYS)
    offsets = np.arange(width)
    day_index = market.day[first][:, None] + offsets[None, :]
    valid = offsets[None, :] < n_days[:, None]
    closes = np.where(valid, market.day_close[np.where(valid, day_index, 0)], np.nan)
    has_days = n_days > 0
    rows = np.flatnonzero(has_days)
    closes[rows, n_days[rows] - 1] = market.close[last[rows]]
    return closes
