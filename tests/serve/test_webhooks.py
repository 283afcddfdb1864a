"""Signing, retry policy and delivery against a real HTTP receiver on 127.0.0.1."""

import base64
import hashlib
import hmac
import json
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine
from standardwebhooks.webhooks import Webhook as Verifier

from liqrisk.serve.levels import Level, Thresholds
from liqrisk.serve.store import (
    AccountWarning,
    DeliveryStatus,
    ScoreEvent,
    delivery_state,
    get_webhook,
    record_scores,
    register_webhook,
)
from liqrisk.serve.webhooks import (
    EVENT_TYPE,
    OutboxWorker,
    Outcome,
    RetryPolicy,
    deliver_due,
    encode_body,
    parse_retry_after,
    payload,
    sign,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_support import HELPER, Receiver

T = Thresholds(watch=0.2, warning=0.4, critical=0.7, hysteresis=0.2)
FAST = RetryPolicy(schedule=(0.0, 0.05, 0.05, 0.05, 0.05), jitter=0.1)


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False) as c:  # no proxy from the environment for 127.0.0.1
        yield c


def raise_warnings(engine: Engine, n: int, prefix: str = "a") -> list[AccountWarning]:
    now = datetime.now(UTC)
    return record_scores(engine, [ScoreEvent(f"{prefix}{i}", 0.9, now, "m1") for i in range(n)], T).warnings


# --- signature and payload --------------------------------------------------------------------


def test_sign_matches_the_standard_webhooks_test_vector() -> None:
    # libraries/python/tests/test_webhooks.py::test_sign_function in standard-webhooks/standard-webhooks
    headers = sign(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        '{"test": 2432232314}',
    )
    assert headers["webhook-signature"] == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert headers["webhook-id"] == "msg_p5jXN8AQM9LWM0D4loKWxJek"
    assert headers["webhook-timestamp"] == "1614265330"


def test_sign_is_hmac_of_id_timestamp_body_under_the_decoded_secret() -> None:
    key = bytes(range(32))
    secret = "whsec_" + base64.b64encode(key).decode()
    body = encode_body({"b": 1, "a": "é"})
    ts = datetime(2026, 1, 5, 12, 0, 0, 900_000, tzinfo=UTC)  # floored to the second
    headers = sign(secret, "msg_1", ts, body.encode())
    digest = hmac.new(key, f"msg_1.{int(ts.timestamp())}.{body}".encode(), hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(digest).decode()
    now = sign(secret, "msg_1", datetime.now(UTC), body)
    assert Verifier(secret).verify(body, now) == {"a": "é", "b": 1}


def test_payload_is_the_standard_envelope(engine: Engine) -> None:
    (warning,) = raise_warnings(engine, 1)
    message = payload(warning)
    assert message["type"] == EVENT_TYPE and message["timestamp"].endswith("Z")
    data = message["data"]
    assert data["id"] == warning.id and data["cursor"] == warning.cursor
    assert (data["level"], data["previous_level"], data["account_id"]) == ("critical", "none", "a0")
    assert json.loads(encode_body(message)) == message
    assert encode_body(message) == encode_body(payload(warning))  # same bytes on every retry
    assert len(encode_body(message)) < 20_000


# --- retry policy ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_retry_delays_follow_the_schedule_within_jitter(seed: int) -> None:
    policy = RetryPolicy()
    rng = random.Random(seed)
    delays = [policy.delay_after(n, rng) for n in range(1, policy.max_attempts)]
    for delay, base in zip(delays, policy.schedule[1:], strict=True):
        assert delay is not None and 0.9 * base <= delay <= 1.1 * base
    assert policy.delay_after(policy.max_attempts, rng) is None  # give up
    assert policy.schedule[:6] == (0, 5, 30, 120, 600, 3600)


def test_retry_after_wins_when_longer_and_is_capped() -> None:
    policy, rng = RetryPolicy(), random.Random(0)
    assert 300 == policy.delay_after(1, rng, retry_after=300)
    assert policy.delay_after(5, rng, retry_after=1) >= 0.9 * 3600
    assert policy.delay_after(1, rng, retry_after=10**9) == 24 * 3600
    now = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after(format_datetime(now + timedelta(minutes=3), usegmt=True), now) == 180
    assert parse_retry_after("soon", now) is None and parse_retry_after(None, now) is None


# --- delivery against the receiver ------------------------------------------------------------


def test_retries_until_delivered_with_the_same_id(
    engine: Engine, receiver: Receiver, client: httpx.Client
) -> None:
    hook = register_webhook(engine, receiver.url("/flaky/3/x"), secret=receiver.secret)
    (warning,) = raise_warnings(engine, 1)
    now = datetime.now(UTC)
    outcomes = []
    for _ in range(6):
        attempts = deliver_due(engine, client, worker="w", now=now, rng=random.Random(1))
        outcomes += [(a.outcome, a.status_code, a.attempt) for a in attempts]
        for a in attempts:
            if a.outcome is Outcome.RETRY:
                assert a.next_attempt_at is not None and a.next_attempt_at > now
        assert (
            deliver_due(engine, client, worker="w", now=now) == []
        )  # nothing due before the retry
        now += timedelta(hours=1)
    assert outcomes == [
        (Outcome.RETRY, 500, 1),
        (Outcome.RETRY, 500, 2),
        (Outcome.RETRY, 500, 3),
        (Outcome.DELIVERED, 200, 4),
    ]
    seen = receiver.for_path("/flaky/3/x")
    assert len(seen) == 4 and all(r.verified for r in seen)
    assert len({r.msg_id for r in seen}) == 1 and len({r.body for r in seen}) == 1
    assert json.loads(seen[0].body)["data"]["id"] == warning.id
    (state,) = delivery_state(engine, warning_id=warning.id)
    assert state.webhook_id == hook.id and state.message_id == seen[0].msg_id
    assert (state.status, state.attempts, state.last_status_code) == (
        DeliveryStatus.DELIVERED,
        4,
        200,
    )
    assert state.delivered_at is not None and state.last_error is None


def test_410_disables_the_webhook(engine: Engine, receiver: Receiver, client: httpx.Client) -> None:
    gone = register_webhook(engine, receiver.url("/gone/x"), secret=receiver.secret)
    fine = register_webhook(engine, receiver.url("/ok/x"), secret=receiver.secret)
    raise_warnings(engine, 3)
    attempts = deliver_due(engine, client, worker="w", limit=4)  # 3 of 6 deliveries first
    assert Counter(a.outcome for a in attempts)[Outcome.DISABLED] >= 1
    while deliver_due(engine, client, worker="w", limit=4):
        pass
    assert not get_webhook(engine, gone.id).active
    assert get_webhook(engine, gone.id).disabled_reason == "endpoint answered 410 Gone"
    assert {d.status for d in delivery_state(engine, webhook_id=gone.id)} == {DeliveryStatus.FAILED}
    assert len(receiver.for_path("/gone/x")) < 3  # the rest were not even tried
    assert {d.status for d in delivery_state(engine, webhook_id=fine.id)} == {
        DeliveryStatus.DELIVERED
    }
    raise_warnings(engine, 1, prefix="later")
    assert [a.webhook_id for a in deliver_due(engine, client, worker="w")] == [fine.id]


def test_gives_up_after_the_last_attempt(
    engine: Engine, receiver: Receiver, client: httpx.Client
) -> None:
    register_webhook(engine, receiver.url("/flaky/99/x"), secret=receiver.secret)
    raise_warnings(engine, 1)
    policy = RetryPolicy(schedule=(0, 1, 1))
    now = datetime.now(UTC)
    outcomes = []
    for _ in range(5):
        outcomes += [
            a.outcome for a in deliver_due(engine, client, worker="w", now=now, policy=policy)
        ]
        now += timedelta(minutes=1)
    assert outcomes == [Outcome.RETRY, Outcome.RETRY, Outcome.FAILED]
    (state,) = delivery_state(engine)
    assert (state.status, state.attempts) == (DeliveryStatus.FAILED, 3)
    assert state.last_error.startswith("HTTP 500")


def test_retry_after_is_honoured(engine: Engine, receiver: Receiver, client: httpx.Client) -> None:
    register_webhook(engine, receiver.url("/busy/600/x"), secret=receiver.secret)
    raise_warnings(engine, 1)
    now = datetime.now(UTC)
    (attempt,) = deliver_due(engine, client, worker="w", now=now)
    assert attempt.outcome is Outcome.RETRY and attempt.status_code == 503
    assert attempt.next_attempt_at == now + timedelta(seconds=600)  # not the scheduled ~5 s
    assert deliver_due(engine, client, worker="w", now=now + timedelta(seconds=599)) == []


def test_redirects_are_not_followed(
    engine: Engine, receiver: Receiver, client: httpx.Client
) -> None:
    register_webhook(engine, receiver.url("/redirect/x"), secret=receiver.secret)
    raise_warnings(engine, 1)
    (attempt,) = deliver_due(engine, client, worker="w")
    assert (attempt.outcome, attempt.status_code) == (Outcome.RETRY, 302)
    assert "not followed" in attempt.error
    assert receiver.for_path("/ok/redirected") == []


def test_timeouts_and_refused_connections_are_retried(
    engine: Engine, receiver: Receiver, client: httpx.Client
) -> None:
    register_webhook(engine, receiver.url("/slow/3/x"), secret=receiver.secret)
    register_webhook(engine, "http://127.0.0.1:9/nothing-listens-here", secret=receiver.secret)
    raise_warnings(engine, 1)
    started = time.monotonic()
    attempts = deliver_due(engine, client, worker="w", timeout=0.5, lease=timedelta(seconds=6))
    assert time.monotonic() - started < 2.5  # sent concurrently, bounded by the timeout
    assert [a.outcome for a in attempts] == [Outcome.RETRY, Outcome.RETRY]
    assert {a.error.split(":")[0] for a in attempts} == {"ReadTimeout", "ConnectError"}
    with pytest.raises(ValueError, match="lease"):
        deliver_due(engine, client, worker="w", timeout=10, lease=timedelta(seconds=20))


# --- exactly once under concurrency ------------------------------------------------------------


def test_two_worker_threads_deliver_each_message_once(
    engine: Engine, receiver: Receiver, client: httpx.Client
) -> None:
    for path in ("/ok/a", "/ok/b", "/flaky/2/c"):
        register_webhook(engine, receiver.url(path), secret=receiver.secret)
    raise_warnings(engine, 20)
    workers = [
        OutboxWorker(
            engine, client=client, worker=f"w{k}", poll_interval=0.01, limit=3, policy=FAST
        )
        for k in range(2)
    ]
    for w in workers:
        w.start()
    wait_until_settled(engine, 60)
    for w in workers:
        w.stop()
    assert_each_delivered_once(engine, receiver, expected=60)
    assert {d.claimed_by for d in delivery_state(engine)} == {"w0", "w1"}  # both took part


def test_two_worker_processes_deliver_each_message_once(
    engine: Engine, db_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    for path in ("/ok/a", "/flaky/1/b"):
        register_webhook(engine, receiver.url(path), secret=receiver.secret)
    raise_warnings(engine, 25)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, str(HELPER), "deliver", db_url, "--name", f"proc{k}", "--limit", "3",
             "--barrier", str(barrier), "--parties", "2", "--deadline", "60"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for k in range(2)
    ]  # fmt: skip
    made = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        made.append(json.loads(out))
    assert all(n > 0 for n in made), made  # both processes sent something
    assert_each_delivered_once(engine, receiver, expected=50)


def test_worker_wakes_on_notify_and_stops(
    engine: Engine, receiver: Receiver, client: httpx.Client
) -> None:
    register_webhook(engine, receiver.url("/ok/x"), secret=receiver.secret)
    with OutboxWorker(engine, client=client, poll_interval=30) as worker:
        time.sleep(0.2)  # first pass done, now waiting 30 s
        raise_warnings(engine, 2)
        worker.notify()
        wait_until_settled(engine, 10)
    assert worker._thread is not None and not worker._thread.is_alive()
    assert_each_delivered_once(engine, receiver, expected=2)


def test_worker_survives_a_failing_pass(
    engine: Engine, receiver: Receiver, client: httpx.Client
) -> None:
    register_webhook(engine, receiver.url("/ok/x"), secret=receiver.secret)
    raise_warnings(engine, 1)
    worker = OutboxWorker(engine, client=client, poll_interval=0.05)
    calls = []
    real = worker.run_once

    def flaky_pass() -> list:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database went away")
        return real()

    worker.run_once = flaky_pass  # type: ignore[method-assign]
    with worker:
        wait_until_settled(engine, 10)
    assert len(calls) >= 2
    assert_each_delivered_once(engine, receiver, expected=1)


def wait_until_settled(engine: Engine, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = {d.status for d in delivery_state(engine)}
        if states and states <= {DeliveryStatus.DELIVERED, DeliveryStatus.FAILED}:
            return
        time.sleep(0.02)
    raise AssertionError(
        f"deliveries not settled in {timeout} s: {Counter(d.status for d in delivery_state(engine))}"
    )


def assert_each_delivered_once(engine: Engine, receiver: Receiver, expected: int) -> None:
    delivered = receiver.delivered()
    assert len(delivered) == expected
    assert set(delivered.values()) == {1}, [k for k, n in delivered.items() if n > 1]
    assert all(r.verified for r in receiver.requests)
    states = delivery_state(engine)
    assert len(states) == expected and {d.status for d in states} == {DeliveryStatus.DELIVERED}
    assert {d.message_id for d in states} == {m for _, m in delivered}


def test_level_labels_in_the_payload(engine: Engine) -> None:
    now = datetime.now(UTC)
    (w,) = record_scores(engine, [ScoreEvent("a", 0.25, now)], T).warnings
    assert w.level is Level.WATCH and payload(w)["data"]["level"] == "watch"
