"""Gaps and closures (``liqrisk.features.sessions``): hand-computed values and point in time."""

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import given

from liqrisk.features.sessions import CLOSURE_FEATURES, GAP_FEATURES, closure_features, gap_features

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pit_cases import (
    HYPOTHESIS,
    apply_edit,
    as_of_for,
    assert_prefix_unchanged,
    bars_on,
    calendar,
    future_edit,
    known_row,
    shock_from,
)

HOUR, DAY, FOUR_H = pd.Timedelta("1h"), pd.Timedelta("1D"), pd.Timedelta("4h")
FX_4H = bars_on(calendar("2022-01-03", "2024-01-01", "4h", "fx"), seed=3)
# 12 weeks, closed Fri 20:00-Sun 20:00
FX_1H = bars_on(calendar("2024-01-01", "2024-03-25", "1h", "fx"), seed=4)


def at(*times: str) -> pd.Series:
    return pd.Series(pd.to_datetime(list(times), utc=True, format="ISO8601")).dt.as_unit("us")


def weekday_bars_with_monday_gaps(weeks: int) -> tuple[pd.DataFrame, dict[pd.Timestamp, float]]:
    """Daily bars at 14:30 UTC, Monday to Friday, close 100; each Monday opens ``1 + 0.001 * week`` up."""
    ts = calendar(
        "2024-01-01", str(pd.Timestamp("2024-01-01") + pd.Timedelta(weeks=weeks)), "1D", "weekdays"
    )
    ts = ts + pd.Timedelta("14h30m")
    week = (ts - ts[0]).days // 7
    gap = np.where((ts.day_of_week == 0) & (week > 0), 0.001 * week, 0.0)
    bars = pd.DataFrame(
        {
            "ts": pd.Series(ts),
            "open": 100 * (1 + gap),
            "high": 100 * (1 + gap),
            "low": 100.0,
            "close": 100.0,
        }
    )
    return bars, {t: g for t, g in zip(ts, gap) if g > 0}


def test_gap_count_and_sizes_by_hand():
    bars, gaps = weekday_bars_with_monday_gaps(30)
    frame = gap_features(bars, bar_length=DAY)
    done = bars["ts"].iloc[-1] + DAY
    # known when Monday's bar ends
    in_90d = [g for monday, g in gaps.items() if monday + DAY > done - 90 * DAY]
    assert frame["gap_count_90d"].iloc[-1] == len(in_90d) == 13
    assert math.isclose(frame["gap_mean_abs_90d"].iloc[-1], sum(in_90d) / len(in_90d))
    assert math.isclose(frame["gap_max_abs_90d"].iloc[-1], max(in_90d))
    assert np.isnan(frame["gap_count_1y"].iloc[-1])  # 30 weeks of history do not cover a year
    assert list(frame.columns) == list(GAP_FEATURES)


def test_gap_sizes_skip_a_previous_close_at_or_below_zero_but_count_it():
    bars, gaps = weekday_bars_with_monday_gaps(30)
    # the last week's Friday
    friday = bars.index[bars["ts"] == pd.Timestamp("2024-07-19T14:30Z")][0]
    bars.loc[friday, ["low", "close"]] = -1.0
    frame = gap_features(bars, bar_length=DAY)
    done = bars["ts"].iloc[-1] + DAY
    in_90d = [g for monday, g in gaps.items() if monday + DAY > done - 90 * DAY]
    assert frame["gap_count_90d"].iloc[-1] == len(in_90d)
    assert math.isclose(frame["gap_mean_abs_90d"].iloc[-1], sum(in_90d[:-1]) / (len(in_90d) - 1))
    assert not np.isinf(frame.to_numpy()).any()


def test_a_market_that_never_closes_has_no_gaps_not_missing_values():
    bars = bars_on(calendar("2024-01-01", "2024-05-01", "1h", "24/7"), seed=5)
    last = gap_features(bars, bar_length=HOUR).iloc[-1]
    assert (
        last["gap_count_90d"] == 0
        and last["gap_mean_abs_90d"] == 0
        and last["gap_max_abs_90d"] == 0
    )


def test_next_closure_of_an_fx_week_by_hand():
    as_of = at(
        "2024-03-15T18:30Z",  # Friday, 1.5 h before the 48 h weekend
        "2024-03-15T20:30Z",  # Friday, closed half an hour ago
        "2024-03-16T12:00Z",  # Saturday noon: 32 h to go; the last bar ended Friday 20:00
        "2024-03-11T12:00Z",  # Monday noon: Friday 20:00 is 4 days 8 hours away
    )
    got = closure_features(FX_1H, as_of, bar_length=HOUR)
    assert list(got.columns) == list(CLOSURE_FEATURES)
    assert got["closed_now"].tolist() == [0.0, 1.0, 1.0, 0.0]
    assert got["next_closure_in_h"].tolist() == [1.5, 0.0, 0.0, 4 * 24 + 8]
    assert got["next_closure_len_h"].tolist() == [48.0, 47.5, 32.0, 48.0]
    assert got["never_closes"].tolist() == [0.0] * 4
    assert got["last_bar_age_h"].tolist() == [0.5, 0.5, 16.0, 0.0]


def test_daily_bars_close_from_the_first_empty_hour():
    bars = bars_on(
        calendar("2024-01-01", "2024-04-01", "1D", "weekdays") + pd.Timedelta("14h30m"), seed=6
    )
    got = closure_features(bars, at("2024-03-21T16:00Z"), bar_length=DAY).iloc[0]  # a Thursday
    # Friday's bar ends Saturday 14:30: Saturday 15:00 is the first empty hour; Monday's bar opens 14:30
    assert got["next_closure_in_h"] == 47.0 and got["next_closure_len_h"] == 47.0


def test_one_holiday_does_not_change_the_schedule_and_crypto_never_closes():
    holiday = FX_1H[(FX_1H["ts"] < "2024-02-14") | (FX_1H["ts"] >= "2024-02-15")]  # a Wednesday off
    as_of = at("2024-03-11T12:00Z")
    pd.testing.assert_frame_equal(
        closure_features(holiday, as_of, bar_length=HOUR),
        closure_features(FX_1H, as_of, bar_length=HOUR),
    )
    crypto = bars_on(calendar("2024-01-01", "2024-04-01", "1h", "24/7"), seed=7)
    got = closure_features(crypto, as_of, bar_length=HOUR).iloc[0]
    assert got["never_closes"] == 1.0 and got["closed_now"] == 0.0
    assert np.isnan(got["next_closure_in_h"]) and np.isnan(got["next_closure_len_h"])


def test_no_schedule_before_nine_weeks_of_history_and_nat_gives_nan():
    got = closure_features(
        FX_1H, pd.Series([pd.Timestamp("2024-02-20T12:00Z"), pd.NaT]), bar_length=HOUR
    )
    assert got["last_bar_age_h"].iloc[0] == 0.0
    assert got.iloc[0, 1:].isna().all() and got.iloc[1].isna().all()


@HYPOTHESIS
@given(edit=future_edit())
def test_gaps_ignore_bars_completing_after_as_of(edit):
    as_of = as_of_for(FX_4H, edit, FOUR_H)
    before = gap_features(FX_4H, bar_length=FOUR_H)
    after = gap_features(apply_edit(FX_4H, as_of, FOUR_H, edit), bar_length=FOUR_H)
    assert_prefix_unchanged(before, after, known_row(FX_4H, as_of, FOUR_H))


@HYPOTHESIS
@given(edit=future_edit(min_cut=0.8))
def test_closures_ignore_bars_completing_after_as_of(edit):
    as_of = as_of_for(FX_1H, edit, HOUR)
    times = pd.Series(
        [as_of - pd.Timedelta("50h"), as_of - pd.Timedelta("3h30m"), as_of]
    ).dt.as_unit("us")
    before = closure_features(FX_1H, times, bar_length=HOUR)
    after = closure_features(apply_edit(FX_1H, as_of, HOUR, edit), times, bar_length=HOUR)
    pd.testing.assert_frame_equal(before, after, check_exact=True)


def test_a_bar_open_at_as_of_is_not_seen_until_it_completes():
    # a Sunday open, after a gap
    k = int(np.flatnonzero((FX_4H["ts"].dt.day_of_week == 6).to_numpy())[80])
    as_of = FX_4H["ts"].iloc[k] + FOUR_H / 2
    before = gap_features(FX_4H, bar_length=FOUR_H)
    after = gap_features(shock_from(FX_4H, k), bar_length=FOUR_H)
    assert known_row(FX_4H, as_of, FOUR_H) == k - 1
    assert_prefix_unchanged(before, after, k - 1)
    assert after["gap_max_abs_90d"].iloc[k] > 1.5  # the x3 open is a 200 % gap once bar k completes


def test_weekend_bars_added_after_as_of_open_the_weekend_only_once_seen():
    ts = calendar("2024-01-01", "2024-06-17", "1h", "fx")
    bars = bars_on(ts, seed=8)
    weekend = calendar("2024-01-01", "2024-06-17", "1h", "24/7").difference(ts)
    # trade every weekend from then on
    added = bars_on(weekend[weekend >= "2024-03-29T20:00Z"], seed=9)
    both = pd.concat([bars, added]).sort_values("ts", ignore_index=True)
    # Friday 20:30: the added 20:00 bar opened before as_of but completes after it
    times = at("2024-03-20T12:00Z", "2024-03-29T20:30Z", "2024-06-12T12:00Z")
    before = closure_features(bars, times, bar_length=HOUR)
    after = closure_features(both, times, bar_length=HOUR)
    pd.testing.assert_frame_equal(before.iloc[:2], after.iloc[:2])
    assert before["closed_now"].iloc[1] == 1.0
    # 10 open weekends later
    assert before["never_closes"].iloc[2] == 0.0 and after["never_closes"].iloc[2] == 1.0


def test_the_schedule_sees_an_hour_only_once_its_bars_are_complete():
    # Saturday 10:00-14:00 traded in the 3 weeks before 16 March (3 of 8 weeks: closed) and on the 16th:
    # at 10:30 on the 16th its 10:00 bar is still open, so the slot stays closed; by Monday it is open
    saturdays = ["2024-02-24", "2024-03-02", "2024-03-09", "2024-03-16"]
    extra = pd.DatetimeIndex(
        [pd.Timestamp(f"{d}T{h}:00Z") for d in saturdays for h in (10, 11, 12, 13)]
    )
    with_16th = pd.concat([FX_1H, bars_on(extra, seed=12)]).sort_values("ts", ignore_index=True)
    without = with_16th[with_16th["ts"].dt.date != pd.Timestamp("2024-03-16").date()]
    times = at("2024-03-16T10:30Z", "2024-03-18T12:00Z")
    seen, unseen = (
        closure_features(with_16th, times, bar_length=HOUR),
        closure_features(without, times, bar_length=HOUR),
    )
    pd.testing.assert_series_equal(seen.iloc[0], unseen.iloc[0])
    # to Sunday 20:00
    assert seen["closed_now"].iloc[0] == 1.0 and seen["next_closure_len_h"].iloc[0] == 33.5
    assert seen["next_closure_in_h"].iloc[1] == unseen["next_closure_in_h"].iloc[1] == 104.0
    assert (seen["next_closure_len_h"].iloc[1], unseen["next_closure_len_h"].iloc[1]) == (
        14.0,
        48.0,
    )
