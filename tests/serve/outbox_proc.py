"""A second OS process for the concurrency tests: a writer, a sender, or a writer that dies.

Run as ``python outbox_proc.py MODE URL [options]``; prints one JSON line on stdout.

- ``write``: ``--batches`` calls of ``record_scores``, each raising ``--per-batch`` warnings
  on fresh accounts, with ``--commit-delay`` seconds of sleep just before each commit (to widen
  the window in which concurrent writers could commit out of id order); prints the ids.
- ``deliver``: runs ``deliver_due`` passes until no delivery is pending or being delivered
  (or ``--deadline`` seconds pass); prints the number of attempts it made.
- ``die-after-record``: one ``record_scores`` call, prints its ids, then ``os._exit(0)``
  without closing anything: what it acknowledged must already be durable.

``--barrier DIR --parties N`` makes N processes begin together despite different import times:
each drops a file in DIR once ready and waits until N files are there.
"""

import argparse
import json
import os
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import sqlalchemy as sa
from sqlalchemy import event

from liqrisk.serve.levels import Thresholds
from liqrisk.serve.store import ScoreEvent, create_engine_for, deliveries_table, record_scores
from liqrisk.serve.webhooks import RetryPolicy, deliver_due

FAST = RetryPolicy(schedule=(0.0, 0.05, 0.05, 0.05, 0.05), jitter=0.1)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["write", "deliver", "die-after-record"])
    parser.add_argument("url")
    parser.add_argument("--name", default="p")
    parser.add_argument("--batches", type=int, default=1)
    parser.add_argument("--per-batch", type=int, default=1)
    parser.add_argument("--commit-delay", type=float, default=0.0)
    parser.add_argument("--barrier", type=Path)
    parser.add_argument("--parties", type=int, default=1)
    parser.add_argument("--deadline", type=float, default=30.0)
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--sqlite-synchronous", default="FULL")
    args = parser.parse_args(argv)
    engine = create_engine_for(args.url, sqlite_synchronous=args.sqlite_synchronous)
    if args.barrier is not None:
        wait_for_everyone(args.barrier, args.name, args.parties)
    if args.mode == "write":
        print(json.dumps(write(engine, args)))
    elif args.mode == "deliver":
        print(json.dumps(deliver(engine, args)))
    else:
        ids = write(engine, args)
        sys.stdout.write(json.dumps(ids) + "\n")
        sys.stdout.flush()
        os._exit(0)


def wait_for_everyone(barrier: Path, name: str, parties: int, timeout: float = 60.0) -> None:
    (barrier / name).touch()
    deadline = time.monotonic() + timeout
    while len(list(barrier.iterdir())) < parties:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name}: only {len(list(barrier.iterdir()))} of {parties} ready")
        time.sleep(0.005)


def write(engine: sa.Engine, args: argparse.Namespace) -> list[int]:
    rng = random.Random(args.name)
    if args.commit_delay:
        event.listen(engine, "commit", lambda _conn: time.sleep(rng.uniform(0, args.commit_delay)))
    ids = []
    for b in range(args.batches):
        now = datetime.now(UTC)
        scores = [ScoreEvent(f"{args.name}-{b}-{i}", 0.95, now) for i in range(args.per_batch)]
        ids += [w.id for w in record_scores(engine, scores, Thresholds()).warnings]
    return ids


def deliver(engine: sa.Engine, args: argparse.Namespace) -> int:
    d = deliveries_table
    open_rows = sa.select(sa.func.count()).where(d.c.status.in_(["pending", "delivering"]))
    attempts = 0
    stop_at = time.monotonic() + args.deadline
    with httpx.Client(trust_env=False) as client:
        while time.monotonic() < stop_at:
            made = deliver_due(
                engine,
                client,
                worker=args.name,
                limit=args.limit,
                policy=FAST,
                lease=timedelta(seconds=10),
                timeout=2.0,
            )
            attempts += len(made)
            if not made:
                with engine.connect() as conn:
                    if conn.execute(open_rows).scalar_one() == 0:
                        break
                time.sleep(0.01)
    return attempts


if __name__ == "__main__":
    main(sys.argv[1:])
