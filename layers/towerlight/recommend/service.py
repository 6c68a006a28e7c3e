"""The recommendation domain: who the user is (Postgres), what the model says, what the rules allow.

Per request: one query for the user's recent events, removed items and (when the model uses them)
attributes, plus cached inactive item and promotion lookups; the strategy's candidates (``strategies``:
two-tower top-C, content, popularity or a hybrid of them), filtered by the ``Exclusions`` over those
candidates only; then the page (``rules``: promotions, per-category caps, strict back-fill from
popularity, then from any item) and, with ``explain``, the reasons of each item (``explain``). A user
without history gets popularity (their demographic segment's when the version publishes one); a
database that cannot be read degrades to popularity instead of failing.

Example::

    >>> service = RecommendationService(get_registry().get, PostgresSignals())
    >>> result = service.recommend("42", RecommendQuery(k=3, exclude_categories=("Horror",)))
    >>> result.strategy, [item.item_id for item in result.items]
    ('two_tower', ['174', '50', '181'])
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache
from itertools import chain
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import psycopg

from towerlight.bandit.state import user_segment
from towerlight.config import DEFAULT_CANDIDATES, env_number, get_settings
from towerlight.db import connection as db_connection
from towerlight.db.catalog import inactive_items
from towerlight.db.events import history_and_removed
from towerlight.db.promotions import Promotion, live_promotions
from towerlight.errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    ModelUnavailableError,
    NotFoundError,
    ValidationError,
)
from towerlight.event_types import POSITIVE_EVENT_TYPES
from towerlight.experiments import Experiment, current_experiment
from towerlight.exploration.records import Exploration
from towerlight.ids import time_ordered_id
from towerlight.impressions import Impression
from towerlight.model.bundle import ModelBundle
from towerlight.model.pinned import PinnedModels
from towerlight.model.registry import get_registry
from towerlight.recommend.explain import reasons
from towerlight.recommend.filters import EMPTY_ROWS, Exclusions, build_exclusions, catalogue_chunks, sorted_rows
from towerlight.recommend.rules import DEFAULT_MAX_PROMOTED, LivePromotions, PageRules, Placement, assemble_page
from towerlight.recommend.strategies import (
    CONTENT_HISTORY,
    DEFAULT_HYBRID_WEIGHTS,
    BestAvailable,
    HybridWeights,
    StrategyChoice,
    StrategyPolicy,
    TwoTowerScorer,
    UserContext,
    history_rows,
    ranker_contributions,
    resolve,
    scorer_for,
)

if TYPE_CHECKING:
    from towerlight.exploration.explorer import ItemExplorer

logger = logging.getLogger(__name__)

# Events read per request: the tower uses the newest positive ones, the seen-filter all of them.
SEEN_LOOKBACK = 200
_POSITIVE = frozenset(POSITIVE_EVENT_TYPES)
_DATABASE_ERRORS = (DatabaseUnavailableError, ConfigurationError, psycopg.Error)


# ---- request and result ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RecommendQuery:
    """What a caller asks for (already validated at the edge).

    >>> RecommendQuery(k=5, exclude=("50",), categories=("Comedy",), strict=True)
    """

    k: int = 10
    strategy: str = "auto"  # auto | two_tower | popularity | content | hybrid
    exclude_seen: bool = True
    exclude: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    exclude_categories: tuple[str, ...] = ()
    strict: bool = False
    weights: HybridWeights | None = None  # hybrid only; None: the service's default weights
    max_per_category: int | None = None
    explain: bool = False


@dataclass(frozen=True, slots=True)
class ScoredItem:
    item_id: str
    score: float | None  # None: an item the model cannot score (``rank`` of an unknown id)
    rank: int
    reasons: dict[str, Any] | None = None  # with explain=true (see towerlight.recommend.explain)


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
    segment: str = "cold"  # the strategy bandit's context (towerlight.bandit.state.user_segment)
    propensity: float = 1.0  # the probability with which ``strategy`` was chosen
    exploration: Exploration | None = None  # the explore slot's decision, when item exploration is on

    def impression(self, created_at: datetime) -> Impression:
        """What was shown, as ingest stores it and the strategy bandit learns from it."""
        return Impression(
            recommendation_id=self.recommendation_id,
            user_id=self.user_id,
            segment=self.segment,
            strategy=self.strategy,
            model_version=self.model_version,
            item_ids=tuple(item.item_id for item in self.items),
            propensity=self.propensity,
            created_at=created_at,
            variant=self.variant,
            exploration=self.exploration,
        )

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
    return [
        {"item_id": i.item_id, "score": i.score, "rank": i.rank}
        if i.reasons is None
        else {"item_id": i.item_id, "score": i.score, "rank": i.rank, "reasons": i.reasons}
        for i in items
    ]


def _scored(
    bundle: ModelBundle, rows: np.ndarray, scores: np.ndarray, explained: list[dict[str, Any]] | None = None
) -> list[ScoredItem]:
    ids = bundle.catalogue.item_ids[rows].tolist()
    why: list[dict[str, Any] | None] = list(explained) if explained is not None else [None] * len(ids)
    return [
        ScoredItem(i, round(s, 6), r, w) for r, (i, s, w) in enumerate(zip(ids, scores.tolist(), why, strict=True), 1)
    ]


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
    times: tuple[float, ...] = ()  # unix seconds of the history events, for the ranker's time features


class SignalSource(Protocol):
    """Where the service reads users, the inactive items and the promotions from (Postgres, or a fake)."""

    def user(self, user_id: str, lookback: int, *, attributes: bool) -> UserSignals: ...

    def inactive_items(self) -> frozenset[str]: ...

    def promotions(self) -> tuple[Promotion, ...]: ...


@dataclass
class _Expiring:
    value: Any
    expires: float


@dataclass
class PostgresSignals:
    """``SignalSource`` on the shared Postgres connection: one query (one round trip) per request.

    The inactive items and the live promotions are cached for a short time; after a database failure
    the source answers "unavailable" for ``retry_after`` seconds instead of waiting on a dead server for
    every request.

    >>> PostgresSignals().user("42", 200, attributes=True).history[:3]
    ('50', '181', '1')
    """

    inactive_ttl: float = 30.0
    retry_after: float = 5.0
    connection: Callable[[], psycopg.Connection] = db_connection.shared_connection
    clock: Callable[[], float] = time.monotonic
    _shared: dict[str, _Expiring] = field(default_factory=dict, init=False, repr=False)
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
        positive = [e for e in history if e.event_type in _POSITIVE]
        times = tuple(e.ts.timestamp() for e in positive)
        return UserSignals(tuple(e.item_id for e in positive), frozenset(removed), attrs, times=times)

    def inactive_items(self) -> frozenset[str]:
        return self._cached("inactive", lambda conn: frozenset(inactive_items(conn)), frozenset())

    def promotions(self) -> tuple[Promotion, ...]:
        return self._cached("promotions", lambda conn: tuple(live_promotions(conn)), ())

    def _cached(self, key: str, read: Callable[[psycopg.Connection], Any], empty: Any) -> Any:
        """A catalogue-wide table read at most every ``inactive_ttl`` seconds.

        An unchanged value keeps its identity, so callers may cache what they derive from it.
        """
        now = self.clock()
        cached = self._shared.get(key) or _Expiring(empty, float("-inf"))
        if now < cached.expires or now < self._down_until:
            return cached.value
        try:
            with self._lock, self._reading() as conn:
                value = read(conn)
        except _DATABASE_ERRORS as exc:
            self._failed(exc, now)
            return cached.value  # the last known value is better than none
        self._shared[key] = _Expiring(value if value != cached.value else cached.value, now + self.inactive_ttl)
        return self._shared[key].value

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


# ---- the service -----------------------------------------------------------------------------------------
class RecommendationService:
    """Recommendations, ranking and similar items from the served model and the user's signals.

    ``model`` returns the bundle to serve (``ModelRegistry.get``); ``signals`` reads users from Postgres;
    ``policy`` picks the strategy of ``auto`` requests; ``weights`` are the hybrid's default weights;
    ``max_promoted`` caps the promoted items of one page; ``explorer`` (VW item exploration) picks one slot's
    item of ``auto`` requests.

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
        candidates: int = DEFAULT_CANDIDATES,
        lookback: int = SEEN_LOOKBACK,
        policy: StrategyPolicy | None = None,
        weights: HybridWeights = DEFAULT_HYBRID_WEIGHTS,
        max_promoted: int = DEFAULT_MAX_PROMOTED,
        experiment: Experiment | None = None,
        explorer: ItemExplorer | None = None,
        pinned: PinnedModels | None = None,
    ) -> None:
        if experiment is not None and experiment.model_versions and pinned is None:
            raise ConfigurationError(
                f"experiment {experiment.name!r}: variants pin model versions but no PinnedModels serves them",
                {"model_versions": sorted(experiment.model_versions)},
            )
        self._experiment = experiment
        self._pinned = pinned
        self._model = model
        self._signals = signals
        self.candidates = candidates
        self.lookback = lookback
        self.policy = policy or BestAvailable()
        self.weights = weights
        self.max_promoted = max_promoted
        self.explorer = explorer
        self._inactive_cache: tuple[ModelBundle, frozenset[str], np.ndarray] | None = None

    @property
    def learns_online(self) -> bool:
        """Whether a bandit picks ``auto``'s strategy or its items, or an experiment runs: then impressions are
        worth logging (they carry the decisions to ingest, which learns from them)."""
        return self._experiment is not None or self.explorer is not None or not isinstance(self.policy, BestAvailable)

    def recommend(self, user_id: str, query: RecommendQuery) -> Recommendations:
        """Top-``query.k`` items for ``user_id``, best first (promotions and caps applied).

        >>> service.recommend("42", RecommendQuery(k=2)).items
        [ScoredItem(item_id='174', score=0.61, rank=1), ScoredItem(item_id='50', score=0.58, rank=2)]
        """
        bundle = self._model()
        weights = query.weights or self.weights
        variant = self._experiment.assign(user_id) if self._experiment else None
        left_out = False
        if variant is not None and variant.model_version is not None:
            assert self._pinned is not None  # checked at construction
            try:
                bundle = self._pinned.get(variant.model_version, bundle)
            except ModelUnavailableError:
                # Served by CURRENT but outside the experiment: its results must not count for the variant.
                variant, left_out = None, True
        requested = query.strategy
        if variant is not None and variant.strategy is not None and query.strategy == "auto":
            requested = variant.strategy  # an experiment variant may pin what requests leave to the service
        context, user = self._context(bundle, user_id, requested, weights)
        if left_out:
            context.fallbacks.append("variant_model_unavailable")
        choice = resolve(requested, context, weights, self.policy)
        if variant is not None:
            choice = replace(choice, variant=variant.name)
        scorer = scorer_for(context, choice.strategy, weights, self.candidates)
        rules = build_exclusions(
            bundle.catalogue,
            banned_ids=user.removed.union(query.exclude, user.history if query.exclude_seen else ()),
            inactive_rows=self._inactive_rows(bundle),
            categories=query.categories,
            exclude_categories=query.exclude_categories,
        )
        page_rules = PageRules(query.k, query.max_per_category, self.max_promoted, query.strict)
        promotions = LivePromotions.select(self._signals.promotions(), bundle.catalogue, rules, page_rules)
        # Caps skip candidates and boosts climb a share of the top-C: both need the whole candidate list.
        simple = query.max_per_category is None and not promotions.boosts
        pool = query.k if simple else max(query.k, self.candidates)
        explorer = self.explorer if query.strategy == "auto" else None  # only auto decisions are logged
        if explorer is not None:
            pool = max(pool, explorer.pool_size(query.k))
        candidates = scorer.candidates(rules, pool, query.k)
        page = assemble_page(
            candidates,
            page_rules,
            bundle.catalogue,
            rules,
            promotions=promotions,
            backfill=_backfill_sources(bundle, context.popular, rules),
        )
        if any(rule["rule"] == "backfilled" for placed in page for rule in placed.applied):
            context.fallbacks.append("backfill")
        recommendation_id = time_ordered_id()
        exploration = None
        if explorer is not None:
            capped = query.max_per_category is not None  # a new item could break the cap: reorder the page only
            page, exploration = explorer.explore(
                context, scorer, choice.strategy, page, candidates, recommendation_id, reorder_only=capped
            )
        rows = np.fromiter((p.row for p in page), dtype=np.int64, count=len(page))
        explained = reasons(context, scorer, page, ranker_contributions(scorer, rows)) if query.explain else None
        items = _scored(bundle, rows, scorer.scores(rows), explained)
        return self._answer(user_id, bundle, context, choice, items, recommendation_id, exploration)

    def rank(
        self,
        user_id: str,
        item_ids: Sequence[str],
        strategy: str = "auto",
        *,
        weights: HybridWeights | None = None,
        explain: bool = False,
    ) -> Recommendations:
        """The caller's ``item_ids`` in ``user_id``'s order by ``strategy``, best first; nothing is filtered out.

        Ids the model does not know come last, in the caller's order, with a null score (a hybrid
        normalises its components over the caller's known items).

        >>> [(i.item_id, i.score) for i in service.rank("42", ["181", "new-item", "50"]).items]
        [('50', 0.58), ('181', 0.41), ('new-item', None)]
        """
        bundle = self._model()
        weights = weights or self.weights
        context, _ = self._context(bundle, user_id, strategy, weights)
        choice = resolve(strategy, context, weights, self.policy)
        scorer = scorer_for(context, choice.strategy, weights, self.candidates)
        catalogue = bundle.catalogue
        wanted = list(dict.fromkeys(item_ids))
        known = [(item_id, row) for item_id in wanted if (row := catalogue.row_of(item_id)) is not None]
        rows = np.fromiter((row for _, row in known), dtype=np.int64, count=len(known))
        scores = scorer.scores(rows)
        order = np.argsort(-scores, kind="stable")
        rows, scores = rows[order], scores[order]
        placed = [Placement(int(row)) for row in rows]
        explained = reasons(context, scorer, placed, ranker_contributions(scorer, rows)) if explain else None
        items = _scored(bundle, rows, scores, explained)
        unknown = [item_id for item_id in wanted if catalogue.row_of(item_id) is None]
        unexplained = {"retrieval": {"source": "unknown"}, "ranker": [], "rules": []} if explain else None
        items += [ScoredItem(item_id, None, len(items) + n, unexplained) for n, item_id in enumerate(unknown, 1)]
        return self._answer(user_id, bundle, context, choice, items)

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
        rules = Exclusions(banned=np.array([row], dtype=np.int64), inactive=self._inactive_rows(bundle))
        vector = bundle.two_tower.embeddings[row]
        context = UserContext(bundle, EMPTY_ROWS, bundle.popularity.rows, None, vector=vector)
        scorer = TwoTowerScorer(context, self.candidates)
        rows = scorer.candidates(rules, k)
        return SimilarItems(item_id, bundle.version, _scored(bundle, rows, scorer.scores(rows)))

    def _context(
        self, bundle: ModelBundle, user_id: str, strategy: str, weights: HybridWeights
    ) -> tuple[UserContext, UserSignals]:
        """Read the user (one query) and compute what ``strategy`` may need: embedding, content profile."""
        wanted = wanted_strategies(strategy, weights, getattr(self.policy, "arms", ()))
        tower = bundle.two_tower if wanted & {"auto", "two_tower"} else None
        wants_attributes = bool(bundle.popularity.segments) or bool(tower and tower.spec.user_fields)
        user = self._signals.user(user_id, self.lookback, attributes=wants_attributes)
        return user_context(bundle, user, strategy, wanted), user

    @staticmethod
    def _answer(
        user_id: str,
        bundle: ModelBundle,
        context: UserContext,
        choice: StrategyChoice,
        items: list[ScoredItem],
        recommendation_id: str | None = None,
        exploration: Exploration | None = None,
    ) -> Recommendations:
        return Recommendations(
            user_id=user_id,
            recommendation_id=recommendation_id or time_ordered_id(),
            model_version=bundle.version,
            strategy=choice.strategy,
            variant=choice.variant,
            items=items,
            fallbacks=tuple(context.fallbacks),
            segment=user_segment(len(context.history)),
            propensity=choice.propensity,
            exploration=exploration,
        )

    def _inactive_rows(self, bundle: ModelBundle) -> np.ndarray:
        """Rows of the inactive items, recomputed only when the set or the bundle changes."""
        ids = self._signals.inactive_items()
        cached = self._inactive_cache
        if cached is not None and cached[0] is bundle and cached[1] is ids:
            return cached[2]
        rows = sorted_rows(bundle.catalogue.rows_of(ids)) if ids else EMPTY_ROWS
        self._inactive_cache = (bundle, ids, rows)
        return rows


def wanted_strategies(strategy: str, weights: HybridWeights, arms: Iterable[str] = ()) -> set[str]:
    """What a request for ``strategy`` may serve: a hybrid's weighted parts, or an ``auto`` policy's ``arms``.

    >>> sorted(wanted_strategies("hybrid", HybridWeights.parse("two_tower:1,content:1")))
    ['content', 'two_tower']
    """
    wanted = {name for name, w in weights.weights.items() if w > 0} if strategy == "hybrid" else {strategy}
    if strategy == "auto":  # a bandit may choose any of its arms: prepare each (BestAvailable has none)
        wanted |= set(arms)
    return wanted


def user_context(
    bundle: ModelBundle, user: UserSignals, strategy: str, wanted: set[str], *, now: float | None = None
) -> UserContext:
    """What the ``wanted`` strategies need to score for ``user``: embedding, content profile, popularity.

    ``now`` is the request's time (default: the clock); offline evaluation replays a past request with it.

    >>> context = user_context(bundle, UserSignals(("50", "181")), "content", {"content"})
    >>> context.profile is not None, context.vector is None
    (True, True)
    """
    tower = bundle.two_tower if wanted & {"auto", "two_tower"} else None
    fallbacks: list[str] = []
    if tower is None and wanted & {"auto", "two_tower"}:
        fallbacks.append("popularity_only_model")
    if not user.available:
        fallbacks.append("database_unavailable")
    spec = bundle.two_tower.spec if bundle.two_tower else None
    popular, segment = bundle.popularity.for_attributes(user.attributes, spec)
    history, times = history_rows(bundle.catalogue, user.history, user.times)
    context = UserContext(bundle, history, popular, segment, fallbacks=fallbacks, history_times=times)
    if now is not None:
        context.now = now
    if tower is not None and user.available:
        if user.history or strategy == "two_tower":
            context.vector = tower.user_vector(user.history, user.attributes)
        else:
            fallbacks.append("cold_user")
    if bundle.content is not None and ("content" in wanted or ("auto" in wanted and tower is None)):
        if len(history):
            context.profile = bundle.content.profile(history[:CONTENT_HISTORY])
        elif "cold_user" not in fallbacks:
            fallbacks.append("cold_user")
    return context


def _backfill_sources(bundle: ModelBundle, popular: np.ndarray, rules: Exclusions) -> Iterable[np.ndarray]:
    """Where a strict request finds more items: the user's popularity, overall popularity, then anything."""
    lists = [popular] if popular is bundle.popularity.rows else [popular, bundle.popularity.rows]
    everything = rules.included_rows(bundle.catalogue.size)
    return chain(lists, catalogue_chunks(bundle.catalogue.size) if everything is None else [everything])


@lru_cache(maxsize=1)
def get_service() -> RecommendationService:
    """The process-wide service on the registry's model and Postgres (``get_service.cache_clear()`` in tests).

    >>> get_service().recommend("42", RecommendQuery()).model_version
    '20261122T011500Z-3fa2c1'
    """
    # Here, not at the top: the bandit's policy and the explorer use this package's types (import cycle).
    from towerlight.bandit.policy import auto_policy
    from towerlight.exploration.explorer import item_explorer

    settings = get_settings()
    experiment = current_experiment()
    pinned = PinnedModels.for_registry(get_registry(), experiment.model_versions) if experiment else None
    raw_weights = os.environ.get("TOWERLIGHT_HYBRID_WEIGHTS")
    try:
        weights = HybridWeights.parse(raw_weights, source="TOWERLIGHT_HYBRID_WEIGHTS") if raw_weights else None
    except ValidationError as exc:
        raise ConfigurationError(exc.message, exc.details) from exc
    return RecommendationService(
        lambda: get_registry().get(),
        PostgresSignals(),
        candidates=settings.candidates,
        lookback=max(SEEN_LOOKBACK, settings.history_length),
        weights=weights or DEFAULT_HYBRID_WEIGHTS,
        max_promoted=int(env_number("TOWERLIGHT_MAX_PROMOTED", DEFAULT_MAX_PROMOTED, 0)),
        policy=auto_policy(),
        experiment=experiment,
        explorer=item_explorer(),
        pinned=pinned,
    )
