"""Business rules and strategies on a toy catalogue whose answers can be read off the fixture.

Rows and categories (from test_filters): Comedy (0) = rows 0, 2, 6; Drama (1) = rows 1, 4, 6;
Horror (2) = rows 2, 3, 7; row 5 has no category.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_filters import FakeSignals, make_catalogue, no_rules, popularity_bundle

from towerlight.db.promotions import Promotion
from towerlight.errors import ConfigurationError, ValidationError, http_status
from towerlight.recommend.filters import EMPTY_ROWS, Exclusions, catalogue_chunks, sorted_rows
from towerlight.recommend.rules import (
    LivePromotions,
    NotEnoughItemsError,
    PageRules,
    apply_boosts,
    assemble_page,
)
from towerlight.recommend.service import RecommendationService, RecommendQuery, UserSignals, get_service
from towerlight.recommend.strategies import (
    BestAvailable,
    HybridScorer,
    HybridWeights,
    UserContext,
    resolve,
)


def rows_of(page: list) -> list[int]:
    return [p.row for p in page]


# ---- per-category caps ------------------------------------------------------------------------------------
def test_the_category_cap_skips_rows_of_full_categories_and_says_who_took_their_place() -> None:
    # GIVEN candidates 0 (Comedy), 2 (Comedy, Horror), 6 (Comedy, Drama), 3 (Horror), 1 (Drama), 5 (none)
    ranked = np.array([0, 2, 6, 3, 1, 5])
    # WHEN four are placed with at most one item per category
    page = assemble_page(ranked, PageRules(k=4, max_per_category=1), make_catalogue(), no_rules())
    # THEN 2 and 6 (Comedy is full) are skipped, and 3 says it replaced them
    assert rows_of(page) == [0, 3, 1, 5]
    assert [p.applied for p in page] == [[], [{"rule": "capped", "skipped": 2}], [], []]


def test_without_a_cap_the_page_is_the_top_k_untouched() -> None:
    page = assemble_page(np.array([6, 2, 0, 4]), PageRules(k=3), make_catalogue(), no_rules())
    assert rows_of(page) == [6, 2, 0] and all(p.applied == [] for p in page)


def test_strict_backfill_respects_the_cap_and_fails_when_the_cap_makes_k_impossible() -> None:
    catalogue = make_catalogue()
    # GIVEN one Comedy candidate, and the catalogue to back-fill from, with at most one item per category
    page = assemble_page(
        np.array([0]),
        PageRules(k=4, max_per_category=1, strict=True),
        catalogue,
        no_rules(),
        backfill=catalogue_chunks(8),
    )
    # THEN back-fill takes Drama's 1 and Horror's 3, skipping rows 2 (Comedy is full), then category-less 5
    assert rows_of(page) == [0, 1, 3, 5]
    assert page[1].applied == [{"rule": "backfilled"}]
    assert page[2].applied == [{"rule": "backfilled"}, {"rule": "capped", "skipped": 1}]
    # WHEN five are required THEN the cap leaves only four: a 422 that says so
    with pytest.raises(NotEnoughItemsError) as caught:
        assemble_page(
            np.array([0]),
            PageRules(k=5, max_per_category=1, strict=True),
            catalogue,
            no_rules(),
            backfill=catalogue_chunks(8),
        )
    assert http_status(caught.value) == 422 and caught.value.details == {"requested": 5, "available": 4}


# ---- promotions ----------------------------------------------------------------------------------------------
def test_boosts_climb_by_a_share_of_the_candidate_list() -> None:
    # GIVEN ten candidates (rank scores 1, 0.9, ..., 0.1) and boosts: row 9 by 0.45, row 42 (not
    # retrieved, rank score 0) by 1
    ranked = np.arange(10)
    # WHEN applied THEN 9 (0.55) climbs behind row 4 (0.6), and 42 ties row 0 (1.0) and, boosted, goes first
    assert apply_boosts(ranked, {9: 0.45, 42: 1.0}).tolist() == [42, 0, 1, 2, 3, 4, 9, 5, 6, 7, 8]
    assert apply_boosts(ranked, {}) is ranked


def test_only_allowed_promotions_are_used_pins_first_up_to_the_page_cap() -> None:
    catalogue = make_catalogue()
    rules = Exclusions(banned=sorted_rows([3]), inactive=EMPTY_ROWS)
    promotions = [
        Promotion("i3", "pin", position=1),  # banned for this user: never shown
        Promotion("i7", "pin", position=9),  # beyond a page of 5
        Promotion("i1", "boost", boost=0.5),
        Promotion("i4", "pin", position=3),
        Promotion("i6", "boost", boost=0.9),
        Promotion("unknown", "pin", position=2),  # not in this model version
    ]
    # WHEN selected for a page of 5 with at most 2 promoted items
    live = LivePromotions.select(promotions, catalogue, rules, PageRules(k=5, max_promoted=2))
    # THEN the pin at 3 and the strongest boost make it
    assert dict(live.pins) == {3: 4} and dict(live.boosts) == {6: 0.9}


def test_pins_hold_their_position_and_count_towards_the_category_cap() -> None:
    catalogue = make_catalogue()
    promotions = LivePromotions(pins={1: 7, 3: 4}, boosts={})
    # GIVEN candidates 0, 3, 2, 5 and pins 7 (Horror) at 1 and 4 (Drama) at 3, one item per category
    page = assemble_page(
        np.array([0, 3, 2, 5]), PageRules(k=4, max_per_category=1), catalogue, no_rules(), promotions=promotions
    )
    # THEN the pins are at 1 and 3, Horror's 3 and 2 are capped by the pinned 7
    assert rows_of(page) == [7, 0, 4, 5]
    assert page[0].applied == [{"rule": "pinned", "position": 1}]
    assert page[3].applied == [{"rule": "capped", "skipped": 2}]


def test_a_pin_beyond_a_short_page_closes_it() -> None:
    page = assemble_page(
        np.array([0]), PageRules(k=5), make_catalogue(), no_rules(), promotions=LivePromotions({4: 6}, {})
    )
    assert rows_of(page) == [0, 6] and page[1].applied == [{"rule": "pinned", "position": 2}]


def test_the_service_applies_promotions_after_the_users_filters() -> None:
    # GIVEN a popularity bundle (3, 0, 6, 1, 2), a user who saw i3, and promotions of i3 and i5
    signals = FakeSignals(
        UserSignals(("i3",), frozenset(), {}),
        promotions=(Promotion("i3", "pin", position=1), Promotion("i5", "pin", position=2)),
    )
    service = RecommendationService(popularity_bundle, signals)
    # WHEN three items are recommended, explained
    result = service.recommend("u1", RecommendQuery(k=3, explain=True))
    # THEN the seen i3 is not shown, i5 is pinned second with popularity's score of 0
    assert [(i.item_id, i.score) for i in result.items] == [("i0", 0.8), ("i5", 0.0), ("i6", 0.6)]
    assert result.items[1].reasons == {
        "retrieval": {"source": "popularity"},
        "ranker": [],
        "rules": [{"rule": "pinned", "position": 2}],
    }


# ---- strategies -----------------------------------------------------------------------------------------------
def test_hybrid_weights_parse_and_refuse_bad_input() -> None:
    assert HybridWeights.parse(" two_tower:2 ,content:0.5,").weights == {"two_tower": 2.0, "content": 0.5}
    for bad in ("two_tower", "two_tower:x", "ratings:1", "content:-1", "content:nan", "content:0", ""):
        with pytest.raises(ValidationError) as caught:
            HybridWeights.parse(bad)
        assert http_status(caught.value) == 422


class FixedScorer:
    def __init__(self, name: str, scores: dict[int, float]) -> None:
        self.name = name
        self._scores = scores

    def scores(self, rows: np.ndarray) -> np.ndarray:
        return np.array([self._scores.get(int(r), 0.0) for r in rows], dtype=np.float32)

    def candidates(self, rules: Exclusions, n: int, minimum: int | None = None) -> np.ndarray:
        rows = np.array(sorted(self._scores, key=lambda r: -self._scores[r]), dtype=np.int64)
        return rows[rules.allowed(rows)][:n]


def test_hybrid_is_the_weighted_mean_of_min_max_normalised_component_scores() -> None:
    # GIVEN two components on different scales: a (0..10) and b (0..1)
    a = FixedScorer("two_tower", {0: 10.0, 1: 5.0, 2: 0.0})
    b = FixedScorer("content", {1: 1.0, 2: 0.5, 3: 0.0})
    hybrid = HybridScorer({"two_tower": a, "content": b}, {"two_tower": 1.0, "content": 3.0})
    # WHEN the best three are asked for
    rows = hybrid.candidates(no_rules(), 3)
    # THEN over the pool {0, 1, 2, 3}: a -> 1, .5, 0, 0 and b -> 0, 1, .5, 0, mixed 1:3
    assert rows.tolist() == [1, 2, 0]
    assert hybrid.scores(rows) == pytest.approx([(0.5 + 3) / 4, (0 + 1.5) / 4, (1 + 0) / 4])
    # AND rows outside the pool are scored on the same scale, clipped to [0, 1]
    assert hybrid.components(np.array([7]))["two_tower"].tolist() == [0.0]


def test_auto_serves_the_best_available_strategy_and_explicit_requests_fall_back_to_it() -> None:
    bundle = popularity_bundle()
    cold = UserContext(bundle, EMPTY_ROWS, bundle.popularity.rows, None)
    with_profile = UserContext(
        bundle, np.array([1]), bundle.popularity.rows, None, profile=np.ones(3, dtype=np.float32)
    )
    weights = HybridWeights({"two_tower": 1.0, "content": 1.0})
    # GIVEN no embedding: auto serves content when there is a profile, else popularity
    assert BestAvailable().choose(with_profile).strategy == "content"
    assert BestAvailable().choose(cold).strategy == "popularity"
    # WHEN two_tower or a hybrid that cannot blend is asked for THEN the fallback is served and noted
    assert resolve("two_tower", with_profile, weights, BestAvailable()).strategy == "content"
    assert resolve("hybrid", with_profile, weights, BestAvailable()).strategy == "content"
    assert with_profile.fallbacks == ["two_tower_unavailable", "hybrid_unavailable"]
    assert resolve("hybrid", cold, weights, BestAvailable()).strategy == "popularity"


def test_hybrid_weights_and_the_promotion_cap_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN configured weights and cap WHEN the process-wide service is built THEN it uses them
    monkeypatch.setenv("TOWERLIGHT_HYBRID_WEIGHTS", "content:1,popularity:1")
    monkeypatch.setenv("TOWERLIGHT_MAX_PROMOTED", "0")
    get_service.cache_clear()
    try:
        service = get_service()
        assert service.weights.weights == {"content": 1.0, "popularity": 1.0} and service.max_promoted == 0
        # AND a bad value is a configuration error (503), not a request error
        monkeypatch.setenv("TOWERLIGHT_HYBRID_WEIGHTS", "content")
        get_service.cache_clear()
        with pytest.raises(ConfigurationError) as caught:
            get_service()
        assert http_status(caught.value) == 503
    finally:
        get_service.cache_clear()
