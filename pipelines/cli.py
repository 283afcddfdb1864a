"""The ``liqrisk`` command: parses arguments, reads files, calls the library, writes results."""

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from liqrisk.features.errors import InputError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="liqrisk", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    replay = commands.add_parser(
        "replay",
        help="replay account snapshots through the liquidation engine (docs/liquidation-contract.md)",
    )
    replay.add_argument("--bars", type=Path, required=True, help="Parquet or CSV bars")
    replay.add_argument("--instruments", type=Path, required=True, help="instruments JSON")
    replay.add_argument("--accounts", type=Path, required=True, help="accounts JSONL, one a line")
    replay.add_argument("--horizon", required=True, help="e.g. 90m, 24h, 7d")
    replay.add_argument("--out", type=Path, required=True, help="outcomes CSV to write")

    run = commands.add_parser(
        "run", help="the main job on the bundled data: build the dataset, train, evaluate, register, report"
    )
    run.add_argument("--data", type=Path, default=Path("data"), help="folder of bars and instruments.json")
    run.add_argument("--accounts", type=int, default=20_000, help="accounts generated per bars file")
    run.add_argument("--seed", type=int, default=7)
    run.add_argument("--config", type=Path, default=None, help="TOML build config (defaults when left out)")
    run.add_argument("--out", type=Path, default=Path("runs/latest"))
    run.add_argument("--build-only", action="store_true", help="stop after the dataset (no training)")
    run.add_argument("--tracking-dir", type=Path, default=Path("runs/mlflow"),
                     help="embedded MLflow store (ignored when MLFLOW_TRACKING_URI is set)")

    build = commands.add_parser(
        "build", help="build the training set: accounts, point-in-time features, labels, data card"
    )
    build.add_argument("--config", type=Path, default=None, help="TOML build config (defaults when left out)")
    build.add_argument("--out", type=Path, default=None, help="output folder (overrides the config)")
    build.add_argument("--scheduler", choices=("local", "dask"), default=None, help="overrides the config")
    build.add_argument("--seed", type=int, default=None, help="overrides the config")

    train = commands.add_parser(
        "train", help="walk-forward evaluation, MLflow run, registry and promotion gate, HTML report"
    )
    train.add_argument("--dataset", type=Path, default=Path("runs/latest/dataset.parquet"))
    train.add_argument("--out", type=Path, default=Path("runs/latest"), help="report and tables go here")
    train.add_argument("--tracking-dir", type=Path, default=Path("runs/mlflow"),
                       help="embedded MLflow store (ignored when MLFLOW_TRACKING_URI is set)")
    train.add_argument("--data", type=Path, default=Path("data"), help="bars for the event back-tests")
    train.add_argument("--seed", type=int, default=7)
    train.add_argument("--no-events", action="store_true", help="skip the historic event back-tests")

    serve = commands.add_parser(
        "serve", help="run the scoring service (settings from LIQRISK_SERVE__* variables and .env)"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes (each loads the model and the market; they share the database)",
    )
    serve.add_argument(
        "--no-access-log",
        dest="access_log",
        action="store_false",
        help="no uvicorn log line per request (for a deployment whose proxy logs requests)",
    )

    data = commands.add_parser("data", help="market data tools")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    check = data_commands.add_parser("check", help="validate a bars file and print a report")
    check.add_argument("file", type=Path, help="Parquet or CSV bars")
    check.add_argument(
        "--lenient",
        action="store_true",
        help="quarantine bad rows to a rejects file instead of stopping at the first problem",
    )
    check.add_argument("--rejects", type=Path, default=None, help="where lenient mode writes rejects")
    check.add_argument(
        "--instruments", type=Path, default=None, help="instruments JSON (which symbols allow prices <= 0)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "replay":
            from liqrisk.pipelines.replay_cmd import replay_command

            return replay_command(
                bars=args.bars,
                instruments=args.instruments,
                accounts=args.accounts,
                horizon=args.horizon,
                out=args.out,
            )
        if args.command == "run":
            from liqrisk.pipelines.run import run_command

            return run_command(
                data_dir=args.data, n_accounts=args.accounts, seed=args.seed, out=args.out, config=args.config,
                train=not args.build_only, tracking_dir=args.tracking_dir,
            )
        if args.command == "build":
            from liqrisk.pipelines.build import build_command

            return build_command(args.config, out=args.out, scheduler=args.scheduler, seed=args.seed)
        if args.command == "train":
            from liqrisk.pipelines.training import TrainConfig, train_command

            return train_command(
                TrainConfig(
                    dataset=args.dataset, out=args.out, tracking_dir=args.tracking_dir, seed=args.seed, data_dir=args.data,
                    events=not args.no_events,
                )
            )
        if args.command == "serve":
            import uvicorn

            # By import path: pipelines never import serve (docs/design.md).
            if args.workers < 1:
                raise InputError(f"--workers must be >= 1, got {args.workers}")
            with _metrics_shared(args.workers):
                uvicorn.run(
                    "liqrisk.serve.app:create_app",
                    factory=True,
                    host=args.host,
                    port=args.port,
                    workers=args.workers,
                    access_log=args.access_log,
                )
            return 0
        if args.command == "data" and args.data_command == "check":
            from liqrisk.pipelines.data_check import data_check_command

            return data_check_command(
                args.file, lenient=args.lenient, rejects=args.rejects, instruments=args.instruments
            )
    except (InputError, FileNotFoundError) as exc:
        print(f"liqrisk: error: {exc}", file=sys.stderr)
        return 2
    raise AssertionError(f"unhandled command {args.command}")


@contextlib.contextmanager
def _metrics_shared(workers: int) -> Iterator[None]:
    """With several workers, an empty folder of their own for prometheus_client's multiprocess
    mode (``PROMETHEUS_MULTIPROC_DIR``; ``liqrisk.serve.metrics``), so ``/metrics`` sums them
    whichever answers; removed at exit. A folder the caller set is used as it is."""
    variable = "PROMETHEUS_MULTIPROC_DIR"
    if workers == 1 or os.environ.get(variable):
        yield
        return
    folder = tempfile.mkdtemp(prefix="liqrisk-metrics-")
    os.environ[variable] = folder
    try:
        yield
    finally:
        del os.environ[variable]
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
