"""Signed webhook delivery from the outbox: payload, signature, retry schedule and the worker.

Choices, stated once:

- **Standard Webhooks.** Each request carries ``webhook-id`` (the delivery's ``message_id``,
  unchanged on every retry: the consumer's idempotency key), ``webhook-timestamp`` (unix
  seconds of *this* attempt, so a receiver's replay window accepts a late retry) and
  ``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` keyed by the
  base64-decoded part of the ``whsec_`` secret; signing is the ``standardwebhooks`` package's.
  The body ``{"type": "liqrisk.warning.raised", "timestamp": ..., "data": {...}}`` is compact
  JSON built only from the stored warning, so every retry sends the same bytes.
- **Outcomes.** 2xx: delivered. 410 Gone: the endpoint asked to be forgotten, the webhook is
  disabled and its pending deliveries fail. Anything else (other codes, redirects, which are
  not followed so a registered URL cannot bounce requests elsewhere, timeouts, refused
  connections) is retried later.
- **Retries.** :class:`RetryPolicy`: delays 0 s, 5 s, 30 s, 2 min, 10 min, 1 h, 3 h, 6 h, 12 h,
  24 h (≈ 2 days in all, 10 attempts), each ×(1 ± 10 %) jitter from an injectable
  :class:`random.Random` so retries of many deliveries do not arrive in lockstep; a
  ``Retry-After`` (seconds or HTTP date) longer than the scheduled delay wins, up to a day.
- **One pass, then a loop.** :func:`deliver_due` claims due rows (``liqrisk.serve.store``,
  atomic across processes), sends them concurrently, one thread each, and settles each with its
  claim's token; :class:`OutboxWorker` repeats it on a thread. The store is synchronous
  SQLAlchemy, so a thread with :class:`httpx.Client` is the plain fit: the app starts and
  stops the worker in its lifespan and calls :meth:`OutboxWorker.notify` after a request
  raised warnings, so they go out at once instead of at the next poll.
- **Never twice while alive.** A pass sends all its claims in parallel, so it lasts about one
  ``timeout``; the lease must be at least ``2 * timeout + 5 s`` (checked), so no other worker
  can re-claim a row that is still being sent. Only a worker that dies mid-send, or cannot
  record an outcome (database gone), leaves a row to be re-sent after its lease, with the same
  ``webhook-id``: delivery is at-least-once, and exactly-once while workers stay healthy.
"""

import json
import logging
import os
import random
import socket
import threading
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any, Self

import httpx
from sqlalchemy.engine import Engine
from standardwebhooks.webhooks import Webhook as _Signer

from liqrisk.serve.store import (
    AccountWarning,
    Claim,
    claim_due,
    disable_webhook,
    mark_delivered,
    mark_failed,
)

log = logging.getLogger(__name__)

EVENT_TYPE = "liqrisk.warning.raised"
DEFAULT_SCHEDULE: tuple[float, ...] = (
    0.0, 5.0, 30.0, 120.0, 600.0, 3600.0, 3 * 3600.0, 6 * 3600.0, 12 * 3600.0, 24 * 3600.0,
)  # fmt: skip
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_LEASE = timedelta(minutes=2)
_ERROR_BODY_BYTES = 500


# --- payload and signature ---------------------------------------------------------------


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def warning_data(warning: AccountWarning) -> dict[str, Any]:
    """A warning as JSON-ready data; the feed and the webhook payload share this shape."""
    return {
        "id": warning.id,
        "cursor": warning.cursor,
        "account_id": warning.account_id,
        "level": warning.level.label,
        "previous_level": warning.previous_level.label,
        "probability": warning.probability,
        "threshold": warning.threshold,
        "model_version": warning.model_version,
        "scored_at": _iso(warning.scored_at),
        "created_at": _iso(warning.created_at),
    }


def payload(warning: AccountWarning) -> dict[str, Any]:
    """The Standard Webhooks envelope for a raised warning; ``timestamp`` is when it was raised."""
    return {
        "type": EVENT_TYPE,
        "timestamp": _iso(warning.created_at),
        "data": warning_data(warning),
    }


def encode_body(message: Mapping[str, Any]) -> str:
    """Compact, key-sorted JSON: the exact text that is signed and sent."""
    return json.dumps(message, separators=(",", ":"), sort_keys=True)


def sign(secret: str, msg_id: str, timestamp: int | datetime, body: str | bytes) -> dict[str, str]:
    """Standard Webhooks headers for one request.

    Parameters
    ----------
    secret : str
        ``whsec_<base64>``; the decoded bytes are the HMAC key.
    msg_id : str
        The ``webhook-id``: the same for every retry of one message.
    timestamp : int or datetime
        Unix seconds (or an aware datetime, floored to seconds) of this attempt.
    body : str or bytes
        Exactly the bytes sent (UTF-8 if str).

    Returns
    -------
    dict of str to str
        ``webhook-id``, ``webhook-timestamp``, ``webhook-signature`` and ``content-type``.
    """
    seconds = int(timestamp.timestamp()) if isinstance(timestamp, datetime) else int(timestamp)
    text = body.decode() if isinstance(body, bytes) else body
    signature = _Signer(secret).sign(msg_id, datetime.fromtimestamp(seconds, UTC), text)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(seconds),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


# --- retry policy ------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """When to try again after a failed attempt, and when to give up.

    Parameters
    ----------
    schedule : tuple of float
        Seconds to wait before attempt ``i + 1`` (``schedule[0]`` is the first, immediate
        attempt); its length is the number of attempts before giving up.
    jitter : float
        Each delay is multiplied by a uniform draw from ``[1 - jitter, 1 + jitter]``.
    max_retry_after : float
        Cap in seconds on a receiver's ``Retry-After``.
    """

    schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    jitter: float = 0.1
    max_retry_after: float = 24 * 3600.0

    @property
    def max_attempts(self) -> int:
        """Attempts made before a delivery is given up."""
        return len(self.schedule)

    def delay_after(
        self, attempts: int, rng: random.Random, *, retry_after: float | None = None
    ) -> float | None:
        """Seconds until the next attempt after ``attempts`` failed ones, or None to give up."""
        if attempts >= len(self.schedule):
            return None
        delay = self.schedule[attempts] * rng.uniform(1 - self.jitter, 1 + self.jitter)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_retry_after))
        return delay


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds asked for by a ``Retry-After`` header (delta-seconds or HTTP date), if valid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


# --- one pass ------------------------------------------------------------------------------


class Outcome(StrEnum):
    """What became of one attempt."""

    DELIVERED = "delivered"
    RETRY = "retry"  # due again at next_attempt_at
    FAILED = "failed"  # attempts exhausted
    DISABLED = "disabled"  # 410 Gone: webhook disabled
    LOST = "lost"  # the claim expired and another worker owns the row: nothing recorded


@dataclass(frozen=True)
class Attempt:
    """One send and how it was settled."""

    delivery_id: int
    webhook_id: str
    message_id: str
    attempt: int
    outcome: Outcome
    status_code: int | None
    error: str | None
    next_attempt_at: datetime | None


@dataclass(frozen=True)
class _Response:
    status_code: int | None
    retry_after: str | None
    error: str | None


def _send(client: httpx.Client, claim: Claim, timeout: float) -> _Response:
    body = encode_body(payload(claim.warning))
    headers = sign(claim.webhook.secret, claim.delivery.message_id, datetime.now(UTC), body)
    try:
        with client.stream(
            "POST",
            claim.webhook.url,
            content=body.encode(),
            headers=headers,
            timeout=timeout,
            follow_redirects=False,
        ) as response:
            if response.is_success:
                return _Response(response.status_code, None, None)
            return _Response(
                response.status_code,
                response.headers.get("retry-after"),
                _describe_failure(response),
            )
    # Timeouts, refused connections, bad URLs, and anything unforeseen: every claim of the pass
    # must be settled, or its row would be re-sent after the lease as a duplicate.
    except Exception as exc:  # noqa: BLE001
        return _Response(None, None, f"{type(exc).__name__}: {exc}")


def _describe_failure(response: httpx.Response) -> str:
    if response.is_redirect:
        return f"HTTP {response.status_code}: redirect to {response.headers.get('location')!r} not followed"
    head = b""
    for chunk in response.iter_bytes():
        head += chunk
        if len(head) >= _ERROR_BODY_BYTES:
            break
    text = head[:_ERROR_BODY_BYTES].decode(errors="replace")
    return f"HTTP {response.status_code}: {text}" if text else f"HTTP {response.status_code}"


def _settle(
    engine: Engine,
    claim: Claim,
    response: _Response,
    *,
    policy: RetryPolicy,
    rng: random.Random,
    now: datetime,
) -> Attempt:
    delivery = claim.delivery
    code = response.status_code
    next_at = None
    if code is not None and 200 <= code < 300:
        outcome = Outcome.DELIVERED
        kept = mark_delivered(engine, delivery, status_code=code, now=now)
    elif code == 410:
        outcome = Outcome.DISABLED
        kept = mark_failed(
            engine, delivery, error=response.error or "HTTP 410", retry_at=None, status_code=code
        )
        disable_webhook(engine, claim.webhook.id, reason="endpoint answered 410 Gone", now=now)
    else:
        asked = parse_retry_after(response.retry_after, now)
        delay = policy.delay_after(delivery.attempts, rng, retry_after=asked)
        next_at = None if delay is None else now + timedelta(seconds=delay)
        outcome = Outcome.FAILED if next_at is None else Outcome.RETRY
        kept = mark_failed(
            engine, delivery, error=response.error or "", retry_at=next_at, status_code=code
        )
    if not kept:
        log.warning("delivery %s: claim lost before its outcome was recorded", delivery.id)
        outcome, next_at = Outcome.LOST, None
    return Attempt(
        delivery_id=delivery.id,
        webhook_id=claim.webhook.id,
        message_id=delivery.message_id,
        attempt=delivery.attempts,
        outcome=outcome,
        status_code=code,
        error=response.error,
        next_attempt_at=next_at,
    )


def deliver_due(
    engine: Engine,
    client: httpx.Client,
    *,
    worker: str,
    now: datetime | None = None,
    limit: int = 16,
    lease: timedelta = DEFAULT_LEASE,
    policy: RetryPolicy | None = None,
    rng: random.Random | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> list[Attempt]:
    """One pass of the outbox worker: claim what is due, send it, record each outcome.

    Parameters
    ----------
    engine : Engine
    client : httpx.Client
        Shared by the pass's threads (httpx clients are thread-safe).
    worker : str
        Name recorded on claimed rows.
    now : datetime, optional
        Time used to pick due rows and schedule retries (default: the clock). The signature's
        ``webhook-timestamp`` is always the real time of sending, which receivers check.
    limit : int
        Claims per pass, all sent concurrently.
    lease : timedelta
        At least ``2 * timeout + 5 s``.
    policy : RetryPolicy, optional
    rng : random.Random, optional
        Jitter source; seed it for reproducible schedules.
    timeout : float
        Seconds for each of connect, write and read.

    Returns
    -------
    list of Attempt
        One per claimed delivery, by delivery id (empty if nothing was due).
    """
    if lease < timedelta(seconds=2 * timeout + 5):
        raise ValueError(f"lease {lease} is too short for timeout {timeout} s: use >= 2*timeout+5s")
    policy = policy or RetryPolicy()
    rng = rng or random.Random()
    claims = claim_due(engine, worker=worker, limit=limit, lease=lease, now=now)
    if not claims:
        return []
    attempts = []
    with ThreadPoolExecutor(max_workers=len(claims), thread_name_prefix="liqrisk-send") as pool:
        sending = {pool.submit(_send, client, c, timeout): c for c in claims}
        for future in as_completed(sending):
            settled_at = now or datetime.now(UTC)
            attempts.append(
                _settle(
                    engine, sending[future], future.result(), policy=policy, rng=rng, now=settled_at
                )
            )
    return sorted(attempts, key=lambda a: a.delivery_id)


# --- the worker ----------------------------------------------------------------------------


def default_worker_name() -> str:
    """``host:pid:random`` — unique per worker, readable in ``claimed_by``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class OutboxWorker:
    """Runs :func:`deliver_due` on a background thread until stopped.

    Polls every ``poll_interval`` seconds, at once again while passes come back full, and at
    once after :meth:`notify`. A failing pass (database down) is logged and retried after
    ``poll_interval``; the thread never dies of it.

    Examples
    --------
    In the app's lifespan::

        @asynccontextmanager
        async def lifespan(app: FastAPI):
            engine = create_engine_for(settings.serve.database_url)
            create_schema(engine)
            app.state.outbox = OutboxWorker(engine)
            app.state.outbox.start()
            yield
            app.state.outbox.stop()

    and in the scoring route, after ``record_scores`` returned warnings:
    ``request.app.state.outbox.notify()``.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        client: httpx.Client | None = None,
        worker: str | None = None,
        poll_interval: float = 1.0,
        limit: int = 16,
        lease: timedelta = DEFAULT_LEASE,
        policy: RetryPolicy | None = None,
        rng: random.Random | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if lease < timedelta(seconds=2 * timeout + 5):
            raise ValueError(f"lease {lease} is too short for timeout {timeout} s")
        self.engine = engine
        self.name = worker or default_worker_name()
        self.poll_interval = poll_interval
        self.limit, self.lease, self.timeout = limit, lease, timeout
        self.policy = policy or RetryPolicy()
        self.rng = rng or random.Random()
        self._own_client = client is None
        self.client = client or httpx.Client(follow_redirects=False, timeout=timeout)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> list[Attempt]:
        """One pass now, on the calling thread."""
        return deliver_due(
            self.engine,
            self.client,
            worker=self.name,
            limit=self.limit,
            lease=self.lease,
            policy=self.policy,
            rng=self.rng,
            timeout=self.timeout,
        )

    def start(self) -> None:
        """Start the background thread (once)."""
        if self._thread is not None:
            raise RuntimeError("OutboxWorker already started")
        self._thread = threading.Thread(target=self._loop, name=f"outbox-{self.name}", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """Wake the worker: new deliveries are waiting."""
        self._wake.set()

    def stop(self, timeout: float | None = None) -> None:
        """Finish the current pass, stop the thread and close a client it created.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait for the thread (default: the send timeout plus 5 s).
        """
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 5 if timeout is None else timeout)
        if self._own_client:
            self.client.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                full = len(self.run_once()) >= self.limit
            except Exception:
                log.exception(
                    "outbox worker %s: pass failed; retrying in %s s", self.name, self.poll_interval
                )
                full = False
            if not full:
                self._wake.wait(self.poll_interval)
