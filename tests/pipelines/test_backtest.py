"""Event back-tests on the bundled data: point in time, alive accounts, engine outcomes, the table.

The populations are drawn over a slice of ``data/fx_1h.parquet`` (six pairs, Dec 2013 –
Feb 2015) around the SNB removing the EUR/CHF floor: real bars and the real engine, small
enough to keep each population under a second.
"""

import math
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from liqrisk.features.market import market_from_bars
from liqrisk.features.market_features import MARKET_FEATURES
from liqrisk.features.position import POSITION_FEATURES
from liqrisk.features.replay import POSITION_COLUMNS, replay
from liqrisk.models.baselines import margin_ratio_rule
from liqrisk.pipelines.backtest import (
    DEFAULT_BEFORE,
    DEFAULT_EMBARGO,
    DEFAULT_LEADS,
    NoTrainingData,
    backtest_table,
    draw_event_accounts,
    event_files,
    event_population,
    lead_label,
    outcome_end,
    run_event_backtests,
    snapshot_times,
)
from liqrisk.pipelines.bars import read_bars
from liqrisk.pipelines.build import anchor_keys, file_features, partition_rows
from liqrisk.pipelines.generator import DEFAULT_EVENTS, Event
from liqrisk.pipelines.instruments_file import read_instruments
from liqrisk.pipelines.replay_cmd import bar_lengths_of

DATA = Path(__file__).resolve().parents[2] / "data"
SNB = DEFAULT_EVENTS[0]
# Drawn before the SNB and followed through it: at the 1h lead (10:00) the 09:00 bar, which
# holds the crash, has just completed, so accounts it liquidated are known dead exactly then.
AFTER_SNB = Event("an hour after the SNB", pd.Timestamp("2015-01-15T11:00Z").as_unit("us"))
PAIRS = ["EURCHF", "USDCHF", "EURUSD", "GBPUSD", "AUDUSD", "NZDUSD"]
N = 400
FEATURES = [*POSITION_FEATURES, *MARKET_FEATURES]
OUTCOMES = ["liquidated", "negative", "shortfall", "time_to_liquidation_s"]


@pytest.fixture(scope="module", params=[3])
def seed(request) -> int:
    return request.param


@cache
def catalog():
    return read_instruments(DATA / "instruments.json")


@pytest.fixture(scope="module")
def fx_slice(tmp_path_factory) -> Path:
    """The slice of fx_1h as a bars file of its own."""
    lo, hi = (pd.Timestamp(t, tz="UTC") for t in ("2013-12-01", "2015-03-01"))
    raw = pd.read_parquet(
        DATA / "fx_1h.parquet", filters=[("symbol", "in", PAIRS), ("ts", ">=", lo), ("ts", "<", hi)]
    )
    folder = tmp_path_factory.mktemp("data")
    raw.to_parquet(folder / "fx_1h.parquet", index=False)
    (folder / "instruments.json").write_text((DATA / "instruments.json").read_text())
    return folder / "fx_1h.parquet"


@pytest.fixture(scope="module")
def bars(fx_slice) -> pd.DataFrame:
    return read_bars(fx_slice).bars


@pytest.fixture(scope="module")
def market(bars):
    return market_from_bars(bars, bar_lengths_of(catalog()))


def population(bars: pd.DataFrame, seed: int, event: Event = SNB, **kw) -> pd.DataFrame:
    return event_population(
        bars, event, catalog(), file="fx_1h.parquet", n_accounts=N, seed=seed, **kw
    )


def drawn(market, seed: int, event: Event = SNB) -> pd.DataFrame:
    return draw_event_accounts(
        market, catalog().instruments, event, file="fx_1h.parquet", n_accounts=N, seed=seed
    )


@pytest.fixture(scope="module")
def snb(bars, seed) -> pd.DataFrame:
    return population(bars, seed)


def resnapshot(drawn: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """The positions of the population's rows: the drawn positions at the row's as_of."""
    as_of = rows.set_index("account_id")["as_of"]
    positions = drawn.loc[drawn["account_id"].isin(as_of.index), [*POSITION_COLUMNS, "account_id"]]
    return positions.assign(as_of=positions["account_id"].map(as_of).dt.as_unit("us"))


# ---------------------------------------------------------------------------- the population


def test_rows_per_lead_snapshot_at_start_minus_lead(snb):
    assert list(snb["lead"].unique()) == ["24h", "6h", "1h"]
    for lead in DEFAULT_LEADS:
        rows = snb[snb["lead"] == lead_label(lead)]
        assert rows["account_id"].is_unique and len(rows) > 0.9 * N
        assert (rows["as_of"] == SNB.start - lead).all()  # hourly bars, a weekday: no snapping
        assert (rows["drawn_as_of"] >= SNB.start - DEFAULT_BEFORE).all()
        assert (rows["drawn_as_of"] < SNB.start - max(DEFAULT_LEADS)).all()
        assert (rows["horizon"] == lead + pd.Timedelta("24h")).all()
    assert set(snb["asset_class"]) == {"fx"} and set(snb["file"]) == {"fx_1h.parquet"}
    assert (snb["status"] == "ok").all()
    assert snb["negative"].any()  # the floor went: some accounts end below zero
    assert ((snb["shortfall"] > 0) == snb["negative"].astype(bool)).all()


def test_same_seed_same_population_other_seed_other(bars, snb, seed):
    pd.testing.assert_frame_equal(population(bars, seed), snb)
    other = population(bars, seed + 1)
    assert not other["leverage"].equals(snb["leverage"])


def test_features_ignore_bars_not_complete_at_start_minus_lead(bars, market, snb, seed):
    for lead in DEFAULT_LEADS:
        unknown = market.done > (SNB.start - lead).value // 1000
        prices = ["open", "high", "low", "close"]
        shocked = bars.copy()
        shocked.loc[unknown, prices] = bars.loc[unknown, prices] * 10
        after = population(shocked, seed)

        label = lead_label(lead)
        before_rows = snb[snb["lead"] == label].set_index("account_id")
        after_rows = after[after["lead"] == label].set_index("account_id")
        pd.testing.assert_index_equal(after_rows.index, before_rows.index)
        pd.testing.assert_frame_equal(after_rows[FEATURES], before_rows[FEATURES])
        # the shock is in the outcome window: shorts go under
        assert not after_rows["shortfall"].equals(before_rows["shortfall"])
        assert after_rows["shortfall"].sum() > before_rows["shortfall"].sum()


def test_features_are_the_training_sets(bars, market, snb, seed):
    """The build's functions on the same snapshots, with the build's horizons: same features."""
    accounts = drawn(market, seed)
    instruments, bar_lengths = catalog().instruments, bar_lengths_of(catalog())
    for label in ("24h", "1h"):
        rows = snb[snb["lead"] == label].set_index("account_id")
        positions = resnapshot(accounts, rows.reset_index())
        built = partition_rows(bars, bar_lengths, instruments, positions, ("1h", "24h", "7d"))
        keys = anchor_keys(positions)
        built = built.join(file_features(bars, bar_lengths, keys)).set_index("account_id")
        pd.testing.assert_frame_equal(rows.loc[built.index, FEATURES], built[FEATURES])


def test_outcomes_are_the_engines(bars, market, snb, seed):
    accounts = drawn(market, seed)
    for lead in DEFAULT_LEADS:
        rows = snb[snb["lead"] == lead_label(lead)].set_index("account_id")
        positions = resnapshot(accounts, rows.reset_index())
        direct = replay(
            market, catalog().instruments, positions, horizon=outcome_end(SNB) - (SNB.start - lead)
        )
        direct.index = (
            positions.groupby("account", sort=False)["account_id"].first().loc[direct.index]
        )
        assert (direct["status"] == "ok").all()
        pd.testing.assert_frame_equal(
            rows.loc[direct.index, OUTCOMES], direct[OUTCOMES], check_names=False
        )


# ---------------------------------------------------------------------------- alive


def test_accounts_liquidated_before_a_lead_are_not_at_that_lead(bars, market, seed):
    """Drawn before the crash, snapshot after it: those the engine liquidated by then are gone."""
    event = AFTER_SNB
    accounts = drawn(market, seed, event)
    rows = population(bars, seed, event)
    instruments = catalog().instruments
    dead_somewhere = 0
    for lead in DEFAULT_LEADS:
        t = event.start - lead
        # one replay per as_of up to t (hourly bars: "opened before t" = "complete by t")
        outcome = pd.concat(
            replay(market, instruments, group, horizon=t - as_of)
            for as_of, group in accounts.groupby("as_of")
        )
        dead = outcome["liquidated"].fillna(False).astype(bool) | (
            outcome["status"] == "in_liquidation"
        )
        ids = accounts.groupby("account")["account_id"].first()
        here = set(rows.loc[rows["lead"] == lead_label(lead), "account_id"])
        assert here == set(ids[dead[~dead].index])
        assert not here & set(ids[dead[dead].index])
        dead_somewhere += int(dead.sum())
    assert dead_somewhere > 0


def test_fewer_accounts_alive_as_the_lead_shrinks(bars, seed):
    rows = population(bars, seed, AFTER_SNB)
    alive = [
        set(rows.loc[rows["lead"] == lead_label(lead), "account_id"]) for lead in DEFAULT_LEADS
    ]
    assert alive[0] >= alive[1] >= alive[2]
    assert len(alive[0]) > len(alive[2])  # the crash on Jan 15, 09:00 lies between 6h and 1h


def test_wti_on_daily_bars_snapshots_at_the_last_completed_session(seed):
    """Monday 2020-04-20: the last CL=F session before every lead ends Friday 22:00 UTC, and
    the Sunday 22:00 session (low -40.32) is inside every outcome window."""
    wti = next(e for e in DEFAULT_EVENTS if e.name.startswith("WTI"))
    rows = event_population(
        DATA / "commodity_1d.parquet", wti, catalog(), n_accounts=200, seed=seed
    )
    friday = pd.Timestamp("2020-04-17T22:00Z")
    assert (rows["as_of"] == friday).all()
    assert set(rows["lead"]) == {"24h", "6h", "1h"}
    cl = rows[(rows["symbol"] == "CL=F") & (rows["n_positions"] == 1) & (rows["net_exposure"] > 0)]
    assert len(cl) and cl["negative"].all()  # a long of at most 10x cannot survive -320%


def test_snapshot_times_is_the_last_completion_and_never_before_as_of():
    bars = read_bars(DATA / "commodity_1d.parquet", negative_ok=["CL=F"]).bars
    market = market_from_bars(bars, bar_lengths_of(catalog()))
    early = pd.Timestamp("2020-04-01T00:00Z").as_unit("us")
    positions = pd.DataFrame(
        {
            "account": [0, 1, 1],
            "as_of": pd.Series([early, early, early]),
            "symbol": ["CL=F", "CL=F", "GC=F"],
        }
    )
    inside = pd.Timestamp("2020-04-16T23:00Z")  # an hour into the session opened at 22:00
    assert (snapshot_times(market, positions, inside) == pd.Timestamp("2020-04-16T22:00Z")).all()
    late = positions.assign(as_of=pd.Timestamp("2020-04-16T22:30Z").as_unit("us"))
    assert (snapshot_times(market, late, inside) == late["as_of"]).all()


# ---------------------------------------------------------------------------- files


def test_event_files_are_those_with_bars_around_the_event():
    names = [p.name for p in event_files(DATA, catalog().instruments, SNB)]
    assert {"fx_1h.parquet", "fx_4h.parquet"} <= set(names)
    assert "crypto_1h.parquet" not in names  # starts in 2020
    assert "crypto_funding_8h.parquet" not in names  # not bars
    later = Event("after the data", pd.Timestamp("2030-01-01T00:00Z").as_unit("us"))
    assert event_files(DATA, catalog().instruments, later) == []


# ---------------------------------------------------------------------------- the table


def tiny_population() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "event": ["E"] * 8 + ["E"] * 3,
            "lead": ["24h"] * 8 + ["1h"] * 3,
            "negative": [True, False, True, False, False, False, False, True] + [False] * 3,
            "liquidated": [True, True, True, False, False, False, False, True] + [False] * 3,
            "shortfall": [10.0, 0, 30, 0, 0, 0, 0, 99] + [0.0] * 3,
            "status": ["ok"] * 7 + ["in_liquidation"] + ["ok"] * 3,
        }
    ).assign(
        negative=lambda f: f["negative"].where(f["status"] == "ok").astype("boolean"),
        shortfall=lambda f: f["shortfall"].where(f["status"] == "ok"),
    )


def test_backtest_table_by_hand_ties_shared_pro_rata():
    frame = tiny_population()
    # 24h: 7 scored rows, ceil(0.4 * 7) = 3 flagged: 0.9 and 0.8, then 1 slot for 3 tied at 0.5.
    # The excluded row (in liquidation) has the top score and takes no slot.
    score = np.array([0.9, 0.8, 0.5, 0.5, 0.5, 0.1, np.nan, 5.0, 0.2, 0.3, 0.1])
    warn = np.array([True, True, False, False, False, False, False, True, True, False, False])
    table = backtest_table(frame, {"model": score}, flags={"model": warn}, budgets=(0.4,))
    first = table.iloc[0]
    assert (first["event"], first["lead"], first["scorer"], first["budget"]) == (
        "E",
        "24h",
        "model",
        0.4,
    )
    assert (first["accounts"], first["excluded"], first["negative"], first["liquidated"]) == (
        7,
        1,
        2,
        3,
    )
    assert first["bad_debt"] == 40.0 and first["flagged"] == 3
    assert first["recall"] == pytest.approx((1 + 1 / 3) / 2)  # row 0, a third of row 2
    assert first["precision"] == pytest.approx((1 + 1 / 3) / 3)
    assert first["bad_debt_share"] == pytest.approx((10 + 30 / 3) / 40)
    assert first["own_flagged"] == 2 and first["own_recall"] == 0.5
    assert first["own_precision"] == 0.5 and first["own_bad_debt_share"] == 0.25
    second = table.iloc[1]
    assert (second["lead"], second["accounts"], second["negative"], second["flagged"]) == (
        "1h",
        3,
        0,
        2,
    )
    assert math.isnan(second["recall"]) and math.isnan(second["bad_debt_share"])
    assert second["precision"] == 0.0


def test_backtest_table_nan_ranks_last_and_shapes():
    frame = tiny_population()
    nan_top = np.array([np.nan, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.0, 1.0, 1.0, 1.0])
    table = backtest_table(frame, {"a": nan_top, "b": -nan_top}, budgets=(1 / 7, 0.5))
    assert len(table) == 2 * 2 * 2  # (event, lead) x scorer x budget
    assert list(table["scorer"].iloc[:4]) == ["a", "a", "b", "b"]
    a = table[(table["lead"] == "24h") & (table["scorer"] == "a")].set_index("budget")
    assert (
        a.loc[1 / 7, "flagged"] == 1 and a.loc[1 / 7, "recall"] == 0.0
    )  # 0.6 is row 6: not below zero
    assert a["own_recall"].isna().all()
    with pytest.raises(ValueError, match="has 3 rows"):
        backtest_table(frame, {"a": np.zeros(3)})


# ---------------------------------------------------------------------------- the run


def test_run_scores_covered_events_and_reports_the_others(fx_slice, bars, seed):
    quiet = Event("quiet autumn", pd.Timestamp("2014-10-15T00:00Z").as_unit("us"))
    later = Event("after the data", pd.Timestamp("2030-01-01T00:00Z").as_unit("us"))
    asked = []

    def fit_scorers(cutoff: pd.Timestamp):
        asked.append(cutoff)
        if cutoff < pd.Timestamp("2014-12-01", tz="UTC"):
            raise NoTrainingData("no below-zero outcomes before the event to train on")
        return {"margin_ratio": margin_ratio_rule, "leverage": lambda rows: rows["leverage"]}

    result = run_event_backtests(
        fit_scorers, data_dir=fx_slice.parent, events=(quiet, SNB, later), n_accounts=N, seed=seed
    )
    cutoff = SNB.start - max(DEFAULT_LEADS) - DEFAULT_EMBARGO
    assert asked == [quiet.start - max(DEFAULT_LEADS) - DEFAULT_EMBARGO, cutoff]
    assert list(result.skipped["event"]) == [quiet.name, later.name]
    assert "no below-zero outcomes" in result.skipped["reason"].iloc[0]
    assert "no bars file covers" in result.skipped["reason"].iloc[1]

    table = result.table
    assert len(table) == 3 * 2 and set(table["event"]) == {SNB.name}
    assert (table["train_cutoff"] == cutoff).all()
    # the same population as drawn alone (seeds per event and file), scored the same way
    alone = population(bars, seed)
    pd.testing.assert_frame_equal(result.population, alone)
    rule = margin_ratio_rule(alone)
    expected = backtest_table(
        alone,
        {"margin_ratio": rule["score"].to_numpy(), "leverage": alone["leverage"].to_numpy()},
        flags={"margin_ratio": rule["warn"].to_numpy()},
    )
    pd.testing.assert_frame_equal(table.drop(columns="train_cutoff"), expected)
    assert table.loc[table["scorer"] == "leverage", "own_recall"].isna().all()
    assert table.loc[table["scorer"] == "margin_ratio", "own_recall"].notna().all()
