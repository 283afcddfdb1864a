import itertools
import math

import numpy as np
import pytest
from pydantic import ValidationError

from liqrisk.serve.levels import Level, Thresholds, is_raise, level_of, next_level

N, W, WA, C = Level.NONE, Level.WATCH, Level.WARNING, Level.CRITICAL
# watch 0.2 (released below 0.16), warning 0.4 (below 0.32), critical 0.7 (below 0.56)
T = Thresholds(watch=0.2, warning=0.4, critical=0.7, hysteresis=0.2)


@pytest.mark.parametrize(
    ("previous", "p", "expected"),
    [
        # escalate as soon as a threshold is reached, skipping levels if need be
        (N, 0.0, N),
        (N, 0.199, N),
        (N, 0.2, W),
        (N, 0.4, WA),
        (N, 0.7, C),
        (N, 1.0, C),
        (W, 0.45, WA),
        (WA, 0.69, WA),
        (WA, 0.7, C),
        # hold inside the hysteresis band below the threshold
        (W, 0.17, W),
        (W, 0.161, W),
        (WA, 0.33, WA),
        (C, 0.57, C),
        # release below threshold * (1 - hysteresis), to the highest level still held
        (W, 0.159, N),
        (WA, 0.319, W),
        (C, 0.559, WA),
        (C, 0.3, W),
        (C, 0.1, N),
        (WA, 0.0, N),
    ],
)
def test_next_level(previous: Level, p: float, expected: Level) -> None:
    assert next_level(previous, p, T) == expected


@pytest.mark.parametrize(
    ("previous", "new", "raised"),
    [
        (N, W, True),
        (W, C, True),
        (N, C, True),
        (W, W, False),
        (C, WA, False),
        (W, N, False),
        (N, N, False),
    ],
)
def test_is_raise_only_for_new_or_escalated(previous: Level, new: Level, raised: bool) -> None:
    assert is_raise(previous, new) is raised


@pytest.mark.parametrize("seed", range(5))
def test_no_flapping_around_a_threshold(seed: int) -> None:
    """A score oscillating ±10 % around the warning threshold raises once, not every crossing."""
    rng = np.random.default_rng(seed)
    series = 0.4 * (1 + rng.uniform(-0.1, 0.1, size=500))
    series[::2] = 0.41  # crosses the threshold every other step
    level, raises = N, 0
    for p in series:
        new = next_level(level, float(p), T)
        raises += is_raise(level, new)
        level = new
    assert raises == 1  # the first score, straight to warning; 0.36 never reaches the 0.32 release
    assert level == WA
    without = Thresholds(watch=0.2, warning=0.4, critical=0.7, hysteresis=0.0)
    flips = sum(
        level_of(float(a), without) != level_of(float(b), without)
        for a, b in itertools.pairwise(series)
    )
    assert flips > 100  # what hysteresis prevents


@pytest.mark.parametrize("level", [W, WA, C])
def test_the_release_point_itself_still_holds(level: Level) -> None:
    assert next_level(level, T.release(level), T) == level
    assert next_level(level, math.nextafter(T.release(level), 0), T) < level


def test_hysteresis_zero_follows_the_thresholds_exactly() -> None:
    t = Thresholds(watch=0.2, warning=0.4, critical=0.7, hysteresis=0.0)
    for p in np.linspace(0, 1, 101):
        for previous in Level:
            assert next_level(previous, float(p), t) == level_of(float(p), t)


def test_a_cooled_account_raises_again() -> None:
    level = N
    raised = []
    for p in [0.45, 0.38, 0.42, 0.30, 0.35, 0.41]:  # hold, hold, release to watch, hold, re-raise
        new = next_level(level, p, T)
        raised.append(is_raise(level, new))
        level = new
    assert raised == [True, False, False, False, False, True]


@pytest.mark.parametrize("p", [-0.01, 1.01, math.nan, math.inf])
def test_probability_out_of_range_is_rejected(p: float) -> None:
    with pytest.raises(ValueError, match="probability must be in"):
        next_level(N, p, T)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"watch": 0.4, "warning": 0.4, "critical": 0.7},  # not strictly increasing
        {"watch": 0.5, "warning": 0.4, "critical": 0.7},
        {"watch": 0.0, "warning": 0.4, "critical": 0.7},  # watch must be > 0
        {"critical": 1.5},
        {"hysteresis": 1.0},
        {"hysteresis": -0.1},
    ],
)
def test_invalid_thresholds_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        Thresholds(**kwargs)


def test_thresholds_are_frozen_and_name_their_levels() -> None:
    with pytest.raises(ValidationError):
        T.watch = 0.1  # type: ignore[misc]
    assert [T.threshold(level) for level in Level] == [0.0, 0.2, 0.4, 0.7]
    assert T.release(C) == pytest.approx(0.56)
    assert [level.label for level in Level] == ["none", "watch", "warning", "critical"]
