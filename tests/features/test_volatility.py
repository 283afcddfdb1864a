"""Volatility features (``liqrisk.features.volatility``): hand-computed values and point in time."""

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import given

from liqrisk.features.volatility import (
    RISKMETRICS_HALF_LIFE,
    VOLATILITY_FEATURES,
    ewma_vol,
    realised_vol,
    volatility_features,
)

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

HOUR, DAY = pd.Timedelta("1h"), pd.Timedelta("1D")
FOUR_H = pd.Timedelta("4h")
FX_4H = bars_on(calendar("2022-01-03", "2024-01-01", "4h", "fx"), seed=1)


def closes(values, *, start="2024-01-01", freq="1h", ts=None) -> pd.DataFrame:
    ts = pd.DatetimeIndex(
        ts if ts is not None else pd.date_range(start, periods=len(values), freq=freq, tz="UTC")
    )
    c = np.asarray(values, dtype=float)
    return pd.DataFrame(
        {"ts": pd.Series(ts.as_unit("us")), "open": c, "high": c, "low": c, "close": c}
    )


def test_realised_vol_by_hand():
    bars = closes([100, 101, 99, 100, 102])
    got = realised_vol(bars, window=3 * HOUR, bar_length=HOUR)
    r = [math.log(101 / 100), math.log(99 / 101), math.log(100 / 99), math.log(102 / 100)]
    hour = 1 / 24  # each return spans one hour, in days
    assert np.isnan(
        got.iloc[:2]
    ).all()  # the history covers 3h from bar 2 on (bars 0, 1, 2 lie in [0h, 3h])
    # bar 0 has no return
    assert math.isclose(got.iloc[2], math.sqrt((r[0] ** 2 + r[1] ** 2) / (2 * hour)))
    assert math.isclose(got.iloc[3], math.sqrt((r[0] ** 2 + r[1] ** 2 + r[2] ** 2) / (3 * hour)))
    assert math.isclose(got.iloc[4], math.sqrt((r[1] ** 2 + r[2] ** 2 + r[3] ** 2) / (3 * hour)))


def test_a_return_across_a_closure_spans_the_closure():
    # Thursday, Friday, Monday daily bars: Monday's return spans 3 days
    bars = closes(
        [100, 102, 99], ts=pd.to_datetime(["2024-03-07", "2024-03-08", "2024-03-11"], utc=True)
    )
    got = realised_vol(bars, window=4 * DAY, bar_length=DAY)
    expected = math.sqrt((math.log(1.02) ** 2 + math.log(99 / 102) ** 2) / (1 + 3))
    assert math.isclose(got.iloc[2], expected)


def test_prices_at_or_below_zero_drop_out_without_inf():
    bars = closes([100, 110, -5, 50, 55, 60.5])
    got = realised_vol(bars, window=5 * HOUR, bar_length=HOUR)
    # returns touching -5 are NaN: only 110/100, 55/50 and 60.5/55 remain, three hours of time
    assert math.isclose(got.iloc[5], math.sqrt(3 * math.log(1.1) ** 2 / (3 / 24)))
    frame = volatility_features(bars, bar_length=HOUR)
    assert not np.isinf(frame.to_numpy()).any()


def test_ewma_vol_by_hand():
    bars = closes([100, 103, 101])
    got = ewma_vol(bars, half_life=HOUR, bar_length=HOUR)
    r1, r2 = math.log(1.03), math.log(101 / 103)
    assert np.isnan(got.iloc[0])  # less than one half-life of history
    assert math.isclose(got.iloc[1], math.sqrt(r1**2 / (1 / 24)))
    # at bar 2 the return of bar 1 is one half-life old: weight 0.5
    assert math.isclose(got.iloc[2], math.sqrt((0.5 * r1**2 + r2**2) / (0.5 / 24 + 1 / 24)))


def test_riskmetrics_half_life_matches_lambda_094_per_day():
    assert math.isclose(0.5 ** (DAY / RISKMETRICS_HALF_LIFE), 0.94, rel_tol=1e-9)


def test_vol_percentile_waits_for_a_year_of_vol_7d():
    frame = volatility_features(FX_4H, bar_length=FOUR_H)
    first_vol = FX_4H["ts"][frame["vol_7d"].notna()].iloc[0]
    defined = frame["vol_7d_pct_1y"].notna()
    assert (FX_4H["ts"][defined] + FOUR_H - 365 * DAY >= first_vol).all()
    i = int(np.flatnonzero(defined)[-1])
    window = frame["vol_7d"][FX_4H["ts"] >= FX_4H["ts"].iloc[i] + FOUR_H - 365 * DAY].iloc[: i + 1]
    window = window[window.index <= i]
    expected = (
        (window < window.iloc[-1]).sum() + ((window == window.iloc[-1]).sum() + 1) / 2
    ) / len(window)
    assert math.isclose(frame["vol_7d_pct_1y"].iloc[i], expected)


def test_vol_is_per_sqrt_day_whatever_the_bar_length(seed=3):
    # one random walk, 5-minute steps with 2% per sqrt(day), sampled every 5m, 1h and 1d
    n = 288 * 200
    ts = pd.date_range("2024-01-01", periods=n, freq="5min", tz="UTC", unit="us")
    close = 100 * np.exp(np.cumsum(np.random.default_rng(seed).normal(0, 0.02 / math.sqrt(288), n)))
    window = 180 * DAY
    got = {}
    for step, length in ((1, pd.Timedelta("5min")), (12, HOUR), (288, DAY)):
        # the bar opening at ts[k] closes at close[k + step - 1]
        sample = closes(close[step - 1 :: step], ts=ts[::step][: len(close[step - 1 :: step])])
        got[length] = realised_vol(sample, window=window, bar_length=length).iloc[-1]
    for value in got.values():
        assert abs(value / 0.02 - 1) < 0.25, got  # 180 daily returns: 5% standard error


def test_family_columns_match_the_single_functions():
    frame = volatility_features(FX_4H, bar_length=FOUR_H)
    assert list(frame.columns) == list(VOLATILITY_FEATURES)
    pd.testing.assert_series_equal(
        frame["vol_30d"], realised_vol(FX_4H, window=30 * DAY, bar_length=FOUR_H), check_names=False
    )
    pd.testing.assert_series_equal(
        frame["vol_ewma_rm"],
        ewma_vol(FX_4H, half_life=RISKMETRICS_HALF_LIFE, bar_length=FOUR_H),
        check_names=False,
    )
    ratio = frame["vol_1d"] / frame["vol_30d"]
    np.testing.assert_allclose(frame["vol_ratio_1d_30d"], ratio.where(frame["vol_30d"] > 0))
    assert frame.iloc[-1].notna().all()  # two years of history define every column
    assert frame["vol_7d_pct_1y"].dropna().between(0, 1).all()


@HYPOTHESIS
@given(edit=future_edit())
def test_bars_completing_after_as_of_change_nothing(edit):
    assert_future_edit_changes_nothing(volatility_features, FX_4H, FOUR_H, edit)


def test_a_bar_open_at_as_of_is_not_seen_until_it_completes():
    k = 2500
    as_of = FX_4H["ts"].iloc[k] + FOUR_H / 2  # bar k opened before as_of, completes after it
    shocked = shock_from(FX_4H, k)
    before = volatility_features(FX_4H, bar_length=FOUR_H)
    after = volatility_features(shocked, bar_length=FOUR_H)
    assert known_row(FX_4H, as_of, FOUR_H) == k - 1
    assert_prefix_unchanged(before, after, k - 1)
    changed = before.iloc[k].to_numpy() != after.iloc[k].to_numpy()
    assert changed[list(VOLATILITY_FEATURES).index("vol_1d")]  # visible once bar k completes
