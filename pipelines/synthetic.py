"""Seeded synthetic account snapshots for the main job and benchmarks.

A thin front to the generator (``liqrisk.pipelines.generator``): its documented
distributions (docs/generator.md) with a fixed number of positions per account and
one margin mode, the call that ``liqrisk run``, ``bench/bench_replay.py`` and the
tests have always made.
"""

from collections.abc import Mapping
from dataclasses import replace

import pandas as pd

from liqrisk.features.instruments import Instrument, instrument_from_dict
from liqrisk.features.market import Market
from liqrisk.pipelines.generator import GeneratorConfig, generate_accounts


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
    instruments: Mapping[str, Instrument] | None = None,
) -> pd.DataFrame:
    """Positions of ``n_accounts`` seeded accounts: ``POSITION_COLUMNS``, then ``account_id``
    and the generator's metadata (the engine ignores them).

    Each account holds ``positions_per_account`` distinct symbols of one asset class
    and quote currency (fewer where fewer have history at its ``as_of``) in
    ``margin_mode``. ``as_of`` lies on a bar open with 31 days of history before it and
    the horizon after it. ``instruments`` gives the tiers that cap leverage; without
    it each symbol takes its asset class's defaults.
    """
    if margin_mode not in ("isolated", "cross"):
        raise ValueError(f"margin_mode must be 'isolated' or 'cross', got {margin_mode!r}")
    if positions_per_account < 1:
        raise ValueError(f"positions_per_account must be >= 1, got {positions_per_account}")
    if instruments is None:
        instruments = {
            s: instrument_from_dict(s, {"asset_class": c}) for s, c in asset_class.items()
        }
    else:
        instruments = {s: i for s, i in instruments.items() if s in asset_class}
    counts = [0.0] * (positions_per_account - 1) + [1.0]
    mode = {"positions": counts, "cross_share": 1.0 if margin_mode == "cross" else 0.0}
    config = GeneratorConfig.from_dict(
        {"classes": {c: dict(mode) for c in set(asset_class.values())}}
    )
    config = replace(config, horizon=pd.Timedelta(horizon))
    return generate_accounts(
        market, instruments, config, n_accounts=n_accounts, seed=seed, symbols=symbols
    )
