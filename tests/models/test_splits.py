"""Walk-forward splits: no training label window reaches a later snapshot, for any data."""

import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liqrisk.models.splits import SplitError, assert_no_label_overlap, walk_forward_splits

PROPERTY = settings(max_examples=60, derandomize=True, deadline=None, database=None)
T0 = pd.Timestamp("2024-01-01", tz="UTC")


def hourly(days: int, *, shuffle_seed: int | None = None) -> pd.Series:
    t = pd.Series(pd.date_range(T0, periods=24 * days, freq="1h", unit="us"))
    return t if shuffle_seed is None else t.sample(frac=1, random_state=shuffle_seed).reset_index(drop=True)


@st.composite
def random_as_of(draw):
    """Irregular snapshot times over 2 to 90 days, in random order: a uniform scatter, plus
    hypothesis-chosen clusters, duplicates and edge points."""
    span = draw(st.integers(2 * 24 * 60, 90 * 24 * 60))  # minutes
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scattered = rng.integers(0, span, size=draw(st.integers(0, 300)))
    chosen = draw(st.lists(st.integers(0, span), max_size=50))
    minutes = np.concatenate([[0, span], scattered, chosen])
    return pd.Series(T0 + pd.to_timedelta(rng.permutation(minutes), unit="min")).dt.as_unit("us")


@st.composite
def cases(draw):
    as_of = draw(random_as_of())
    n_folds = draw(st.integers(1, 5))
    window = (as_of.max() - as_of.min()) / (n_folds + 4)
    horizon = max(window * draw(st.floats(0.01, 1.0)), pd.Timedelta(minutes=1)).round("min")
    embargo = (horizon * draw(st.sampled_from([1.0, 1.0, 1.5, 3.0]))).round("min")
    return as_of, n_folds, horizon, embargo


@PROPERTY
@given(cases())
def test_no_training_label_window_reaches_a_later_snapshot(case):
    as_of, n_folds, horizon, embargo = case
    try:
        splits = walk_forward_splits(as_of, n_folds=n_folds, horizon=horizon, embargo=embargo)
    except SplitError:
        return  # too little data is an error, never a leaky split
    assert [s.fold for s in splits] == list(range(n_folds))
    for s in splits:
        assert_no_label_overlap(as_of, s, horizon=horizon)
        # direct statement of the property, independent of the helper
        latest_label_end = as_of.iloc[np.r_[s.train, s.calibration]].max() + horizon
        assert latest_label_end <= as_of.iloc[s.test].min()
        assert as_of.iloc[s.train].max() + horizon <= as_of.iloc[s.calibration].min()


def test_embargo_separates_periods_by_at_least_its_length():
    as_of = hourly(60, shuffle_seed=3)
    embargo = pd.Timedelta("3D")
    for s in walk_forward_splits(as_of, n_folds=4, horizon=pd.Timedelta("1D"), embargo=embargo):
        assert s.calibration_period.start - s.train_period.end == embargo
        assert s.test_period.start - s.calibration_period.end == embargo
        assert as_of.iloc[s.calibration].min() - as_of.iloc[s.train].max() >= embargo
        assert as_of.iloc[s.test].min() - as_of.iloc[s.calibration].max() >= embargo


def test_walk_forward_layout():
    as_of = hourly(60)
    splits = walk_forward_splits(as_of, n_folds=3, horizon=pd.Timedelta("1D"), min_train=pd.Timedelta("20D"))
    tests = [s.test_period for s in splits]
    first_train = splits[0].train_period.end - splits[0].train_period.start
    assert pd.Timedelta("20D") <= first_train < pd.Timedelta("20D") + pd.Timedelta(4, "us")  # + rounding
    assert all(a.end == b.start for a, b in itertools.pairwise(tests))  # consecutive test windows
    assert tests[-1].end > as_of.max()  # the last snapshot is tested
    assert all(s.train_period.start == T0 for s in splits)  # expanding window
    assert [len(s.train) for s in splits] == sorted(len(s.train) for s in splits)
    lengths = {s.test_period.end - s.test_period.start for s in splits}
    lengths |= {s.calibration_period.end - s.calibration_period.start for s in splits}
    assert len(lengths) == 1  # calibration as long as each test window
    covered = np.concatenate([s.test for s in splits])
    assert len(np.unique(covered)) == len(covered)  # each row tested at most once


def test_deterministic_and_independent_of_row_order():
    as_of = hourly(40, shuffle_seed=1)
    kw = {"n_folds": 3, "horizon": pd.Timedelta("1D")}
    first, again = walk_forward_splits(as_of, **kw), walk_forward_splits(as_of, **kw)
    for a, b in zip(first, again):
        assert a.record() == b.record()
        for name in ("train", "calibration", "test"):
            np.testing.assert_array_equal(a.rows(name), b.rows(name))
    order = np.argsort(as_of.to_numpy(), kind="stable")
    for a, b in zip(first, walk_forward_splits(as_of.iloc[order].reset_index(drop=True), **kw)):
        assert a.record() == b.record()
        np.testing.assert_array_equal(np.sort(order[b.test]), a.test)


def test_record_names_boundaries_and_counts():
    s = walk_forward_splits(hourly(30), n_folds=2, horizon=pd.Timedelta("1D"))[0]
    record = s.record()
    assert record["fold"] == 0
    assert record["test_start"] == s.test_period.start.isoformat()
    assert record["test_rows"] == len(s.test)
    assert record["train_end"].endswith("+00:00")


def test_too_short_data_names_the_problem():
    with pytest.raises(SplitError, match=r"as_of spans 1 days 23:00:00, too short for n_folds=3 with embargo=1 days"):
        walk_forward_splits(hourly(2), n_folds=3, horizon=pd.Timedelta("1D"))


def test_empty_period_names_fold_and_window():
    # two clusters of snapshots: the middle windows hold nothing
    as_of = pd.Series(pd.to_datetime(["2024-01-01 00:00", "2024-01-01 01:00", "2024-03-01 00:00"], utc=True))
    with pytest.raises(SplitError, match=r"fold 0 (calibration|test) window \[2024-.*\) holds no rows"):
        walk_forward_splits(as_of, n_folds=2, horizon=pd.Timedelta("1h"))


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"embargo": pd.Timedelta("12h")}, "embargo 0 days 12:00:00 is shorter than the horizon"),
        ({"n_folds": 0}, "n_folds must be an integer >= 1"),
        ({"min_train": pd.Timedelta(0)}, "min_train must be > 0"),
    ],
)
def test_bad_arguments(kw, message):
    args = {"n_folds": 2, "horizon": pd.Timedelta("1D")} | kw
    with pytest.raises(SplitError, match=message):
        walk_forward_splits(hourly(30), **args)


def test_nat_is_an_error_naming_the_row():
    as_of = hourly(30).astype("datetime64[us, UTC]")
    as_of.iloc[5] = pd.NaT
    with pytest.raises(SplitError, match=r"NaT at row 5; 1 row\(s\)"):
        walk_forward_splits(as_of, n_folds=2, horizon=pd.Timedelta("1D"))


def test_helper_catches_a_leaky_split():
    as_of = hourly(30)
    split = walk_forward_splits(as_of, n_folds=2, horizon=pd.Timedelta("1D"))[0]
    with pytest.raises(AssertionError, match="label window ends"):
        assert_no_label_overlap(as_of, split, horizon=pd.Timedelta("3D"))
