"""Strategies: how one user's candidates are found and scored, and which one ``auto`` serves.

- ``two_tower``: the ONNX user tower's embedding, hnswlib top-C, inner products; when the version
  publishes a ranker, the top-C re-scored by it (``RankedScorer``, see ``towerlight.ranking``).
- ``popularity``: time-decayed popularity (the user's demographic segment's when published).
- ``content``: cosine between the TF-IDF rows of items and the user's profile (their recent items).
- ``hybrid``: a weighted sum of the others' scores, each min-max normalised over the candidate pool
  (the union of every component's candidates, or the caller's list for ``/rank``).
- ``auto``: a ``StrategyPolicy`` picks; ``BestAvailable`` serves the best strategy the model and the user
  allow (two_tower > content > popularity, the offline order). The strategy bandit
  (``towerlight.bandit.thompson.ThompsonSampling``) plugs in as another ``StrategyPolicy``: given the same
  ``UserContext`` (``can_serve`` tells which arms this user allows), it returns a ``StrategyChoice`` with
  its propensity.

A ``Scorer`` is built per request for one user; every candidate list it returns is already filtered by
the request's ``Exclusions`` and best first.

Example::

    >>> scorer = scorer_for(context, "hybrid", HybridWeights.parse("two_tower:0.7,content:0.3"), 200)
    >>> rows = scorer.candidates(rules, 10)
    >>> scorer.scores(rows)[:2]
    array([0.93, 0.88], dtype=float32)
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from towerlight.errors import ValidationError
from towerlight.model.bundle import Catalogue, ModelBundle
from towerlight.ranking import RankingModel
from towerlight.ranking.features import UserHistory
from towerlight.recommend.filters import Exclusions, take_allowed
from towerlight.retrieval import inner_products

STRATEGIES = ("two_tower", "content", "popularity", "hybrid")
# An included category this small is scored whole (exact); a larger one is found among the candidates.
EXACT_CATEGORY_ROWS = 5000
# When filters leave fewer than k of the top-C ANN candidates, search once more this many times wider.
WIDEN_FACTOR = 8
# Recent items a content profile is built from (older ones weigh almost nothing: decay 0.9 per item).
CONTENT_HISTORY = 50


@dataclass(slots=True)
class UserContext:
    """What one request knows about its user: history rows, popularity list, embedding, content profile."""

    bundle: ModelBundle
    history: np.ndarray  # catalogue rows of the recent positive items, newest first
    popular: np.ndarray  # the user's popularity ranking (their segment's, else overall)
    segment: str | None
    vector: np.ndarray | None = None  # two-tower user embedding
    profile: np.ndarray | None = None  # content profile over the version's terms
    fallbacks: list[str] = field(default_factory=list)
    history_times: np.ndarray | None = None  # unix seconds of ``history`` (None: unknown, taken as now)
    now: float = field(default_factory=time.time)  # the request's time (the ranker's time features)

    def can_serve(self, strategy: str) -> bool:
        """Whether ``strategy`` (not hybrid) has what it needs for this user."""
        if strategy == "two_tower":
            return self.vector is not None
        if strategy == "content":
            return self.profile is not None
        return strategy == "popularity"


@dataclass(frozen=True, slots=True)
class StrategyChoice:
    """What ``auto`` serves, the experiment variant to report (None outside experiments), and the
    probability the policy had of choosing it (1 for a deterministic policy; a bandit's impressions log it)."""

    strategy: str
    variant: str | None = None
    propensity: float = 1.0


class StrategyPolicy(Protocol):
    """Picks the strategy of an ``auto`` request (``BestAvailable`` today; a bandit later)."""

    def choose(self, context: UserContext) -> StrategyChoice: ...


@dataclass(frozen=True)
class BestAvailable:
    """The first strategy of ``order`` the model and the user allow.

    two_tower first: it leads every offline comparison (README, Train); content serves a user with
    history when the version has no towers; popularity serves everyone else.
    """

    order: tuple[str, ...] = ("two_tower", "content", "popularity")

    def choose(self, context: UserContext) -> StrategyChoice:
        return StrategyChoice(next((s for s in self.order if context.can_serve(s)), "popularity"))


@dataclass(frozen=True)
class HybridWeights:
    """Non-negative weights of the hybrid's components (at least one positive).

    >>> HybridWeights.parse("two_tower:2, popularity:1").weights
    {'two_tower': 2.0, 'popularity': 1.0}
    """

    weights: Mapping[str, float]

    @classmethod
    def parse(cls, text: str, *, source: str = "weights") -> HybridWeights:
        """``name:weight`` pairs, comma-separated; a ``ValidationError`` (422) names what is wrong."""
        weights: dict[str, float] = {}
        components = [s for s in STRATEGIES if s != "hybrid"]
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, raw = part.partition(":")
            name = name.strip()
            try:
                value = float(raw)
            except ValueError:
                value = float("nan")
            if name not in components or not np.isfinite(value) or value < 0:
                raise ValidationError(
                    f"{source}: {part!r} is not <strategy>:<weight> with a strategy of {components} and a weight >= 0",
                    {"parameter": source, "value": part},
                )
            weights[name] = value
        if not any(weights.values()):
            raise ValidationError(f"{source}: at least one weight must be positive", {"parameter": source})
        return cls(weights)

    def usable(self, context: UserContext) -> dict[str, float]:
        """The positive weights of the components this user can be served by."""
        return {name: w for name, w in self.weights.items() if w > 0 and context.can_serve(name)}


DEFAULT_HYBRID_WEIGHTS = HybridWeights({"two_tower": 0.6, "content": 0.25, "popularity": 0.15})


class Scorer(Protocol):
    """One strategy for one user: ``candidates`` (allowed rows, best first) and ``scores`` of any rows.

    ``candidates(rules, n, minimum)`` returns up to ``n`` rows, and searches wider only when fewer than
    ``minimum`` (default ``n``) are allowed: a pool for caps, boosts or a hybrid may fall short of ``n``,
    a page may not fall short of ``k``.
    """

    name: str

    def candidates(self, rules: Exclusions, n: int, minimum: int | None = None) -> np.ndarray: ...

    def scores(self, rows: np.ndarray) -> np.ndarray: ...


def _top(rows: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` best ``rows`` by ``scores``, best first (ties: the lower row first)."""
    if len(rows) > k:
        part = np.argpartition(-scores, k - 1)[:k]
        rows, scores = rows[part], scores[part]
    return rows[np.lexsort((rows, -scores))]


def _small_category(scorer: Scorer, rules: Exclusions, n: int) -> np.ndarray | None:
    """Exact top-``n`` over a small included category (None when no small category is asked for)."""
    small = rules.included_rows(EXACT_CATEGORY_ROWS)
    if small is None:
        return None
    rows = small[rules.allowed(small)]
    return _top(rows, scorer.scores(rows), n)


@dataclass
class TwoTowerScorer:
    context: UserContext
    fetch: int  # ANN candidates asked for (top-C)
    name: str = "two_tower"

    def scores(self, rows: np.ndarray) -> np.ndarray:
        tower = self.context.bundle.two_tower
        assert tower is not None and self.context.vector is not None  # can_serve("two_tower")
        return inner_products(tower.embeddings[rows], self.context.vector)

    def candidates(self, rules: Exclusions, n: int, minimum: int | None = None) -> np.ndarray:
        exact = _small_category(self, rules, n)
        if exact is not None:
            return exact
        tower = self.context.bundle.two_tower
        assert tower is not None and self.context.vector is not None
        size = tower.retriever.size
        fetch = min(max(self.fetch, n), size)
        enough = n if minimum is None else min(minimum, n)
        # Banned rows are filtered here rather than passed to the index: hnswlib's cost grows with the
        # number of results asked, and a user's seen items rarely fill the top-C.
        for _ in range(2):
            labels = tower.retriever.search(self.context.vector, fetch)[0][0]
            labels = labels[labels >= 0]
            kept = labels[rules.allowed(labels)]
            if len(kept) >= enough or fetch >= size:
                break
            fetch = min(fetch * WIDEN_FACTOR + len(rules.banned), size)  # harsh filters: once more, wider
        return kept[:n]


# ---- the second stage (ranker) ----------------------------------------------------------------------------
def history_rows(catalogue: Catalogue, history: Sequence[str], times: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Catalogue rows of the known ``history`` items and their times (missing times: now), newest first."""
    now = time.time()
    timed = zip(history, [*times[: len(history)], *[now] * (len(history) - len(times))], strict=True)
    known = [(row, t) for item, t in timed if (row := catalogue.row_of(item)) is not None]
    rows = np.fromiter((r for r, _ in known), dtype=np.int64, count=len(known))
    return rows, np.fromiter((t for _, t in known), dtype=np.float64, count=len(known))


@dataclass(frozen=True, slots=True)
class _Rescored:
    """Ranker scores and feature rows of distinct catalogue rows, sorted by row for binary-search lookups."""

    rows: np.ndarray  # int64, ascending, distinct
    scores: np.ndarray  # float64
    x: np.ndarray  # float32 [rows, features]

    @classmethod
    def empty(cls, width: int) -> _Rescored:
        return cls(np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros((0, width), dtype=np.float32))

    def missing(self, rows: np.ndarray) -> np.ndarray:
        """The distinct ``rows`` these do not hold, ascending."""
        fresh = np.unique(rows)
        if not len(self.rows):
            return fresh
        at = np.minimum(np.searchsorted(self.rows, fresh), len(self.rows) - 1)
        return fresh[self.rows[at] != fresh]

    def plus(self, rows: np.ndarray, scores: np.ndarray, x: np.ndarray) -> _Rescored:
        """These and ``missing`` rows (ascending, as ``missing`` returns them) with their scores and features."""
        if not len(self.rows):  # the request's first rows: sorted already
            return _Rescored(rows, scores, x)
        rows, scores, x = (np.concatenate(pair) for pair in ((self.rows, rows), (self.scores, scores), (self.x, x)))
        order = np.argsort(rows, kind="stable")
        return _Rescored(rows[order], scores[order], x[order])


@dataclass
class RankedScorer:
    """``two_tower`` with the version's ranker: the tower's top-C (at least ``fetch``) re-scored by it.

    Ranker features depend only on (user, item), so ``scores`` serves any rows (``/rank`` lists too), and
    each row is computed once per request (at the context's ``now``): the page and its explanations
    re-read what the candidates computed, by binary search over arrays.
    """

    retrieval: TwoTowerScorer
    ranking: RankingModel
    name: str = "two_tower"
    _user: UserHistory = field(init=False, repr=False)
    _known: _Rescored = field(init=False, repr=False)

    def __post_init__(self) -> None:
        context = self.retrieval.context
        known = context.history_times
        times = known if known is not None else np.full(len(context.history), context.now)
        self._user = UserHistory(context.history, times)
        self._known = _Rescored.empty(len(self.ranking.ranker.features))

    def _rescore(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ranker scores (float64) and feature rows of ``rows``, computing only the rows not seen before."""
        fresh = self._known.missing(rows)
        if len(fresh):
            scores, x = self.ranking.rescore(
                self._user, self.retrieval.context.now, fresh, self.retrieval.scores(fresh)
            )
            self._known = self._known.plus(fresh, scores, x)
        at = np.searchsorted(self._known.rows, rows)
        return self._known.scores[at], self._known.x[at]

    def scores(self, rows: np.ndarray) -> np.ndarray:
        return self._rescore(rows)[0].astype(np.float32)

    def candidates(self, rules: Exclusions, n: int, minimum: int | None = None) -> np.ndarray:
        # The pool is the allowed part of the top-C whatever the page size, so pages of 5 and of 200 agree.
        wanted = n if minimum is None else minimum
        rows = self.retrieval.candidates(rules, max(n, self.retrieval.fetch), wanted)
        return _top(rows, self.scores(rows), n)

    def contributions(self, rows: np.ndarray) -> dict[int, list[tuple[str, float]]]:
        """Each row's ranker features that raised its score, strongest first (for ``explain``)."""
        contributions = self.ranking.contributions(self._rescore(rows)[1])
        names = self.ranking.ranker.features
        order = np.argsort(-contributions, axis=1, kind="stable")
        return {
            int(row): [(names[i], float(c[i])) for i in o if c[i] > 0]
            for row, c, o in zip(rows.tolist(), contributions, order, strict=True)
        }


def ranker_contributions(scorer: Scorer, rows: np.ndarray) -> dict[int, list[tuple[str, float]]] | None:
    """The ranker's feature contributions of ``rows`` when ``scorer`` re-ranks with one, else None."""
    return scorer.contributions(rows) if isinstance(scorer, RankedScorer) else None


@dataclass
class PopularityScorer:
    context: UserContext
    name: str = "popularity"

    def scores(self, rows: np.ndarray) -> np.ndarray:
        return self.context.bundle.popularity.score_by_row[rows]

    def candidates(self, rules: Exclusions, n: int, minimum: int | None = None) -> np.ndarray:
        exact = _small_category(self, rules, n)
        return exact if exact is not None else take_allowed([self.context.popular], rules, n)


@dataclass
class ContentScorer:
    context: UserContext
    name: str = "content"

    def scores(self, rows: np.ndarray) -> np.ndarray:
        content, profile = self.context.bundle.content, self.context.profile
        assert content is not None and profile is not None  # can_serve("content")
        return content.scores(profile, rows)

    def candidates(self, rules: Exclusions, n: int, minimum: int | None = None) -> np.ndarray:
        exact = _small_category(self, rules, n)
        if exact is not None:
            return exact
        content, profile = self.context.bundle.content, self.context.profile
        assert content is not None and profile is not None
        rows, scores = content.score_all(profile)
        keep = rules.allowed(rows)
        return _top(rows[keep], scores[keep], n)


@dataclass
class HybridScorer:
    """Weighted sum of min-max normalised component scores; the ranges are fitted on the first pool seen.

    The pool is the union of each component's top ``pool`` candidates, so an item good for several
    components but first for none still competes.
    """

    parts: Mapping[str, Scorer]
    weights: Mapping[str, float]
    pool: int = 0
    name: str = "hybrid"
    _ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    _last: tuple[np.ndarray, dict[str, np.ndarray]] | None = None  # the page's scores, reused by explain

    def components(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Each component's normalised score of ``rows`` in [0, 1] (fits the ranges on first use)."""
        if self._last is not None and np.array_equal(self._last[0], rows):
            return self._last[1]
        out = {}
        for name, scorer in self.parts.items():
            raw = scorer.scores(rows)
            if name not in self._ranges and len(raw):
                self._ranges[name] = (float(raw.min()), float(raw.max()))
            low, high = self._ranges.get(name, (0.0, 0.0))
            out[name] = np.clip((raw - low) / (high - low), 0, 1) if high > low else np.ones_like(raw)
        self._last = (rows, out)
        return out

    def scores(self, rows: np.ndarray) -> np.ndarray:
        total = sum(self.weights.values())
        parts = self.components(rows)
        combined = sum(self.weights[name] * parts[name] for name in parts) / total
        return np.asarray(combined, dtype=np.float32)

    def candidates(self, rules: Exclusions, n: int, minimum: int | None = None) -> np.ndarray:
        fetch, enough = max(n, self.pool), n if minimum is None else minimum
        pool = np.unique(np.concatenate([part.candidates(rules, fetch, enough) for part in self.parts.values()]))
        return _top(pool, self.scores(pool), n)


def scorer_for(context: UserContext, strategy: str, weights: HybridWeights, fetch: int) -> Scorer:
    """The ``Scorer`` of a resolved ``strategy`` (see ``resolve``) for this user."""
    if strategy == "hybrid":
        usable = weights.usable(context)
        return HybridScorer({name: scorer_for(context, name, weights, fetch) for name in usable}, usable, fetch)
    if strategy == "two_tower":
        ranking = context.bundle.ranking
        tower = TwoTowerScorer(context, fetch)
        return tower if ranking is None else RankedScorer(tower, ranking)
    if strategy == "content":
        return ContentScorer(context)
    return PopularityScorer(context)


def resolve(requested: str, context: UserContext, weights: HybridWeights, policy: StrategyPolicy) -> StrategyChoice:
    """The strategy served for ``requested``: itself when the model and user allow it, else the policy's.

    A hybrid left with one usable component is served as that component; each substitution is added to
    ``context.fallbacks`` as ``<requested>_unavailable``.
    """
    if requested == "auto":
        return policy.choose(context)
    if requested == "hybrid":
        usable = weights.usable(context)
        if len(usable) >= 2:
            return StrategyChoice("hybrid")
        if usable:
            context.fallbacks.append("hybrid_unavailable")
            return StrategyChoice(next(iter(usable)))
    elif context.can_serve(requested):
        return StrategyChoice(requested)
    context.fallbacks.append(f"{requested}_unavailable")
    return policy.choose(context)
