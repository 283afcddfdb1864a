"""Scoring service under load: `liqrisk serve` (uvicorn) against the champion served by
`mlflow models serve`, both on 127.0.0.1, driven by an async aiohttp client in this process.

    python bench/bench_serve.py [--seconds 20] [--rate 200] [--workers 1] [--no-reference]
                                [--sqlite-synchronous FULL|NORMAL]

Needs the champion of the main job (`liqrisk run`) in runs/mlflow. For each server:

- **single, open loop**: one account a request, sent at a fixed rate (default 200/s)
  whatever the answers do, for a bounded time; latency p50 / p99 and the rate achieved;
- **single, closed loop**: 8 clients sending one account a request back to back; the
  throughput (requests/s) is the capacity figure the ratio compares;
- **batch of 1,000**: one client, back to back; latency p50 / p99 and accounts/s.

Every request to liqrisk carries its accounts under ids never sent before (``--same-ids``
sends the same ones again), so each score stores a new account state, as a platform's new
figures would; the store starts empty each run. Answers carry a Server-Timing header, and the
report gives, per case, the median of each part (waiting for the batch ahead, scoring,
storing) over all requests and over the slowest 1%.

liqrisk receives accounts in the contract's snapshot shape and computes every feature
from its market state; the reference receives the already computed feature rows of the
same accounts (MLflow has no feature step), so the comparison favours the reference. Both
run without uvicorn's access log (``liqrisk serve --no-access-log``; ``--access-log`` keeps it),
as behind a proxy that logs requests: on this machine the log line cost ~0.7 ms a request.
"""

import argparse
import asyncio
import gc
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import httpx
import numpy as np
import orjson
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "bench-key"
CLIENT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)  # a failed request, counted as an error


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, *, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not ready after {timeout:.0f}s")


def bench_accounts(n: int, seed: int = 11) -> tuple[list[dict], pd.DataFrame]:
    """``n`` seeded live snapshots (cross and isolated books of 1-3 positions around the last
    close of the bundled symbols with recent bars, as_of the market's latest bar: what a running
    service scores), as sent to liqrisk, and their offline feature rows (for the reference);
    only accounts the model scores (status ``ok``), in the same order."""
    from bench_scoring import offline_table, seeded_accounts

    from liqrisk.serve.market import MarketState

    market = MarketState.load(ROOT / "data")
    accounts = seeded_accounts(market, n, seed=seed)
    table = offline_table(market, accounts).reset_index(drop=True)
    ok = (table["status"] == "ok").to_numpy()
    return [a for a, keep in zip(accounts, ok, strict=True) if keep], table[ok].reset_index(drop=True)


def dataframe_split(rows: pd.DataFrame) -> dict:
    from liqrisk.models.bundle import input_example

    frame = input_example(rows, n=len(rows))
    return {"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}


async def _timed(send: Callable, payload, latencies: list[float], statuses: list[int], timings: list[dict]) -> None:
    """One request: its latency, its status (0 for a request the client saw fail) and what its
    Server-Timing header says (empty where it has none)."""
    t0 = time.perf_counter()
    try:
        status, header = await send(payload)
    except CLIENT_ERRORS:
        status, header = 0, None
    latencies.append(time.perf_counter() - t0)
    statuses.append(status)
    timings.append(server_timing(header))


def server_timing(header: str | None) -> dict[str, float]:
    """``{"wait": 1.2, "score": 4.0, ...}`` (ms) of a Server-Timing header; ``batch`` from its
    description (accounts in the request's batch)."""
    out = {}
    for metric in (header or "").split(","):
        name, *params = (p.strip() for p in metric.split(";"))
        for param in params:
            key, _, value = param.partition("=")
            if key == "dur":
                out[name] = float(value)
            elif key == "desc" and name == "batch":
                out[name] = float(value.strip('"').split()[0])
    return out


async def open_loop(send: Callable, body: Callable[[int], bytes], *, rate: float, seconds: float) -> dict:
    """Request ``k`` (its body ``body(k)``) sent at ``k / rate`` seconds, whatever the answers do."""
    latencies, statuses, timings = [], [], []
    start = time.perf_counter()
    tasks = []
    k = 0
    while (now := time.perf_counter() - start) < seconds:
        due = k / rate
        if due > now:
            await asyncio.sleep(due - now)
        tasks.append(asyncio.create_task(_timed(send, body(k), latencies, statuses, timings)))
        k += 1
    await asyncio.gather(*tasks)
    return _stats(latencies, statuses, timings, time.perf_counter() - start)


async def closed_loop(send: Callable, body: Callable[[int], bytes], *, clients: int, seconds: float) -> dict:
    """``clients`` clients, each sending its next request (client ``i``: bodies ``i``,
    ``i + clients``, ...) as soon as the last is answered."""
    latencies, statuses, timings = [], [], []
    start = time.perf_counter()

    async def client(offset: int) -> None:
        k = offset
        while time.perf_counter() - start < seconds:
            await _timed(send, body(k), latencies, statuses, timings)
            k += clients

    await asyncio.gather(*(client(i) for i in range(clients)))
    return _stats(latencies, statuses, timings, time.perf_counter() - start)


def _stats(latencies: list[float], statuses: list[int], timings: list[dict], seconds: float) -> dict:
    """Counts and latency percentiles; ``errors``: every answer but a 200 (refusals and client
    time-outs included), ``refused``: the 503s of load shedding; ``server``: the median of each
    Server-Timing part over all requests and over the slowest 1% (where the tail's time went)."""
    ms = np.asarray(latencies) * 1000
    return {
        "server": _server_parts(ms, timings),
        "requests": len(ms),
        "errors": sum(s != 200 for s in statuses),
        "refused": sum(s == 503 for s in statuses),
        "per_s": len(ms) / seconds,
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else float("nan"),
    }


def bodies(groups: list[list[dict]], payload_of: Callable, *, fresh_ids: bool) -> Callable[[int], bytes]:
    """The body of request ``k``: ``payload_of`` of group ``k % len(groups)``, encoded once per
    group; or, ``fresh_ids``, encoded per request with every account id suffixed ``~n`` (``n``
    counting every request of the run), so that each score stores an account's state, as when
    a platform sends the accounts' new figures (re-scoring an account unchanged writes nothing)."""
    if not fresh_ids:
        encoded = [orjson.dumps(payload_of(g)) for g in groups]
        return lambda k: encoded[k % len(encoded)]
    counter = itertools.count()

    def body(k: int) -> bytes:
        n = next(counter)
        return orjson.dumps(payload_of([a | {"account_id": f"{a['account_id']}~{n}"} for a in groups[k % len(groups)]]))

    return body


async def drive(url: str, payload_of: Callable, accounts: list, *, headers: dict, rate: float, seconds: float,
                fresh_ids: bool = False) -> dict:
    """The three cases against one server. The client is aiohttp with bodies encoded before the
    clock starts: httpx's async client cost this process more CPU a request than the server
    spent answering it, so an open loop at 200/s measured the client falling behind."""
    connector = aiohttp.TCPConnector(limit=0)  # as many connections as requests in flight
    timeout = aiohttp.ClientTimeout(total=30.0)
    headers = {**headers, "Content-Type": "application/json"}
    async with aiohttp.ClientSession(headers=headers, connector=connector, timeout=timeout) as client:

        async def send(body: bytes) -> tuple[int, str | None]:
            async with client.post(url, data=body) as r:
                await r.read()
                return r.status, r.headers.get("Server-Timing")

        groups = [accounts[i : i + 1000] for i in range(0, len(accounts) - 999, 1000)]
        singles = bodies([[a] for a in accounts[:500]], payload_of, fresh_ids=fresh_ids)
        batches = bodies(groups, payload_of, fresh_ids=fresh_ids)
        for k in range(1 + len(groups)):  # warm-up: every account once (caches, first calls)
            await send(batches(k - 1) if k else singles(0))
        # This process holds the market and the accounts (~10^6 objects): one full collection of
        # them stalled the client ~180 ms, the open loop's tail, and then sent the overdue
        # requests at once. Frozen, a collection walks only what the cases create.
        gc.collect()
        gc.freeze()
        # the open loop last: a server that cannot keep its rate is left with a backlog, which
        # would slow whatever case came next
        closed = await closed_loop(send, singles, clients=8, seconds=seconds)
        batch = await closed_loop(send, batches, clients=1, seconds=seconds)
        return {
            "single, open loop": await open_loop(send, singles, rate=rate, seconds=seconds),
            "single, closed loop (8 clients)": closed,
            "batch of 1,000": batch,
        }


def _server_parts(ms: np.ndarray, timings: list[dict]) -> dict[str, tuple[float, float]]:
    """Per Server-Timing part, (median over all requests, median over the slowest 1%); and
    ``outside``: the client's latency less the server's parts (HTTP, parsing, the event loop)."""
    names = sorted({name for t in timings for name in t})
    if not names or not len(ms):
        return {}
    parts = {name: np.array([t.get(name, np.nan) for t in timings]) for name in names}
    timed = [n for n in names if n != "batch"]
    parts["outside"] = ms - np.sum([parts[n] for n in timed], axis=0)
    slow = ms >= np.percentile(ms, 99)
    return {name: (float(np.nanmedian(v)), float(np.nanmedian(v[slow]))) for name, v in parts.items()}


def start_liqrisk(port: int, work: Path, workers: int, *, access_log: bool, synchronous: str = "FULL") -> subprocess.Popen:
    import hashlib

    for stale in work.glob("bench-warnings.db*"):  # each run starts from an empty store
        stale.unlink()
    keys = [{"name": "bench", "key_sha256": hashlib.sha256(API_KEY.encode()).hexdigest(), "scopes": ["score"]}]
    env = os.environ | {
        "LIQRISK_SERVE__API_KEYS": json.dumps(keys),
        "LIQRISK_SERVE__DATABASE_URL": f"sqlite:///{work / 'bench-warnings.db'}",
        "LIQRISK_SERVE__SQLITE_SYNCHRONOUS": synchronous,
    }
    cmd = [sys.executable, "-m", "liqrisk.pipelines.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(workers), *([] if access_log else ["--no-access-log"])]
    return _start(cmd, env)


def _start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    """A server in its own process group, so that :func:`stop` reaches the processes it starts."""
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def stop(server: subprocess.Popen, timeout: float = 30.0) -> None:
    """Stop ``server`` and every process of its group. `mlflow models serve` runs uvicorn as a
    child: terminating the CLI alone left that child running, still answering the open loop's
    backlog at a full core, through whatever was measured next."""
    try:
        os.killpg(server.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        server.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(server.pid, 0)  # anyone left in the group?
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.killpg(server.pid, signal.SIGKILL)
    server.wait()


def fsync_probe(directory: Path, n: int = 200) -> str:
    """The latency of writing 4 KiB and fsyncing it in ``directory`` (the database's disk), ``n``
    times: with synchronous=FULL every commit waits for one, so its tail is the store's tail."""
    path = directory / "fsync-probe.bin"
    times = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for _ in range(n):
            os.write(fd, b"\0" * 4096)
            started = time.perf_counter()
            os.fsync(fd)
            times.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        path.unlink()
    p50, p99, top = np.percentile(np.asarray(times) * 1000, [50, 99, 100])
    return f"fsync of 4 KiB on its disk (idle, {n} times): p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {top:.1f} ms"


def start_mlflow(port: int, workers: int, *, access_log: bool) -> subprocess.Popen:
    env = os.environ | {
        # mlflow starts uvicorn's CLI, which reads UVICORN_* variables: the same logging as ours
        "UVICORN_ACCESS_LOG": str(access_log).lower(),
        "MLFLOW_TRACKING_URI": f"sqlite:///{ROOT / 'runs' / 'mlflow' / 'mlflow.db'}",
        # mlflow runs `uvicorn` from PATH: the one installed beside this interpreter
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/liqrisk@champion",
           "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    return _start(cmd, env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--accounts", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=1, help="server processes, the same for both servers")
    parser.add_argument("--access-log", action="store_true",
                        help="both servers with uvicorn's access log (default: without, `liqrisk serve --no-access-log`)")
    parser.add_argument("--no-reference", action="store_true",
                        help="liqrisk only (e.g. its load shedding at a rate above its capacity): no ratios")
    parser.add_argument("--sqlite-synchronous", choices=["FULL", "NORMAL"], default="FULL",
                        help="the warnings store's SQLite synchronous (LIQRISK_SERVE__SQLITE_SYNCHRONOUS)")
    parser.add_argument("--same-ids", action="store_true",
                        help="send the same accounts again (re-scored unchanged, they write nothing to the store); "
                             "default: every request's accounts under new ids, each score storing its state")
    args = parser.parse_args()
    if not (ROOT / "runs" / "mlflow" / "mlflow.db").exists():
        print("bench_serve: no MLflow store at runs/mlflow; run `liqrisk run` first", file=sys.stderr)
        return 2
    accounts, rows = bench_accounts(args.accounts)
    print(f"{len(accounts):,} live accounts scored ok (seeded, all bundled files); {args.seconds:.0f}s per case; "
          f"both servers {'with' if args.access_log else 'without'} uvicorn's access log", file=sys.stderr)
    work = ROOT / "runs" / "bench"
    work.mkdir(parents=True, exist_ok=True)
    print(f"warnings store: SQLite, synchronous={args.sqlite_synchronous}; {fsync_probe(work)}", file=sys.stderr)
    results = {}
    port = free_port()
    server = start_liqrisk(port, work, args.workers, access_log=args.access_log, synchronous=args.sqlite_synchronous)
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz")
        results["liqrisk serve"] = asyncio.run(
            drive(f"http://127.0.0.1:{port}/v1/score", lambda a: {"accounts": a}, accounts,
                  headers={"X-API-Key": API_KEY}, rate=args.rate, seconds=args.seconds,
                  fresh_ids=not args.same_ids)
        )
    finally:
        stop(server)
    if args.no_reference:
        report(results, rate=args.rate)
        return 0
    port = free_port()
    reference = start_mlflow(port, args.workers, access_log=args.access_log)
    index = {a["account_id"]: i for i, a in enumerate(accounts)}
    try:
        wait_ready(f"http://127.0.0.1:{port}/ping")
        results["mlflow models serve"] = asyncio.run(
            drive(f"http://127.0.0.1:{port}/invocations",
                  lambda a: dataframe_split(rows.iloc[[index[x["account_id"]] for x in a]]), accounts,
                  headers={}, rate=args.rate, seconds=args.seconds)
        )
    finally:
        stop(reference)
    report(results, rate=args.rate)
    return 0


def report(results: dict, *, rate: float) -> None:
    print(f"{'server':22} {'case':34} {'requests':>9} {'errors':>7} {'503':>6} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for server, cases in results.items():
        for case, s in cases.items():
            print(f"{server:22} {case:34} {s['requests']:>9,} {s['errors']:>7} {s['refused']:>6} {s['per_s']:>9.1f} "
                  f"{s['p50_ms']:>8.1f} {s['p99_ms']:>8.1f}")
    for server, cases in results.items():
        for case, s in cases.items():
            if s["server"]:
                parts = ", ".join(f"{n} {a:.1f}/{b:.1f}" for n, (a, b) in s["server"].items())
                print(f"  {server}, {case}: server-timing median all/slowest 1% (ms; batch: accounts): {parts}")
    if "mlflow models serve" not in results:
        return
    ours, ref = results["liqrisk serve"], results["mlflow models serve"]
    for case in ours:
        print(f"throughput ratio, {case}: {ours[case]['per_s'] / ref[case]['per_s']:.2f}x the reference")
    print("\ntargets (issue 6, 2 cores):")
    for what, met in targets(ours, ref, rate=rate):
        print(f"  {'met    ' if met else 'NOT MET'}  {what}")


def targets(ours: dict, ref: dict, *, rate: float) -> list[tuple[str, bool]]:
    """The issue's targets, each with whether this run met it."""
    single, batch = ours["single, open loop"], ours["batch of 1,000"]
    capacity = "single, closed loop (8 clients)"
    ratios = {case: ours[case]["per_s"] / ref[case]["per_s"] for case in ours}
    return [
        (
            (
                f"single account at {rate:.0f} requests/s: p99 {single['p99_ms']:.1f} ms < 25 ms, "
                f"rate reached {single['per_s']:.0f}/s, {single['errors']} errors"
            ),
            single["p99_ms"] < 25 and single["per_s"] >= 0.98 * rate and single["errors"] == 0,
        ),
        (
            f"batch of 1,000 accounts: p50 {batch['p50_ms']:.1f} ms, p99 {batch['p99_ms']:.1f} ms < 100 ms",
            batch["p99_ms"] < 100 and batch["errors"] == 0,
        ),
        (f"single-account throughput >= 3x the reference: {ratios[capacity]:.2f}x", ratios[capacity] >= 3),
        (
            f"batch throughput >= 3x the reference: {ratios['batch of 1,000']:.2f}x",
            ratios["batch of 1,000"] >= 3,
        ),
    ]


if __name__ == "__main__":
    sys.exit(main())
