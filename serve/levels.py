"""Warning levels from probabilities, with hysteresis so an account near a threshold does not flap.

Choices, stated once:

- **Escalate at once.** A probability at or above a level's threshold raises that level on the
  same score (``p >= threshold``): a platform is told about rising risk without delay.
- **De-escalate late, by a relative margin.** A level is held until the probability falls
  below ``threshold * (1 - hysteresis)``, its *release point*. Relative, not absolute, because
  the thresholds span orders of magnitude (a 0.02 watch level and a 0.5 critical one): an
  absolute margin of 0.05 would never release the first and barely damp the second. With
  ``hysteresis=0.2`` a 0.5 critical level is released below 0.4, a 0.05 watch level below 0.04.
- **Only raises are news.** :func:`is_raise` is true for a new or escalated level; staying or
  de-escalating changes the account's remembered level but publishes nothing, so a consumer sees
  one warning per climb, and a second one only after the account has cooled below the release
  point and climbed again.
- **Pure.** Nothing here reads a clock or a database; ``liqrisk.serve.store`` keeps the
  previous level per account and calls :func:`next_level` inside its transaction.
"""

from enum import IntEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Level(IntEnum):
    """Severity of an account's warning; ordered, so ``Level.CRITICAL > Level.WATCH``."""

    NONE = 0
    WATCH = 1
    WARNING = 2
    CRITICAL = 3

    @property
    def label(self) -> str:
        """Lower-case name used in payloads and the API (``"watch"``)."""
        return self.name.lower()


class Thresholds(BaseModel):
    """Probability thresholds of the three warning levels and the de-escalation margin.

    Settings-friendly (``LIQRISK_SERVE__THRESHOLDS__CRITICAL=0.6``); frozen so one validated
    instance can be shared by every request.

    Parameters
    ----------
    watch, warning, critical : float
        Probabilities in (0, 1], strictly increasing; a score at or above one reaches its level.
    hysteresis : float
        Relative margin in [0, 1): a level is released only when the probability falls below
        ``threshold * (1 - hysteresis)``. 0 disables hysteresis.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    watch: float = Field(default=0.2, gt=0, le=1)
    warning: float = Field(default=0.4, gt=0, le=1)
    critical: float = Field(default=0.7, gt=0, le=1)
    hysteresis: float = Field(default=0.2, ge=0, lt=1)

    @model_validator(mode="after")
    def _strictly_increasing(self) -> Self:
        if not self.watch < self.warning < self.critical:
            raise ValueError(
                "thresholds must be strictly increasing (watch < warning < critical), got "
                f"watch={self.watch}, warning={self.warning}, critical={self.critical}"
            )
        return self

    def threshold(self, level: Level) -> float:
        """Probability at or above which ``level`` is reached (``NONE`` has none: 0)."""
        field = _FIELDS[level]
        return 0.0 if field is None else getattr(self, field)

    def release(self, level: Level) -> float:
        """Probability below which a held ``level`` is let go: ``threshold * (1 - hysteresis)``."""
        return self.threshold(level) * (1.0 - self.hysteresis)


_RAISABLE = (Level.CRITICAL, Level.WARNING, Level.WATCH)
_FIELDS = {Level.NONE: None, Level.WATCH: "watch", Level.WARNING: "warning", Level.CRITICAL: "critical"}


def level_of(probability: float, thresholds: Thresholds) -> Level:
    """Highest level whose threshold ``probability`` reaches, ignoring any history."""
    _check_probability(probability)
    for level in _RAISABLE:
        if probability >= thresholds.threshold(level):
            return level
    return Level.NONE


def next_level(previous: Level, probability: float, thresholds: Thresholds) -> Level:
    """The account's level after a new score, given the level it held before.

    Escalates to :func:`level_of` as soon as that is above ``previous``; otherwise keeps the
    highest level not above ``previous`` whose release point the probability still reaches, so
    a score hovering around a threshold keeps its level instead of flapping.

    Parameters
    ----------
    previous : Level
        Level held before this score (``Level.NONE`` for an account never warned).
    probability : float
        The new score, in [0, 1].
    thresholds : Thresholds

    Returns
    -------
    Level

    Raises
    ------
    ValueError
        If ``probability`` is NaN or outside [0, 1].
    """
    reached = level_of(probability, thresholds)
    if reached >= previous:
        return reached
    for level in _RAISABLE:
        if level <= previous and probability >= thresholds.release(level):
            return level
    return Level.NONE


def is_raise(previous: Level, new: Level) -> bool:
    """True for a new or escalated warning: the transitions that are stored and published."""
    return new > previous


def _check_probability(probability: float) -> None:
    if not 0.0 <= probability <= 1.0:  # also False for NaN
        raise ValueError(f"probability must be in [0, 1], got {probability!r}")
