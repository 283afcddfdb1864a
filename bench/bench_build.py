"""Dataset build benchmark: pandas in this process against Dask with 2 workers, same run.

    python bench/bench_build.py               # 1,000,000 snapshots over every bundled bars file
    python bench/bench_build.py --quick       # 100,000

Builds features and labels (horizons 1h, 24h, 7d) for seeded synthetic snapshots
spread evenly over the 12 bundled bars files, once with the local (pandas)
executor and once on a local Dask cluster of 2 worker processes, and checks that
the two tables are identical. Reported as snapshots per second and the ratio.
"""

import argparse
import tempfile
import time
from pathlib import Path

from liqrisk.pipelines.build import BuildConfig, build_dataset

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    total = 100_000 if args.quick else 1_000_000
    files = sorted(p.name for p in (ROOT / "data").glob("*.parquet") if p.name != "crypto_funding_8h.parquet")
    per_file = -(-total // len(files))
    base = {
        "seed": args.seed,
        "data_dir": str(ROOT / "data"),
        "accounts_per_file": per_file,
        "partition_size": 25_000,
        "out": tempfile.mkdtemp(),
    }
    print(f"{len(files)} bars files, {per_file:,} snapshots each, horizons 1h, 24h, 7d")
    print(f"{'executor':<22}{'snapshots':>12}{'seconds':>10}{'snapshots/s':>14}{'vs pandas':>11}")
    results = {}
    for name, extra in (("pandas (local)", {}), ("dask, 2 workers", {"scheduler": "dask", "workers": 2})):
        started = time.perf_counter()
        dataset = build_dataset(BuildConfig.from_dict({**base, **extra}))
        seconds = time.perf_counter() - started
        results[name] = (dataset, seconds)
        n = len(dataset.table) + len(dataset.excluded)
        reference = results["pandas (local)"][1]
        print(f"{name:<22}{n:>12,}{seconds:>10.1f}{n / seconds:>14,.0f}{reference / seconds:>10.2f}x"
              f"   phases (s): {dataset.card['timings_s']}")
    same = results["pandas (local)"][0].table.equals(results["dask, 2 workers"][0].table)
    print(f"identical tables: {same}")


if __name__ == "__main__":
    main()
