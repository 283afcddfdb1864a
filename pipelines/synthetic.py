"""Seeded synthetic account snapshots over real bars, for the main job and benchmarks.

A plain first sampler: symbol uniform, ``as_of`` on a bar open with 31 days of
history before it and the horizon after it, side 50/50, leverage log-uniform up
to the asset class's cap, entry at a close 0-7 days before ``as_of``. Real
position books are private; the distributions here are stated, not fitted.
"""

import numpy as np
import pandas as pd

from liqrisk.features.market import US_PER_DAY, Market, search_blocks

# Highest leverage a venue or regulator allows per asset class (docs/instruments.md).
MAX_LEVERAGE = {"crypto": 125.0, "fx": 30.0, "index": 20.0, "commodity": 10.0, "equity": 4.0}


def sample_positions(
    market: Market,
    asset_class: dict[str, str],
    *,
    n_accounts: int,
    horizon: pd.Timedelta,
    seed: int,
    positions_per_account: int = 1,
    margin_mode: str = "isolated",
    symbols: tuple[str, ...] = (),
) -> pd.DataFrame:
    """Positions of ``n_accounts`` seeded accounts, in the engine's ``POSITION_COLUMNS`` layout.

    Symbols (from ``symbols``, or all) whose history is shorter than 31 days plus the
    horizon are never drawn. ``as_of`` lies inside the first position's history; the
    other positions of a cross account share it, so a symbol without history there
    makes the account an error (insufficient history), as it would for a user.
    """
    rng = np.random.default_rng(seed)
    horizon_us = int(horizon // pd.Timedelta(microseconds=1))
    pool = np.array([market.symbols.index(s) for s in symbols]) if symbols else np.arange(len(market.symbols))
    span = market.ts[market.stop[pool] - 1] - market.ts[market.start[pool]]
    usable = pool[
        (span > 31 * US_PER_DAY + horizon_us)
        & np.array([market.symbols[s] in asset_class for s in pool], dtype=bool)
        & (market.bar_us[pool] > 0)
    ]
    if usable.size == 0:
        raise ValueError("no symbol has 31 days of history plus the horizon")
    k = positions_per_account
    anchor = rng.choice(usable, n_accounts)
    first = market.ts[market.start[anchor]]
    lo = search_blocks(market, market.ts, anchor, first + 31 * US_PER_DAY)
    hi = search_blocks(market, market.ts, anchor, market.ts[market.stop[anchor] - 1] - horizon_us)
    as_of = market.ts[lo + (rng.random(n_accounts) * np.maximum(hi - lo, 1)).astype(np.int64)]

    account = np.repeat(np.arange(n_accounts), k)
    as_of_p = np.repeat(as_of, k)
    sym = np.where(
        np.arange(n_accounts * k) % k == 0, np.repeat(anchor, k), rng.choice(usable, n_accounts * k)
    )
    last = np.maximum(search_blocks(market, market.done, sym, as_of_p, side="right") - 1, market.start[sym])
    entry_back = (rng.random(n_accounts * k) * 7 * US_PER_DAY).astype(np.int64)
    entry_index = np.maximum(
        search_blocks(market, market.done, sym, as_of_p - entry_back, side="right") - 1, market.start[sym]
    )
    entry = np.abs(market.close[entry_index])
    cap = np.array([MAX_LEVERAGE[asset_class.get(s, "equity")] for s in market.symbols])[sym]
    leverage = np.exp(rng.uniform(0.0, np.log(cap)))
    notional = np.exp(rng.normal(np.log(10_000.0), 1.5, n_accounts * k))
    qty = notional / np.maximum(np.abs(market.close[last]), 1e-12)
    collateral = notional / leverage
    if margin_mode == "cross":
        collateral = np.repeat(np.bincount(account, weights=collateral), k)
    return pd.DataFrame(
        {
            "account": account,
            "as_of": pd.to_datetime(as_of_p, unit="us", utc=True),
            "margin_mode": margin_mode,
            "collateral": collateral,
            "symbol": np.array(market.symbols, dtype=object)[sym],
            "side": rng.choice(np.array([-1, 1], dtype=np.int8), n_accounts * k),
            "qty": qty,
            "entry_price": entry,
        }
    )
