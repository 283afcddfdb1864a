"""Coalescing concurrent requests into one batch (dynamic batching, as model servers do it).

Scoring one account costs nearly as much as scoring twenty: the fixed cost of a call (frame
set-up, one predict per classifier, one store transaction and its commit) dwarfs the cost per
row. So concurrent ``/v1/score`` requests are served together: while one batch is being
scored, the requests that arrive queue up, and the next batch takes all of them (up to a cap
on accounts). Nobody waits for a timer: a request that finds the scorer idle is scored at
once, alone, and batches only form under load, exactly when they pay.

The batcher holds no thread of its own. The caller threads take turns (leader and
followers): a thread whose job is queued either runs the next batch itself, if no batch is
running, or waits until a batch has finished its job. Jobs are taken in arrival order; only
jobs with the same ``key`` (requests that can be scored in one call) share a batch.

The queue is bounded (``max_queued`` jobs waiting behind a running batch): past it a job is
refused at once with :class:`Overloaded` and never run. Only this queue is bounded: callers
still waiting for a thread to submit from are not counted.
"""

import threading
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any


class Overloaded(Exception):
    """The batcher's queue is full: the job was not queued and will not run."""


@dataclass(eq=False)
class Job:
    """One caller's work: ``size`` (accounts) counts against the batch cap; ``key`` says which
    jobs may share a batch; ``payload`` is what the runner reads."""

    payload: Any
    size: int
    key: Hashable = None
    _outcome: tuple[bool, Any] | None = field(default=None, repr=False)

    @property
    def done(self) -> bool:
        return self._outcome is not None

    def resolve(self, value: Any) -> None:
        """Set the job's result (the runner calls this once per job)."""
        self._outcome = (True, value)

    def fail(self, error: BaseException) -> None:
        """Make the job's caller raise ``error``."""
        self._outcome = (False, error)

    def result(self) -> Any:
        ok, value = self._outcome  # type: ignore[misc]
        if not ok:
            raise value
        return value


class Batcher:
    """Runs ``runner(jobs)`` on batches of concurrently submitted jobs.

    ``runner`` must resolve or fail every job it is given; a job it leaves open, or an
    exception it raises, fails the open jobs of that batch with that exception (or a
    ``RuntimeError``). ``max_size`` caps the summed ``size`` of a batch (a larger job runs alone);
    ``max_queued`` caps the jobs waiting while a batch runs (None: no cap).
    """

    def __init__(
        self,
        runner: Callable[[Sequence[Job]], None],
        *,
        max_size: int,
        max_queued: int | None = None,
    ) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        if max_queued is not None and max_queued < 0:
            raise ValueError(f"max_queued must be >= 0, got {max_queued}")
        self._runner = runner
        self._max_size = max_size
        self._max_queued = max_queued
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self.batches = 0  # batches run so far (for tests and metrics)
        self.refused = 0  # jobs refused with Overloaded so far

    def submit(self, job: Job) -> Any:
        """Queue ``job``, wait until a batch has run it, and return its result (or raise).

        Raises :class:`Overloaded` at once, without queuing, if ``max_queued`` jobs already wait.
        """
        with self._cond:
            if (
                self._max_queued is not None
                and self._busy
                and len(self._queue) >= self._max_queued
            ):
                self.refused += 1
                raise Overloaded(f"{len(self._queue)} requests already wait for the scorer")
            self._queue.append(job)
        while True:
            with self._cond:
                while self._busy and not job.done:
                    self._cond.wait()
                if job.done:
                    return job.result()
                self._busy = True
                batch = self._take()
                self.batches += 1
            try:
                self._runner(batch)
            except BaseException as exc:  # noqa: BLE001 - every caller of the batch must hear of it
                for other in batch:
                    if not other.done:
                        other.fail(exc)
            finally:
                for other in batch:
                    if not other.done:
                        other.fail(RuntimeError("the batch runner left a job without a result"))
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _take(self) -> list[Job]:
        """The oldest job and the later ones with its key, in order, up to the size cap."""
        first = self._queue.popleft()
        batch, total, kept = [first], first.size, deque()
        while self._queue:
            job = self._queue.popleft()
            if job.key == first.key and total + job.size <= self._max_size:
                batch.append(job)
                total += job.size
            else:
                kept.append(job)
        self._queue = kept
        return batch
