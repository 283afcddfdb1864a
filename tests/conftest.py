"""Shared fixtures: drive ``liqrisk replay`` through its file interface, in process."""

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from liqrisk.pipelines.cli import main

RunReplay = Callable[..., pd.DataFrame]


def write_accounts(path: Path, accounts: Sequence[dict[str, Any] | str]) -> None:
    """One account a line; a ``str`` is written as is (for malformed-line tests)."""
    lines = [a if isinstance(a, str) else json.dumps(a) for a in accounts]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def run_replay(tmp_path: Path) -> RunReplay:
    """Write bars, instruments and accounts to files, run ``liqrisk replay``, read OUTCOMES.csv.

    The result keeps every field as the string written (``""`` where empty), so tests
    can check the exact output format; ``.attrs["exit_code"]`` holds the exit code.
    """

    def run(
        bars: pd.DataFrame,
        instruments: dict[str, Any],
        accounts: Sequence[dict[str, Any] | str],
        horizon: str = "24h",
        bars_format: str = "parquet",
    ) -> pd.DataFrame:
        bars_path = tmp_path / f"bars.{bars_format}"
        if bars_format == "parquet":
            bars.to_parquet(bars_path, index=False)
        else:
            bars.to_csv(bars_path, index=False)
        instruments_path = tmp_path / "instruments.json"
        instruments_path.write_text(json.dumps(instruments))
        accounts_path = tmp_path / "accounts.jsonl"
        write_accounts(accounts_path, accounts)
        out = tmp_path / "outcomes.csv"
        code = main(
            [
                "replay",
                "--bars", str(bars_path),
                "--instruments", str(instruments_path),
                "--accounts", str(accounts_path),
                "--horizon", horizon,
                "--out", str(out),
            ]
        )
        if code != 0:
            frame = pd.DataFrame()
        else:
            frame = pd.read_csv(out, dtype=str, keep_default_na=False)
        frame.attrs["exit_code"] = code
        return frame

    return run
