"""Market-features benchmark: 1,000,000 (symbol, as_of) keys over every bundled bars file.

    python bench/bench_market_features.py            # 1,000,000 keys
    python bench/bench_market_features.py --keys 100000

All bars files are read and concatenated into one frame; a symbol that appears in
several files (EURUSD at 1h and 4h, BTCUSDT at 5m and 1h) is renamed
``<file stem>:<symbol>`` so each series keeps its own bar length. Keys are seeded
uniform draws of a symbol (weighted by its bar count) and an as_of between its first
and last bar. Reported: wall and CPU time of the whole ``market_features`` call (the
bar-level features of every symbol once, the as-of join, the closure features) and
keys per second; and, as a reference in the same run, a plain loop over the first
``--loop-sample`` keys that calls the same functions on each key's own bars complete
by its as_of, extrapolated. The loop's rows must equal the join's (a point-in-time
check on the real data: features of the full history at a bar equal those of the
history cut at that bar).
"""

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from liqrisk.features.market_features import MARKET_FEATURES, bar_features, market_features
from liqrisk.pipelines.bars import bar_lengths, read_bars
from liqrisk.pipelines.instruments_file import read_instruments

ROOT = Path(__file__).resolve().parents[1]
NOT_BARS = ("crypto_funding_8h.parquet",)


def load_all() -> pd.DataFrame:
    catalog = read_instruments(ROOT / "data" / "instruments.json")
    negative_ok = [s for s, i in catalog.instruments.items() if i.negative_prices]
    frames = []
    for path in sorted((ROOT / "data").glob("*.parquet")):
        if path.name in NOT_BARS:
            continue
        bars = read_bars(path, negative_ok=negative_ok).bars
        symbol = bars["symbol"].cat.rename_categories(
            [f"{path.stem}:{s}" for s in bars["symbol"].cat.categories]
        )
        frames.append(bars.assign(symbol=symbol.astype(str)))
    bars = pd.concat(frames, ignore_index=True)
    return bars.assign(symbol=bars["symbol"].astype("category"))


def sample_keys(bars: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    span = bars.groupby("symbol", observed=True)["ts"].agg(["min", "max", "size"])
    pick = rng.choice(len(span), size=n, p=span["size"] / span["size"].sum())
    lo = span["min"].dt.tz_localize(None).to_numpy(dtype="datetime64[us]").view(np.int64)[pick]
    hi = span["max"].dt.tz_localize(None).to_numpy(dtype="datetime64[us]").view(np.int64)[pick]
    t = lo + (rng.random(n) * (hi - lo)).astype(np.int64)
    return pd.DataFrame(
        {
            "symbol": pd.Categorical.from_codes(pick, categories=span.index.astype(str)),
            "as_of": pd.to_datetime(t, unit="us", utc=True).as_unit("us"),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--loop-sample", type=int, default=200, help="keys for the per-key loop")
    args = parser.parse_args()

    started = time.perf_counter()
    bars = load_all()
    lengths = {s: v for s, v in bar_lengths(bars).items() if v is not None}
    keys = sample_keys(bars, args.keys, args.seed)
    elapsed = time.perf_counter() - started
    print(f"loaded {len(bars):,} bars of {bars['symbol'].nunique()} series in {elapsed:.1f}s")

    t0, cpu0 = time.perf_counter(), time.process_time()
    features = market_features(bars, lengths, keys)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    print(
        f"market_features: {len(keys):,} keys x {len(MARKET_FEATURES)} features in {wall:.1f}s "
        f"wall, {cpu:.1f}s CPU, one thread ({len(keys) / wall:,.0f} keys/s)"
    )
    assert not np.isinf(features.to_numpy()).any(), "inf leaked out"
    defined = features.notna().mean()
    print(
        f"share of keys with a value: median {defined.median():.2f}, "
        f"min {defined.min():.2f} ({defined.idxmin()})"
    )
    _reference_loop(bars, lengths, keys.head(args.loop_sample), features, wall, len(keys))


def _reference_loop(bars, lengths, keys, features, wall, n_keys) -> None:
    """Per key: the key's symbol's bars complete by as_of, then the same feature functions."""
    by_symbol = {str(s): one for s, one in bars.groupby("symbol", observed=True)}
    t0 = time.perf_counter()
    for i, (symbol, as_of) in enumerate(keys.itertuples(index=False)):
        one = by_symbol[symbol]
        seen = one.iloc[: int(((one["ts"] + lengths[symbol]) <= as_of).sum())]
        row = bar_features(seen, bar_length=lengths[symbol]).iloc[-1:].to_numpy()
        np.testing.assert_array_equal(row[0], features.iloc[i, : row.shape[1]].to_numpy())
    per_key = (time.perf_counter() - t0) / len(keys)
    print(
        f"reference, a loop over {len(keys)} keys (same functions on each key's bars): "
        f"{per_key * 1e3:.1f} ms/key, {per_key * n_keys / 60:,.0f} min for {n_keys:,} keys "
        f"(x{per_key * n_keys / wall:,.0f}); its rows equal the join's"
    )


if __name__ == "__main__":
    main()
