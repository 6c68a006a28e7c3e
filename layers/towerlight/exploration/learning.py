"""Ingest's side of item exploration: learn the stored decisions into a new VW model version, each once.

After a batch is written, ``ExplorationLearner.after_batch`` runs a learning pass (at most one per
``learn_seconds`` per process), which:

1. takes a transaction-level advisory lock with ``pg_try_advisory_xact_lock``: when another consumer
   holds it, that one is learning and this pass is skipped;
2. reads ``bandit/vw/CURRENT`` (its watermark ``learned_through`` and its etag) and the decisions past
   the watermark, in ``(received_at, recommendation_id)`` order, that were stored more than the
   attribution window ago (so their clicks had time to arrive, and no transaction still writing one
   can commit behind the watermark), at most ``MAX_EXAMPLES`` of them;
3. learns each with cost = -reward of its chosen item (``records.REWARD_OF_CHOSEN``) and the logged
   probability, on top of the current model (a new one before the first);
4. publishes the result as a new version and swaps ``CURRENT`` with compare-and-swap, the new watermark
   inside it: a retried or concurrent pass can never learn a decision twice, and a pass that loses the
   swap discards its work.

A learning failure never fails the batch: the events are already committed; it is logged and counted
(``ExplorationLearnFailed``), and the next pass starts again from the watermark.

Example::

    >>> learner = ExplorationLearner(settings, store=lambda: store, connection=shared_connection)
    >>> learner.learn()
    LearnResult(learned=212, version='20261130T150102Z-9a0b1c', skipped=None)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from aws_lambda_powertools.metrics import MetricUnit

from towerlight.config import get_settings
from towerlight.db.connection import shared_connection
from towerlight.errors import ArtifactError, PointerConflictError
from towerlight.exploration.features import vw_example
from towerlight.exploration.model import (
    VWPointer,
    open_workspace,
    publish_vw_model,
    read_vw_model,
    read_vw_pointer,
    save_workspace,
)
from towerlight.exploration.records import REWARD_OF_CHOSEN, REWARD_PARAMETERS
from towerlight.exploration.settings import ExplorationSettings, exploration_settings
from towerlight.store import ArtifactStore, open_store
from towerlight.tracking import MetricsSink

logger = logging.getLogger(__name__)

# Decisions learned in one pass at most: a backlog is worked off over several batches.
MAX_EXAMPLES = 5000
LEARN_STATEMENT_TIMEOUT_MS = 10_000
# Two-key advisory lock: (namespace, key), apart from the impressions' bucket locks.
LEARNER_LOCK = (0x546C_5657, 1)  # "TlVW"
# The watermark before the first model: before any decision (a value, not NULL, keeps the index usable).
_BEGINNING = (datetime(1970, 1, 1, tzinfo=UTC), "")

_PENDING = f"""
SELECT x.received_at, x.recommendation_id, x.shared, x.actions, x.chosen, x.probability, {REWARD_OF_CHOSEN}
FROM explorations x
WHERE x.received_at < now() - %(window)s AND (x.received_at, x.recommendation_id) > (%(after_at)s, %(after_id)s)
ORDER BY x.received_at, x.recommendation_id
LIMIT %(limit)s
"""


@dataclass(frozen=True)
class LearnResult:
    """One pass: decisions learned, the version published (None: none), why it did nothing (if it did)."""

    learned: int = 0
    version: str | None = None
    skipped: str | None = None  # "busy" (another learner), "conflict" (lost the swap)


class ExplorationLearner:
    """Learning passes for one ingest process (see the module's docstring)."""

    def __init__(
        self,
        settings: ExplorationSettings,
        *,
        store: Callable[[], ArtifactStore],
        connection: Callable[[], psycopg.Connection] = shared_connection,
        clock: Callable[[], float] = time.monotonic,
        max_examples: int = MAX_EXAMPLES,
    ) -> None:
        self.settings = settings
        self._store = store
        self._connection = connection
        self._clock = clock
        self.max_examples = max_examples
        self._next_pass = float("-inf")

    def after_batch(self, metrics: MetricsSink | None = None) -> LearnResult | None:
        """A learning pass if ``learn_seconds`` passed since this process's last one; never raises."""
        now = self._clock()
        if now < self._next_pass:
            return None
        self._next_pass = now + self.settings.learn_seconds
        try:
            result = self.learn()
        except Exception:  # the batch is committed whatever happens here; the watermark makes retrying safe
            logger.exception("exploration learning failed; the next pass retries from the watermark")
            _count(metrics, "ExplorationLearnFailed", 1)
            return None
        _count(metrics, "ExplorationLearned", result.learned)
        return result

    def learn(self) -> LearnResult:
        """One learning pass; raises on store or database errors (nothing is published then)."""
        conn = self._connection()
        with conn.transaction():
            conn.execute("SELECT set_config('statement_timeout', %s, true)", [f"{LEARN_STATEMENT_TIMEOUT_MS}ms"])
            locked = conn.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", LEARNER_LOCK).fetchone()
            if not (locked and locked[0]):
                return LearnResult(skipped="busy")
            store = self._store()
            current, etag = read_vw_pointer(store)
            after = current.learned_through if current and current.learned_through else _BEGINNING
            rows = conn.execute(
                _PENDING,
                {
                    **REWARD_PARAMETERS,
                    "window": timedelta(seconds=self.settings.window_seconds),
                    "after_at": after[0],
                    "after_id": after[1],
                    "limit": self.max_examples,
                },
            ).fetchall()
            if not rows:
                return LearnResult()
            workspace = open_workspace(_model_to_continue(store, current))
            for _, _, shared, actions, chosen, probability, reward in rows:
                workspace.learn(vw_example(shared, actions, (chosen, -float(reward), probability)))
            last: tuple[datetime, str] = (rows[-1][0], rows[-1][1])
            data = save_workspace(workspace)
            try:
                pointer = publish_vw_model(
                    store, data, learned=len(rows), learned_through=last, current=current, etag=etag
                )
            except PointerConflictError:
                logger.info("another learner published first; %d decisions are left to the next pass", len(rows))
                return LearnResult(skipped="conflict")
        logger.info("VW model %s learned %d decisions (%d in all)", pointer.version, len(rows), pointer.examples)
        return LearnResult(learned=len(rows), version=pointer.version)


def _model_to_continue(store: ArtifactStore, current: VWPointer | None) -> bytes | None:
    """The model bytes ``current`` names, or None (learn from scratch) when there is none or it is unusable.

    A file that is missing or fails its checksum would otherwise fail every pass, and no pass could ever
    publish the version that replaces it: the decisions keep coming, so a fresh model is the lesser loss.
    """
    if current is None:
        return None
    try:
        return read_vw_model(store, current)
    except ArtifactError as exc:
        logger.error("VW model %s is unusable (%s): learning starts again from a fresh model", current.version, exc)
        return None


def _count(metrics: MetricsSink | None, name: str, value: int) -> None:
    if metrics is not None:
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


def exploration_learner() -> ExplorationLearner | None:
    """Ingest's learner when exploration is on (``TOWERLIGHT_EXPLORATION_EPSILON``) and a store is configured."""
    settings = exploration_settings()
    uri = get_settings().store_uri
    if settings is None:
        return None
    if not uri:
        logger.warning("item exploration is on but TOWERLIGHT_STORE is not set: decisions are stored, not learned")
        return None
    store = open_store(uri)
    return ExplorationLearner(settings, store=lambda: store)
