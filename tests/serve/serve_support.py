"""Helpers shared by the serve tests: a signature-checking HTTP receiver, row counts, threads,
waiting for a condition."""

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from liqrisk.serve.store import new_secret

HELPER = Path(__file__).resolve().parent / "outbox_proc.py"


def count_rows(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()


def count_in_file_alone(path: Path, query: str, *params: object) -> int:
    """``query`` (a count) on a copy of the SQLite database file ``path`` without its WAL: what
    checkpoints have moved into the file. 0 where the copy cannot answer (the table is not in
    the file yet, or the copy caught a checkpoint writing the file)."""
    copy = path.with_name(f"{path.name}.copy")
    copy.write_bytes(path.read_bytes())
    try:
        with sqlite3.connect(copy) as conn:
            return int(conn.execute(query, params).fetchone()[0])
    except sqlite3.DatabaseError:
        return 0
    finally:
        copy.unlink()


@dataclass(frozen=True)
class Received:
    """One request as the receiver saw it."""

    path: str
    msg_id: str
    timestamp: str
    body: bytes
    verified: bool
    status: int


class Receiver:
    """A real HTTP server on 127.0.0.1 that checks Standard Webhooks signatures.

    Behaviour by path (the last segment only names the endpoint):
    ``/ok/x`` 200; ``/flaky/N/x`` 500 for the first N requests of each message id, then 200;
    ``/gone/x`` 410; ``/busy/S/x`` 503 with ``Retry-After: S``; ``/redirect/x`` 302 to
    ``/ok/redirected``; ``/slow/S/x`` sleeps S seconds, then 200. A bad signature gets 401.
    """

    def __init__(self) -> None:
        self.secret = new_secret()
        self.requests: list[Received] = []
        self._seen: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{path}"

    def delivered(self) -> Counter[tuple[str, str]]:
        """Count of 2xx answers per (path, message id): 1 everywhere means exactly once."""
        with self._lock:
            return Counter((r.path, r.msg_id) for r in self.requests if 200 <= r.status < 300)

    def for_path(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def _answer(self, path: str, msg_id: str) -> tuple[int, dict[str, str]]:
        parts = path.strip("/").split("/")
        with self._lock:
            self._seen[(path, msg_id)] += 1
            seen = self._seen[(path, msg_id)]
        kind = parts[0]
        if kind == "flaky":
            return (500, {}) if seen <= int(parts[1]) else (200, {})
        if kind == "gone":
            return 410, {}
        if kind == "busy":
            return 503, {"Retry-After": parts[1]}
        if kind == "redirect":
            return 302, {"Location": self.url("/ok/redirected")}
        if kind == "slow":
            threading.Event().wait(float(parts[1]))
        return 200, {}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    Webhook(receiver.secret).verify(body.decode(), headers)
                    verified = True
                except WebhookVerificationError:
                    verified = False
                msg_id = headers.get("webhook-id", "")
                status, extra = receiver._answer(self.path, msg_id) if verified else (401, {})
                with receiver._lock:
                    receiver.requests.append(
                        Received(
                            self.path,
                            msg_id,
                            headers.get("webhook-timestamp", ""),
                            body,
                            verified,
                            status,
                        )
                    )
                self.send_response(status)
                for key, value in extra.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def run_threads(targets: list[Callable[[], None]], timeout: float = 60) -> None:
    """Run each target on its own thread, join them all, re-raise the first error."""
    errors: list[BaseException] = []

    def guarded(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # noqa: BLE001 (re-raised on the test's thread)
                errors.append(exc)

        return run

    threads = [threading.Thread(target=guarded(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a thread did not finish"
    if errors:
        raise errors[0]


def wait_for(condition: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Call ``condition`` every 50 ms until it returns something true, and return that."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return result
