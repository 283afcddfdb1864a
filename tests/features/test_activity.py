"""Liquidity features (``liqrisk.features.activity``): hand-computed values and point in time."""

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import given

from liqrisk.features.activity import ACTIVITY_FEATURES, activity_features

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pit_cases import (
    HYPOTHESIS,
    assert_future_edit_changes_nothing,
    assert_prefix_unchanged,
    bars_on,
    calendar,
    future_edit,
    known_row,
    shock_from,
)

HOUR, DAY, FOUR_H = pd.Timedelta("1h"), pd.Timedelta("1D"), pd.Timedelta("4h")
FX_4H = bars_on(calendar("2022-01-03", "2024-01-01", "4h", "fx"), seed=10)


def bars_of(close, volume, *, freq: str) -> pd.DataFrame:
    ts = pd.date_range("2024-01-01", periods=len(close), freq=freq, tz="UTC", unit="us")
    c = np.asarray(close, dtype=float)
    return pd.DataFrame(
        {
            "ts": pd.Series(ts),
            "open": c,
            "high": c,
            "low": c,
            "close": c,
            "volume": np.asarray(volume, dtype=float),
        }
    )


def test_daily_notional_by_hand():
    volume = np.full(40, 10.0)
    volume[35] = 40.0
    frame = activity_features(bars_of(np.full(40, 100.0), volume, freq="1D"), bar_length=DAY)
    assert list(frame.columns) == list(ACTIVITY_FEATURES)
    # 30 days of history from bar 29 on (bars 0..29)
    assert frame["notional_30d"].iloc[:29].isna().all()
    assert frame["notional_30d"].iloc[29] == 1000.0
    assert frame["notional_30d"].iloc[36] == (29 * 1000 + 4000) / 30  # days 7..36, day 35 traded 40
    assert (frame["volume_missing"] == 0).all()


def test_amihud_by_hand():
    close = np.where(np.arange(40) % 2 == 0, 100.0, 102.0)
    frame = activity_features(bars_of(close, np.full(40, 10.0), freq="1D"), bar_length=DAY)
    days = range(10, 40)  # complete days ending within 30 days of bar 39's end
    terms = [abs(close[d] / close[d - 1] - 1) / (close[d] * 10.0) for d in days]
    assert math.isclose(frame["amihud_30d"].iloc[39], 1e6 * sum(terms) / len(terms))


def test_amihud_uses_complete_days_only():
    hours = 24 * 40
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, hours)))
    volume = rng.lognormal(2, 0.3, hours)
    bars = bars_of(close, volume, freq="1h")
    amihud = activity_features(bars, bar_length=HOUR)["amihud_30d"]
    d = 35  # day 35: its 12:00 and 22:00 bars see days up to 34; its 23:00 bar ends at midnight
    assert amihud.iloc[24 * d + 12] == amihud.iloc[24 * d + 22]
    day_close = close[24 * np.arange(40) + 23]
    day_notional = (close * volume).reshape(40, 24).sum(axis=1)
    terms = [
        abs(day_close[k] / day_close[k - 1] - 1) / day_notional[k] for k in range(d - 29, d + 1)
    ]
    assert math.isclose(amihud.iloc[24 * d + 23], 1e6 * np.mean(terms))
    earlier = [abs(day_close[k] / day_close[k - 1] - 1) / day_notional[k] for k in range(d - 30, d)]
    assert math.isclose(amihud.iloc[24 * d + 22], 1e6 * np.mean(earlier))


def test_missing_volume_is_flagged_and_leaves_nan():
    fx = bars_of(np.full(40, 1.1), np.full(40, np.nan), freq="1D")
    frame = activity_features(fx, bar_length=DAY)
    assert (frame["volume_missing"] == 1).all()
    assert frame[["notional_30d", "amihud_30d"]].isna().all().all()
    no_column = activity_features(fx.drop(columns="volume"), bar_length=DAY)
    pd.testing.assert_frame_equal(no_column, frame)
    partly = fx.assign(volume=np.where(np.arange(40) == 35, 5.0, np.nan))
    got = activity_features(partly, bar_length=DAY).iloc[36]
    assert got["volume_missing"] == 0 and math.isclose(got["notional_30d"], 1.1 * 5 / 30)


def test_prices_at_or_below_zero_give_nan_not_inf():
    close = np.r_[np.linspace(20, 10, 40), [-5.0, -37.6, 10.0], np.linspace(11, 20, 40)]
    frame = activity_features(bars_of(close, np.full(len(close), 1e3), freq="1D"), bar_length=DAY)
    assert not np.isinf(frame.to_numpy()).any()
    assert frame.iloc[-1].notna().all()


@HYPOTHESIS
@given(edit=future_edit())
def test_bars_completing_after_as_of_change_nothing(edit):
    assert_future_edit_changes_nothing(activity_features, FX_4H, FOUR_H, edit)


def test_a_bar_open_at_as_of_is_not_seen_until_it_completes():
    k = 2500
    as_of = FX_4H["ts"].iloc[k] + FOUR_H / 2
    before = activity_features(FX_4H, bar_length=FOUR_H)
    after = activity_features(shock_from(FX_4H, k), bar_length=FOUR_H)
    assert known_row(FX_4H, as_of, FOUR_H) == k - 1
    assert_prefix_unchanged(before, after, k - 1)
    assert after["notional_30d"].iloc[k] > before["notional_30d"].iloc[k]  # bar k's notional x9
