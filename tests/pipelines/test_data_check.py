"""``liqrisk data check``, run in process: the report's figures on a crafted file, and the
exit codes of strict and lenient runs on a bad one.

The crafted file: EURUSD hourly from Monday 2024-01-08 00:00 to Tuesday 2024-01-16 23:00
(UTC) with the FX weekend (last bar Friday 21:00, so closed from Friday 22:00 to Sunday
22:00) and a hole (Tuesday 16th 10:00-12:00 missing: closed 3h); BTCUSDT hourly every day
of the same span with one missing bar, which is a hole (crypto trades at weekends).
"""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from liqrisk.pipelines.cli import main


def eurusd() -> pd.DataFrame:
    ts = pd.date_range("2024-01-08T00:00Z", "2024-01-16T23:00Z", freq="h", unit="us")
    weekend = (ts >= pd.Timestamp("2024-01-12T22:00Z")) & (ts < pd.Timestamp("2024-01-14T22:00Z"))
    hole = (ts >= pd.Timestamp("2024-01-16T10:00Z")) & (ts < pd.Timestamp("2024-01-16T13:00Z"))
    ts = ts[~weekend & ~hole]
    close = np.full(len(ts), 1.10)
    close[ts >= pd.Timestamp("2024-01-14T22:00Z")] = 1.12  # +1.82% across the weekend
    close[ts >= pd.Timestamp("2024-01-16T13:00Z")] = 1.125  # +0.45% across the hole
    return pd.DataFrame(
        {
            "symbol": "EURUSD",
            "ts": ts,
            "open": close,
            "high": close + 0.001,
            "low": close - 0.001,
            "close": close,
            "volume": math.nan,
        }
    )


def btcusdt() -> pd.DataFrame:
    ts = pd.date_range("2024-01-08T00:00Z", "2024-01-16T23:00Z", freq="h", unit="us")
    ts = ts[ts != pd.Timestamp("2024-01-13T05:00Z")]  # a Saturday hour missing
    close = np.linspace(40_000.0, 41_000.0, len(ts))
    volume = np.where(np.arange(len(ts)) < 43, 0.0, 2.5)  # 43 of 215 bars without volume: 80%
    return pd.DataFrame(
        {
            "symbol": "BTCUSDT",
            "ts": ts,
            "open": close,
            "high": close + 10,
            "low": close - 10,
            "close": close,
            "volume": volume,
        }
    )


def crafted() -> pd.DataFrame:
    return pd.concat([eurusd(), btcusdt()], ignore_index=True)


def check(*args: str) -> int:
    return main(["data", "check", *args])


def test_report_figures(tmp_path, capsys):
    path = tmp_path / "bars.parquet"
    crafted().to_parquet(path, index=False)
    n_eur, n_btc = len(eurusd()), len(btcusdt())

    assert check(str(path)) == 0
    out = capsys.readouterr().out

    assert f"file: {path}\n" in out
    assert f"rows: {n_eur + n_btc} ({n_eur + n_btc} valid, 0 rejected)\n" in out
    assert "symbols: 2\n" in out
    assert (
        "EURUSD\n"
        f"  bars: {n_eur} from 2024-01-08T00:00:00Z to 2024-01-16T23:00:00Z, bar length 1h\n"
        "  volume: 0.0% of bars have volume > 0\n"
        "  gaps: 2 (1 expected: 1 weekend, 0 holiday, 0 session break; 1 unexpected hole(s))\n"
        "  largest gap: 2d closed from 2024-01-12T22:00:00Z to 2024-01-14T22:00:00Z (weekend)\n"
        "  largest jump across a gap: +1.82% at 2024-01-14T22:00:00Z "
        "(close 1.1 -> open 1.12, after 2d closed, weekend)\n"
    ) in out
    assert (
        "BTCUSDT\n"
        f"  bars: {n_btc} from 2024-01-08T00:00:00Z to 2024-01-16T23:00:00Z, bar length 1h\n"
        "  volume: 80.0% of bars have volume > 0\n"
        "  gaps: 1 (0 expected: 0 weekend, 0 holiday, 0 session break; 1 unexpected hole(s))\n"
        "  largest gap: 1h closed from 2024-01-13T05:00:00Z to 2024-01-13T06:00:00Z (hole)\n"
    ) in out
    assert out.index("BTCUSDT\n") < out.index("EURUSD\n")  # symbols in order
    assert "rejects: none\n" in out
    assert out.endswith("notes:\n  - input was not sorted: sorted by (symbol, ts)\n")


def test_bad_file_strict_fails_and_lenient_writes_rejects(tmp_path, capsys, monkeypatch):
    frame = crafted()
    frame.loc[3, ["high", "low"]] = [1.0, 1.2]  # EURUSD high < low
    frame.loc[10, "ts"] = frame.loc[9, "ts"]  # duplicate (EURUSD, 09:00)
    frame.loc[200, "close"] = math.nan
    path = tmp_path / "bad.csv"
    frame.assign(ts=frame["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_csv(path, index=False)

    assert check(str(path)) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(
        f"liqrisk: error: {path}: high < low at row 3 (line 5), symbol=EURUSD, "
        "ts=2024-01-08T03:00:00Z, field high: high=1.0, low=1.2; 1 row(s) with this problem; "
        "in all 4 problem(s) in 4 row(s): 1 missing price, 2 duplicate (symbol, ts), 1 high < low"
    )
    assert "--lenient" in captured.err

    monkeypatch.chdir(tmp_path)  # the default rejects file goes to the current directory
    assert check(str(path), "--lenient") == 0
    out = capsys.readouterr().out
    rejects_path = tmp_path / "bad.rejects.csv"
    assert f"rows: {len(frame)} ({len(frame) - 4} valid, 4 rejected)\n" in out
    assert (
        f"rejects: 4 row(s) written to {rejects_path}\n"
        "  1 missing price\n"
        "  2 duplicate (symbol, ts)\n"
        "  1 high < low\n"
    ) in out
    assert "mode: lenient" in out
    written = pd.read_csv(rejects_path, dtype=str, keep_default_na=False)
    assert written["row"].astype(int).tolist() == [3, 9, 10, 200]
    assert written["problem"].tolist() == [
        "high < low",
        "duplicate (symbol, ts)",
        "duplicate (symbol, ts)",
        "missing price",
    ]


def test_instruments_allow_negative_prices(tmp_path, capsys):
    frame = crafted()
    frame.loc[5, ["open", "low", "close"]] = [-1.0, -1.5, -1.2]
    path = tmp_path / "bars.parquet"
    frame.to_parquet(path, index=False)
    instruments = tmp_path / "instruments.json"

    instruments.write_text(json.dumps({"EURUSD": {"asset_class": "fx"}}))
    assert check(str(path), "--instruments", str(instruments)) == 1
    assert "non-positive price at row 5, symbol=EURUSD" in capsys.readouterr().err

    instruments.write_text(json.dumps({"EURUSD": {"asset_class": "fx", "negative_prices": True}}))
    assert check(str(path), "--instruments", str(instruments)) == 0


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("[1, 2]", "expected an object"),
        ('{"EURUSD": {"negative_prices": "yes"}}', "negative_prices must be true or false"),
        ("{nope", "not valid JSON"),
    ],
)
def test_bad_instruments_file_is_a_usage_error(tmp_path, capsys, content, expected):
    path = tmp_path / "bars.parquet"
    crafted().to_parquet(path, index=False)
    instruments = tmp_path / "instruments.json"
    instruments.write_text(content)
    assert check(str(path), "--instruments", str(instruments)) == 2
    assert expected in capsys.readouterr().err


def test_missing_column_fails_without_the_lenient_hint(tmp_path, capsys):
    path = tmp_path / "bars.csv"
    crafted().drop(columns="close").to_csv(path, index=False)
    assert check(str(path), "--lenient", "--rejects", str(tmp_path / "r.csv")) == 1
    err = capsys.readouterr().err
    assert f"{path}: missing required column close" in err and "--lenient" not in err


def test_missing_file_is_a_usage_error(tmp_path, capsys):
    assert check(str(Path(tmp_path) / "nope.parquet")) == 2
    assert "nope.parquet" in capsys.readouterr().err
