"""The recommendation domain: who the user is (Postgres), what the model says, what the filters allow.

Per request: one query for the user's recent events, removed items and (when the model uses them) attributes,
the ONNX user tower, hnswlib top-C, filters over those C candidates only, top-k. A user without history
gets popularity (their demographic segment's when the version publishes one); a database that cannot
be read degrades to popularity instead of failing. ``strict`` back-fills from popularity, then from any
item, and says so clearly when fewer than k items can be recommended at all.

Example::

    >>> service = RecommendationService(get_registry().get, PostgresSignals())
    >>> result = service.recommend("42", RecommendQuery(k=3, exclude_categories=("Horror",)))
    >>> result.strategy, [item.item_id for item in result.items]
    ('two_tower', ['174', '50', '181'])
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import chain
from typing import Any, Protocol

import numpy as np
import psycopg

from towerlight.config import get_settings
from towerlight.db import connection as db_connection
from towerlight.db.catalog import inactive_items
from towerlight.db.events import history_and_removed
from towerlight.errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    ModelUnavailableError,
    NotFoundError,
)
from towerlight.event_types import POSITIVE_EVENT_TYPES
from towerlight.model.bundle import ModelBundle, TwoTower
from towerlight.model.registry import get_registry
from towerlight.recommend.filters import (
    EMPTY_ROWS,
    Exclusions,
    build_exclusions,
    catalogue_chunks,
    fill_strict,
    sorted_rows,
    take_allowed,
)

logger = logging.getLogger(__name__)

# Events read per request: the tower uses the newest positive ones, the seen-filter all of them.
SEEN_LOOKBACK = 200
# An included category this small is scored whole (exact); a larger one is found among ANN candidates.
EXACT_CATEGORY_ROWS = 5000
# When filters leave fewer than k of the top-C candidates, search once more this many times wider.
WIDEN_FACTOR = 8
_POSITIVE = frozenset(POSITIVE_EVENT_TYPES)
_DATABASE_ERRORS = (DatabaseUnavailableError, ConfigurationError, psycopg.Error)


# ---- request and result ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RecommendQuery:
    """What a caller asks for (already validated at the edge).

    >>> RecommendQuery(k=5, exclude=("50",), categories=("Comedy",), strict=True)
    """

    k: int = 10
    strategy: str = "auto"  # auto | two_tower | popularity
    exclude_seen: bool = True
    exclude: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    exclude_categories: tuple[str, ...] = ()
    strict: bool = False


@dataclass(frozen=True, slots=True)
class ScoredItem:
    item_id: str
    score: float | None  # None: an item the model cannot score (``rank`` of an unknown id)
    rank: int


@dataclass(frozen=True, slots=True)
class Recommendations:
    """The answer of ``recommend``; ``fallbacks`` names every degradation taken (for metrics and logs)."""

    user_id: str
    recommendation_id: str
    model_version: str
    strategy: str
    variant: str | None
    items: list[ScoredItem]
    fallbacks: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The HTTP body: ``{user_id, recommendation_id, model_version, strategy, variant, items}``."""
        return {
            "user_id": self.user_id,
            "recommendation_id": self.recommendation_id,
            "model_version": self.model_version,
            "strategy": self.strategy,
            "variant": self.variant,
            "items": _items_json(self.items),
        }


@dataclass(frozen=True, slots=True)
class SimilarItems:
    item_id: str
    model_version: str
    items: list[ScoredItem]
    fallbacks: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The HTTP body: ``{item_id, model_version, items}``."""
        return {
            "item_id": self.item_id,
            "model_version": self.model_version,
            "items": _items_json(self.items),
        }


def _items_json(items: list[ScoredItem]) -> list[dict[str, Any]]:
    return [{"item_id": i.item_id, "score": i.score, "rank": i.rank} for i in items]


def _scored(bundle: ModelBundle, rows: np.ndarray, scores: np.ndarray) -> list[ScoredItem]:
    ids = bundle.catalogue.item_ids[rows].tolist()
    return [ScoredItem(i, round(s, 6), r) for r, (i, s) in enumerate(zip(ids, scores.tolist(), strict=True), 1)]


# ---- what the database says about a user -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class UserSignals:
    """A user's recent positive items (newest first), removed items and attributes.

    ``available`` is False when the database could not be read: nothing is known about the user.
    """

    history: tuple[str, ...] = ()
    removed: frozenset[str] = frozenset()
    attributes: Mapping[str, Any] | None = None
    available: bool = True


class SignalSource(Protocol):
    """Where the service reads users and the inactive items from (Postgres, or a fake in tests)."""

    def user(self, user_id: str, lookback: int, *, attributes: bool) -> UserSignals: ...

    def inactive_items(self) -> frozenset[str]: ...


@dataclass
class _Expiring:
    value: Any
    expires: float


@dataclass
class PostgresSignals:
    """``SignalSource`` on the shared Postgres connection: one query (one round trip) per request.

    The inactive items are cached for a short time; after a database failure the source answers
    "unavailable" for ``retry_after`` seconds instead of waiting on a dead server for every request.

    >>> PostgresSignals().user("42", 200, attributes=True).history[:3]
    ('50', '181', '1')
    """

    inactive_ttl: float = 30.0
    retry_after: float = 5.0
    connection: Callable[[], psycopg.Connection] = db_connection.shared_connection
    clock: Callable[[], float] = time.monotonic
    _inactive: _Expiring = field(default_factory=lambda: _Expiring(frozenset(), float("-inf")), init=False)
    _down_until: float = field(default=float("-inf"), init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def user(self, user_id: str, lookback: int, *, attributes: bool) -> UserSignals:
        now = self.clock()
        if now < self._down_until:
            return UserSignals(available=False)
        try:
            with self._lock, self._reading() as conn:
                history, removed, attrs = history_and_removed(conn, user_id, lookback, attributes=attributes)
        except _DATABASE_ERRORS as exc:
            self._failed(exc, now)
            return UserSignals(available=False)
        positive = tuple(e.item_id for e in history if e.event_type in _POSITIVE)
        return UserSignals(positive, frozenset(removed), attrs)

    def inactive_items(self) -> frozenset[str]:
        now = self.clock()
        cached = self._inactive
        if now < cached.expires or now < self._down_until:
            return cached.value
        try:
            with self._lock, self._reading() as conn:
                ids = frozenset(inactive_items(conn))
        except _DATABASE_ERRORS as exc:
            self._failed(exc, now)
            return cached.value  # the last known set is better than none
        self._inactive = _Expiring(ids if ids != cached.value else cached.value, now + self.inactive_ttl)
        return self._inactive.value

    @contextmanager
    def _reading(self) -> Iterator[psycopg.Connection]:
        """The shared connection in autocommit for the length of a read.

        Reads need no transaction, and without one each query is a single round trip instead of
        three (BEGIN, the query, ROLLBACK); the connection goes back to its usual mode afterwards.
        """
        conn = self.connection()
        conn.autocommit = True
        try:
            yield conn
        finally:
            if not conn.closed:
                conn.autocommit = False

    def _failed(self, exc: Exception, now: float) -> None:
        if now >= self._down_until:
            logger.warning("database unavailable, degrading for %.0f s: %s", self.retry_after, exc)
        self._down_until = now + self.retry_after


@dataclass(slots=True)
class _Personal:
    """What one request knows about its user: signals, embedding (None: popularity), fallbacks taken."""

    bundle: ModelBundle
    user: UserSignals
    tower: TwoTower | None
    vector: np.ndarray | None
    fallbacks: list[str]

    @property
    def strategy(self) -> str:
        return "popularity" if self.vector is None else "two_tower"

    def scores(self, rows: np.ndarray) -> np.ndarray:
        """Scores of ``rows`` for this user: inner products with the user embedding, else popularity."""
        if self.tower is not None and self.vector is not None:
            return self.tower.embeddings[rows] @ self.vector
        return self.bundle.popularity.score_by_row[rows]


# ---- the service -----------------------------------------------------------------------------------------
class RecommendationService:
    """Recommendations and similar items from the served model and the user's signals.

    ``model`` returns the bundle to serve (``ModelRegistry.get``); ``signals`` reads users from Postgres.

    Example::

        >>> service = RecommendationService(get_registry().get, PostgresSignals(), candidates=200)
        >>> service.similar_items("50", k=3).items[0].item_id
        '172'
    """

    def __init__(
        self,
        model: Callable[[], ModelBundle],
        signals: SignalSource,
        *,
        candidates: int = 200,
        lookback: int = SEEN_LOOKBACK,
    ) -> None:
        self._model = model
        self._signals = signals
        self.candidates = candidates
        self.lookback = lookback
        self._inactive_cache: tuple[ModelBundle, frozenset[str], np.ndarray] | None = None

    def recommend(self, user_id: str, query: RecommendQuery) -> Recommendations:
        """Top-``query.k`` items for ``user_id``, best first.

        >>> service.recommend("42", RecommendQuery(k=2)).items
        [ScoredItem(item_id='174', score=0.61, rank=1), ScoredItem(item_id='50', score=0.58, rank=2)]
        """
        bundle = self._model()
        me = self._personalize(bundle, user_id, query.strategy)
        user = me.user
        rules = build_exclusions(
            bundle.catalogue,
            banned_ids=user.removed.union(query.exclude, user.history if query.exclude_seen else ()),
            inactive_rows=self._inactive_rows(bundle),
            categories=query.categories,
            exclude_categories=query.exclude_categories,
        )
        popular, _ = bundle.popularity.for_attributes(user.attributes, me.tower.spec if me.tower else None)
        if me.tower is not None and me.vector is not None:
            rows = self._two_tower_rows(me.tower, me.vector, rules, query.k)
        else:
            rows = self._popular_rows(bundle, popular, rules, query.k)
        if query.strict and len(rows) < query.k:
            me.fallbacks.append("backfill")
            rows = fill_strict(rows, query.k, rules, _backfill_sources(bundle, popular, rules))
        return self._answer(user_id, bundle, me, _scored(bundle, rows, me.scores(rows)))

    def rank(self, user_id: str, item_ids: Sequence[str], strategy: str = "auto") -> Recommendations:
        """The caller's ``item_ids`` in ``user_id``'s order, best first; nothing is filtered out.

        Ids the model does not know come last, in the caller's order, with a null score.

        >>> [(i.item_id, i.score) for i in service.rank("42", ["181", "new-item", "50"]).items]
        [('50', 0.58), ('181', 0.41), ('new-item', None)]
        """
        bundle = self._model()
        me = self._personalize(bundle, user_id, strategy)
        catalogue = bundle.catalogue
        wanted = list(dict.fromkeys(item_ids))
        known = [(item_id, row) for item_id in wanted if (row := catalogue.row_of(item_id)) is not None]
        rows = np.fromiter((row for _, row in known), dtype=np.int64, count=len(known))
        scores = me.scores(rows)
        order = np.argsort(-scores, kind="stable")
        items = _scored(bundle, rows[order], scores[order])
        unknown = [item_id for item_id in wanted if catalogue.row_of(item_id) is None]
        items += [ScoredItem(item_id, None, len(items) + n) for n, item_id in enumerate(unknown, 1)]
        return self._answer(user_id, bundle, me, items)

    def similar_items(self, item_id: str, k: int) -> SimilarItems:
        """The ``k`` items closest to ``item_id`` in the item embedding space (inactive ones left out).

        Raises ``NotFoundError`` (404) for an item the model does not know.

        >>> [i.item_id for i in service.similar_items("50", 3).items]
        ['172', '181', '174']
        """
        bundle = self._model()
        row = bundle.catalogue.row_of(item_id)
        if row is None:
            raise NotFoundError(f"unknown item {item_id!r}", {"item_id": item_id})
        if bundle.two_tower is None:
            raise ModelUnavailableError(
                f"similar items need the two-tower model; version {bundle.version} serves popularity only",
                {"model_version": bundle.version},
            )
        tower = bundle.two_tower
        rules = Exclusions(banned=np.array([row], dtype=np.int64), inactive=self._inactive_rows(bundle))
        vector = tower.embeddings[row]
        rows = self._two_tower_rows(tower, vector, rules, k)
        return SimilarItems(item_id, bundle.version, _scored(bundle, rows, tower.embeddings[rows] @ vector))

    def _personalize(self, bundle: ModelBundle, user_id: str, strategy: str) -> _Personal:
        """Read the user (one query) and embed them, or say why popularity must answer instead."""
        tower = None if strategy == "popularity" else bundle.two_tower
        fallbacks: list[str] = []
        if tower is None and strategy != "popularity":
            fallbacks.append("popularity_only_model")
        wants_attributes = bool(bundle.popularity.segments) or bool(tower and tower.spec.user_fields)
        user = self._signals.user(user_id, self.lookback, attributes=wants_attributes)
        if not user.available:
            fallbacks.append("database_unavailable")
        vector = None
        if tower is not None and user.available:
            if user.history or strategy == "two_tower":
                vector = tower.user_vector(user.history, user.attributes)
            else:
                fallbacks.append("cold_user")
        return _Personal(bundle, user, tower, vector, fallbacks)

    @staticmethod
    def _answer(user_id: str, bundle: ModelBundle, me: _Personal, items: list[ScoredItem]) -> Recommendations:
        return Recommendations(
            user_id=user_id,
            recommendation_id=str(uuid.uuid4()),
            model_version=bundle.version,
            strategy=me.strategy,
            variant=None,
            items=items,
            fallbacks=tuple(me.fallbacks),
        )

    # ---- candidates ------------------------------------------------------------------------------------
    def _two_tower_rows(self, tower: TwoTower, vector: np.ndarray, rules: Exclusions, k: int) -> np.ndarray:
        """Best allowed rows for ``vector``: exact over a small included category, else ANN top-C."""
        small = rules.included_rows(EXACT_CATEGORY_ROWS)
        if small is not None:
            candidates = small[rules.allowed(small)]
            return _top(candidates, tower.embeddings[candidates] @ vector, k)
        size = tower.retriever.size
        fetch = min(max(self.candidates, k), size)
        # Banned rows are filtered here rather than passed to the index: hnswlib's cost grows with the
        # number of results asked, and a user's seen items rarely fill the top-C.
        for _ in range(2):
            labels = tower.retriever.search(vector, fetch)[0][0]
            labels = labels[labels >= 0]
            kept = labels[rules.allowed(labels)]
            if len(kept) >= k or fetch >= size:
                break
            fetch = min(fetch * WIDEN_FACTOR + len(rules.banned), size)  # harsh filters: once more, wider
        return kept[:k]

    @staticmethod
    def _popular_rows(bundle: ModelBundle, popular: np.ndarray, rules: Exclusions, k: int) -> np.ndarray:
        small = rules.included_rows(EXACT_CATEGORY_ROWS)
        if small is not None:
            candidates = small[rules.allowed(small)]
            return _top(candidates, bundle.popularity.score_by_row[candidates], k)
        return take_allowed([popular], rules, k)

    def _inactive_rows(self, bundle: ModelBundle) -> np.ndarray:
        """Rows of the inactive items, recomputed only when the set or the bundle changes."""
        ids = self._signals.inactive_items()
        cached = self._inactive_cache
        if cached is not None and cached[0] is bundle and cached[1] is ids:
            return cached[2]
        rows = sorted_rows(bundle.catalogue.rows_of(ids)) if ids else EMPTY_ROWS
        self._inactive_cache = (bundle, ids, rows)
        return rows


def _backfill_sources(bundle: ModelBundle, popular: np.ndarray, rules: Exclusions) -> Iterable[np.ndarray]:
    """Where a strict request finds more items: the user's popularity, overall popularity, then anything."""
    lists = [popular] if popular is bundle.popularity.rows else [popular, bundle.popularity.rows]
    everything = rules.included_rows(bundle.catalogue.size)
    return chain(lists, catalogue_chunks(bundle.catalogue.size) if everything is None else [everything])


def _top(rows: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` best ``rows`` by ``scores``, best first (ties: the lower row first)."""
    if len(rows) > k:
        part = np.argpartition(-scores, k - 1)[:k]
        rows, scores = rows[part], scores[part]
    return rows[np.lexsort((rows, -scores))]


@lru_cache(maxsize=1)
def get_service() -> RecommendationService:
    """The process-wide service on the registry's model and Postgres (``get_service.cache_clear()`` in tests).

    >>> get_service().recommend("42", RecommendQuery()).model_version
    '20261122T011500Z-3fa2c1'
    """
    settings = get_settings()
    return RecommendationService(
        lambda: get_registry().get(),
        PostgresSignals(),
        candidates=settings.candidates,
        lookback=max(SEEN_LOOKBACK, settings.history_length),
    )
