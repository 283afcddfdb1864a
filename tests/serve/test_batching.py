"""The batcher: concurrent jobs share a run, each caller gets its own result, failures reach
every caller of the failed batch and nobody else."""

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest

from liqrisk.serve.batching import Batcher, Job, Overloaded


class Recorder:
    """A runner that doubles each payload, slowly, and remembers its batches."""

    def __init__(self, delay: float = 0.05, fail_on: object = None) -> None:
        self.delay = delay
        self.fail_on = fail_on
        self.batches: list[list[object]] = []
        self.lock = threading.Lock()

    def __call__(self, jobs: Sequence[Job]) -> None:
        with self.lock:
            self.batches.append([j.payload for j in jobs])
        time.sleep(self.delay)
        if any(j.payload == self.fail_on for j in jobs):
            raise ValueError(f"bad payload {self.fail_on}")
        for job in jobs:
            job.resolve(job.payload * 2)


def submit_all(batcher: Batcher, jobs: list[Job]) -> list[object]:
    """Submit every job at once from its own task; each task's result or exception."""

    async def all_at_once() -> list[object]:
        return await asyncio.gather(*(batcher.submit(j) for j in jobs), return_exceptions=True)

    return asyncio.run(all_at_once())


def submit(batcher: Batcher, job: Job) -> object:
    return asyncio.run(batcher.submit(job))


def test_concurrent_jobs_share_runs_and_each_gets_its_own_result() -> None:
    runner = Recorder()
    batcher = Batcher(runner, max_size=100)
    results = submit_all(batcher, [Job(i, size=1) for i in range(20)])
    assert results == [2 * i for i in range(20)]
    assert sorted(p for batch in runner.batches for p in batch) == list(range(20))  # each once
    assert len(runner.batches) < 20 and max(len(b) for b in runner.batches) > 1


def test_a_lone_job_runs_at_once_without_waiting_for_company() -> None:
    runner = Recorder(delay=0.0)
    batcher = Batcher(runner, max_size=100)
    started = time.perf_counter()
    assert submit(batcher, Job(21, size=1)) == 42
    assert time.perf_counter() - started < 1.0 and runner.batches == [[21]]


def test_only_jobs_with_the_same_key_share_a_batch() -> None:
    runner = Recorder()
    batcher = Batcher(runner, max_size=100)
    jobs = [Job(i, size=1, key=i % 3) for i in range(18)]
    assert submit_all(batcher, jobs) == [2 * i for i in range(18)]
    assert all(len({p % 3 for p in batch}) == 1 for batch in runner.batches)


def test_a_batch_never_exceeds_the_size_cap_but_a_large_job_still_runs() -> None:
    runner = Recorder()
    batcher = Batcher(runner, max_size=10)
    sizes = [4, 4, 4, 4, 25, 3, 3]
    results = submit_all(batcher, [Job(i, size=s) for i, s in enumerate(sizes)])
    assert results == [2 * i for i in range(len(sizes))]
    for batch in runner.batches:
        total = sum(sizes[p] for p in batch)
        assert total <= 10 or batch == [4]  # the job of size 25 alone


def test_a_failing_batch_fails_its_callers_and_the_next_batch_works() -> None:
    runner = Recorder(fail_on=3)
    batcher = Batcher(runner, max_size=100)
    results = submit_all(batcher, [Job(i, size=1) for i in range(12)])
    failed_batch = next(b for b in runner.batches if 3 in b)
    for i, result in enumerate(results):
        if i in failed_batch:
            assert isinstance(result, ValueError) and "bad payload 3" in str(result)
        else:
            assert result == 2 * i
    assert submit(batcher, Job(5, size=1)) == 10


def test_a_job_the_runner_leaves_open_fails_instead_of_hanging() -> None:
    batcher = Batcher(lambda jobs: None, max_size=10)
    with pytest.raises(RuntimeError, match="without a result"):
        submit(batcher, Job(1, size=1))


def test_max_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_size"):
        Batcher(lambda jobs: None, max_size=0)


def test_past_the_queue_cap_a_job_is_refused_at_once_and_never_runs() -> None:
    runner = Recorder(delay=0.3)
    batcher = Batcher(runner, max_size=100, max_queued=2)
    results = submit_all(batcher, [Job(i, size=1) for i in range(10)])
    refused = [i for i, r in enumerate(results) if isinstance(r, Overloaded)]
    ran = sorted(p for batch in runner.batches for p in batch)
    assert refused and batcher.refused == len(refused)
    assert ran == [i for i in range(10) if i not in refused]  # the refused never reached the runner
    assert all(results[i] == 2 * i for i in ran)
    assert len(ran) <= 1 + 2 * len(runner.batches)  # each batch: its leader's turn, two queued
    assert submit(batcher, Job(7, size=1)) == 14  # idle again: accepted


def test_an_idle_batcher_accepts_a_job_even_with_no_queue() -> None:
    batcher = Batcher(Recorder(delay=0.0), max_size=10, max_queued=0)
    assert submit(batcher, Job(3, size=1)) == 6
    with pytest.raises(ValueError, match="max_queued"):
        Batcher(lambda jobs: None, max_size=1, max_queued=-1)


def test_a_caller_cancelled_while_waiting_leaves_its_job_to_run() -> None:
    runner = Recorder(delay=0.2)
    batcher = Batcher(runner, max_size=100)

    async def scenario() -> list[object]:
        first = asyncio.create_task(batcher.submit(Job(1, size=1)))
        await asyncio.sleep(0.05)  # job 1 is running; job 2 queues behind it
        gone = asyncio.create_task(batcher.submit(Job(2, size=1)))
        await asyncio.sleep(0.01)
        gone.cancel()
        after = await batcher.submit(Job(3, size=1))  # the batcher is not stuck on the cancelled one
        return [await first, gone.cancelled(), after]

    assert asyncio.run(scenario()) == [2, True, 6]
    assert sorted(p for batch in runner.batches for p in batch) == [1, 2, 3]  # 2 ran all the same


def test_many_waiting_callers_hold_no_threads() -> None:
    batcher = Batcher(Recorder(delay=0.1), max_size=1)  # one job a batch: 300 wait in the queue
    before = set(threading.enumerate())
    started: list[threading.Thread] = []

    async def scenario() -> None:
        waiting = asyncio.gather(*(batcher.submit(Job(i, size=1)) for i in range(300)))
        await asyncio.sleep(0.3)
        started.extend(set(threading.enumerate()) - before)
        waiting.cancel()

    asyncio.run(scenario())
    batch_threads = [t for t in started if t.name.startswith("liqrisk-batch")]
    # one batch thread whatever the number of callers (a little slack for threads other
    # fixtures of this process may start meanwhile; a thread per caller would be 300)
    assert len(batch_threads) == 1 and len(started) <= 5, [t.name for t in started]


def test_a_job_submitted_after_close_fails_instead_of_hanging() -> None:
    batcher = Batcher(Recorder(delay=0.0), max_size=10)
    assert submit(batcher, Job(1, size=1)) == 2
    batcher.close()
    with pytest.raises(RuntimeError, match="shutdown"):
        submit(batcher, Job(2, size=1))
