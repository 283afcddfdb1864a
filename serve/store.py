"""The service's database: account levels, the append-only warnings feed, webhooks and their
outbox, and the log of bars ingested through the API.

SQLAlchemy 2 Core on SQLite (a file, WAL) by default or PostgreSQL by URL (psycopg 3).

Choices, stated once:

- **Durable before the answer.** :func:`record_scores` reads and updates ``account_state``,
  appends the raised warnings and one pending delivery per active webhook in ONE transaction
  and returns only after it committed (SQLite ``synchronous=FULL`` by default, ``NORMAL`` by
  choice: see ``ServeSettings.sqlite_synchronous``; PostgreSQL's default
  ``synchronous_commit=on``). The request that raised a warning is answered after that, so an
  acknowledged warning is never lost and a lost one was never acknowledged (transactional
  outbox: no dual write to a broker, the sender reads the same database later).
- **Durable where it counts.** A commit that raises no warning and moves no account's level
  only refreshes probabilities; it does not wait for the disk (SQLite ``synchronous=NORMAL``
  for that transaction, PostgreSQL ``SET LOCAL synchronous_commit TO OFF``). A power loss may
  take such commits back, never a later durable one (both logs are written in order) and
  never a level, so no warning is lost, raised twice or missed. SQLite can choose only before
  ``BEGIN``: it relaxes a batch none of whose scores reaches a threshold and redoes, durably,
  one that turns out to let a level go. The service checkpoints SQLite's WAL on a thread of its
  own (:func:`checkpoint`), so commits do not checkpoint either.
- **Feed ids are assigned in commit order.** A warning's id is an integer taken from the single
  ``feed_head`` row (``UPDATE feed_head SET last_seq = last_seq + n RETURNING last_seq``) inside
  the writing transaction. The row lock is held until commit, so the next writer can take its
  ids only after the previous one is committed and visible: ids are gapless and a reader's
  snapshot always holds a *prefix* of them. A reader paging with ``id > cursor`` therefore never
  skips a warning that commits later. SQLite gives the same for free (one writer at a time,
  ``BEGIN IMMEDIATE``); on PostgreSQL the lock is what makes it true. The rejected
  alternatives: ULIDs or a ``SERIAL``/``IDENTITY`` column are taken at insert time, not commit
  time, so two writers can commit out of order (ids 7 then 6) and a consumer that already read
  7 would never see 6; a "visible up to" watermark over transaction ids
  (``pg_snapshot_xmin``) avoids the lock but is PostgreSQL-only and harder to get right. The
  cost of the lock is that writers which raise warnings commit one at a time; raises are rare
  next to scores, and scores that raise nothing never take it.
- **Hysteresis memory is locked per account.** ``account_state`` rows are created if missing
  (``INSERT … ON CONFLICT DO NOTHING``) and read ``FOR UPDATE`` in sorted account order, so
  two requests scoring the same account concurrently cannot both raise the same warning and
  cannot deadlock. SQLite serialises writers anyway (``BEGIN IMMEDIATE``), so there the
  states are read and written in plain driver statements, a new account's row inserted once
  with its state (:class:`_SqliteStates`, the cheaper path). A score older than the one already
  applied to its account is ignored, so requests arriving out of order do not move levels back.
- **Claims are atomic and fenced.** :func:`claim_due` moves due rows to ``delivering`` with a
  lease and a fresh ``lease_token`` in one ``UPDATE`` whose row choice is a CTE
  ``SELECT … FOR UPDATE SKIP LOCKED`` on PostgreSQL (two workers never pick the same row and do
  not wait on each other) and runs under ``BEGIN IMMEDIATE`` on SQLite (one writer at a time).
  :func:`mark_delivered` / :func:`mark_failed` only change a row whose token still matches,
  so a worker whose lease ran out cannot overwrite the outcome of the one that took over.
  A lease that expires (a crashed worker) makes the row due again: delivery is at-least-once
  and the unchanging ``message_id`` (the ``webhook-id`` header) lets consumers drop repeats.
- **Ingested bars are logged before they are served.** ``POST /v1/bars`` records the bars a
  market accepts in ``logged_bars`` (:meth:`BarsWriter.record`, positions taken from a second
  ``feed_head`` row as feed ids are, so a reader's snapshot holds a prefix of the log) and only
  then applies them; every process of the service reads the log on from its own position
  (:func:`bars_position`, :func:`logged_bars_after`, every ``ServeSettings.bars_poll_seconds``),
  and a restarted one replays it after loading the data files. So bars posted to one replica
  are scored by all of them, and an acknowledged bar survives a restart. A writer holds the log
  (:func:`bars_writer`: its head row locked) while it applies what others logged, screens its
  bars and records them, so two processes posting at once never screen against different
  histories.
- **Times are aware UTC** in and out (:class:`UTCDateTime`); SQLite stores them as naive UTC
  text, which sorts and compares correctly.
- **Secrets are stored as given**: they sign, so they must be readable; :class:`Webhook` keeps
  them out of its ``repr``.
"""

import base64
import binascii
import functools
import secrets
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from itertools import chain
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection, Dialect, Engine, make_url

from liqrisk.features.errors import InputError
from liqrisk.features.market import to_us
from liqrisk.serve.levels import Level, Thresholds, is_raise, next_level

SQLITE_BUSY_TIMEOUT_S = 30.0
SQLITE_AUTOCHECKPOINT = 1_000  # SQLite's default wal_autocheckpoint (pages)
MAX_PAGE = 1000
MAX_ACCOUNTS_PER_CALL = 10_000  # keeps "account_id IN (...)" under every driver's bind limit
_FEED_HEAD_ID = 1
_BARS_HEAD_ID = 2  # feed_head's row for the bars log (positions, not feed ids)
_SQLITE_BEGIN = "liqrisk_sqlite_begin"  # execution option read by the SQLite "begin" hook
_SCHEMA_LOCK_KEY = 0x6C717269736B  # pg_advisory_xact_lock key for create_schema ("lqrisk")
_RETRYABLE_PG_CODES = frozenset({"40P01", "40001"})  # deadlock, serialization failure
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timestamp column that takes and gives aware UTC datetimes on every backend."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware (UTC) datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = sa.MetaData()

feed_head = sa.Table(
    "feed_head",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
)

account_state = sa.Table(
    "account_state",
    metadata,
    sa.Column("account_id", sa.String(200), primary_key=True),
    sa.Column("level", sa.SmallInteger, nullable=False),
    sa.Column("probability", sa.Float, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),  # scored_at of the last applied score
)

warnings_table = sa.Table(
    "warnings",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),  # from feed_head
    sa.Column("account_id", sa.String(200), nullable=False, index=True),
    sa.Column("level", sa.SmallInteger, nullable=False),
    sa.Column("previous_level", sa.SmallInteger, nullable=False),
    sa.Column("probability", sa.Float, nullable=False),
    sa.Column("threshold", sa.Float, nullable=False),
    sa.Column("model_version", sa.String(200), nullable=False),
    sa.Column("scored_at", UTCDateTime, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

logged_bars = sa.Table(
    "logged_bars",
    metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),  # from feed_head
    sa.Column("symbol", sa.String(100), nullable=False),
    sa.Column("ts_us", sa.BigInteger, nullable=False),  # bar open, µs since 1970-01-01 UTC
    sa.Column("open", sa.Double, nullable=False),
    sa.Column("high", sa.Double, nullable=False),
    sa.Column("low", sa.Double, nullable=False),
    sa.Column("close", sa.Double, nullable=False),
    sa.Column("volume", sa.Double),  # NULL: no volume (NaN in the market)
    sa.Column("logged_at", UTCDateTime, nullable=False),
)

webhooks_table = sa.Table(
    "webhooks",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("secret", sa.String(200), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("disabled_at", UTCDateTime),
    sa.Column("disabled_reason", sa.Text),
)

deliveries_table = sa.Table(
    "deliveries",
    metadata,
    sa.Column(
        "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True
    ),  # INTEGER PRIMARY KEY is SQLite's autoincrementing rowid
    sa.Column("warning_id", sa.BigInteger, sa.ForeignKey("warnings.id"), nullable=False),
    sa.Column("webhook_id", sa.String(40), sa.ForeignKey("webhooks.id"), nullable=False),
    sa.Column("message_id", sa.String(64), nullable=False),  # the webhook-id header
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", UTCDateTime, nullable=False),
    sa.Column("lease_until", UTCDateTime),
    sa.Column("lease_token", sa.String(32)),
    sa.Column("claimed_by", sa.String(200)),
    sa.Column("last_status_code", sa.Integer),
    sa.Column("last_error", sa.Text),
    sa.Column("delivered_at", UTCDateTime),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("webhook_id", "message_id"),
    sa.CheckConstraint(
        "status IN ('pending', 'delivering', 'delivered', 'failed')", name="delivery_status"
    ),
    sa.Index("ix_deliveries_due", "status", "next_attempt_at"),
    sa.Index("ix_deliveries_warning", "warning_id"),
)


class DeliveryStatus(StrEnum):
    """Where one warning stands with one webhook."""

    PENDING = "pending"  # waiting for next_attempt_at
    DELIVERING = "delivering"  # claimed by a worker until lease_until
    DELIVERED = "delivered"  # a 2xx was received
    FAILED = "failed"  # given up: attempts exhausted, or the webhook was disabled


@dataclass(frozen=True, slots=True)
class ScoreEvent:
    """One account's score, as produced by the scoring route.

    Parameters
    ----------
    account_id : str
    probability : float
        Probability in [0, 1] that drives the warning level.
    scored_at : datetime
        Aware time of the score; a score older than the last one applied to the account is
        ignored.
    model_version : str
        Recorded on the warning so a consumer knows which model raised it.
    """

    account_id: str
    probability: float
    scored_at: datetime
    model_version: str = ""


@dataclass(frozen=True)
class AccountWarning:
    """A stored warning: an account reached ``level`` from ``previous_level``.

    ``id`` is the feed position (gapless, in commit order); ``cursor`` is the same as a string.
    """

    id: int
    account_id: str
    level: Level
    previous_level: Level
    probability: float
    threshold: float
    model_version: str
    scored_at: datetime
    created_at: datetime

    @property
    def cursor(self) -> str:
        """Pass as ``after`` to read the warnings that follow this one."""
        return str(self.id)


@dataclass(frozen=True)
class Page:
    """One page of the feed; ``next_cursor`` is where the next read starts (same if empty)."""

    items: list[AccountWarning]
    next_cursor: str
    has_more: bool


@dataclass(frozen=True)
class Webhook:
    """A registered endpoint; ``secret`` (``whsec_<base64>``) signs what is sent to it."""

    id: str
    url: str
    secret: str = field(repr=False)
    description: str
    active: bool
    created_at: datetime
    disabled_at: datetime | None
    disabled_reason: str | None


@dataclass(frozen=True)
class Delivery:
    """One warning × one webhook; ``lease_token`` identifies the claim that may settle it."""

    id: int
    warning_id: int
    webhook_id: str
    message_id: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime
    lease_until: datetime | None
    lease_token: str | None = field(repr=False)
    claimed_by: str | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class Claim:
    """A delivery claimed by a worker, with what it needs to send it."""

    delivery: Delivery
    webhook: Webhook
    warning: AccountWarning


# --- engine and schema -------------------------------------------------------------------


def create_engine_for(
    url: str,
    *,
    sqlite_synchronous: str = "FULL",
    sqlite_autocheckpoint: int = SQLITE_AUTOCHECKPOINT,
    **kwargs: Any,
) -> Engine:
    """An engine for the warnings store, configured for its backend.

    ``postgresql://`` URLs get the psycopg 3 driver. SQLite gets WAL (readers never block the
    writer), a busy timeout (writers queue instead of failing), foreign keys,
    ``synchronous=FULL`` by default (a commit survives power loss) and SQLAlchemy-emitted
    ``BEGIN`` so write transactions can start with ``BEGIN IMMEDIATE``. Use a file: each
    connection to ``sqlite://`` (memory) would see its own empty database.

    Parameters
    ----------
    url : str
        SQLAlchemy URL, e.g. ``sqlite:///warnings.db`` or
        ``postgresql+psycopg://user:pw@host/db``.
    sqlite_synchronous : {"FULL", "NORMAL"}
        SQLite's ``synchronous`` (``ServeSettings.sqlite_synchronous`` says what each keeps).
    sqlite_autocheckpoint : int
        WAL pages after which a commit also checkpoints (SQLite's ``wal_autocheckpoint``); a
        process that runs :func:`checkpoint` itself sets it high, as a safety net only.
    **kwargs
        Passed to :func:`sqlalchemy.create_engine`.
    """
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_S, **kwargs.pop("connect_args", {})}
        if sqlite_synchronous not in ("FULL", "NORMAL"):
            raise InputError(f"sqlite_synchronous must be FULL or NORMAL, got {sqlite_synchronous!r}")
        engine = sa.create_engine(parsed, connect_args=connect_args, **kwargs)
        _configure_sqlite(engine, sqlite_synchronous, int(sqlite_autocheckpoint))
        return engine
    if backend == "postgresql":
        return sa.create_engine(parsed, **{"pool_pre_ping": True, **kwargs})
    raise InputError(
        f"warnings store: unsupported database {backend!r} in URL; use sqlite or postgresql"
    )


def _configure_sqlite(engine: Engine, synchronous: str, autocheckpoint: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver stops emitting BEGIN; we do
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute(f"PRAGMA wal_autocheckpoint={autocheckpoint}")
        cursor.close()
        record.info[_SYNCHRONOUS] = record.info[_CONFIGURED] = synchronous

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        # synchronous can change only outside a transaction, so a relaxed commit is chosen here
        wanted = "NORMAL" if options.get(_RELAXED) else synchronous
        if conn.info[_SYNCHRONOUS] != wanted:
            conn.exec_driver_sql(f"PRAGMA synchronous={wanted}")
            conn.info[_SYNCHRONOUS] = wanted
        conn.exec_driver_sql(f"BEGIN {options.get(_SQLITE_BEGIN, 'DEFERRED')}")


_RELAXED = "liqrisk_relaxed_commit"  # execution option: this transaction's commit need not wait
_SYNCHRONOUS, _CONFIGURED = "liqrisk_synchronous", "liqrisk_configured_synchronous"  # conn.info


@contextmanager
def _write(engine: Engine, *, relaxed: bool = False) -> Iterator[Connection]:
    """A write transaction: ``BEGIN IMMEDIATE`` on SQLite, so it never fails to upgrade a read
    lock halfway (``database is locked``) but waits its turn at the start. ``relaxed``: on
    SQLite, commit without waiting for the disk (``synchronous=NORMAL``), whatever the engine's
    setting; only for what may be lost with the host (:func:`record_scores` says what)."""
    with engine.connect() as conn:
        conn.execution_options(**{_SQLITE_BEGIN: "IMMEDIATE", _RELAXED: relaxed})
        with conn.begin():
            yield conn


def checkpoint(engine: Engine) -> None:
    """Copy what the WAL holds into the SQLite database file (a passive checkpoint: it waits for
    no reader or writer); nothing on PostgreSQL. The service runs it on a thread of its own so
    that commits do not: a commit that crosses ``wal_autocheckpoint`` checkpoints before it
    returns, with a flush of the database file, which was the store's tail once the commits no
    longer waited for the disk (bench/README.md)."""
    if engine.dialect.name != "sqlite":
        return
    conn = engine.raw_connection()
    try:
        conn.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    finally:
        conn.close()


def _less_durable_than_configured(conn: Connection) -> bool:
    """True in a SQLite transaction begun relaxed on an engine configured to wait for the disk."""
    return conn.dialect.name == "sqlite" and conn.info[_SYNCHRONOUS] != conn.info[_CONFIGURED]


def create_schema(engine: Engine) -> None:
    """Create the tables and the feed counter if missing; safe to run from several processes."""
    with _write(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_SCHEMA_LOCK_KEY)))
        metadata.create_all(conn)
        for head in (_FEED_HEAD_ID, _BARS_HEAD_ID):
            conn.execute(_insert_ignore(conn, feed_head).values(id=head, last_seq=0))


def _insert_ignore(conn: Connection, table: sa.Table) -> Any:
    dialect_insert = pg.insert if conn.dialect.name == "postgresql" else sqlite.insert
    return dialect_insert(table).on_conflict_do_nothing(index_elements=list(table.primary_key))


# --- scores and warnings -----------------------------------------------------------------


@dataclass(slots=True)
class _State:
    level: Level
    probability: float
    updated_at: datetime
    changed: bool = False
    stored: bool = True  # False: a new account whose row is inserted when the state is saved


@dataclass(frozen=True)
class Recorded:
    """What :func:`record_scores` committed: the warnings raised, in feed order, and the level
    each scored account holds after it (read in the same transaction, so no second query)."""

    warnings: list[AccountWarning]
    levels: dict[str, Level]


@dataclass(frozen=True)
class _Raise:
    event: ScoreEvent
    previous: Level
    level: Level


def record_scores(
    engine: Engine,
    scores: Sequence[ScoreEvent],
    thresholds: Thresholds,
    *,
    now: datetime | None = None,
) -> Recorded:
    """Apply scores to the accounts' levels and store the warnings they raise, durably.

    In one transaction: lock (creating if new) each account's state, compute its next level
    with hysteresis, save it, append a warning for every new or escalated level and queue one
    delivery per active webhook. When this returns the transaction has committed; if anything
    fails nothing is written.

    Parameters
    ----------
    engine : Engine
    scores : sequence of ScoreEvent
        Applied in order; an account may appear more than once.
    thresholds : Thresholds
    now : datetime, optional
        Aware time stamped on new warnings and deliveries (default: the clock).

    Returns
    -------
    Recorded
        The warnings raised, in feed order (empty if none), and each account's level now.

    Raises
    ------
    InputError
        A score is out of [0, 1], has a naive ``scored_at`` or an empty account id, or there
        are more than :data:`MAX_ACCOUNTS_PER_CALL` accounts; nothing is written.
    """
    accounts = _checked_accounts(scores)
    if not scores:
        return Recorded(warnings=[], levels={})
    now = _aware(now)
    relaxed = max(s.probability for s in scores) < _lowest_threshold(thresholds)
    for attempt in range(3):
        try:
            return _record_scores_once(engine, scores, accounts, thresholds, now, relaxed)
        except _LevelsMoved:
            relaxed = False  # rolled back; redone waiting for the disk
        except sa.exc.DBAPIError as exc:
            if attempt == 2 or _pg_code(exc) not in _RETRYABLE_PG_CODES:
                raise
    raise AssertionError("unreachable")


def _record_scores_once(
    engine: Engine,
    scores: Sequence[ScoreEvent],
    accounts: list[str],
    thresholds: Thresholds,
    now: datetime,
    relaxed: bool,
) -> Recorded:
    # durable where it counts (module docstring): a commit that moves no level does not wait
    with _write(engine, relaxed=relaxed) as conn:
        held = _SqliteStates(conn) if conn.dialect.name == "sqlite" else _LockedStates(conn)
        states = held.read(accounts)
        raises, moved = _apply_scores(states, scores, thresholds)
        if moved and _less_durable_than_configured(conn):
            raise _LevelsMoved
        if not moved and conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
        held.save(states)
        levels = {a: s.level for a, s in states.items()}
        if not raises:
            return Recorded(warnings=[], levels=levels)
        first = _allocate_ids(conn, len(raises))
        warnings = [
            AccountWarning(
                id=first + i,
                account_id=r.event.account_id,
                level=r.level,
                previous_level=r.previous,
                probability=float(r.event.probability),
                threshold=thresholds.threshold(r.level),
                model_version=r.event.model_version,
                scored_at=r.event.scored_at,
                created_at=now,
            )
            for i, r in enumerate(raises)
        ]
        _insert_rows(conn, warnings_table, _WARNING_COLUMNS, [_warning_values(w) for w in warnings])
        _fan_out(conn, warnings, now)
    return Recorded(warnings=warnings, levels=levels)


def _checked_accounts(scores: Sequence[ScoreEvent]) -> list[str]:
    """The distinct accounts of ``scores`` in the order first scored, once every score is
    known valid: one call of :func:`_score_problem` per score, where there were three."""
    accounts = list(dict.fromkeys(s.account_id for s in scores))
    if len(accounts) > MAX_ACCOUNTS_PER_CALL:
        raise InputError(
            f"scores: {len(accounts)} accounts in one call, at most {MAX_ACCOUNTS_PER_CALL}"
        )
    problems = [(row, name) for row, s in enumerate(scores) if (name := _score_problem(s))]
    if problems:
        # the first rule any row breaks is named; no row breaks an earlier one, so the rows
        # whose first broken rule it is are all the rows that break it
        name = next(n for n in _SCORE_RULES if any(p == n for _, p in problems))
        rows = [row for row, p in problems if p == name]
        first = scores[rows[0]]
        raise InputError(
            f"scores: {name} {_SCORE_RULES[name]}, got {getattr(first, name)!r} at row {rows[0]} "
            f"(account_id={first.account_id!r}); {len(rows)} row(s) affected"
        )
    return accounts


_SCORE_RULES = {  # field: rule, in the order _score_problem checks them
    "account_id": "must be a non-empty string",
    "probability": "must be in [0, 1]",
    "scored_at": "must be timezone-aware",
}


def _score_problem(score: ScoreEvent) -> str | None:
    """The field of the first rule in :data:`_SCORE_RULES` that ``score`` breaks, or None."""
    if not score.account_id:
        return "account_id"
    if not 0.0 <= score.probability <= 1.0:  # also catches NaN
        return "probability"
    if score.scored_at.tzinfo is None:
        return "scored_at"
    return None


def _lock_states(conn: Connection, accounts: list[str]) -> dict[str, _State]:
    # A row for every account first, so that FOR UPDATE locks new accounts too (two services
    # scoring one new account must not both raise its warning); only the accounts not stored
    # yet are inserted (a second process inserting one meanwhile is ignored). Then every row is
    # locked in one query in account order (two phases of locks could deadlock two writers).
    # (SQLite needs none of this: BEGIN IMMEDIATE holds its one write lock; see _SqliteStates.)
    stored = _read_states(conn, accounts, lock=False)
    new = [a for a in accounts if a not in stored]
    if new:
        level, probability, updated_at = _NEVER_SCORED
        placeholder = {"level": int(level), "probability": probability, "updated_at": updated_at}
        conn.execute(_insert_ignore(conn, account_state), [{"account_id": a, **placeholder} for a in new])
    return _read_states(conn, accounts, lock=True)


def _read_states(conn: Connection, accounts: list[str], *, lock: bool) -> dict[str, _State]:
    """The stored state of each of ``accounts`` that has one; ``lock``: ``FOR UPDATE``, in
    account order (rendered on PostgreSQL only)."""
    query = sa.select(
        account_state.c.account_id,
        account_state.c.level,
        account_state.c.probability,
        account_state.c.updated_at,
    ).where(account_state.c.account_id.in_(accounts))
    if lock:
        query = query.order_by(account_state.c.account_id).with_for_update()
    return {
        account: _State(_LEVELS[level], probability, updated_at)
        for account, level, probability, updated_at in conn.execute(query)
    }


_LEVELS = {int(level): level for level in Level}
_NEVER_SCORED = (Level.NONE, 0.0, _EPOCH)  # level, probability, updated_at of a new account's row


class _LevelsMoved(Exception):
    """A relaxed transaction moved a level: it is rolled back and redone durably."""


def _apply_scores(
    states: Mapping[str, _State], scores: Sequence[ScoreEvent], thresholds: Thresholds
) -> tuple[list[_Raise], bool]:
    """The warnings ``scores`` raise, and whether any account's level moved (up or down);
    ``states`` are updated in place."""
    raises = []
    moved = False
    floor = _lowest_threshold(thresholds)
    for score in scores:
        state = states[score.account_id]
        if score.scored_at < state.updated_at:
            continue  # an older score arriving late must not undo a newer one
        level, probability, at = state.level, score.probability, score.scored_at
        if level is not Level.NONE or probability >= floor:
            new = next_level(level, probability, thresholds)
            if is_raise(level, new):
                raises.append(_Raise(score, level, new))
        else:
            new = level  # NONE stays NONE below every threshold: nothing to compute or raise
        # a re-score that changes nothing writes nothing: an account scored again before the
        # next bar arrives has the same as_of (the latest bar's) and, unchanged, the same score
        if new != level:
            moved = state.changed = True
        elif not state.changed:
            state.changed = probability != state.probability or at != state.updated_at
        state.level, state.probability, state.updated_at = new, probability, at
    return raises, moved


def _lowest_threshold(thresholds: Thresholds) -> float:
    """Probability below which :func:`next_level` keeps ``Level.NONE`` (no level is reached
    below its threshold), so the many scores of accounts far from any warning skip it."""
    return min(thresholds.threshold(level) for level in Level if level is not Level.NONE)


def _save_states(conn: Connection, states: Mapping[str, _State]) -> None:
    rows = [
        {"b_id": a, "b_level": int(s.level), "b_p": float(s.probability), "b_at": s.updated_at}
        for a, s in states.items()
        if s.changed
    ]
    if rows:
        stmt = (
            sa.update(account_state)
            .where(account_state.c.account_id == sa.bindparam("b_id"))
            .values(
                level=sa.bindparam("b_level"),
                probability=sa.bindparam("b_p"),
                updated_at=sa.bindparam("b_at", type_=UTCDateTime),
            )
        )
        conn.execute(stmt, rows)


@dataclass(frozen=True)
class _LockedStates:
    """The account states on PostgreSQL: rows created if missing and locked ``FOR UPDATE``
    (:func:`_lock_states`), the changed ones updated (:func:`_save_states`)."""

    conn: Connection

    def read(self, accounts: list[str]) -> dict[str, _State]:
        return _lock_states(self.conn, sorted(accounts))  # account order: see _lock_states

    def save(self, states: Mapping[str, _State]) -> None:
        _save_states(self.conn, states)


class _SqliteStates:
    """The account states on SQLite, read and saved through the driver in plain statements.

    ``BEGIN IMMEDIATE`` already holds the database's one write lock, so the rows read are the
    rows held, and a new account is inserted once with its state, not as a placeholder first.
    Times go through the column type's own processors, once per distinct value (a batch
    shares a few as_of): SQLAlchemy's per-row parameter and result processing was most of
    the store's time for a batch of 1,000 (22-34 ms for new accounts, 16-19 ms for changed
    ones, in two runs; bench/README.md).
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        column_type = account_state.c.updated_at.type.dialect_impl(conn.dialect)
        self._to_db = column_type.bind_processor(conn.dialect) or (lambda v: v)
        self._from_db = column_type.result_processor(conn.dialect, None) or (lambda v: v)

    def read(self, accounts: list[str]) -> dict[str, _State]:
        """Every account's state: the stored one, or a new account's (``stored=False``)."""
        from_db = functools.cache(self._from_db)  # once per distinct time (a batch shares a few)
        states = {}
        for start in range(0, len(accounts), _SQLITE_IN_CHUNK):
            chunk = accounts[start : start + _SQLITE_IN_CHUNK]
            rows = self.conn.exec_driver_sql(
                "SELECT account_id, level, probability, updated_at FROM account_state "
                f"WHERE account_id IN ({', '.join('?' * len(chunk))})",
                tuple(chunk),
            ).fetchall()
            for account, level, probability, raw in rows:
                states[account] = _State(_LEVELS[level], probability, from_db(raw))
        level, probability, updated_at = _NEVER_SCORED
        for account in accounts:
            if account not in states:
                states[account] = _State(level, probability, updated_at, stored=False)
        return states

    def save(self, states: Mapping[str, _State]) -> None:
        """Insert the new accounts' states, update the changed ones."""
        to_db = functools.cache(self._to_db)  # once per distinct time, as in _bound
        inserted: list[tuple[str, int, float, Any]] = []
        updated: list[tuple[int, float, Any, str]] = []
        for account, s in states.items():
            if s.stored and not s.changed:
                continue
            at = to_db(s.updated_at)
            if s.stored:
                updated.append((int(s.level), float(s.probability), at, account))
            else:
                inserted.append((account, int(s.level), float(s.probability), at))
        _sqlite_insert(self.conn, account_state, _STATE_COLUMNS, inserted)
        if updated:
            self.conn.exec_driver_sql(
                "UPDATE account_state SET level = ?, probability = ?, updated_at = ? "
                "WHERE account_id = ?",
                updated,
            )


_SQLITE_IN_CHUNK = 5_000  # ids per "IN (...)": far under SQLite's bound-parameter limit
_SQLITE_INSERT_PARAMETERS = 2_000  # per multi-row INSERT (500 states); more was no faster


_STATE_COLUMNS = ("account_id", "level", "probability", "updated_at")
_Row = tuple[Any, ...]


def _insert_rows(
    conn: Connection, table: sa.Table, columns: Sequence[str], rows: Sequence[_Row]
) -> None:
    """Insert ``rows`` (tuples in ``columns`` order) into ``table``: on SQLite through the
    driver (:func:`_sqlite_insert`), elsewhere by SQLAlchemy's executemany."""
    if not rows:
        return
    if conn.dialect.name == "sqlite":
        dialect = conn.dialect
        binds = [table.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in columns]
        _sqlite_insert(conn, table, columns, _bound(rows, binds))
    else:
        conn.execute(sa.insert(table), [dict(zip(columns, row, strict=True)) for row in rows])


def _bound(rows: Sequence[_Row], binds: Sequence[Callable[[Any], Any] | None]) -> list[_Row]:
    """``rows`` with each column's values bound by its type's processor (e.g. UTCDateTime's),
    once per distinct value: a batch's rows share a few times, and SQLAlchemy's per-row
    processing was most of the time of a batch raising hundreds of warnings."""
    columns = list(zip(*rows, strict=True))
    for i, bind in enumerate(binds):
        if bind is not None:
            columns[i] = tuple(map(functools.cache(bind), columns[i]))
    return list(zip(*columns, strict=True))


def _sqlite_insert(
    conn: Connection, table: sa.Table, columns: Sequence[str], rows: Sequence[_Row]
) -> None:
    """Insert driver-ready ``rows`` into ``table``, many rows a statement: a third less time
    than executemany's row at a time."""
    per = max(1, _SQLITE_INSERT_PARAMETERS // len(columns))
    row = f"({', '.join('?' * len(columns))})"
    for start in range(0, len(rows), per):
        chunk = rows[start : start + per]
        values = ", ".join([row] * len(chunk))
        conn.exec_driver_sql(
            f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES {values}",
            tuple(chain.from_iterable(chunk)),
        )


def _allocate_ids(conn: Connection, n: int, head: int = _FEED_HEAD_ID) -> int:
    """First of ``n`` consecutive ids of ``head`` (the feed's, or the bars log's); locks that
    ``feed_head`` row until this transaction ends."""
    last = conn.execute(
        sa.update(feed_head)
        .where(feed_head.c.id == head)
        .values(last_seq=feed_head.c.last_seq + n)
        .returning(feed_head.c.last_seq)
    ).scalar_one()
    return int(last) - n + 1


def _fan_out(conn: Connection, warnings: Sequence[AccountWarning], now: datetime) -> None:
    hooks = (
        conn.execute(
            sa.select(webhooks_table.c.id)
            .where(webhooks_table.c.active)
            .order_by(webhooks_table.c.id)
        )
        .scalars()
        .all()
    )
    pending = DeliveryStatus.PENDING.value
    rows: list[tuple[Any, ...]] = []
    for w in warnings:
        message_id = f"msg_{uuid.uuid4().hex}"  # one per warning, the same for every webhook
        rows.extend((w.id, hook, message_id, pending, 0, now, now) for hook in hooks)
    _insert_rows(conn, deliveries_table, _DELIVERY_COLUMNS, rows)


_DELIVERY_COLUMNS = (
    "warning_id", "webhook_id", "message_id", "status", "attempts", "next_attempt_at", "created_at"
)


# --- the bars log ---------------------------------------------------------------------------


BAR_VALUES = ("open", "high", "low", "close", "volume")


@contextmanager
def bars_writer(engine: Engine, *, now: datetime | None = None) -> Iterator["BarsWriter"]:
    """The bars log held for writing: a write transaction (:func:`_write`) with the log's head
    row locked, so no other process logs until it ends. Read what others logged
    (:meth:`BarsWriter.after`), then :meth:`BarsWriter.record` the new bars (which commits);
    leaving without recording writes nothing."""
    with _write(engine) as conn:
        position = conn.execute(
            sa.select(feed_head.c.last_seq).where(feed_head.c.id == _BARS_HEAD_ID).with_for_update()
        ).scalar_one()
        yield BarsWriter(conn, int(position), _aware(now))


class BarsWriter:
    """The bars log while :func:`bars_writer` holds it; ``position`` is its last position."""

    def __init__(self, conn: Connection, position: int, now: datetime) -> None:
        self._conn, self._now = conn, now
        self.position = position

    def after(self, position: int) -> tuple[pd.DataFrame, int]:
        """As :func:`logged_bars_after`, in this transaction."""
        return _bars_after(self._conn, position)

    def record(self, bars: pd.DataFrame, after: int) -> int:
        """Log ``bars`` (checked: ``symbol``, ``ts``, the values) after the log's last position
        and commit; return the new last position. ``after`` is the position the caller's market
        has applied: it must be the log's (catch up first), else nothing is written."""
        if after != self.position:
            raise RuntimeError(
                f"bars log at {self.position}, the market at {after}: catch up before recording"
            )
        if len(bars):
            first = _allocate_ids(self._conn, len(bars), head=_BARS_HEAD_ID)
            volume = bars["volume"].to_numpy(dtype=np.float64)
            columns = [
                range(first, first + len(bars)),
                bars["symbol"].astype(str).tolist(),
                to_us(bars["ts"]).tolist(),
                *(bars[c].to_numpy(dtype=np.float64).tolist() for c in BAR_VALUES[:4]),
                np.where(np.isnan(volume), None, volume).tolist(),  # NULL: no volume
                [self._now] * len(bars),
            ]
            rows = list(zip(*columns, strict=True))
            _insert_rows(self._conn, logged_bars, _LOGGED_BAR_COLUMNS, rows)
            self.position = first + len(bars) - 1
        self._conn.commit()
        return self.position


_LOGGED_BAR_COLUMNS = ("seq", "symbol", "ts_us", *BAR_VALUES, "logged_at")


def bars_position(engine: Engine) -> int:
    """The bars log's last position (0: nothing logged). Polled by every process of the service,
    so read through the driver's own connection (a pooled one; the pool rolls it back on
    return): 21 µs against 117 µs through a SQLAlchemy connection on SQLite."""
    conn = engine.raw_connection()
    try:
        cursor = conn.cursor()
        cursor.execute(f"SELECT last_seq FROM feed_head WHERE id = {_BARS_HEAD_ID}")
        ((position,),) = cursor.fetchall()
        cursor.close()
        return int(position)
    finally:
        conn.close()


def logged_bars_after(engine: Engine, position: int) -> tuple[pd.DataFrame, int]:
    """The bars logged after ``position``, in log order (``symbol``, ``ts`` UTC, the values,
    NaN for no volume), and the log position they reach (``position`` if none)."""
    with engine.connect() as conn:
        return _bars_after(conn, position)


def _bars_after(conn: Connection, position: int) -> tuple[pd.DataFrame, int]:
    query = (
        sa.select(
            logged_bars.c.seq,
            logged_bars.c.symbol,
            logged_bars.c.ts_us,
            *(logged_bars.c[c] for c in BAR_VALUES),
        )
        .where(logged_bars.c.seq > position)
        .order_by(logged_bars.c.seq)
    )
    frame = pd.DataFrame(conn.execute(query).all(), columns=["seq", "symbol", "ts_us", *BAR_VALUES])
    bars = pd.DataFrame(
        {
            "symbol": frame["symbol"].astype("str"),
            "ts": pd.to_datetime(frame["ts_us"].astype("int64"), unit="us", utc=True).astype(
                "datetime64[us, UTC]"
            ),
            **{c: frame[c].astype("float64") for c in BAR_VALUES},
        }
    )
    return bars, int(frame["seq"].iat[-1]) if len(frame) else position


def parse_cursor(cursor: str | None) -> int:
    """Feed position from a cursor string; ``None`` or ``""`` is the start of the feed.

    Raises
    ------
    InputError
        If the cursor is not one this store handed out.
    """
    if cursor is None or cursor == "":
        return 0
    if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 19:
        raise InputError(
            f"warnings feed: after must be a cursor from a previous page, got {cursor!r}"
        )
    return int(cursor)


def warnings_after(engine: Engine, cursor: str | None, limit: int = 100) -> Page:
    """The warnings after ``cursor``, oldest first, at most ``limit`` of them.

    Each warning appears exactly once across successive pages, even while writers commit
    concurrently (see the module notes): a consumer that stores ``next_cursor`` after handling
    a page and resumes from it after a crash misses nothing.

    Parameters
    ----------
    engine : Engine
    cursor : str or None
        ``next_cursor`` of the previous page, or None/``""`` for the start.
    limit : int
        1 to :data:`MAX_PAGE`.

    Returns
    -------
    Page
    """
    after = parse_cursor(cursor)
    if not 1 <= limit <= MAX_PAGE:
        raise InputError(f"warnings feed: limit must be in [1, {MAX_PAGE}], got {limit}")
    query = (
        sa.select(warnings_table)
        .where(warnings_table.c.id > after)
        .order_by(warnings_table.c.id)
        .limit(limit + 1)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    items = [_warning_from(r._mapping) for r in rows[:limit]]
    return Page(items, items[-1].cursor if items else str(after), len(rows) > limit)


def get_warning(engine: Engine, warning_id: int) -> AccountWarning | None:
    """One warning by id, or None."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(warnings_table).where(warnings_table.c.id == warning_id)
        ).first()
    return None if row is None else _warning_from(row._mapping)


@dataclass(frozen=True)
class AccountState:
    """What the store holds of one account: the level it holds now, the probability and time of
    the last score applied to it (a score older than that is not applied), and its latest
    warning (None if it never raised one)."""

    account_id: str
    level: Level
    probability: float
    scored_at: datetime
    last_warning: AccountWarning | None


def account_state_of(engine: Engine, account_id: str) -> AccountState | None:
    """The account's :class:`AccountState`, or None if it was never scored. One statement, so
    the level and the latest warning agree on both databases (PostgreSQL's read committed gives
    each statement of a transaction its own snapshot)."""
    s, w = account_state, warnings_table
    latest = sa.select(sa.func.max(w.c.id)).where(w.c.account_id == account_id).scalar_subquery()
    query = (
        sa.select(
            s.c.level.label("state_level"),
            s.c.probability.label("state_probability"),
            s.c.updated_at.label("state_scored_at"),
            w,
        )
        .select_from(s.outerjoin(w, w.c.id == latest))
        .where(s.c.account_id == account_id)
    )
    with engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None:
        return None
    m = row._mapping
    return AccountState(
        account_id,
        Level(m["state_level"]),
        m["state_probability"],
        m["state_scored_at"],
        None if m[w.c.id] is None else _warning_from({c.name: m[c] for c in w.c}),
    )


def account_level(engine: Engine, account_id: str) -> Level:
    """Level the account holds now (``Level.NONE`` if never scored)."""
    state = account_state_of(engine, account_id)
    return Level.NONE if state is None else state.level


# --- webhooks ----------------------------------------------------------------------------


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def register_webhook(
    engine: Engine,
    url: str,
    *,
    secret: str | None = None,
    description: str = "",
    now: datetime | None = None,
) -> Webhook:
    """Register an endpoint; warnings raised after this returns are queued for it.

    A warning raised by a request running concurrently with the registration may not be (its
    transaction read the webhooks before this one committed); the feed has every warning.

    Parameters
    ----------
    url : str
        ``http`` or ``https`` URL with a host. Whether private addresses are allowed (SSRF)
        is the route's decision, made before calling this.
    secret : str, optional
        ``whsec_<base64 of 24 to 64 bytes>``; generated when omitted. Stored as given.
    description : str

    Returns
    -------
    Webhook
        Including the secret, which the caller shows once.
    """
    _check_url(url)
    secret = new_secret() if secret is None else _checked_secret(secret)
    hook = Webhook(
        id=f"wh_{uuid.uuid4().hex}",
        url=url,
        secret=secret,
        description=description,
        active=True,
        created_at=_aware(now),
        disabled_at=None,
        disabled_reason=None,
    )
    with _write(engine) as conn:
        conn.execute(sa.insert(webhooks_table).values(**_webhook_row(hook)))
    return hook


def list_webhooks(engine: Engine, *, active_only: bool = False) -> list[Webhook]:
    """Registered webhooks, oldest first."""
    query = sa.select(webhooks_table).order_by(webhooks_table.c.created_at, webhooks_table.c.id)
    if active_only:
        query = query.where(webhooks_table.c.active)
    with engine.connect() as conn:
        return [_webhook_from(r._mapping) for r in conn.execute(query)]


def get_webhook(engine: Engine, webhook_id: str) -> Webhook | None:
    """One webhook by id, or None."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(webhooks_table).where(webhooks_table.c.id == webhook_id)
        ).first()
    return None if row is None else _webhook_from(row._mapping)


def disable_webhook(
    engine: Engine, webhook_id: str, *, reason: str, now: datetime | None = None
) -> bool:
    """Stop sending to a webhook; its pending deliveries become ``failed`` with ``reason``.

    Returns
    -------
    bool
        True if it was active.
    """
    now = _aware(now)
    with _write(engine) as conn:
        changed = conn.execute(
            sa.update(webhooks_table)
            .where(webhooks_table.c.id == webhook_id, webhooks_table.c.active)
            .values(active=False, disabled_at=now, disabled_reason=reason)
        ).rowcount
        conn.execute(
            sa.update(deliveries_table)
            .where(
                deliveries_table.c.webhook_id == webhook_id,
                deliveries_table.c.status == DeliveryStatus.PENDING.value,
            )
            .values(status=DeliveryStatus.FAILED.value, last_error=f"webhook disabled: {reason}")
        )
    return changed == 1


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"webhook: url must be an http(s) URL with a host, got {url!r}")


def _checked_secret(secret: str) -> str:
    prefix = "whsec_"
    try:
        key = base64.b64decode(secret.removeprefix(prefix), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not secret.startswith(prefix) or not 24 <= len(key) <= 64:
        raise InputError("webhook: secret must be 'whsec_' + base64 of 24 to 64 bytes")
    return secret


# --- the outbox --------------------------------------------------------------------------


def delivery_state(
    engine: Engine,
    *,
    warning_id: int | None = None,
    delivery_id: int | None = None,
    webhook_id: str | None = None,
) -> list[Delivery]:
    """Deliveries matching every filter given, by id (all of them if none is given)."""
    d = deliveries_table
    query = sa.select(d).order_by(d.c.id)
    for column, value in (
        (d.c.warning_id, warning_id),
        (d.c.id, delivery_id),
        (d.c.webhook_id, webhook_id),
    ):
        if value is not None:
            query = query.where(column == value)
    with engine.connect() as conn:
        return [_delivery_from(r._mapping) for r in conn.execute(query)]


def claim_due(
    engine: Engine,
    *,
    worker: str,
    limit: int = 16,
    lease: timedelta = timedelta(minutes=2),
    now: datetime | None = None,
) -> list[Claim]:
    """Atomically take up to ``limit`` due deliveries for ``worker`` until ``now + lease``.

    Due: ``pending`` with ``next_attempt_at <= now``, or ``delivering`` whose lease expired
    (its worker died), for an active webhook; oldest first. Each claim counts one attempt.
    No two callers, in any process, get the same delivery under the same lease. A call that
    finds nothing due only reads (every process polls; an empty pass took the write lock the
    scores' commits wait for, 2.1 ms a pass against 0.7 ms now).

    Parameters
    ----------
    worker : str
        Recorded in ``claimed_by`` for operators.
    limit : int
    lease : timedelta
        Must outlast sending the whole batch; the sender checks it.
    now : datetime, optional

    Returns
    -------
    list of Claim
        Ordered by delivery id.
    """
    now = _aware(now)
    token = uuid.uuid4().hex
    d, h = deliveries_table, webhooks_table
    due = (
        sa.select(d.c.id)
        .join(h, h.c.id == d.c.webhook_id)
        .where(
            h.c.active,
            sa.or_(
                sa.and_(d.c.status == DeliveryStatus.PENDING.value, d.c.next_attempt_at <= now),
                sa.and_(d.c.status == DeliveryStatus.DELIVERING.value, d.c.lease_until <= now),
            ),
        )
        .order_by(d.c.next_attempt_at, d.c.id)
        .limit(limit)
    )
    with engine.connect() as conn:  # most passes find nothing: a read, no write lock taken
        if conn.execute(due.limit(1)).first() is None:
            return []
    with _write(engine) as conn:
        if conn.dialect.name == "postgresql":
            # a locking CTE runs once; SKIP LOCKED passes over rows another worker is taking
            due = due.with_for_update(skip_locked=True, of=d)
        picked = due.cte("due")
        conn.execute(
            sa.update(d)
            .where(d.c.id.in_(sa.select(picked.c.id)))
            .values(
                status=DeliveryStatus.DELIVERING.value,
                attempts=d.c.attempts + 1,
                lease_until=now + lease,
                lease_token=token,
                claimed_by=worker,
            )
        )
        rows = conn.execute(
            sa.select(d, h, warnings_table)
            .join(h, h.c.id == d.c.webhook_id)
            .join(warnings_table, warnings_table.c.id == d.c.warning_id)
            .where(d.c.lease_token == token)
            .order_by(d.c.id)
        ).all()
    return [_claim_from(r._mapping) for r in rows]


def mark_delivered(
    engine: Engine, delivery: Delivery, *, status_code: int, now: datetime | None = None
) -> bool:
    """Record a 2xx for a claimed delivery.

    Returns
    -------
    bool
        False if the claim was lost (lease expired and someone else took the row).
    """
    return _settle(
        engine,
        delivery,
        status=DeliveryStatus.DELIVERED,
        last_status_code=status_code,
        last_error=None,
        delivered_at=_aware(now),
    )


def mark_failed(
    engine: Engine,
    delivery: Delivery,
    *,
    error: str,
    retry_at: datetime | None,
    status_code: int | None = None,
) -> bool:
    """Record a failed attempt: due again at ``retry_at``, or given up (``failed``) if None.

    Returns
    -------
    bool
        False if the claim was lost.
    """
    values: dict[str, Any] = {"last_status_code": status_code, "last_error": error[:2000]}
    if retry_at is None:
        return _settle(engine, delivery, status=DeliveryStatus.FAILED, **values)
    return _settle(
        engine, delivery, status=DeliveryStatus.PENDING, next_attempt_at=_aware(retry_at), **values
    )


def _settle(engine: Engine, delivery: Delivery, *, status: DeliveryStatus, **values: Any) -> bool:
    if delivery.lease_token is None:
        raise ValueError(f"delivery {delivery.id} was not claimed (no lease token)")
    d = deliveries_table
    with _write(engine) as conn:
        changed = conn.execute(
            sa.update(d)
            .where(
                d.c.id == delivery.id,
                d.c.lease_token == delivery.lease_token,
                d.c.status == DeliveryStatus.DELIVERING.value,
            )
            .values(status=status.value, lease_until=None, lease_token=None, **values)
        ).rowcount
    return changed == 1


# --- rows <-> objects ---------------------------------------------------------------------


def _aware(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError(f"naive datetime {now!r}: pass an aware (UTC) datetime")
    return now.astimezone(UTC)


def _pg_code(exc: sa.exc.DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None)


_WARNING_COLUMNS = (
    "id", "account_id", "level", "previous_level", "probability", "threshold", "model_version",
    "scored_at", "created_at",
)


def _warning_values(w: AccountWarning) -> tuple[Any, ...]:
    """A warning's row, in :data:`_WARNING_COLUMNS` order."""
    return (
        w.id, w.account_id, int(w.level), int(w.previous_level), w.probability, w.threshold,
        w.model_version, w.scored_at, w.created_at,
    )



def _warning_from(m: Mapping[Any, Any]) -> AccountWarning:
    return AccountWarning(
        id=m["id"],
        account_id=m["account_id"],
        level=Level(m["level"]),
        previous_level=Level(m["previous_level"]),
        probability=m["probability"],
        threshold=m["threshold"],
        model_version=m["model_version"],
        scored_at=m["scored_at"],
        created_at=m["created_at"],
    )


def _webhook_row(h: Webhook) -> dict[str, Any]:
    return {
        "id": h.id,
        "url": h.url,
        "secret": h.secret,
        "description": h.description,
        "active": h.active,
        "created_at": h.created_at,
        "disabled_at": h.disabled_at,
        "disabled_reason": h.disabled_reason,
    }


def _webhook_from(m: Mapping[Any, Any]) -> Webhook:
    return Webhook(
        id=m["id"],
        url=m["url"],
        secret=m["secret"],
        description=m["description"],
        active=bool(m["active"]),
        created_at=m["created_at"],
        disabled_at=m["disabled_at"],
        disabled_reason=m["disabled_reason"],
    )


def _delivery_from(m: Mapping[Any, Any]) -> Delivery:
    return Delivery(
        id=m["id"],
        warning_id=m["warning_id"],
        webhook_id=m["webhook_id"],
        message_id=m["message_id"],
        status=DeliveryStatus(m["status"]),
        attempts=m["attempts"],
        next_attempt_at=m["next_attempt_at"],
        lease_until=m["lease_until"],
        lease_token=m["lease_token"],
        claimed_by=m["claimed_by"],
        last_status_code=m["last_status_code"],
        last_error=m["last_error"],
        delivered_at=m["delivered_at"],
        created_at=m["created_at"],
    )


def _claim_from(m: Mapping[Any, Any]) -> Claim:
    def own(table: sa.Table) -> dict[str, Any]:  # the joined row holds three tables' "id"
        return {c.name: m[c] for c in table.c}

    return Claim(
        _delivery_from(own(deliveries_table)),
        _webhook_from(own(webhooks_table)),
        _warning_from(own(warnings_table)),
    )
