"""The warnings store on real databases: every test runs on a SQLite file and on PostgreSQL."""

import json
import math
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from liqrisk.features.errors import InputError
from liqrisk.serve.levels import Level, Thresholds, next_level
from liqrisk.serve.store import (
    DeliveryStatus,
    ScoreEvent,
    account_level,
    account_state,
    bars_position,
    bars_writer,
    checkpoint,
    claim_due,
    create_engine_for,
    create_schema,
    delivery_state,
    disable_webhook,
    list_webhooks,
    logged_bars_after,
    mark_delivered,
    mark_failed,
    record_scores,
    register_webhook,
    warnings_after,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_support import HELPER, count_in_file_alone, count_rows, run_threads

T = Thresholds(watch=0.2, warning=0.4, critical=0.7, hysteresis=0.2)
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def score(account: str, p: float, minutes: int = 0) -> ScoreEvent:
    return ScoreEvent(account, p, T0 + timedelta(minutes=minutes), model_version="m1")


def test_raise_repeat_escalate(engine: Engine) -> None:
    first = record_scores(engine, [score("a", 0.45), score("b", 0.1)], T).warnings
    assert [(w.account_id, w.previous_level, w.level) for w in first] == [
        ("a", Level.NONE, Level.WARNING)
    ]
    assert first[0].threshold == 0.4 and first[0].model_version == "m1"

    assert record_scores(engine, [score("a", 0.5, 1), score("a", 0.35, 2)], T).warnings == []  # held

    escalated = record_scores(engine, [score("a", 0.8, 3)], T).warnings
    assert [(w.previous_level, w.level) for w in escalated] == [(Level.WARNING, Level.CRITICAL)]
    assert [w.id for w in warnings_after(engine, None).items] == [first[0].id, escalated[0].id]
    assert account_level(engine, "a") == Level.CRITICAL
    assert account_level(engine, "b") == Level.NONE
    assert account_level(engine, "never-scored") == Level.NONE


def test_cooling_then_climbing_raises_again(engine: Engine) -> None:
    assert len(record_scores(engine, [score("a", 0.75)], T).warnings) == 1
    assert record_scores(engine, [score("a", 0.3, 1)], T).warnings == []  # down to watch: not news
    assert account_level(engine, "a") == Level.WATCH
    again = record_scores(engine, [score("a", 0.72, 2)], T).warnings
    assert [(w.previous_level, w.level) for w in again] == [(Level.WATCH, Level.CRITICAL)]


def test_a_late_older_score_is_ignored(engine: Engine) -> None:
    record_scores(engine, [score("a", 0.75, minutes=10)], T)
    late = record_scores(engine, [score("a", 0.0, minutes=5), score("b", 0.1, minutes=5)], T)
    assert late.warnings == []
    assert late.levels == {"a": Level.CRITICAL, "b": Level.NONE}  # what the store holds now
    assert account_level(engine, "a") == Level.CRITICAL


def test_the_levels_returned_are_the_levels_stored(engine: Engine) -> None:
    record_scores(engine, [score("a", 0.45)], T)
    recorded = record_scores(engine, [score("a", 0.3, 1), score("a", 0.1, 2), score("c", 0.8, 1)], T)
    assert recorded.levels == {"a": Level.NONE, "c": Level.CRITICAL}  # the last score of each
    assert {a: account_level(engine, a) for a in recorded.levels} == recorded.levels
    assert [w.account_id for w in recorded.warnings] == ["c"]


def test_levels_follow_next_level_below_and_at_the_lowest_threshold(engine: Engine) -> None:
    # the store skips next_level for accounts at NONE below every threshold: it must agree
    below = math.nextafter(T.watch, 0.0)
    ps = [0.0, below, T.watch, T.warning, T.critical, 1.0]
    fresh = record_scores(engine, [score(f"p{i}", p) for i, p in enumerate(ps)], T)
    assert fresh.levels == {f"p{i}": next_level(Level.NONE, p, T) for i, p in enumerate(ps)}
    assert fresh.levels["p1"] == Level.NONE and fresh.levels["p2"] == Level.WATCH
    held = record_scores(engine, [score("p2", below, 1)], T)  # above WATCH's release point
    assert held.levels == {"p2": Level.WATCH} and held.warnings == []


def test_a_repeated_score_writes_no_state_and_a_changed_one_does(engine: Engine) -> None:
    updates: list[int] = []

    def count_updates(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith("UPDATE ACCOUNT_STATE"):
            updates.append(len(parameters) if executemany else 1)

    record_scores(engine, [score("a", 0.45), score("b", 0.1)], T)
    event.listen(engine, "before_cursor_execute", count_updates)
    try:
        again = record_scores(engine, [score("a", 0.45), score("b", 0.1)], T)  # same as_of, same p
        assert updates == [] and again.levels == {"a": Level.WARNING, "b": Level.NONE}
        moved = record_scores(engine, [score("a", 0.45), score("b", 0.25)], T)
        assert sum(updates) == 1 and moved.levels == {"a": Level.WARNING, "b": Level.WATCH}
        later = record_scores(engine, [score("a", 0.45, 1)], T)  # a new as_of is stored
        assert sum(updates) == 2 and later.warnings == []
    finally:
        event.remove(engine, "before_cursor_execute", count_updates)
    assert account_level(engine, "b") == Level.WATCH


def test_each_account_holds_its_last_state_read_back_as_written(engine: Engine) -> None:
    # new and stored accounts in one call, a new one scored twice, more accounts than one
    # "IN (...)" of SQLite's read takes; read back through SQLAlchemy's own column types
    record_scores(engine, [score("old", 0.5), score("same", 0.1)], T)
    crowd = [score(f"n{i:05d}", (i % 10) / 20, minutes=i % 3) for i in range(6_000)]
    recorded = record_scores(
        engine, [score("old", 0.75, 1), score("same", 0.1), score("twice", 0.3, 1), score("twice", 0.45, 2), *crowd], T
    )
    with engine.connect() as conn:
        rows = {
            r.account_id: (Level(r.level), r.probability, r.updated_at)
            for r in conn.execute(sa.select(account_state))
        }
    assert len(rows) == 6_003 and set(recorded.levels) == set(rows)
    assert rows["old"] == (Level.CRITICAL, 0.75, T0 + timedelta(minutes=1))
    assert rows["same"] == (Level.NONE, 0.1, T0)
    assert rows["twice"] == (Level.WARNING, 0.45, T0 + timedelta(minutes=2))  # inserted once, its last score
    assert rows["n00007"] == (Level.WATCH, 0.35, T0 + timedelta(minutes=1))
    assert all(at.tzinfo is not None for _, _, at in rows.values())
    assert {a: level for a, (level, _, _) in rows.items()} == recorded.levels
    later = record_scores(engine, [score(f"n{i:05d}", 0.75, minutes=5) for i in range(6_000)], T)
    assert len(later.warnings) == 6_000 and account_level(engine, "n05999") == Level.CRITICAL


@pytest.mark.parametrize("synchronous, code", [("FULL", 2), ("NORMAL", 1)])
def test_sqlite_synchronous_is_set_on_every_connection(tmp_path, synchronous: str, code: int) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'w.db'}", sqlite_synchronous=synchronous)
    try:
        for _ in range(2):  # a new connection each time (pool closed in between)
            with engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == code
            engine.dispose()
    finally:
        engine.dispose()
    with pytest.raises(InputError, match="sqlite_synchronous must be FULL or NORMAL, got 'OFF'"):
        create_engine_for(f"sqlite:///{tmp_path / 'w.db'}", sqlite_synchronous="OFF")


def commit_durability(engine: Engine) -> list[str]:
    """What each commit of ``engine`` waits for, read inside the transaction as it commits:
    SQLite's ``synchronous`` (FULL, NORMAL), PostgreSQL's ``synchronous_commit`` (on, off)."""
    seen: list[str] = []

    def on_commit(conn: sa.Connection) -> None:
        cursor = conn.connection.dbapi_connection.cursor()
        if conn.dialect.name == "sqlite":
            cursor.execute("PRAGMA synchronous")
            seen.append({1: "NORMAL", 2: "FULL"}[cursor.fetchone()[0]])
        else:
            cursor.execute("SHOW synchronous_commit")
            seen.append(cursor.fetchone()[0])
        cursor.close()

    event.listen(engine, "commit", on_commit)
    return seen


def test_only_commits_that_move_a_level_wait_for_the_disk(engine: Engine) -> None:
    """Durable where it counts: a commit that raises no warning and moves no level only
    refreshes probabilities and does not wait for the disk; a raise or a level let go does."""
    sqlite = engine.dialect.name == "sqlite"
    relaxed, durable = ("NORMAL", "FULL") if sqlite else ("off", "on")
    seen = commit_durability(engine)
    record_scores(engine, [score("a", 0.05), score("b", 0.1)], T)  # new, below every threshold
    assert seen == [relaxed]
    raised = record_scores(engine, [score("a", 0.3, 1)], T)  # a: watch
    assert raised.warnings and seen[-1] == durable
    record_scores(engine, [score("b", 0.15, 1)], T)  # a new probability, no level moves
    assert seen[-1] == relaxed
    held = record_scores(engine, [score("a", 0.25, 2)], T)  # a holds watch, above its threshold
    # SQLite chooses before BEGIN, from the scores alone (one reaches a threshold: it waits);
    # PostgreSQL chooses inside the transaction, once it knows no level moved
    assert held.levels == {"a": Level.WATCH} and seen[-1] == (durable if sqlite else relaxed)
    commits = len(seen)
    let_go = record_scores(engine, [score("a", 0.01, 3)], T)  # below every threshold: watch let go
    assert let_go.levels == {"a": Level.NONE} and account_level(engine, "a") == Level.NONE
    # one commit, durable: SQLite's relaxed attempt found the level moving and was rolled back
    assert seen[commits:] == [durable]
    with engine.connect() as conn:
        rows = conn.execute(sa.select(account_state.c.account_id, account_state.c.probability))
        assert {account: p for account, p in rows} == {"a": 0.01, "b": 0.15}


def test_a_relaxed_commit_leaves_the_connection_as_configured(tmp_path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'w.db'}", pool_size=1, max_overflow=0)
    try:
        create_schema(engine)
        seen = commit_durability(engine)
        record_scores(engine, [score("a", 0.05)], T)
        with engine.begin() as conn:  # the same pooled connection, a plain transaction
            conn.exec_driver_sql("UPDATE feed_head SET last_seq = last_seq WHERE id = 1")
        assert seen == ["NORMAL", "FULL"]
    finally:
        engine.dispose()


def test_a_checkpoint_moves_the_writes_into_the_database_file(tmp_path) -> None:
    """With commits no longer checkpointing (``sqlite_autocheckpoint`` high, as the service
    sets it), the data sits in the WAL until :func:`checkpoint` copies it into the file."""
    path = tmp_path / "w.db"
    engine = create_engine_for(f"sqlite:///{path}", sqlite_autocheckpoint=100_000)
    query = "SELECT count(*) FROM account_state"
    try:
        create_schema(engine)
        for batch in range(80):  # a WAL of more than SQLite's default 1,000 pages
            record_scores(engine, [score(f"a{batch}-{i}", 0.05) for i in range(1_000)], T)
        assert (tmp_path / "w.db-wal").stat().st_size > 1_000 * 4096
        assert count_in_file_alone(path, query) == 0
        checkpoint(engine)
        assert count_in_file_alone(path, query) == 80_000
    finally:
        engine.dispose()


def test_warnings_are_durable_when_record_scores_returns(engine: Engine, db_url: str) -> None:
    raised = record_scores(engine, [score("a", 0.9)], T).warnings
    fresh = create_engine_for(db_url)  # new pool, new connections
    try:
        assert [w.id for w in warnings_after(fresh, None).items] == [raised[0].id]
    finally:
        fresh.dispose()


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
def test_a_process_that_dies_right_after_the_ack_keeps_its_warnings(
    engine: Engine, db_url: str, synchronous: str
) -> None:
    """Either SQLite setting keeps what was acknowledged when the service dies (NORMAL gives
    up only a power loss of the host, which a test cannot cause)."""
    done = subprocess.run(
        [sys.executable, str(HELPER), "die-after-record", db_url, "--per-batch", "3",
         "--sqlite-synchronous", synchronous],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    acked = json.loads(done.stdout)
    assert len(acked) == 3
    assert [w.id for w in warnings_after(engine, None).items] == acked


def test_a_failure_midway_writes_nothing(engine: Engine) -> None:
    register_webhook(engine, "http://127.0.0.1:9/hook")
    record_scores(engine, [score("a", 0.3)], T)  # a: watch
    before = {t: count_rows(engine, t) for t in ("warnings", "deliveries", "account_state")}

    def fail_on_fan_out(conn, cursor, statement, *args: object) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO DELIVERIES"):
            raise RuntimeError("injected: fan-out insert failed")

    event.listen(engine, "before_cursor_execute", fail_on_fan_out)
    with pytest.raises(RuntimeError, match="injected"):
        record_scores(engine, [score("a", 0.9, 1), score("new", 0.5, 1)], T)
    event.remove(engine, "before_cursor_execute", fail_on_fan_out)

    assert {t: count_rows(engine, t) for t in before} == before  # no warning, no new account
    assert account_level(engine, "a") == Level.WATCH  # state not moved
    retried = record_scores(engine, [score("a", 0.9, 1)], T).warnings
    assert [w.id for w in retried] == [2]  # no id was burnt by the failed attempt
    assert len(delivery_state(engine, warning_id=2)) == 1


def test_an_invalid_row_aborts_the_whole_batch(engine: Engine) -> None:
    with pytest.raises(InputError, match=r"probability must be in \[0, 1\], got 1.5 at row 1"):
        record_scores(engine, [score("a", 0.9), score("b", 1.5)], T)
    with pytest.raises(InputError, match="scored_at must be timezone-aware"):
        record_scores(engine, [ScoreEvent("a", 0.9, datetime(2026, 1, 1))], T)
    assert count_rows(engine, "warnings") == 0 and count_rows(engine, "account_state") == 0


def test_one_pending_delivery_per_active_webhook(engine: Engine) -> None:
    hooks = [
        register_webhook(engine, f"https://example.test/{i}", description=f"h{i}") for i in range(3)
    ]
    disable_webhook(engine, hooks[2].id, reason="test")
    raised = record_scores(engine, [score("a", 0.9), score("b", 0.5)], T).warnings
    rows = delivery_state(engine)
    assert {(d.warning_id, d.webhook_id) for d in rows} == {
        (w.id, h.id) for w in raised for h in hooks[:2]
    }
    assert all(d.status == DeliveryStatus.PENDING and d.attempts == 0 for d in rows)
    # one message id per warning, shared by its webhooks, distinct between warnings
    ids = {w.id: {d.message_id for d in rows if d.warning_id == w.id} for w in raised}
    assert all(len(m) == 1 for m in ids.values()) and len(set.union(*ids.values())) == 2
    assert [h.active for h in list_webhooks(engine)] == [True, True, False]
    assert [h.id for h in list_webhooks(engine, active_only=True)] == [h.id for h in hooks[:2]]
    assert "secret" not in repr(hooks[0]) and hooks[0].secret.startswith("whsec_")


def test_a_batch_raising_hundreds_of_warnings_stores_each_as_returned(engine: Engine) -> None:
    # rows are inserted many to a statement: more than one statement's worth of each table
    hooks = [register_webhook(engine, f"https://example.test/{i}") for i in range(2)]
    now = datetime(2026, 2, 1, 8, 30, 15, 123456, tzinfo=UTC)
    scores = [score(f"w{i:03d}", 0.25 + 0.7 * (i % 7) / 7, minutes=i % 3) for i in range(700)]
    recorded = record_scores(engine, scores, T, now=now)
    assert len(recorded.warnings) == 700
    assert warnings_after(engine, None, limit=1000).items == recorded.warnings
    rows = delivery_state(engine)
    assert sorted((d.warning_id, d.webhook_id) for d in rows) == sorted(
        (w.id, h.id) for w in recorded.warnings for h in hooks
    )
    assert {(d.status, d.attempts, d.next_attempt_at, d.created_at) for d in rows} == {
        (DeliveryStatus.PENDING, 0, now, now)
    }
    assert len({d.message_id for d in rows}) == 700


@pytest.mark.parametrize(
    ("url", "secret", "message"),
    [
        ("ftp://example.test/x", None, "url must be an http"),
        ("http:///nohost", None, "url must be an http"),
        ("https://example.test/x", "not-a-secret", "secret must be"),
        ("https://example.test/x", "whsec_c2hvcnQ=", "secret must be"),  # 5 bytes
    ],
)
def test_register_webhook_rejects_bad_input(
    engine: Engine, url: str, secret: str | None, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        register_webhook(engine, url, secret=secret)


def test_feed_pages_and_cursor_errors(engine: Engine) -> None:
    raised = record_scores(engine, [score(f"a{i}", 0.9) for i in range(7)], T).warnings
    page = warnings_after(engine, None, limit=3)
    assert [w.id for w in page.items] == [1, 2, 3] and page.has_more and page.next_cursor == "3"
    page = warnings_after(engine, page.next_cursor, limit=10)
    assert [w.id for w in page.items] == [4, 5, 6, 7] and not page.has_more
    empty = warnings_after(engine, page.next_cursor)
    assert empty.items == [] and empty.next_cursor == "7"  # poll again from the same place
    assert [w.account_id for w in raised] == [f"a{i}" for i in range(7)]
    for bad in ["abc", "-1", "1.5", "9" * 30]:
        with pytest.raises(InputError, match="after must be a cursor"):
            warnings_after(engine, bad)
    with pytest.raises(InputError, match="limit must be in"):
        warnings_after(engine, None, limit=0)


def test_concurrent_scores_of_one_account_raise_once(engine: Engine) -> None:
    raised: list[int] = []
    lock = threading.Lock()

    def score_it() -> None:
        got = record_scores(engine, [score("same", 0.5)], T).warnings
        with lock:
            raised.extend(w.id for w in got)

    run_threads([score_it] * 8)
    assert len(raised) == 1
    assert count_rows(engine, "warnings") == 1


def test_create_schema_twice_keeps_data(engine: Engine) -> None:
    record_scores(engine, [score("a", 0.9)], T)
    create_schema(engine)
    assert count_rows(engine, "warnings") == 1
    assert record_scores(engine, [score("b", 0.9)], T).warnings[0].id == 2


# --- the feed under concurrent writers ------------------------------------------------------


def slow_commits(engine: Engine, seed: int, max_delay: float = 0.01) -> None:
    """Sleep before each commit, after the ids were taken: the window for out-of-order commits."""
    rng = random.Random(seed)
    event.listen(engine, "commit", lambda _conn: time.sleep(rng.uniform(0, max_delay)))


class FeedReader(threading.Thread):
    """Pages through the feed like a consumer until told to stop, then drains it."""

    def __init__(self, engine: Engine, limit: int = 5) -> None:
        super().__init__(daemon=True)
        self.engine, self.limit = engine, limit
        self.seen: list[int] = []
        self.pages = 0
        self.writers_done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        cursor = None
        try:
            while True:
                done = self.writers_done.is_set()  # read before paging: then one more full drain
                page = warnings_after(self.engine, cursor, limit=self.limit)
                self.pages += 1
                self.seen += [w.id for w in page.items]
                cursor = page.next_cursor
                if done and not page.has_more:
                    return
                if not page.items:
                    time.sleep(0.002)
        except BaseException as exc:  # noqa: BLE001 (surfaced by the test)
            self.error = exc


def assert_exactly_once_in_order(seen: list[int], written: list[int]) -> None:
    assert seen == sorted(seen), "the feed went backwards"
    assert len(seen) == len(set(seen)), "a warning was read twice"
    assert sorted(seen) == sorted(written), f"missed {sorted(set(written) - set(seen))[:10]}"
    assert sorted(written) == list(range(1, len(written) + 1)), "ids are gapless"


def test_feed_is_exactly_once_with_concurrent_writer_threads(engine: Engine) -> None:
    slow_commits(engine, seed=1)
    reader = FeedReader(engine)
    reader.start()
    written: list[int] = []
    lock = threading.Lock()

    def writer(k: int) -> Callable[[], None]:
        def run() -> None:
            for b in range(12):
                scores = [score(f"t{k}-{b}-{i}", 0.9) for i in range(1 + (b + k) % 3)]
                ids = [w.id for w in record_scores(engine, scores, T).warnings]
                with lock:
                    written.extend(ids)

        return run

    run_threads([writer(k) for k in range(4)])
    reader.writers_done.set()
    reader.join(30)
    assert reader.error is None and not reader.is_alive()
    assert reader.pages > 3  # it really read while the writers wrote
    assert_exactly_once_in_order(reader.seen, written)


def test_feed_is_exactly_once_with_two_writer_processes(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    reader = FeedReader(engine, limit=4)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(HELPER),
                "write",
                db_url,
                "--name",
                f"p{k}",
                "--batches",
                "15",
                "--per-batch",
                "2",
                "--commit-delay",
                "0.01",
                "--barrier",
                str(barrier),
                "--parties",
                "2",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(2)
    ]
    reader.start()
    written: list[int] = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        written += json.loads(out)
    reader.writers_done.set()
    reader.join(30)
    assert reader.error is None and not reader.is_alive()
    assert len(written) == 60
    assert_exactly_once_in_order(reader.seen, written)


# --- claims -----------------------------------------------------------------------------------


def test_a_pass_with_nothing_due_only_reads(engine: Engine) -> None:
    """Every process polls the outbox every second; when nothing is due (most passes) it must
    not take the write lock the scores' commits wait for."""
    statements: list[str] = []

    def seen(conn, cursor, statement, *args: object) -> None:
        statements.append(" ".join(statement.upper().split()))

    register_webhook(engine, "https://example.test/a")
    event.listen(engine, "before_cursor_execute", seen)
    try:
        assert claim_due(engine, worker="w") == []  # no warning yet, so no delivery
        assert not any("UPDATE" in s or "BEGIN IMMEDIATE" in s for s in statements)
        record_scores(engine, [score("a", 0.9)], T)
        statements.clear()
        assert len(claim_due(engine, worker="w")) == 1
        assert any("UPDATE DELIVERIES" in s for s in statements)
    finally:
        event.remove(engine, "before_cursor_execute", seen)


def test_concurrent_claims_are_disjoint_and_fenced(engine: Engine) -> None:
    register_webhook(engine, "https://example.test/a")
    register_webhook(engine, "https://example.test/b")
    record_scores(engine, [score(f"a{i}", 0.9) for i in range(20)], T)
    claimed: list[list[int]] = [[] for _ in range(4)]

    def claimer(k: int) -> Callable[[], None]:
        def run() -> None:
            while got := claim_due(engine, worker=f"w{k}", limit=3):
                claimed[k] += [c.delivery.id for c in got]

        return run

    run_threads([claimer(k) for k in range(4)])
    every = [d for ids in claimed for d in ids]
    assert len(every) == 40 and len(set(every)) == 40
    assert all(
        d.status == DeliveryStatus.DELIVERING and d.attempts == 1 for d in delivery_state(engine)
    )


def test_an_expired_lease_is_reclaimed_and_the_old_claim_cannot_settle(engine: Engine) -> None:
    register_webhook(engine, "https://example.test/a")
    record_scores(engine, [score("a", 0.9)], T)
    now = datetime.now(UTC)
    (first,) = claim_due(engine, worker="w1", lease=timedelta(seconds=30), now=now)
    assert claim_due(engine, worker="w2", now=now + timedelta(seconds=29)) == []
    (second,) = claim_due(engine, worker="w2", now=now + timedelta(seconds=31))
    assert second.delivery.id == first.delivery.id and second.delivery.attempts == 2
    assert first.delivery.message_id == second.delivery.message_id
    assert not mark_delivered(engine, first.delivery, status_code=200)  # fenced off
    assert mark_failed(
        engine,
        second.delivery,
        error="HTTP 500",
        retry_at=now + timedelta(minutes=1),
        status_code=500,
    )
    (state,) = delivery_state(engine, delivery_id=second.delivery.id)
    assert (state.status, state.last_status_code, state.claimed_by) == (
        DeliveryStatus.PENDING,
        500,
        "w2",
    )
    assert claim_due(engine, worker="w3", now=now + timedelta(seconds=59)) == []
    (third,) = claim_due(engine, worker="w3", now=now + timedelta(seconds=61))
    assert mark_failed(engine, third.delivery, error="gave up", retry_at=None)
    assert delivery_state(engine, warning_id=third.warning.id)[0].status == DeliveryStatus.FAILED
    assert claim_due(engine, worker="w4", now=now + timedelta(days=9)) == []


# --- the bars log ----------------------------------------------------------------------------


def bars_frame(symbols: list[str], hours: list[int], closes: list[float], volumes: list[float]):
    ts = pd.Timestamp("2024-03-01", tz="UTC") + pd.to_timedelta(hours, unit="h")
    return pd.DataFrame(
        {
            "symbol": symbols,
            "ts": pd.Series(ts).astype("datetime64[us, UTC]"),
            "open": closes,
            "high": [c * 1.01 for c in closes],
            "low": [c * 0.99 for c in closes],
            "close": closes,
            "volume": volumes,
        }
    )


def test_logged_bars_read_back_exactly_in_log_order(engine: Engine) -> None:
    assert bars_position(engine) == 0
    assert len(logged_bars_after(engine, 0)[0]) == 0 and logged_bars_after(engine, 0)[1] == 0
    first = bars_frame(["BTCUSDT", "ETHUSDT"], [0, 0], [1 / 3, 2_000.000000000001], [math.nan, 5.0])
    second = bars_frame(["BTCUSDT"], [1], [1e-300], [1e300])
    with bars_writer(engine) as log:
        assert log.position == 0
        assert log.record(first, 0) == 2
    with bars_writer(engine) as log:
        assert log.position == 2 and len(log.after(0)[0]) == 2
        assert log.record(second, 2) == 3
    assert bars_position(engine) == 3

    bars, through = logged_bars_after(engine, 0)
    assert through == 3
    expected = pd.concat([first, second], ignore_index=True)
    pd.testing.assert_frame_equal(bars, expected, check_exact=True)  # NaN volume read back as NaN
    tail, through = logged_bars_after(engine, 2)
    assert through == 3
    pd.testing.assert_frame_equal(tail, second, check_exact=True)
    assert logged_bars_after(engine, 3)[1] == 3 and len(logged_bars_after(engine, 3)[0]) == 0


def test_a_bars_writer_that_does_not_record_writes_nothing(engine: Engine) -> None:
    bars = bars_frame(["BTCUSDT"], [0], [40_000.0], [1.0])
    with bars_writer(engine) as log:
        assert log.record(bars, 0) == 1
    with pytest.raises(RuntimeError, match="catch up"), bars_writer(engine) as log:
        log.record(bars_frame(["BTCUSDT"], [1], [40_000.0], [1.0]), 0)  # behind the log
    with pytest.raises(LookupError), bars_writer(engine):
        raise LookupError("the caller failed before recording")
    assert bars_position(engine) == 1 and len(logged_bars_after(engine, 0)[0]) == 1


def test_a_bars_writer_holds_the_log_until_it_records(engine: Engine) -> None:
    inside, seen = threading.Event(), {}

    def first() -> None:
        with bars_writer(engine) as log:
            inside.set()
            time.sleep(0.5)  # the second writer must wait all this time
            seen["recorded_at"] = time.monotonic()
            log.record(bars_frame(["BTCUSDT"], [0], [40_000.0], [1.0]), log.position)

    def second() -> None:
        inside.wait(10)
        with bars_writer(engine) as log:
            seen["entered_at"], seen["position"] = time.monotonic(), log.position
            log.record(bars_frame(["BTCUSDT"], [1], [40_100.0], [1.0]), log.position)

    run_threads([first, second])
    assert seen["entered_at"] >= seen["recorded_at"]
    assert seen["position"] == 1  # it saw the first writer's bar, so it screened against it
    assert logged_bars_after(engine, 0)[0]["close"].tolist() == [40_000.0, 40_100.0]
