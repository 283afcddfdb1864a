"""``liqrisk replay``: files in, OUTCOMES.csv out, as the contract's replay interface defines."""

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from liqrisk.features.durations import parse_duration
from liqrisk.features.market import Market, market_from_bars
from liqrisk.features.replay import replay
from liqrisk.pipelines.accounts import Snapshots, parse_accounts
from liqrisk.pipelines.bars import read_bars
from liqrisk.pipelines.instruments_file import InstrumentsFile, read_instruments
from liqrisk.pipelines.outcomes import OUTCOMES_HEADER, write_outcomes


def replay_command(*, bars: Path, instruments: Path, accounts: Path, horizon: str, out: Path) -> int:
    """Replay every account of ``accounts``; one bad account never stops the others."""
    started = time.perf_counter()
    horizon_td = parse_duration(horizon, field="--horizon")
    instruments_file = read_instruments(instruments)
    loaded = read_bars(bars, checks="contract")
    for note in loaded.notes:
        print(f"liqrisk replay: {bars}: {note}", file=sys.stderr)
    market = market_from_bars(loaded.bars, bar_lengths_of(instruments_file))
    with Path(accounts).open() as handle:  # progress only on a terminal (disable=None)
        lines = tqdm(handle, desc="reading accounts", unit=" lines", file=sys.stderr, disable=None, leave=False)
        snapshots = parse_accounts(lines)
    outcomes = replay_snapshots(market, instruments_file, snapshots, horizon_td)
    write_outcomes(outcomes, out)
    print(summary_line(outcomes, time.perf_counter() - started), file=sys.stderr)
    return 0


def bar_lengths_of(instruments_file: InstrumentsFile) -> dict[str, pd.Timedelta]:
    """The bar lengths the instruments give; the others are inferred from the bars."""
    return instruments_file.bar_lengths()


def replay_snapshots(
    market: Market, instruments_file: InstrumentsFile, snapshots: Snapshots, horizon: pd.Timedelta
) -> pd.DataFrame:
    """Outcomes of all account lines in input order, with the columns of OUTCOMES.csv.

    Lines that failed to parse, and accounts using an instrument whose entry is
    invalid, are error rows naming the line and the field.
    """
    table = snapshots.accounts.set_index("account")
    positions = snapshots.positions
    bad_instrument = positions["symbol"].isin(list(instruments_file.errors))
    broken = positions.loc[bad_instrument].groupby("account", sort=False)["symbol"].first()
    error = table["error"].copy()
    error.loc[broken.index] = [instruments_file.errors[s] for s in broken]
    result = replay(
        market,
        instruments_file.instruments,
        positions.loc[~positions["account"].isin(broken.index)],
        horizon=horizon,
    )
    result = result.reindex(table.index)
    replayed = result["status"].notna().to_numpy()
    result.loc[~replayed, "status"] = "error"
    has_message = result["error"].fillna("") != ""
    lines = "line " + table["line"].astype(str) + ": "
    result["error"] = np.where(
        ~replayed, error, np.where(has_message, lines + result["error"].fillna(""), "")
    )
    result.insert(0, "account_id", table["account_id"])
    result.insert(1, "as_of", table["as_of"])
    return result.reset_index(drop=True)[list(OUTCOMES_HEADER)]


def summary_line(outcomes: pd.DataFrame, seconds: float) -> str:
    """One line for the terminal: how many accounts ended how."""
    status = outcomes["status"].value_counts()
    ok = outcomes["status"] == "ok"
    liquidated = int((outcomes["liquidated"].fillna(False) & ok).sum())
    negative = int((outcomes["negative"].fillna(False) & ok).sum())
    bad_debt = float(outcomes.loc[ok, "shortfall"].sum())
    return (
        f"liqrisk replay: {len(outcomes)} account(s) in {seconds:.1f}s: "
        f"{status.get('ok', 0)} ok ({liquidated} liquidated, {negative} below zero, "
        f"bad debt {bad_debt:,.2f}), {status.get('in_liquidation', 0)} in liquidation, "
        f"{status.get('error', 0)} error"
    )
