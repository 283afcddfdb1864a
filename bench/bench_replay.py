"""Replay benchmark: the vectorised engine against the plain loop specification, same run.

    python bench/bench_replay.py            # 1,000,000 single + 100,000 cross accounts
    python bench/bench_replay.py --quick    # 100,000 + 10,000, for a smoke run

Accounts are seeded samples (``liqrisk.pipelines.synthetic``) over the bundled
Binance 1h spot bars of BTCUSDT, ETHUSDT and BNBUSDT (2020-2026), replayed over
24h. The loop implementation (``tests/features/reference_replay.py``) replays a
subsample of the same accounts; its one-off set-up (turning bars into Python
objects) is left out of its rate. Both outputs are compared
on the subsample, so the speed-up is between two programs that agree.
"""

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import pandas as pd

from liqrisk.features.instrument_defaults import ASSET_CLASS_DEFAULTS
from liqrisk.features.instruments import instrument_from_dict
from liqrisk.features.market import market_from_bars
from liqrisk.features.replay import replay
from liqrisk.pipelines.bars import read_bars
from liqrisk.pipelines.synthetic import sample_positions

ROOT = Path(__file__).resolve().parents[1]
SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT")
HORIZON = pd.Timedelta("24h")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tenth of the accounts")
    parser.add_argument("--loop-sample", type=int, default=1000, help="accounts replayed by the loop, per kind")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    n_single, n_cross = (100_000, 10_000) if args.quick else (1_000_000, 100_000)

    bars = read_bars(ROOT / "data" / "crypto_1h.parquet").bars
    bars = bars[bars["symbol"].isin(SYMBOLS)].reset_index(drop=True)
    raw_instruments = {s: {"asset_class": "crypto", **ASSET_CLASS_DEFAULTS["crypto"]} for s in SYMBOLS}
    instruments = {s: instrument_from_dict(s, raw) for s, raw in raw_instruments.items()}
    market = market_from_bars(bars)
    classes = dict.fromkeys(SYMBOLS, "crypto")
    single = sample_positions(market, classes, n_accounts=n_single, horizon=HORIZON, seed=args.seed)
    cross = sample_positions(
        market,
        classes,
        n_accounts=n_cross,
        horizon=HORIZON,
        seed=args.seed + 1,
        positions_per_account=3,
        margin_mode="cross",
    )
    reference = _load_reference()

    print(f"bars: {len(bars):,} hourly bars of {', '.join(SYMBOLS)}; horizon 24h")
    print(f"{'case':<34}{'accounts':>10}{'seconds':>10}{'accounts/s':>14}{'vs loop':>10}{'agree':>8}")
    for name, positions in (("single-position (isolated)", single), ("cross, 3 positions", cross)):
        n = positions["account"].nunique()
        started = time.perf_counter()
        outcomes = replay(market, instruments, positions, horizon=HORIZON)
        engine_s = time.perf_counter() - started

        sample = positions[positions["account"] < args.loop_sample]
        accounts = _account_dicts(sample)
        symbols = reference.build_symbols(bars, raw_instruments)  # its one-off set-up, not timed
        started = time.perf_counter()
        expected = reference.replay_accounts(symbols, accounts, HORIZON)
        loop_s = time.perf_counter() - started
        agree = _agreement(outcomes.iloc[: len(accounts)], expected)

        engine_rate, loop_rate = n / engine_s, len(accounts) / loop_s
        print(f"{name + ' engine':<34}{n:>10,}{engine_s:>10.2f}{engine_rate:>14,.0f}{engine_rate / loop_rate:>9.0f}x{'':>8}")
        print(f"{name + ' loop':<34}{len(accounts):>10,}{loop_s:>10.2f}{loop_rate:>14,.0f}{'1x':>10}{agree:>8.1%}")
        status = outcomes["status"].value_counts().to_dict()
        print(f"    outcomes: {status}, liquidated {int(outcomes['liquidated'].sum())}, "
              f"below zero {int(outcomes['negative'].sum())}")


def _load_reference():
    spec = importlib.util.spec_from_file_location("reference_replay", ROOT / "tests/features/reference_replay.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def _account_dicts(positions: pd.DataFrame) -> list[dict]:
    accounts = []
    for _, group in positions.groupby("account", sort=True):
        first = group.iloc[0]
        cross = first["margin_mode"] == "cross"
        accounts.append(
            {
                "account_id": str(first["account"]),
                "as_of": first["as_of"].isoformat(),
                "margin_mode": first["margin_mode"],
                "collateral": float(first["collateral"]) if cross else 0.0,
                "positions": [
                    {
                        "symbol": p.symbol,
                        "side": int(p.side),
                        "qty": float(p.qty),
                        "entry_price": float(p.entry_price),
                        **({} if cross else {"collateral": float(p.collateral)}),
                    }
                    for p in group.itertuples()
                ],
            }
        )
    return json.loads(json.dumps(accounts))


def _agreement(outcomes: pd.DataFrame, expected: list[dict]) -> float:
    """Share of accounts where status, liquidated, negative and shortfall (to the cent) agree."""
    same = 0
    for (_, got), want in zip(outcomes.iterrows(), expected):
        if got["status"] != want["status"]:
            continue
        if got["status"] == "ok":
            if bool(got["liquidated"]) != bool(want["liquidated"]):
                continue
            if abs(float(got["shortfall"]) - float(want["shortfall"] or 0.0)) > max(
                0.01, 1e-9 * abs(float(want["shortfall"] or 0.0))
            ):
                continue
        same += 1
    return same / max(len(expected), 1)


if __name__ == "__main__":
    main()
