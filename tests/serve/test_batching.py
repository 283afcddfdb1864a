"""The batcher: concurrent jobs share a run, each caller gets its own result, failures reach
every caller of the failed batch and nobody else."""

import threading
import time
from collections.abc import Sequence

import pytest

from liqrisk.serve.batching import Batcher, Job


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
    """Submit every job from its own thread at once; each thread's result or exception."""
    out: list[object] = [None] * len(jobs)
    start = threading.Barrier(len(jobs))

    def run(i: int) -> None:
        start.wait()
        try:
            out[i] = batcher.submit(jobs[i])
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


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
    assert batcher.submit(Job(21, size=1)) == 42
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
    assert batcher.submit(Job(5, size=1)) == 10


def test_a_job_the_runner_leaves_open_fails_instead_of_hanging() -> None:
    batcher = Batcher(lambda jobs: None, max_size=10)
    with pytest.raises(RuntimeError, match="without a result"):
        batcher.submit(Job(1, size=1))


def test_max_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_size"):
        Batcher(lambda jobs: None, max_size=0)


class TwoStages:
    """A runner whose second stage (resolving the jobs) runs after the scorer is released: it
    records when each stage of each batch starts and ends."""

    def __init__(self, fail_second_on: object = None, leave_open: object = None) -> None:
        self.fail_second_on = fail_second_on
        self.leave_open = leave_open
        self.spans: list[tuple[str, int, float, float]] = []
        self.lock = threading.Lock()
        self.count = 0

    def __call__(self, jobs: Sequence[Job]):
        with self.lock:
            n = self.count
            self.count += 1
        t0 = time.perf_counter()
        time.sleep(0.02)
        self.spans.append(("first", n, t0, time.perf_counter()))

        def second() -> None:
            t1 = time.perf_counter()
            time.sleep(0.06)  # longer than a first stage: the next batch must start meanwhile
            self.spans.append(("second", n, t1, time.perf_counter()))
            if any(j.payload == self.fail_second_on for j in jobs):
                raise ValueError(f"second stage failed on {self.fail_second_on}")
            for job in jobs:
                if job.payload != self.leave_open:
                    job.resolve(job.payload * 2)

        return second


def staggered(batcher: Batcher, payloads: list[int], gap: float = 0.01) -> list[object]:
    """Submit each payload from its own thread, ``gap`` seconds apart; results or exceptions."""
    out: list[object] = [None] * len(payloads)

    def run(i: int) -> None:
        try:
            out[i] = batcher.submit(Job(payloads[i], size=1))
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(payloads))]
    for t in threads:
        t.start()
        time.sleep(gap)
    for t in threads:
        t.join(30)
    return out


def test_the_next_batch_runs_while_the_previous_one_finishes() -> None:
    runner = TwoStages()
    batcher = Batcher(runner, max_size=100)
    assert staggered(batcher, list(range(12))) == [2 * i for i in range(12)]
    firsts = sorted((n, a, b) for stage, n, a, b in runner.spans if stage == "first")
    seconds = {n: (a, b) for stage, n, a, b in runner.spans if stage == "second"}
    assert len(firsts) == len(seconds) >= 2
    # first stages never overlap each other...
    assert all(later[1] >= earlier[2] for earlier, later in zip(firsts, firsts[1:]))
    # ...but some first stage ran while an earlier batch's second stage was still going
    assert any(seconds[n][0] < a < seconds[n][1] for n, _, _ in firsts for _, a, _ in firsts[n + 1 :])


def test_a_failing_second_stage_fails_its_batch_only() -> None:
    runner = TwoStages(fail_second_on=0)
    batcher = Batcher(runner, max_size=100)
    results = staggered(batcher, [0, 1, 2, 3, 4, 5], gap=0.03)
    assert isinstance(results[0], ValueError) and "second stage failed on 0" in str(results[0])
    assert [r for r in results[1:] if not isinstance(r, ValueError)] != []  # later batches answered
    assert batcher.submit(Job(7, size=1)) == 14


def test_a_job_the_second_stage_leaves_open_fails_instead_of_hanging() -> None:
    batcher = Batcher(TwoStages(leave_open=1), max_size=10)
    with pytest.raises(RuntimeError, match="without a result"):
        batcher.submit(Job(1, size=1))
    assert batcher.submit(Job(2, size=1)) == 4


def test_second_stages_run_one_at_a_time_in_batch_order() -> None:
    runner = TwoStages()
    batcher = Batcher(runner, max_size=100)
    assert staggered(batcher, list(range(16)), gap=0.005) == [2 * i for i in range(16)]
    seconds = sorted((a, b, n) for stage, n, a, b in runner.spans if stage == "second")
    assert [n for _, _, n in seconds] == sorted(n for _, _, n in seconds)  # started in batch order
    assert all(later[0] >= earlier[1] for earlier, later in zip(seconds, seconds[1:]))  # never together
