"""Walk-forward splits in time: train, then calibrate, then test, each after an embargo.

A row's label looks forward: it is decided by what happens in ``[as_of, as_of + horizon)``.
A training row whose label window reaches into the calibration or test period has seen
their prices, so periods are separated by an embargo of at least the horizon. Periods
are half-open ``[start, end)`` in time; rows inside an embargo belong to no period of
that fold (they return as training rows of later folds, whose windows are all earlier).

The layout of fold ``k`` of ``n`` (time runs left to right, ``E`` = embargo)::

    |---------- train (expanding) ----------|E| calibration |E| test k | test k+1 ... |

The ``n`` test windows are consecutive, of equal length, and end with the last snapshot;
the calibration window has the test window's length (unless given); fold 0's training
window has ``min_train`` (default: the test window's length; plus the few microseconds
left over when the span does not divide evenly) and each later fold's grows by one test
window.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

PERIODS = ("train", "calibration", "test")


class SplitError(ValueError):
    """The data cannot be split as asked. The message names the parameter and the span."""


@dataclass(frozen=True)
class Period:
    """A half-open time window ``[start, end)``."""

    start: pd.Timestamp
    end: pd.Timestamp


@dataclass(frozen=True, eq=False)  # arrays inside: compare with record() and the row arrays
class Split:
    """One walk-forward fold: positional row indices (for ``.iloc``) and the period boundaries."""

    fold: int
    train: np.ndarray
    calibration: np.ndarray
    test: np.ndarray
    train_period: Period
    calibration_period: Period
    test_period: Period
    embargo: pd.Timedelta

    def rows(self, name: str) -> np.ndarray:
        """The row indices of period ``name`` ("train", "calibration" or "test")."""
        return {"train": self.train, "calibration": self.calibration, "test": self.test}[name]

    def period(self, name: str) -> Period:
        return {"train": self.train_period, "calibration": self.calibration_period, "test": self.test_period}[name]

    def record(self) -> dict[str, object]:
        """Plain values for a report or an MLflow param table: boundaries (ISO, UTC) and row counts."""
        out: dict[str, object] = {"fold": self.fold, "embargo": str(self.embargo)}
        for name in PERIODS:
            p = self.period(name)
            out[f"{name}_start"] = p.start.isoformat()
            out[f"{name}_end"] = p.end.isoformat()
            out[f"{name}_rows"] = len(self.rows(name))
        return out


def walk_forward_splits(
    as_of: pd.Series,
    *,
    n_folds: int,
    horizon: pd.Timedelta,
    embargo: pd.Timedelta | None = None,
    min_train: pd.Timedelta | None = None,
    calibration: pd.Timedelta | None = None,
) -> list[Split]:
    """Expanding-window walk-forward splits of snapshot times, in time order.

    Parameters
    ----------
    as_of : Series of datetime64 (UTC)
        One snapshot time per row, in any order; indices in the result are positions in it.
        Times are compared in microseconds (the project's unit); finer parts are ignored.
    n_folds : int
        Number of consecutive test windows (>= 1).
    horizon : Timedelta
        The label horizon H: a row's label depends on ``[as_of, as_of + H)``.
    embargo : Timedelta, optional
        Gap between train and calibration, and between calibration and test; default
        ``horizon``. Must be ``>= horizon``, which guarantees every label window of an
        earlier period ends before the first snapshot of a later one.
    min_train : Timedelta, optional
        Length of fold 0's training window; default the test window's length.
    calibration : Timedelta, optional
        Length of the calibration window; default the test window's length.

    Returns
    -------
    list of Split
        ``n_folds`` splits; fold ``k`` tests on the ``k``-th window. Deterministic: the
        same ``as_of`` and arguments give the same splits.

    Raises
    ------
    SplitError
        Bad arguments, NaT in ``as_of``, or data too short: the message names the span
        needed and, for an empty period, the fold and the window.
    """
    embargo = horizon if embargo is None else embargo
    _check_arguments(n_folds=n_folds, horizon=horizon, embargo=embargo, min_train=min_train, calibration=calibration)
    t = _as_micros(as_of)
    start, end = int(t.min()), int(t.max()) + 1  # end exclusive, so the last snapshot is tested
    bounds = _fold_bounds(start, end, n_folds=n_folds, embargo=_us(embargo), min_train=min_train, calibration=calibration)
    tz = as_of.dt.tz
    splits = []
    for fold, (train, cal, test) in enumerate(bounds):
        rows = {name: np.flatnonzero((t >= a) & (t < b)) for name, (a, b) in zip(PERIODS, (train, cal, test))}
        for name, (a, b) in zip(PERIODS, (train, cal, test)):
            if rows[name].size == 0:
                raise SplitError(
                    f"walk_forward_splits: fold {fold} {name} window [{_ts(a, tz)}, {_ts(b, tz)}) holds no rows "
                    f"(as_of spans {_ts(start, tz)} to {_ts(end - 1, tz)}); use fewer folds or more data"
                )
        splits.append(
            Split(
                fold=fold,
                train=rows["train"],
                calibration=rows["calibration"],
                test=rows["test"],
                train_period=Period(_ts(train[0], tz), _ts(train[1], tz)),
                calibration_period=Period(_ts(cal[0], tz), _ts(cal[1], tz)),
                test_period=Period(_ts(test[0], tz), _ts(test[1], tz)),
                embargo=embargo,
            )
        )
    return splits


def assert_no_label_overlap(as_of: pd.Series, split: Split, *, horizon: pd.Timedelta) -> None:
    """Raise ``AssertionError`` unless the split is leak-free for labels of length ``horizon``.

    Checks that the periods are disjoint, that each row lies inside its period, and that
    for every earlier period P and later period Q: ``max(as_of[P]) + horizon <= min(as_of[Q])``
    (the label window ``[t, t + horizon)`` of every row of P ends before any snapshot of Q).
    """
    t = pd.Series(as_of).reset_index(drop=True)
    seen: set[int] = set()
    for name in PERIODS:
        rows = split.rows(name)
        overlap = seen.intersection(rows.tolist())
        assert not overlap, f"fold {split.fold}: {len(overlap)} row(s) of {name} also in an earlier period"
        seen.update(rows.tolist())
        p = split.period(name)
        inside = (t.iloc[rows] >= p.start) & (t.iloc[rows] < p.end)
        assert inside.all(), f"fold {split.fold}: {int((~inside).sum())} {name} row(s) outside [{p.start}, {p.end})"
    for i, earlier in enumerate(PERIODS):
        for later in PERIODS[i + 1 :]:
            last_label_end = t.iloc[split.rows(earlier)].max() + horizon
            first_snapshot = t.iloc[split.rows(later)].min()
            assert last_label_end <= first_snapshot, (
                f"fold {split.fold}: a {earlier} label window ends at {last_label_end}, "
                f"after the first {later} snapshot {first_snapshot}"
            )


def _check_arguments(
    *,
    n_folds: int,
    horizon: pd.Timedelta,
    embargo: pd.Timedelta,
    min_train: pd.Timedelta | None,
    calibration: pd.Timedelta | None,
) -> None:
    if not isinstance(n_folds, (int, np.integer)) or n_folds < 1:
        raise SplitError(f"walk_forward_splits: n_folds must be an integer >= 1, got {n_folds!r}")
    if horizon <= pd.Timedelta(0):
        raise SplitError(f"walk_forward_splits: horizon must be > 0, got {horizon}")
    if embargo < horizon:
        raise SplitError(
            f"walk_forward_splits: embargo {embargo} is shorter than the horizon {horizon}; "
            "training labels would overlap later snapshots"
        )
    for name, value in (("min_train", min_train), ("calibration", calibration)):
        if value is not None and value <= pd.Timedelta(0):
            raise SplitError(f"walk_forward_splits: {name} must be > 0, got {value}")


def _fold_bounds(
    start: int,
    end: int,
    *,
    n_folds: int,
    embargo: int,
    min_train: pd.Timedelta | None,
    calibration: pd.Timedelta | None,
) -> list[tuple[tuple[int, int], tuple[int, int], tuple[int, int]]]:
    """(train, calibration, test) windows in integer microseconds, one triple per fold."""
    fixed = 2 * embargo + sum(_us(v) for v in (min_train, calibration) if v is not None)
    blocks = n_folds + (min_train is None) + (calibration is None)  # windows of the test length
    test_len = (end - start - fixed) // blocks
    if test_len < 1:
        raise SplitError(
            f"walk_forward_splits: as_of spans {pd.Timedelta(end - start - 1, 'us')}, too short for "
            f"n_folds={n_folds} with embargo={pd.Timedelta(embargo, 'us')} (twice)"
            + (f", min_train={min_train}" if min_train is not None else "")
            + (f", calibration={calibration}" if calibration is not None else "")
            + f"; need more than {pd.Timedelta(fixed, 'us')}"
        )
    cal_len = test_len if calibration is None else _us(calibration)
    bounds = []
    for k in range(n_folds):
        test_start = end - (n_folds - k) * test_len
        cal_end = test_start - embargo
        cal_start = cal_end - cal_len
        bounds.append(((start, cal_start - embargo), (cal_start, cal_end), (test_start, test_start + test_len)))
    return bounds


def _as_micros(as_of: pd.Series) -> np.ndarray:
    if not pd.api.types.is_datetime64_any_dtype(as_of):
        raise SplitError(f"walk_forward_splits: as_of must be datetime64, got {as_of.dtype}")
    missing = as_of.isna()
    if missing.any():
        raise SplitError(
            f"walk_forward_splits: as_of is NaT at row {as_of.index[missing.to_numpy()][0]}; "
            f"{int(missing.sum())} row(s) affected"
        )
    if as_of.empty:
        raise SplitError("walk_forward_splits: as_of is empty")
    return pd.DatetimeIndex(as_of).as_unit("us").asi8  # epoch microseconds (UTC if tz-aware)


def _us(delta: pd.Timedelta) -> int:
    return int(pd.Timedelta(delta) // pd.Timedelta(1, "us"))


def _ts(micros: int, tz: object) -> pd.Timestamp:
    ts = pd.Timestamp(micros, unit="us")
    return ts.tz_localize("UTC").tz_convert(tz) if tz is not None else ts
