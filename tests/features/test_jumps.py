"""Jump and tail features (``liqrisk.features.jumps``): hand-computed values and point in time."""

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import given

from liqrisk.features.jumps import JUMP_FEATURES, excess_kurtosis, jump_features, jump_share

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
FX_4H = bars_on(calendar("2022-01-03", "2024-01-01", "4h", "fx"), seed=2)


def closes(values, *, freq="1h") -> pd.DataFrame:
    ts = pd.date_range("2024-01-01", periods=len(values), freq=freq, tz="UTC", unit="us")
    c = np.asarray(values, dtype=float)
    return pd.DataFrame({"ts": pd.Series(ts), "open": c, "high": c, "low": c, "close": c})


def test_jump_share_by_hand():
    # five small moves of 1 %, then a 10 % jump
    c = [100.0]
    for step in (1.01, 0.99, 1.01, 0.99, 1.10):
        c.append(c[-1] * step)
    got = jump_share(closes(c), window=5 * HOUR, bar_length=HOUR)
    a, b, j = math.log(1.01), math.log(0.99), math.log(1.10)
    rv = a * a + b * b + a * a + b * b + j * j
    n = 5
    bv = math.pi / 2 * n / (n - 1) * (abs(a * b) * 3 + abs(b * j))
    assert np.isnan(got.iloc[:5]).all()  # the 5h window is covered from bar 5 on
    assert math.isclose(got.iloc[5], max(0.0, 1 - bv / rv))
    assert got.iloc[5] > 0.5  # most of the variance is the jump


def test_no_jump_share_without_a_jump():
    c = 100 * np.cumprod([1.0, 1.01, 0.99, 1.01, 0.99, 1.01, 0.99])
    got = jump_share(closes(c), window=6 * HOUR, bar_length=HOUR)
    # equal-sized moves: BV = pi/2 * 6/5 * 5 a^2 > RV = 6 a^2, floored at 0
    assert got.iloc[6] == 0.0


def test_kurtosis_is_g2_by_hand():
    r = np.array([0.01, -0.02, 0.015, 0.0, 0.08, -0.01])
    c = 100 * np.exp(np.r_[0, np.cumsum(r)])
    got = excess_kurtosis(closes(c), window=6 * HOUR, bar_length=HOUR).iloc[6]
    n = len(r)
    d = r - r.mean()
    m2, m4 = (d**2).sum(), (d**4).sum()
    g2 = (n + 1) * n * (n - 1) / ((n - 2) * (n - 3)) * m4 / m2**2 - 3 * (n - 1) ** 2 / (
        (n - 2) * (n - 3)
    )
    assert math.isclose(got, g2, rel_tol=1e-9)
    assert math.isclose(got, pd.Series(np.log(c)).diff().kurt(), rel_tol=1e-9)  # pandas' estimator


def test_largest_return_and_top_share_over_calendar_windows():
    c = np.full(40, 100.0)
    c[20:] = 110.0  # +10 % on day 20
    c[35:] = 99.0  # -10 % on day 35
    frame = jump_features(closes(c, freq="1D"), bar_length=DAY)
    up, down = math.log(1.1), math.log(0.9)
    # 30 days of history from bar 29 on (bars 0..29)
    assert np.isnan(frame["max_abs_ret_30d"].iloc[28])
    assert math.isclose(frame["max_abs_ret_30d"].iloc[35], abs(down))
    assert math.isclose(frame["max_abs_ret_1d"].iloc[35], abs(down))
    assert frame["max_abs_ret_1d"].iloc[36] == 0.0
    assert math.isclose(frame["max_abs_ret_7d"].iloc[26], up)  # day 20 is in (day 19, day 26]
    assert frame["max_abs_ret_7d"].iloc[27] == 0.0
    assert frame["top_share_30d"].iloc[30] == 1.0  # one move in the window
    assert math.isclose(frame["top_share_30d"].iloc[35], down**2 / (up**2 + down**2))
    window = pd.Series([0.0] * 28 + [up, down])  # the 30 returns of days 6..35
    assert math.isclose(frame["kurt_30d"].iloc[35], window.kurt(), rel_tol=1e-9)
    assert list(frame.columns) == list(JUMP_FEATURES)


def test_prices_at_or_below_zero_give_nan_not_inf():
    c = np.r_[np.linspace(20, 10, 40), [-5.0, -37.6, 10.0], np.linspace(11, 20, 40)]
    frame = jump_features(closes(c, freq="1D"), bar_length=DAY)
    assert not np.isinf(frame.to_numpy()).any()
    assert frame.iloc[-1].notna().all()


@HYPOTHESIS
@given(edit=future_edit())
def test_bars_completing_after_as_of_change_nothing(edit):
    assert_future_edit_changes_nothing(jump_features, FX_4H, FOUR_H, edit)


def test_a_bar_open_at_as_of_is_not_seen_until_it_completes():
    k = 2500
    as_of = FX_4H["ts"].iloc[k] + FOUR_H / 2
    before = jump_features(FX_4H, bar_length=FOUR_H)
    after = jump_features(shock_from(FX_4H, k), bar_length=FOUR_H)
    assert known_row(FX_4H, as_of, FOUR_H) == k - 1
    assert_prefix_unchanged(before, after, k - 1)
    # the x3 jump at bar k
    assert after["max_abs_ret_1d"].iloc[k] > before["max_abs_ret_1d"].iloc[k] + 0.5
