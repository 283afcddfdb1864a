"""Coalescing concurrent requests into one batch (dynamic batching, as model servers do it).

Scoring one account costs nearly as much as scoring twenty: the fixed cost of a call (frame
set-up, one predict per classifier, one store transaction and its commit) dwarfs the cost per
row. So concurrent ``/v1/score`` requests are served together: while one batch is being
scored, the requests that arrive queue up, and the next batch takes all of them (up to a cap
on accounts). Nobody waits for a timer: a request that finds the scorer idle is scored at
once, alone, and batches only form under load, exactly when they pay.

Requests wait on the event loop, not in threads: :meth:`Batcher.submit` is a coroutine, and
one task at a time drains the queue, running each batch on the batcher's own thread (the
scorer is plain blocking Python). Jobs are taken in arrival order; only jobs with the same
``key`` (requests that can be scored in one call) share a batch.

The queue is bounded (``max_queued`` jobs waiting behind a running batch): past it a job is
refused at once with :class:`Overloaded` and never run. Since no request holds a thread while
it waits, this bounds every request waiting to be scored (with a thread per waiting request,
those waiting for a free thread of the pool were not counted).
"""

import asyncio
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
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
    # perf_counter seconds: when the job was queued and when its batch began (set by the
    # batcher), and what the runner chooses to record of its batch (for Server-Timing)
    queued_at: float = field(default=0.0, repr=False)
    started_at: float = field(default=0.0, repr=False)
    timings: dict[str, float] = field(default_factory=dict, repr=False)
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
    """Runs ``runner(jobs)`` on batches of concurrently submitted jobs, one batch at a time, on
    a thread of its own.

    ``runner`` must resolve or fail every job it is given; a job it leaves open, or an
    exception it raises, fails the open jobs of that batch with that exception (or a
    ``RuntimeError``). ``max_size`` caps the summed ``size`` of a batch (a larger job runs alone);
    ``max_queued`` caps the jobs waiting while a batch runs (None: no cap). Submit from one
    event loop; :meth:`close` stops the thread.
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
        self._waiting: dict[int, asyncio.Future[None]] = {}  # by id(job): set when it has run
        self._busy = False  # a drain task is running batches
        self._drainer: asyncio.Task[None] | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="liqrisk-batch")
        self.batches = 0  # batches run so far (for tests and metrics)
        self.refused = 0  # jobs refused with Overloaded so far

    async def submit(self, job: Job) -> Any:
        """Queue ``job``, wait until a batch has run it, and return its result (or raise).

        Raises :class:`Overloaded` at once, without queuing, if ``max_queued`` jobs already wait.
        A caller cancelled while waiting leaves its job queued: it is still run (and what it
        stores is stored), only its answer has no one to go to.
        """
        if self._max_queued is not None and self._busy and len(self._queue) >= self._max_queued:
            self.refused += 1
            raise Overloaded(f"{len(self._queue)} requests already wait for the scorer")
        loop = asyncio.get_running_loop()
        done = self._waiting[id(job)] = loop.create_future()
        job.queued_at = time.perf_counter()
        self._queue.append(job)
        if not self._busy:
            self._busy = True
            self._drainer = loop.create_task(self._drain())  # held: the loop keeps weak references
        await done
        return job.result()

    def close(self) -> None:
        """Stop the batch thread once the running batch (if any) is done."""
        self._thread.shutdown(wait=True)

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                batch = self._take()
                self.batches += 1
                try:
                    await loop.run_in_executor(self._thread, self._run, batch)
                except RuntimeError as exc:  # the batch thread is stopped (the service is closing)
                    batch += self._queue
                    self._queue.clear()
                    for job in batch:
                        job.fail(exc)
                finally:
                    for job in batch:
                        if not job.done:  # the drain was cancelled: nobody will run it now
                            job.fail(RuntimeError("the batch was not run: the service is stopping"))
                        done = self._waiting.pop(id(job))
                        if not done.done():  # a cancelled caller's future is done already
                            done.set_result(None)
        finally:
            self._busy = False

    def _run(self, batch: list[Job]) -> None:
        """The runner on one batch (on the batch thread); every job ends resolved or failed."""
        started = time.perf_counter()
        for job in batch:
            job.started_at = started
        try:
            self._runner(batch)
        except BaseException as exc:  # noqa: BLE001 - every caller of the batch must hear of it
            for job in batch:
                if not job.done:
                    job.fail(exc)
        finally:
            for job in batch:
                if not job.done:
                    job.fail(RuntimeError("the batch runner left a job without a result"))

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
