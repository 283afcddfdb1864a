"""Trend and drawdown features (``liqrisk.features.trend``): hand-computed values and point in time."""

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import given

from liqrisk.features.trend import TREND_FEATURES, trend_features

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
FX_4H = bars_on(calendar("2022-01-03", "2024-01-01", "4h", "fx"), seed=11)


def bars_of(close, *, high=None, ts=None, freq="1D") -> pd.DataFrame:
    c = np.asarray(close, dtype=float)
    if ts is None:
        ts = pd.date_range("2024-01-01", periods=len(c), freq=freq, tz="UTC", unit="us")
    h = c if high is None else np.asarray(high, dtype=float)
    return pd.DataFrame(
        {
            "ts": pd.Series(pd.DatetimeIndex(ts).as_unit("us")),
            "open": c,
            "high": h,
            "low": c,
            "close": c,
        }
    )


def test_trailing_returns_by_hand():
    close = 100 * np.exp(0.01 * np.arange(60))
    frame = trend_features(bars_of(close, freq="1h"), bar_length=HOUR)
    assert list(frame.columns) == list(TREND_FEATURES)
    assert np.isnan(frame["ret_1d"].iloc[23])  # no bar complete a day before bar 23's end
    assert math.isclose(frame["ret_1d"].iloc[24], 0.24)  # ln(close[24] / close[0])
    assert math.isclose(frame["ret_1d"].iloc[59], 0.24)


def test_monday_return_over_a_day_reaches_back_to_friday():
    ts = pd.to_datetime(["2024-03-07T14:30Z", "2024-03-08T14:30Z", "2024-03-11T14:30Z"])
    frame = trend_features(bars_of([100, 104, 98], ts=ts), bar_length=DAY)
    assert math.isclose(frame["ret_1d"].iloc[2], math.log(98 / 104))


def test_drawdown_by_hand():
    close = np.full(50, 100.0)
    high = close.copy()
    high[10] = 120.0  # a spike on day 10
    close[35] = 90.0
    frame = trend_features(bars_of(close, high=high), bar_length=DAY)
    # days 6..35 include the spike
    assert math.isclose(frame["drawdown_30d"].iloc[35], 90 / 120 - 1)
    assert math.isclose(frame["drawdown_30d"].iloc[40], 0.0)  # days 11..40: the spike has left
    assert np.isnan(frame["drawdown_1y"].iloc[-1])


def test_distance_from_the_moving_average_in_vol_units_by_hand():
    close = np.full(32, 100.0)
    close[31] = 110.0
    frame = trend_features(bars_of(close), bar_length=DAY)
    # day 31: 30 returns in the window, one of ln(1.1): vol_30d * sqrt(30) = ln(1.1)
    average = (29 * 100 + 110) / 30
    assert math.isclose(frame["ma_dist_30d"].iloc[31], math.log(110 / average) / math.log(1.1))
    week = (6 * 100 + 110) / 7
    vol_30d = math.log(1.1) / math.sqrt(30)
    assert math.isclose(
        frame["ma_dist_7d"].iloc[31], math.log(110 / week) / (vol_30d * math.sqrt(7))
    )


def test_prices_at_or_below_zero_give_nan_not_inf():
    close = np.r_[np.linspace(20, 10, 40), [-5.0, -37.6, 10.0], np.linspace(11, 20, 40)]
    frame = trend_features(bars_of(close), bar_length=DAY)
    assert np.isnan(frame["ret_1d"].iloc[41]) and np.isnan(frame["ma_dist_30d"].iloc[41])
    highest = close[12:42].max()  # days 12..41 (highs equal closes here)
    # a drawdown beyond -100 %
    assert math.isclose(frame["drawdown_30d"].iloc[41], -37.6 / highest - 1)
    assert not np.isinf(frame.to_numpy()).any()


@HYPOTHESIS
@given(edit=future_edit())
def test_bars_completing_after_as_of_change_nothing(edit):
    assert_future_edit_changes_nothing(trend_features, FX_4H, FOUR_H, edit)


def test_a_bar_open_at_as_of_is_not_seen_until_it_completes():
    k = 2500
    as_of = FX_4H["ts"].iloc[k] + FOUR_H / 2
    before = trend_features(FX_4H, bar_length=FOUR_H)
    after = trend_features(shock_from(FX_4H, k), bar_length=FOUR_H)
    assert known_row(FX_4H, as_of, FOUR_H) == k - 1
    assert_prefix_unchanged(before, after, k - 1)
    assert math.isclose(after["ret_1d"].iloc[k] - before["ret_1d"].iloc[k], math.log(3.0))
