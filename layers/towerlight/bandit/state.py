"""The bandit state as recommend sees it: arm counters read through a short cache, choices per segment.

Counters change with every ingested batch, but a request needs only a recent view of them: they are
read at most once per ``ttl`` seconds, and each segment's choice probabilities are computed once per
read. When the database cannot be read, the last counters read stay in use (none yet: every arm is
new, so the choice is uniform), and the next attempt waits ``retry_after`` seconds.

Example::

    >>> state = BanditState(ThompsonSampling(("two_tower", "popularity")), read=read_arms_shared)
    >>> state.choose(user_segment(history_length=12), np.random.default_rng())
    ArmChoice(strategy='two_tower', propensity=0.975)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection

import numpy as np
import psycopg

from towerlight.bandit.arms import ArmStats, read_arms
from towerlight.bandit.thompson import ArmChoice, ThompsonSampling
from towerlight.db.connection import shared_connection
from towerlight.errors import ConfigurationError, DatabaseUnavailableError

logger = logging.getLogger(__name__)

_DATABASE_ERRORS = (DatabaseUnavailableError, ConfigurationError, psycopg.Error)
# How long counters read from Postgres are reused: ingest moves them every batch, a request needs a recent view.
DEFAULT_TTL_SECONDS = 30.0


def user_segment(history_length: int) -> str:
    """The bandit's context for a user: ``cold`` without any history, else ``warm``.

    >>> user_segment(0), user_segment(3)
    ('cold', 'warm')
    """
    return "warm" if history_length > 0 else "cold"


def read_arms_shared() -> list[ArmStats]:
    """Every arm's counters, read on this process's shared connection."""
    conn = shared_connection()
    with conn.transaction():
        return read_arms(conn)


class BanditState:
    """``policy`` applied to counters from ``read``, cached for ``ttl`` seconds (thread-safe)."""

    def __init__(
        self,
        policy: ThompsonSampling,
        read: Callable[[], list[ArmStats]] = read_arms_shared,
        *,
        ttl: float = DEFAULT_TTL_SECONDS,
        retry_after: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self._read = read
        self.ttl = ttl
        self.retry_after = retry_after
        self._clock = clock
        self._arms: list[ArmStats] = []
        self._probabilities: dict[str, dict[str, float]] = {}
        self._next_read = float("-inf")
        self._lock = threading.Lock()

    def probabilities(self, segment: str) -> dict[str, float]:
        """The current probability of each strategy for ``segment``."""
        with self._lock:
            now = self._clock()
            if now >= self._next_read:
                self._refresh(now)
            if segment not in self._probabilities:
                self._probabilities[segment] = self.policy.probabilities(self._arms, segment)
            return self._probabilities[segment]

    def choose(self, segment: str, rng: np.random.Generator, allowed: Collection[str] | None = None) -> ArmChoice:
        """A strategy (of ``allowed``, if given) for a user of ``segment``, with the probability it was chosen with."""
        return self.policy.choose(self.probabilities(segment), rng, allowed)

    def _refresh(self, now: float) -> None:
        try:
            arms = self._read()
        except _DATABASE_ERRORS as exc:
            logger.warning("bandit counters unavailable, keeping the last ones for %.0f s: %s", self.retry_after, exc)
            self._next_read = now + self.retry_after
            return
        self._next_read = now + self.ttl
        if arms != self._arms:
            self._arms = arms
            self._probabilities.clear()
