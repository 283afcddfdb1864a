"""Calendar-time window helpers (``liqrisk.features._windows``) on tiny hand-made series."""

import math

import numpy as np
import pandas as pd

from liqrisk.features._windows import (
    covered,
    log_returns,
    ratio,
    return_days,
    symbol_bars,
    value_before,
    window_count,
    window_max,
    window_rank,
    window_start,
    window_sum,
)

H = 3_600_000_000


def hourly(open_hours) -> pd.DataFrame:
    ts = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(open_hours, unit="h")
    c = np.full(len(open_hours), 1.0)
    return pd.DataFrame(
        {"ts": pd.Series(ts).dt.as_unit("us"), "open": c, "high": c, "low": c, "close": c}
    )


def test_log_returns_are_nan_where_a_close_is_not_positive():
    r = log_returns(np.array([100.0, 110.0, -5.0, 0.0, 50.0, 55.0]))
    assert np.isnan(r[[0, 2, 3, 4]]).all()
    assert r[1] == math.log(1.1) and r[5] == math.log(1.1)


def test_window_holds_the_bars_wholly_inside_the_last_w():
    b = symbol_bars(hourly([0, 1, 3, 4, 8]), pd.Timedelta("1h"))  # 1h bars ending 1, 2, 4, 5, 9
    start = window_start(b, 3 * H)  # bars inside [done - 3h, done]
    assert start.tolist() == [0, 0, 1, 2, 4]
    assert covered(b, 3 * H).tolist() == [False, False, True, True, True]
    x = np.array([1.0, np.nan, 3.0, 4.0, 5.0])
    assert window_sum(x, start).tolist() == [1.0, 1.0, 3.0, 7.0, 5.0]
    assert window_count(np.isfinite(x), start).tolist() == [1, 1, 1, 2, 1]
    assert window_max(x, start).tolist() == [1.0, 1.0, 3.0, 4.0, 5.0]
    assert return_days(b.done)[1:].tolist() == [1 / 24, 2 / 24, 1 / 24, 4 / 24]


def test_a_bar_straddling_the_window_start_is_left_out():
    b = symbol_bars(hourly([0, 4]), pd.Timedelta("4h"))  # 4h bars [0h, 4h) and [4h, 8h)
    assert window_start(b, 6 * H).tolist() == [0, 1]  # at 8h the first bar opened before 2h
    assert window_start(b, 8 * H).tolist() == [0, 0]


def test_window_rank_by_hand():
    got = window_rank(np.array([1.0, 3.0, 2.0, 5.0, 4.0]), np.array([0, 0, 0, 1, 2]))
    assert got[3] == 1.0  # 5 among (3, 2, 5)
    assert math.isclose(got[4], 2 / 3)  # 4 among (2, 5, 4)
    assert math.isclose(got[2], 2 / 3)  # 2 among (1, 3, 2)


def test_an_empty_window_has_no_maximum():
    assert np.isnan(window_max(np.array([1.0, 2.0]), np.array([0, 2]))[1])


def test_value_before_takes_the_last_bar_complete_w_earlier():
    done = np.array([1, 2, 4, 5, 9]) * H
    x = np.array([10.0, 20.0, 40.0, 50.0, 90.0])
    got = value_before(x, done, 2 * H)  # at or before done - 2h
    assert np.isnan(got[:2]).all() and got[2:].tolist() == [20.0, 20.0, 50.0]


def test_ratio_never_returns_inf():
    got = ratio(np.array([1.0, 1.0, np.inf, -2.0, 0.0]), np.array([0.0, -1.0, 1.0, 4.0, 0.0]))
    assert np.isnan(got[:3]).all() and np.isnan(got[4]) and got[3] == -0.5
