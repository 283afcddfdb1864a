"""Gap classification (``liqrisk.features.calendar``) on small hand-made calendars."""

import numpy as np
import pandas as pd

from liqrisk.features.calendar import find_gaps, gap_jumps

DAY, HOUR = pd.Timedelta(days=1), pd.Timedelta(hours=1)


def us(times) -> np.ndarray:
    return pd.DatetimeIndex(pd.to_datetime(times, utc=True)).as_unit("us").asi8


def test_daily_stock_weekend_holiday_and_hole():
    days = pd.bdate_range("2001-09-03", "2001-09-28", tz="UTC") + pd.Timedelta("13h30m")
    closed = {"2001-09-03", "2001-09-11", "2001-09-12", "2001-09-13", "2001-09-14"}  # Labor Day, 9/11
    ts = us([d for d in days if d.strftime("%Y-%m-%d") not in closed])
    gaps = find_gaps(ts, DAY)
    assert gaps["kind"].tolist() == ["weekend", "hole", "weekend"]
    hole = gaps.iloc[1]
    assert hole["closed_from"] == pd.Timestamp("2001-09-11T13:30Z")
    assert hole["closed_to"] == pd.Timestamp("2001-09-17T13:30Z")
    assert hole["closed"] == pd.Timedelta(days=6) and not hole["expected"]
    assert str(gaps["closed_from"].dtype) == "datetime64[us, UTC]"


def test_daily_holiday_and_dst_shift():
    ts = us(
        [
            "2024-03-06T14:30Z",
            "2024-03-07T14:30Z",  # Thursday; Friday 8th closed, then the weekend
            "2024-03-11T13:30Z",  # Monday after the US DST change: 1h earlier in UTC
            "2024-03-12T13:30Z",
            "2024-03-14T13:30Z",  # Wednesday 13th closed: a holiday
        ]
    )
    gaps = find_gaps(ts, DAY)
    assert gaps["kind"].tolist() == ["weekend", "holiday"]
    assert gaps["expected"].all()

    dst_only = us(["2024-11-01T13:30Z", "2024-11-04T14:30Z", "2024-11-05T14:30Z"])
    assert find_gaps(dst_only, DAY)["closed"].tolist() == [pd.Timedelta(days=2, hours=1)]  # the weekend
    assert find_gaps(us(["2024-11-04T13:30Z", "2024-11-05T14:30Z"]), DAY).empty  # 25h step


def test_intraday_session_breaks_recur_and_holes_do_not():
    # a CFD that stops 21:00-22:00 UTC every weekday, plus one 3h hole on the 17th
    hours = pd.date_range("2024-01-08", "2024-01-26T20:00", freq="h", tz="UTC", unit="us")
    weekday = hours.day_of_week < 5
    in_break = hours.hour == 21
    hole = (hours >= "2024-01-17T10:00Z") & (hours < "2024-01-17T13:00Z")
    friday_late = (hours.day_of_week == 4) & (hours.hour >= 21)
    sunday_open = (hours.day_of_week == 6) & (hours.hour >= 22)
    keep = ((weekday & ~in_break & ~friday_late) | sunday_open) & ~hole
    gaps = find_gaps(hours[keep].asi8, HOUR)
    kinds = gaps["kind"].value_counts().to_dict()
    assert kinds == {"session break": 12, "weekend": 2, "hole": 1}
    assert gaps.loc[gaps["kind"] == "hole", "closed"].tolist() == [pd.Timedelta("3h")]


def test_markets_open_every_day_have_no_weekend_or_holiday():
    hours = pd.date_range("2023-12-20", "2024-01-05", freq="h", tz="UTC", unit="us")
    keep = ~((hours >= "2023-12-23T05:00Z") & (hours < "2023-12-23T08:00Z"))  # a Saturday
    keep &= ~((hours >= "2023-12-25T01:00Z") & (hours < "2023-12-25T02:00Z"))  # Christmas
    gaps = find_gaps(hours[keep].asi8, HOUR)
    assert gaps["kind"].tolist() == ["hole", "hole"]


def test_fx_christmas_is_a_holiday():
    hours = pd.date_range("2023-12-18", "2023-12-29T20:00", freq="h", tz="UTC", unit="us")
    weekend = (hours >= "2023-12-22T22:00Z") & (hours < "2023-12-24T22:00Z")
    christmas = (hours >= "2023-12-25T08:00Z") & (hours < "2023-12-25T22:00Z")
    gaps = find_gaps(hours[~weekend & ~christmas].asi8, HOUR)
    assert gaps["kind"].tolist() == ["weekend", "holiday"]


def test_gap_jumps_relative_and_undefined_below_zero():
    gaps = find_gaps(us(["2020-04-17T22:00Z", "2020-04-19T22:00Z", "2020-04-20T22:00Z"]), DAY)
    # Friday's bar ends Saturday 22:00: the weekend gap is followed by no gap on Monday
    assert len(gaps) == 1
    jumps = gap_jumps(np.array([18.0, 17.73, -14.0]), np.array([18.27, -37.63, 10.01]), gaps)
    np.testing.assert_allclose(jumps, [17.73 / 18.27 - 1])
    negative_close = gap_jumps(np.array([1.0, 2.0]), np.array([-1.0, 3.0]), gaps.assign(prev=0, next=1))
    assert np.isnan(negative_close).all()
