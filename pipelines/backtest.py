"""Event back-tests: how many of the accounts that ended below zero in a historic crash each
scorer flagged 24h, 6h and 1h before it, scored by a model trained only on earlier data.

For each event of ``data/events.md`` (``DEFAULT_EVENTS``) and each bars file that covers it
(:func:`event_files`), :func:`event_population` draws synthetic accounts on the eve of the
event and follows them to each lead time; :func:`backtest_table` scores the accounts alive
at each lead; :func:`run_event_backtests` does both for every event, with scorers the caller
fits on data before the event.

Choices, stated once:

- **Which files.** Every bars file with bars of a symbol with an instrument opening in
  ``[start − before, (end or start) + after)``, whatever its asset class: a file whose
  market was calm is reported too (few or no below-zero accounts, recall NaN), so a table
  shows where an event did and did not reach. (event, file) pairs the generator cannot draw
  from (no bars in the draw window, or less than its 31 days of history) are in ``skipped``.
- **The draw.** ``n_accounts`` accounts per (event, file) from the existing generator
  (``generate_accounts``, its distributions and survivor selection unchanged), every
  ``as_of`` inside ``[start − before, start − max(leads))``: the generator is given the one
  event with its start moved to ``start − max(leads)``, ``event_before = before −
  max(leads)``, ``event_after = 0`` and ``event_share = 1``. Only symbols with bars in that
  window are drawn from. ``before`` is 4 days, not the generator's 3: for an event on a
  Monday a 3-day window keeps only the weekend before ``start − 24h``, and the daily
  futures (WTI on ``commodity_1d``, whose sessions open at 22:00 UTC Sunday to Thursday),
  the Brent CFD and US equities have no bar opening then; 4 days reaches the Thursday
  22:00 or Friday bar. The generator's ``horizon`` is set to reach the end of the outcome
  window from the earliest as_of, so every drawn account has bars to the end of its
  outcome. Seeds are ``file_seed(seed, "<file>|<event name>")``: an (event, file)
  population does not depend on which other events or files are run. Account ids are
  ``<file stem>/<event date>/<index>``, the same account keeping its id at every lead.
- **Alive at a lead.** One replay of each drawn account from its own as_of (the engine,
  ``liqrisk.features.replay.replay``). The account is dead at ``t = start − lead`` when a
  liquidation is *known* by then: the bar that triggered it is complete at or before ``t``
  (``trigger_ts`` plus the longest bar length of the account's symbols). A trigger inside a
  bar that opened before ``t`` but completes after it is not known at ``t``: the account is
  alive, and its re-snapshot walks that bar (below). An account the engine finds in
  liquidation at its draw (the generator keeps one only after ``max_redraws``) is dead at
  every lead. One replay and one rule: the accounts alive at a later lead are a subset of
  those alive at an earlier one.
- **Re-snapshot.** Every account alive at lead ``ℓ`` is snapshot again, with the same
  positions, collateral and entry prices, at ``as_of'``: ``start − ℓ`` moved back to the
  last completion of a bar of the account's symbols at or before it (:func:`snapshot_times`;
  never before the draw). No bar completes in between, so ``as_of'`` knows exactly what
  ``start − ℓ`` knows, and the bar in progress at ``start − ℓ`` opens at or after
  ``as_of'``, so the replay walks it. On hourly bars on a weekday ``as_of' = start − ℓ``;
  with 4h and daily bars, or over a weekend, it is earlier (the ``as_of`` column says when).
  Without it a snapshot in the middle of a bar would see that bar in neither its features
  nor its outcome (the engine walks bars opening at or after as_of), and an account
  liquidated inside it would be followed into the next bar, typically the crash's gap;
  training snapshots are bar opens, too. On daily files the three leads therefore share
  their information and mostly their snapshot.
- **Features and outcomes.** Features are those of the training set, by the functions the
  build uses: market features by ``file_features`` (anchor symbol by ``anchor_keys``),
  position features by ``liqrisk.features.snapshot.position_snapshot`` (what
  ``partition_rows`` calls) with ``horizon = feature_horizon`` (default ``"7d"``, the
  longest horizon of the default build: ``dist_*_sigma`` scale with it). Outcomes come from
  ``partition_rows`` over ``[as_of', (end or start) + after)`` (``horizon`` column; events
  with an end, FTX and the 2025 tariffs, are followed to their end), one call per distinct
  horizon, so the outcome's horizon does not change the features. Its ``status`` and
  ``reason`` are kept: a row is a prediction case when ``status == "ok"`` (the engine can
  find an alive account in liquidation at as_of' when its notional moved into a higher
  tier); the others are counted in ``excluded``. Outcome columns lose the horizon suffix:
  ``liquidated``, ``negative``, ``shortfall``, ``time_to_liquidation_s``. Market features
  are computed once per bars file for all its events: each symbol's bar-level features run
  over its whole history, the expensive part.
- **Training cutoff.** ``fit_scorers(cutoff)`` gets ``cutoff = start − max(leads) −
  embargo`` and must train only on rows whose label window ``[as_of, as_of + horizon)``
  ends at or before it. ``embargo`` (default 1 day, the longest bar of the bundled data)
  covers the bar a label window ends in: the engine walks bars *opening* before the end of
  the window, whose high and low may print up to one bar later. One cutoff per event, the
  strictest of its leads, so every lead is scored by the same model. A ``fit_scorers`` that
  cannot train (e.g. no below-zero outcome before the cutoff) raises :class:`NoTrainingData`
  with the reason; the event is then listed in ``skipped``, not left out silently.
- **Flagged.** Per (event, lead) the top ``ceil(budget · n)`` accounts by score, ties at
  the cut shared pro rata (``liqrisk.models.metrics.at_budget`` / ``flag_weights``). A NaN
  score ranks last (an alert system cannot flag what it cannot score); ``inf`` ranks first.
  A scorer may also return its own boolean warning (``warn``): its recall, precision and
  bad-debt share "by its own threshold" are reported beside the budget's.
- **Speed.** All 13 events on the 12 bundled bars files (113 (event, file) pairs, about
  650,000 rows over the three leads), 2,000 accounts per pair, rule scorers: 45–62 s in one
  process (``scheduler="local"``) on this shared 2-vCPU machine, 49–62 s on two Dask
  workers (no faster: a dozen uneven files and large results to ship back). Nearly all of
  it is the populations (reading bars, market features, replays); peak memory 1.2–1.6 GB.
"""

import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from liqrisk.features.durations import format_duration, parse_duration
from liqrisk.features.instruments import Instrument
from liqrisk.features.market import Market, market_from_bars, search_blocks, to_us
from liqrisk.features.market_features import MARKET_FEATURES
from liqrisk.features.position import POSITION_FEATURES
from liqrisk.features.replay import POSITION_COLUMNS, replay
from liqrisk.features.snapshot import anchor_keys, join_snapshot, position_snapshot
from liqrisk.models.metrics import at_budget, budget_label
from liqrisk.pipelines.bars import read_bars
from liqrisk.pipelines.build import LABELS, NOT_BARS, file_features, partition_rows
from liqrisk.pipelines.executors import make_executor
from liqrisk.pipelines.generator import (
    DEFAULT_EVENTS,
    Event,
    GeneratorConfig,
    file_seed,
    generate_accounts,
)
from liqrisk.pipelines.instruments_file import InstrumentsFile, read_instruments
from liqrisk.pipelines.replay_cmd import bar_lengths_of

DEFAULT_BEFORE = pd.Timedelta(days=4).as_unit("us")
DEFAULT_LEADS: tuple[pd.Timedelta, ...] = tuple(
    pd.Timedelta(hours=h).as_unit("us") for h in (24, 6, 1)
)
DEFAULT_AFTER = pd.Timedelta(hours=24).as_unit("us")
DEFAULT_EMBARGO = pd.Timedelta(days=1).as_unit("us")
DEFAULT_ACCOUNTS = 2_000
DEFAULT_BUDGETS = (0.05,)

POPULATION_KEYS = (
    "event",
    "lead",
    "file",
    "account_id",
    "as_of",
    "drawn_as_of",
    "symbol",
    "asset_class",
    "margin_mode",
    "horizon",
)
OUTCOMES = LABELS  # liquidated, negative, shortfall, time_to_liquidation_s
TABLE_COLUMNS = (
    "event",
    "lead",
    "scorer",
    "budget",
    "accounts",
    "excluded",
    "liquidated",
    "negative",
    "bad_debt",
    "flagged",
    "recall",
    "precision",
    "bad_debt_share",
    "own_flagged",
    "own_recall",
    "own_precision",
    "own_bad_debt_share",
)
SKIPPED_COLUMNS = ("event", "file", "reason")

Scorer = Callable[[pd.DataFrame], "np.ndarray | pd.Series | pd.DataFrame"]
FitScorers = Callable[[pd.Timestamp], Mapping[str, Scorer]]


class NoTrainingData(Exception):
    """Raised by ``fit_scorers`` when nothing before the cutoff can be trained on; the message
    is the reason reported in ``skipped`` (e.g. "no below-zero outcomes before the event")."""


class NoPopulation(ValueError):
    """No account can be drawn for this event from these bars; the message says why."""


@dataclass(frozen=True)
class EventBacktest:
    """What :func:`run_event_backtests` returns.

    ``table``: :func:`backtest_table` of every event, plus ``train_cutoff``.
    ``skipped``: ``event``, ``file`` (``""`` for the whole event) and ``reason``, one row per
    event or (event, file) left out. ``population``: every scored row (:func:`event_population`).
    ``seconds``: wall time per stage.
    """

    table: pd.DataFrame
    skipped: pd.DataFrame
    population: pd.DataFrame
    seconds: dict[str, float]


def lead_label(lead: pd.Timedelta) -> str:
    """``24h``, ``6h``, ``1h`` (whole hours in hours, anything else as ``format_duration``)."""
    hours = pd.Timedelta(lead) / pd.Timedelta(hours=1)
    return f"{int(hours)}h" if hours == int(hours) else format_duration(lead)


def outcome_end(event: Event, after: pd.Timedelta = DEFAULT_AFTER) -> pd.Timestamp:
    """Where every outcome window of the event ends: ``(end or start) + after``."""
    return (event.end if event.end is not None else event.start) + after


def event_files(
    data_dir: Path,
    instruments: Mapping[str, Instrument],
    event: Event,
    *,
    before: pd.Timedelta = DEFAULT_BEFORE,
    after: pd.Timedelta = DEFAULT_AFTER,
) -> list[Path]:
    """The bars files of ``data_dir`` with bars of a symbol of ``instruments`` opening inside
    ``[start − before, (end or start) + after)`` (sorted; the funding-rate file is not bars)."""
    paths = _bars_files(data_dir)
    return _coverage(paths, instruments, [event], before=before, after=after)[event.name]


def event_population(
    bars: pd.DataFrame | Path,
    event: Event,
    catalog: InstrumentsFile,
    *,
    file: str | None = None,
    n_accounts: int = DEFAULT_ACCOUNTS,
    seed: int,
    leads: Sequence[pd.Timedelta] = DEFAULT_LEADS,
    before: pd.Timedelta = DEFAULT_BEFORE,
    after: pd.Timedelta = DEFAULT_AFTER,
    feature_horizon: str = "7d",
    generator: GeneratorConfig | None = None,
) -> pd.DataFrame:
    """The accounts alive at each lead before ``event``, snapshot again, with features and outcome.

    Features of a row use only bars complete at ``start − lead`` (its ``as_of`` is the last bar
    completion at or before that time, :func:`snapshot_times`); its outcome is the engine's
    over ``[as_of, (end or start) + after)`` (module docstring).

    Parameters
    ----------
    bars : DataFrame or Path
        One bars file as ``read_bars`` returns it, or its path (read with the instruments'
        ``negative_prices``).
    event : Event
    catalog : InstrumentsFile
        Instruments and bar lengths.
    file : str, optional
        Name put in the ``file`` column and in the seed and account ids; the path's name by
        default, ``""`` for a frame.
    n_accounts, seed : int
        Accounts drawn (before dropping those liquidated by a lead) and the seed.
    leads : sequence of Timedelta
        Each in ``(0, before)``.
    before : Timedelta
        Accounts are drawn with as_of in ``[start − before, start − max(leads))``.
    after : Timedelta
        How long after ``(end or start)`` outcomes are followed.
    feature_horizon : str
        The horizon the position features are computed for: the longest horizon of the
        training set (``dist_*_sigma`` depend on it).
    generator : GeneratorConfig, optional
        Distributions of the accounts (the build's); its event and horizon fields are replaced.

    Returns
    -------
    DataFrame
        One row per (lead, alive account), leads in the given order: ``POPULATION_KEYS``
        (``drawn_as_of`` the account's original as_of, ``horizon`` its outcome horizon),
        ``POSITION_FEATURES``, ``MARKET_FEATURES``, ``OUTCOMES`` (NA unless ``status`` is
        ``ok``), ``status`` and ``reason``.

    Raises
    ------
    NoPopulation
        When no account can be drawn (no symbol with an instrument, bars in the window and
        the generator's warmup of history).
    """
    bars, file = _bars_and_name(bars, catalog, file)
    populations, skipped = _file_populations(
        bars,
        [event],
        catalog,
        file=file,
        n_accounts=n_accounts,
        seed=seed,
        leads=leads,
        before=before,
        after=after,
        feature_horizon=feature_horizon,
        generator=generator,
    )
    if skipped:
        raise NoPopulation(skipped[0][2])
    return populations


def draw_event_accounts(
    market: Market,
    instruments: Mapping[str, Instrument],
    event: Event,
    *,
    file: str = "",
    n_accounts: int = DEFAULT_ACCOUNTS,
    seed: int,
    leads: Sequence[pd.Timedelta] = DEFAULT_LEADS,
    before: pd.Timedelta = DEFAULT_BEFORE,
    after: pd.Timedelta = DEFAULT_AFTER,
    generator: GeneratorConfig | None = None,
) -> pd.DataFrame:
    """The generator's accounts for ``event``: as_of in ``[start − before, start − max(leads))``.

    The positions frame of ``generate_accounts`` (``account`` = 0 … n−1); raises
    :class:`NoPopulation` when nothing can be drawn.
    """
    latest = event.start - max(leads)
    symbols = _symbols_with_bars(market, instruments, event.start - before, latest)
    if not symbols:
        raise NoPopulation(
            "no symbol with an instrument has bars in "
            f"[{_iso(event.start - before)}, {_iso(latest)})"
        )
    config = replace(
        generator or GeneratorConfig(),
        event_share=1.0,
        events=(Event(event.name, latest),),
        event_before=before - max(leads),
        event_after=pd.Timedelta(0),
        horizon=outcome_end(event, after) - (event.start - before),
        id_prefix=f"{Path(file).stem + '/' if file else ''}{event.start:%Y-%m-%d}/",
    )
    try:
        positions = generate_accounts(
            market,
            instruments,
            config,
            n_accounts=n_accounts,
            seed=file_seed(seed, f"{file}|{event.name}"),
            symbols=symbols,
        )
    except ValueError as exc:
        raise NoPopulation(f"the generator cannot draw here: {exc}") from None
    # a class whose symbols have no eligible bar in the window is drawn outside it: not ours
    inside = positions["event_window"] == event.name
    if not inside.any():
        raise NoPopulation(
            f"no symbol of {', '.join(symbols)} has the generator's warmup "
            f"({format_duration(config.warmup)}) before and bars to "
            f"{_iso(outcome_end(event, after))} after an as_of in the window"
        )
    return positions.loc[inside].reset_index(drop=True)


def liquidation_known_at(
    market: Market,
    instruments: Mapping[str, Instrument],
    positions: pd.DataFrame,
    *,
    until: pd.Timestamp,
) -> pd.Series:
    """When each account's first liquidation after its as_of is known (index ``account``).

    One replay from as_of to ``until``: the trigger bar's open plus the longest bar length of
    the account's symbols, i.e. when that bar is complete. ``as_of`` for an account already in
    liquidation (or not replayable) then; NaT if not liquidated before ``until``.
    """
    as_of = positions.groupby("account", sort=False)["as_of"].first()
    horizon = max(until - as_of.min(), pd.Timedelta(microseconds=1))
    outcome = replay(market, instruments, positions, horizon=horizon)
    code = pd.Index(market.symbols).get_indexer(positions["symbol"].astype(str))
    bar = (
        pd.Series(market.bar_us[code], index=positions.index)
        .groupby(positions["account"], sort=False)
        .max()
    )
    known = outcome["trigger_ts"] + pd.to_timedelta(bar.reindex(outcome.index), unit="us")
    dead_at_draw = outcome["status"] != "ok"
    known = known.where(~dead_at_draw, as_of.reindex(outcome.index))
    return known.dt.as_unit("us")


def snapshot_times(market: Market, positions: pd.DataFrame, t: pd.Timestamp) -> pd.Series:
    """Per position, its account's snapshot time for a lead ending at ``t``: the last completion
    of a bar of the account's symbols at or before ``t``, and not before the account's as_of.

    Nothing completes between it and ``t``, so features see exactly what is known at ``t``; a
    bar that straddles ``t`` opens at or after it, so the replay walks that bar too.
    """
    sym = pd.Index(market.symbols).get_indexer(positions["symbol"].astype(str))
    last = search_blocks(market, market.done, sym, np.full(len(sym), _us(t)), side="right") - 1
    done = np.where(last >= market.start[sym], market.done[np.maximum(last, 0)], 0)
    latest = pd.Series(done, index=positions.index).groupby(positions["account"]).transform("max")
    snapped = np.maximum(latest.to_numpy(), to_us(positions["as_of"]))
    return pd.Series(snapped.astype("datetime64[us]"), index=positions.index).dt.tz_localize("UTC")


def backtest_table(
    population: pd.DataFrame,
    scores: Mapping[str, np.ndarray],
    *,
    flags: Mapping[str, np.ndarray] | None = None,
    budgets: Sequence[float] = DEFAULT_BUDGETS,
    by: Sequence[str] = ("event", "lead"),
) -> pd.DataFrame:
    """Per ``by`` group (default event × lead), scorer and budget: what the flagged accounts caught.

    Parameters
    ----------
    population : DataFrame
        ``by`` columns, ``negative`` (bool), ``shortfall`` and ``liquidated``; rows whose
        ``status`` (if present) is not ``"ok"`` are counted in ``excluded`` and not scored.
    scores : mapping of name to array
        One score per row of ``population``, in its order; higher is riskier. NaN ranks last.
    flags : mapping of name to bool array, optional
        A scorer's own warning per row (e.g. the margin-ratio rule's ``warn``, or a model's
        probability above its warning threshold): the ``own_*`` columns.
    budgets : sequence of float
        Shares of each group's accounts flagged, each in (0, 1].
    by : sequence of str
        The grouping columns (e.g. add ``"file"``).

    Returns
    -------
    DataFrame
        One row per (group, scorer, budget), groups in order of first appearance: ``by``,
        ``scorer``, ``budget``, ``accounts`` (scored rows), ``excluded``, ``liquidated`` and
        ``negative`` (counts), ``bad_debt`` (sum of shortfall), ``flagged`` (``ceil(budget·n)``),
        ``recall`` (share of below-zero accounts flagged), ``precision``, ``bad_debt_share``
        (share of bad-debt dollars flagged), ``own_flagged``, ``own_recall``,
        ``own_precision``, ``own_bad_debt_share`` (NaN without ``flags``). Recall is NaN where
        no account went below zero, the bad-debt share where there is no bad debt.
    """
    flags = dict(flags or {})
    unknown = set(flags) - set(scores)
    if unknown:
        raise ValueError(f"backtest_table: flags name no score: {sorted(unknown)}")
    for name, values in {**scores, **flags}.items():
        if len(values) != len(population):
            raise ValueError(
                f"backtest_table: {name!r} has {len(values)} rows, the population {len(population)}"
            )
    ok = (
        (population["status"] == "ok").to_numpy()
        if "status" in population
        else np.ones(len(population), dtype=bool)
    )
    groups = population.groupby(list(by), sort=False, observed=True).indices
    rows = []
    for key, index in groups.items():
        group = dict(zip(by, key if isinstance(key, tuple) else (key,), strict=True))
        scored = index[ok[index]]
        y = population["negative"].to_numpy()[scored].astype(bool)
        debt = population["shortfall"].to_numpy(dtype=float)[scored]
        counts = {
            "accounts": len(scored),
            "excluded": len(index) - len(scored),
            "liquidated": int(population["liquidated"].to_numpy()[scored].astype(bool).sum()),
            "negative": int(y.sum()),
            "bad_debt": float(debt.sum()),
        }
        for name, values in scores.items():
            score = _rankable(np.asarray(values, dtype=float)[scored])
            own = (
                _own(np.asarray(flags[name], dtype=bool)[scored], y, debt)
                if name in flags
                else _NO_OWN
            )
            for budget in budgets:
                caught = at_budget(y, score, bad_debt=debt, budget=budget)
                tag = budget_label(budget)
                rows.append(
                    {
                        **group,
                        "scorer": name,
                        "budget": budget,
                        **counts,
                        **{
                            k: caught[f"{k}@{tag}"]
                            for k in ("flagged", "recall", "precision", "bad_debt_share")
                        },
                        **own,
                    }
                )
    columns = [*by, *TABLE_COLUMNS[2:]]
    return pd.DataFrame(rows, columns=columns)


def run_event_backtests(
    fit_scorers: FitScorers,
    *,
    data_dir: Path = Path("data"),
    instruments: Path | None = None,
    events: Sequence[Event] = DEFAULT_EVENTS,
    files: Sequence[str] = (),
    n_accounts: int = DEFAULT_ACCOUNTS,
    seed: int = 7,
    leads: Sequence[pd.Timedelta] = DEFAULT_LEADS,
    before: pd.Timedelta = DEFAULT_BEFORE,
    after: pd.Timedelta = DEFAULT_AFTER,
    embargo: pd.Timedelta = DEFAULT_EMBARGO,
    feature_horizon: str = "7d",
    budgets: Sequence[float] = DEFAULT_BUDGETS,
    generator: GeneratorConfig | None = None,
    scheduler: str = "local",
    workers: int = 2,
) -> EventBacktest:
    """Back-test every event the bars of ``data_dir`` cover with scorers trained before it.

    Parameters
    ----------
    fit_scorers : callable
        ``fit_scorers(cutoff)`` returns ``{name: score_fn}`` trained only on rows whose label
        window ends at or before ``cutoff = start − max(leads) − embargo``; ``score_fn(rows)``
        takes population rows (the training set's feature columns, ``asset_class`` included)
        and returns one score per row (array or Series), or a DataFrame with ``score`` and
        optionally ``warn`` (bool: the scorer's own warning), as the baselines of
        ``liqrisk.models.baselines`` do. Raise :class:`NoTrainingData` to skip the event.
    data_dir, instruments : Path
        Bars files and the instruments file (default ``data_dir / "instruments.json"``).
    events : sequence of Event
    files : sequence of str
        Restrict to these bars files of ``data_dir`` (all when empty).
    n_accounts, seed, leads, before, after, feature_horizon, generator
        As :func:`event_population`, per (event, file).
    embargo : Timedelta
        Between the last label window of training and the first snapshot (module docstring).
    budgets : sequence of float
    scheduler, workers
        Where the per-file populations are computed, as for ``liqrisk build``: ``local`` (this
        process, one file after another) or ``dask`` (``workers`` processes).

    Returns
    -------
    EventBacktest
        ``table`` (:func:`backtest_table` with ``train_cutoff``), ``skipped`` (events not
        covered, events ``fit_scorers`` could not train for, (event, file) pairs with no
        drawable account), ``population`` and ``seconds``.
    """
    started = time.perf_counter()
    _check_leads(leads, before)
    catalog = read_instruments(instruments or data_dir / "instruments.json")
    if catalog.errors:
        raise ValueError("; ".join(catalog.errors.values()))
    paths = [data_dir / f for f in files] if files else _bars_files(data_dir)
    skipped: list[tuple[str, str, str]] = []

    coverage = _coverage(paths, catalog.instruments, events, before=before, after=after)
    covered = {name: here for name, here in coverage.items() if here}
    skipped += [
        (
            e.name,
            "",
            f"no bars file covers [{_iso(e.start - before)}, {_iso(outcome_end(e, after))})",
        )
        for e in events
        if e.name not in covered
    ]
    seconds = {"coverage": time.perf_counter() - started}

    scorers: dict[str, Mapping[str, Scorer]] = {}
    cutoffs = {e.name: e.start - max(leads) - embargo for e in events}
    for event in tqdm(
        [e for e in events if e.name in covered], desc="fit", unit="event", file=sys.stderr
    ):
        try:
            fitted = dict(fit_scorers(cutoffs[event.name]))
        except NoTrainingData as exc:
            skipped.append((event.name, "", str(exc)))
            continue
        if fitted:
            scorers[event.name] = fitted
        else:
            skipped.append((event.name, "", "fit_scorers returned no scorer"))
    seconds["fit"] = time.perf_counter() - started - sum(seconds.values())

    by_file: dict[Path, list[Event]] = {}
    for event in events:
        if event.name in scorers:
            for path in covered[event.name]:
                by_file.setdefault(path, []).append(event)
    options = {
        "n_accounts": n_accounts,
        "seed": seed,
        "leads": tuple(leads),
        "before": before,
        "after": after,
        "feature_horizon": feature_horizon,
        "generator": generator,
    }
    calls = [(path, by_file[path], catalog, options) for path in sorted(by_file)]
    with make_executor(scheduler, n_workers=workers) as executor:
        results = executor.map(_path_populations, calls, desc="populations")
    parts = [population for population, _ in results]
    skipped += [row for _, missing in results for row in missing]
    order = {e.name: i for i, e in enumerate(events)}
    population = _concat(parts)
    population = population.sort_values(
        "event", key=lambda e: e.map(order), kind="stable"
    ).reset_index(drop=True)
    seconds["populations"] = time.perf_counter() - started - sum(seconds.values())

    tables = []
    for event in events:
        rows = population.loc[population["event"] == event.name].reset_index(drop=True)
        if event.name not in scorers or rows.empty:
            continue
        scores, flags = {}, {}
        for name, score_fn in scorers[event.name].items():
            scores[name], warn = _score_and_warn(score_fn(rows), len(rows), name)
            if warn is not None:
                flags[name] = warn
        table = backtest_table(rows, scores, flags=flags, budgets=budgets)
        tables.append(table.assign(train_cutoff=cutoffs[event.name]))
    seconds["score"] = time.perf_counter() - started - sum(seconds.values())
    table = (
        pd.concat(tables, ignore_index=True)
        if tables
        else pd.DataFrame(columns=[*TABLE_COLUMNS, "train_cutoff"])
    )
    skipped_table = pd.DataFrame(skipped, columns=list(SKIPPED_COLUMNS))
    skipped_table = skipped_table.sort_values(
        "event", key=lambda s: s.map(order), kind="stable"
    ).reset_index(drop=True)
    seconds = {k: round(v, 2) for k, v in seconds.items()} | {
        "total": round(time.perf_counter() - started, 2)
    }
    return EventBacktest(table=table, skipped=skipped_table, population=population, seconds=seconds)


# --- per bars file: draws, survival, re-snapshots, features, outcomes ------------------------


def _path_populations(
    path: Path, events: Sequence[Event], catalog: InstrumentsFile, options: Mapping[str, object]
) -> tuple[pd.DataFrame, list[tuple[str, str, str]]]:
    """:func:`_file_populations` of a bars file read here (a task for the executor)."""
    bars, name = _bars_and_name(path, catalog, None)
    return _file_populations(bars, events, catalog, file=name, **options)


def _coverage(
    paths: Sequence[Path],
    instruments: Mapping[str, Instrument],
    events: Sequence[Event],
    *,
    before: pd.Timedelta,
    after: pd.Timedelta,
) -> dict[str, list[Path]]:
    """Per event, the files of ``paths`` with bars of a symbol of ``instruments`` opening inside
    ``[start − before, (end or start) + after)``; each file's times are read once."""
    covered: dict[str, list[Path]] = {e.name: [] for e in events}
    for path in paths:
        bars = pd.read_parquet(path, columns=["symbol", "ts"])
        bars = bars.loc[bars["symbol"].astype(str).isin(list(instruments))]
        ts = np.sort(to_us(bars["ts"]))
        for event in events:
            lo, hi = (_us(t) for t in (event.start - before, outcome_end(event, after)))
            if np.searchsorted(ts, hi, side="left") > np.searchsorted(ts, lo, side="left"):
                covered[event.name].append(path)
    return covered


def _us(t: pd.Timestamp) -> int:
    return int(t.value // 1000)  # .value is nanoseconds whatever the unit


def _file_populations(
    bars: pd.DataFrame,
    events: Sequence[Event],
    catalog: InstrumentsFile,
    *,
    file: str,
    n_accounts: int,
    seed: int,
    leads: Sequence[pd.Timedelta],
    before: pd.Timedelta,
    after: pd.Timedelta,
    feature_horizon: str,
    generator: GeneratorConfig | None,
) -> tuple[pd.DataFrame, list[tuple[str, str, str]]]:
    """The populations of several events on one bars file; market features computed once for all
    (the expensive part: each symbol's bar-level features over its whole history)."""
    _check_leads(leads, before)
    bar_lengths = bar_lengths_of(catalog)
    instruments = catalog.instruments
    market = market_from_bars(bars, bar_lengths)
    snapshots, skipped = [], []
    for event in events:
        try:
            drawn = draw_event_accounts(
                market,
                instruments,
                event,
                file=file,
                n_accounts=n_accounts,
                seed=seed,
                leads=leads,
                before=before,
                after=after,
                generator=generator,
            )
        except NoPopulation as exc:
            skipped.append((event.name, file, str(exc)))
            continue
        known = liquidation_known_at(market, instruments, drawn, until=event.start - min(leads))
        snapshots += [_resnapshot(market, drawn, known, event, lead, after) for lead in leads]
    positions = _numbered(snapshots) if snapshots else pd.DataFrame()
    if positions.empty:
        return _empty_population(), skipped
    keys = anchor_keys(positions)
    market_part = file_features(bars, bar_lengths, keys)
    position_part = position_snapshot(
        market,
        instruments,
        positions,
        feature_horizon=parse_duration(feature_horizon, field="feature_horizon"),
    )[list(POSITION_FEATURES)]
    outcomes = _outcomes(bars, bar_lengths, instruments, positions)
    meta = positions.groupby("account", sort=False)[
        ["event", "lead", "drawn_as_of", "horizon"]
    ].first()
    rows = join_snapshot(outcomes.join(meta).join(position_part), market_part, keys, instruments)
    rows = rows.assign(file=file).astype({"status": "str", "reason": "str"})
    columns = [
        *POPULATION_KEYS,
        *POSITION_FEATURES,
        *MARKET_FEATURES,
        *OUTCOMES,
        "status",
        "reason",
    ]
    return rows.sort_index()[columns].reset_index(drop=True), skipped


def _resnapshot(
    market: Market,
    drawn: pd.DataFrame,
    known: pd.Series,
    event: Event,
    lead: pd.Timedelta,
    after: pd.Timedelta,
) -> pd.DataFrame:
    """The positions of the accounts alive at ``start − lead``, at :func:`snapshot_times`."""
    t = event.start - lead
    dead = known.index[known.notna() & (known <= t)]
    alive = drawn.loc[~drawn["account"].isin(dead), [*POSITION_COLUMNS, "account_id"]]
    as_of = snapshot_times(market, alive, t)
    return alive.assign(
        drawn_as_of=alive["as_of"],
        as_of=as_of,
        event=event.name,
        lead=lead_label(lead),
        horizon=outcome_end(event, after) - as_of,
    )


def _numbered(snapshots: list[pd.DataFrame]) -> pd.DataFrame:
    """One frame, account codes 0 … n−1 in the order of the snapshots (event, lead, account)."""
    offset, parts = 0, []
    for frame in snapshots:
        codes, _ = pd.factorize(frame["account"], sort=False)
        parts.append(frame.assign(account=codes + offset))
        offset += codes.max() + 1 if len(codes) else 0
    return pd.concat(parts, ignore_index=True)


def _outcomes(
    bars: pd.DataFrame,
    bar_lengths: Mapping[str, pd.Timedelta],
    instruments: Mapping[str, Instrument],
    positions: pd.DataFrame,
) -> pd.DataFrame:
    """``partition_rows`` per outcome horizon (index ``account``): account_id, as_of, margin_mode,
    ``OUTCOMES`` without the horizon suffix, status and reason."""
    parts = []
    for horizon, rows in positions.groupby("horizon", sort=True):
        name = format_duration(horizon)
        out = partition_rows(bars, bar_lengths, instruments, rows, (name,))
        out = out[
            [
                "account_id",
                "as_of",
                "margin_mode",
                *(f"{o}_{name}" for o in OUTCOMES),
                "status",
                "reason",
            ]
        ]
        parts.append(out.rename(columns={f"{o}_{name}": o for o in OUTCOMES}))
    return pd.concat(parts)


def _symbols_with_bars(
    market: Market, instruments: Mapping[str, Instrument], lo: pd.Timestamp, hi: pd.Timestamp
) -> list[str]:
    """Symbols with an instrument and a bar opening in ``[lo, hi)``."""
    lo_us, hi_us = _us(lo), _us(hi)
    out = []
    for code, symbol in enumerate(market.symbols):
        ts = market.ts[market.start[code] : market.stop[code]]
        a, b = np.searchsorted(ts, [lo_us, hi_us], side="left")
        if symbol in instruments and b > a:
            out.append(symbol)
    return out


def _bars_files(data_dir: Path) -> list[Path]:
    return sorted(p for p in Path(data_dir).glob("*.parquet") if p.name not in NOT_BARS)


def _bars_and_name(
    bars: pd.DataFrame | Path, catalog: InstrumentsFile, file: str | None
) -> tuple[pd.DataFrame, str]:
    if isinstance(bars, pd.DataFrame):
        return bars, file or ""
    negative_ok = [s for s, i in catalog.instruments.items() if i.negative_prices]
    return read_bars(Path(bars), negative_ok=negative_ok).bars, file or Path(bars).name


def _check_leads(leads: Sequence[pd.Timedelta], before: pd.Timedelta) -> None:
    if not leads:
        raise ValueError("leads: give at least one lead time")
    bad = [lead for lead in leads if not pd.Timedelta(0) < pd.Timedelta(lead) < before]
    if bad:
        raise ValueError(f"leads must be in (0, before = {before}), got {bad[0]}")


def _empty_population() -> pd.DataFrame:
    columns = [
        *POPULATION_KEYS,
        *POSITION_FEATURES,
        *MARKET_FEATURES,
        *OUTCOMES,
        "status",
        "reason",
    ]
    return pd.DataFrame(columns=columns)


def _concat(parts: list[pd.DataFrame]) -> pd.DataFrame:
    parts = [p for p in parts if not p.empty]
    return pd.concat(parts, ignore_index=True) if parts else _empty_population()


def _rankable(score: np.ndarray) -> np.ndarray:
    """NaN and −inf rank last, +inf first, as finite numbers (``at_budget`` takes only those)."""
    top = np.finfo(np.float64).max
    return np.nan_to_num(score, nan=-top, posinf=top, neginf=-top)


_NO_OWN = {
    "own_flagged": math.nan,
    "own_recall": math.nan,
    "own_precision": math.nan,
    "own_bad_debt_share": math.nan,
}


def _own(flag: np.ndarray, y: np.ndarray, debt: np.ndarray) -> dict[str, float]:
    n_flagged, caught, total_debt = int(flag.sum()), int((flag & y).sum()), float(debt.sum())
    return {
        "own_flagged": n_flagged,
        "own_recall": caught / y.sum() if y.sum() else math.nan,
        "own_precision": caught / n_flagged if n_flagged else math.nan,
        "own_bad_debt_share": float(debt[flag].sum()) / total_debt if total_debt > 0 else math.nan,
    }


def _score_and_warn(output: object, n: int, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """A scorer's output: an array or Series of scores, or a frame with ``score`` (and ``warn``)."""
    if isinstance(output, pd.DataFrame):
        if "score" not in output:
            raise ValueError(
                f"scorer {name!r} returned a frame without a 'score' column: {list(output.columns)}"
            )
        score = output["score"].to_numpy(dtype=float)
        warn = output["warn"].to_numpy(dtype=bool) if "warn" in output else None
    else:
        score, warn = np.asarray(output, dtype=float), None
    if len(score) != n:
        raise ValueError(f"scorer {name!r} returned {len(score)} scores for {n} rows")
    return score, warn


def _iso(t: pd.Timestamp) -> str:
    return t.strftime("%Y-%m-%dT%H:%MZ")
