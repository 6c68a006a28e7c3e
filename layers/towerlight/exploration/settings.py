"""Item exploration's configuration, from the environment (the same names in every function).

Exploration is on when ``TOWERLIGHT_EXPLORATION_EPSILON`` is set (0 < ε ≤ 1 is the share of decisions
spread uniformly over the slot's candidates; 0 learns without exploring). Recommend reads the candidates,
slot and ``MODEL_REFRESH_SECONDS``; ingest the attribution window and the learning interval.

Example::

    >>> exploration_settings()  # TOWERLIGHT_EXPLORATION_EPSILON=0.1
    ExplorationSettings(epsilon=0.1, candidates=10, slot=1, window_seconds=600.0, learn_seconds=60.0)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from towerlight.config import env_number
from towerlight.errors import ConfigurationError

EPSILON_ENV = "TOWERLIGHT_EXPLORATION_EPSILON"
DEFAULT_CANDIDATES = 10
DEFAULT_WINDOW_SECONDS = 600.0
DEFAULT_LEARN_SECONDS = 60.0


@dataclass(frozen=True)
class ExplorationSettings:
    """``epsilon``: exploration rate; ``candidates``: the slot's options (the top ``candidates`` from the
    slot down); ``slot``: the 1-based position explored; ``window_seconds``: how long after it is stored a
    decision waits for its clicks before it is learned; ``learn_seconds``: the least time between two
    learning passes of one ingest process."""

    epsilon: float
    candidates: int = DEFAULT_CANDIDATES
    slot: int = 1
    window_seconds: float = DEFAULT_WINDOW_SECONDS
    learn_seconds: float = DEFAULT_LEARN_SECONDS

    def __post_init__(self) -> None:
        if not 0.0 <= self.epsilon <= 1.0:
            raise ConfigurationError(f"{EPSILON_ENV} must be between 0 and 1, got {self.epsilon}")
        if self.candidates < 2 or self.slot < 1:
            raise ConfigurationError("exploration needs at least 2 candidates and a slot >= 1")


def exploration_settings() -> ExplorationSettings | None:
    """The settings when ``TOWERLIGHT_EXPLORATION_EPSILON`` is set, else None (exploration off)."""
    if not os.environ.get(EPSILON_ENV, "").strip():
        return None
    return ExplorationSettings(
        epsilon=env_number(EPSILON_ENV, 0.0, 0.0),
        candidates=int(env_number("TOWERLIGHT_EXPLORATION_CANDIDATES", DEFAULT_CANDIDATES, 2)),
        slot=int(env_number("TOWERLIGHT_EXPLORATION_SLOT", 1, 1)),
        window_seconds=env_number("TOWERLIGHT_EXPLORATION_WINDOW_SECONDS", DEFAULT_WINDOW_SECONDS, 0.0),
        learn_seconds=env_number("TOWERLIGHT_EXPLORATION_LEARN_SECONDS", DEFAULT_LEARN_SECONDS, 0.0),
    )
