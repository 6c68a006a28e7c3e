"""Filters of the recommend service: row sets, category index, exclusions, strict backfill.

The catalogue here is tiny and hand-made, so every expected answer can be read off the fixture; the
service tests at the end run a popularity-only bundle with a fake signal source (no database, no ONNX).
"""

from __future__ import annotations

from itertools import chain

import numpy as np
import pytest

from towerlight.db.promotions import Promotion
from towerlight.errors import (
    ArtifactError,
    ModelUnavailableError,
    NotFoundError,
    ValidationError,
    http_status,
)
from towerlight.features import Vocabulary
from towerlight.model.bundle import Catalogue, CategoryIndex, ModelBundle, Popularity
from towerlight.recommend.filters import (
    EMPTY_ROWS,
    Exclusions,
    build_exclusions,
    catalogue_chunks,
    contains,
    sorted_rows,
    take_allowed,
)
from towerlight.recommend.rules import NotEnoughItemsError, PageRules, assemble_page
from towerlight.recommend.service import RecommendationService, RecommendQuery, UserSignals

# Eight items; categories per row: Comedy (0), Drama (1), Horror (2).
ITEMS = ["i0", "i1", "i2", "i3", "i4", "i5", "i6", "i7"]
CATEGORIES = ["Comedy", "Drama", "Horror"]
ITEM_CATEGORIES = [[0], [1], [0, 2], [2], [1], [], [0, 1], [2]]


def make_catalogue() -> Catalogue:
    offsets = np.cumsum([0] + [len(c) for c in ITEM_CATEGORIES])
    codes = np.array([c for cs in ITEM_CATEGORIES for c in cs], dtype=np.int32)
    return Catalogue(np.array(ITEMS), Vocabulary(ITEMS), CategoryIndex.from_csr(CATEGORIES, offsets, codes))


def no_rules() -> Exclusions:
    return Exclusions(banned=EMPTY_ROWS, inactive=EMPTY_ROWS)


# ---- row sets and the category index ------------------------------------------------------------------
def test_contains_tests_membership_in_a_sorted_row_set() -> None:
    # GIVEN a sorted row set and candidates inside, between and beyond it
    row_set = sorted_rows([9, 2, 5, 2])
    # WHEN membership is tested
    mask = contains(row_set, np.array([0, 2, 3, 5, 9, 12]))
    # THEN exactly the members are flagged, and an empty set contains nothing
    assert row_set.tolist() == [2, 5, 9]
    assert mask.tolist() == [False, True, False, True, True, False]
    assert contains(EMPTY_ROWS, np.array([1, 2])).tolist() == [False, False]


def test_category_index_transposes_the_items_csr() -> None:
    # GIVEN the catalogue's item -> categories CSR
    index = make_catalogue().categories
    # WHEN rows are asked per category (names in any case)
    comedy, horror = index.codes_of("comedy"), index.codes_of("HORROR")
    # THEN each category lists its items' rows in ascending order
    assert index.rows(comedy[0]).tolist() == [0, 2, 6]
    assert index.rows(index.codes_of("Drama")[0]).tolist() == [1, 4, 6]
    assert index.rows(horror[0]).tolist() == [2, 3, 7]
    assert index.codes_of("Western") == ()


def test_category_index_rejects_codes_outside_the_names() -> None:
    # GIVEN a CSR whose codes name a fourth category that does not exist
    # WHEN it is indexed  THEN the artifact is refused
    with pytest.raises(ArtifactError, match="out of range"):
        CategoryIndex.from_csr(["A"], np.array([0, 1]), np.array([3]))


# ---- exclusions ----------------------------------------------------------------------------------------
def test_exclusions_combine_banned_inactive_and_categories() -> None:
    # GIVEN banned i1 (seen) and i4 (blocked), inactive i6, only Comedy or Horror, never Drama
    catalogue = make_catalogue()
    rules = build_exclusions(
        catalogue,
        banned_ids={"i1", "i4", "not-in-model"},
        inactive_rows=sorted_rows([6]),
        categories=["Comedy", "horror"],
        exclude_categories=["Drama", "Western"],
    )
    # WHEN every row is checked
    allowed = rules.allowed(np.arange(8))
    # THEN only the Comedy/Horror items that are not banned, inactive or Drama remain
    assert np.flatnonzero(allowed).tolist() == [0, 2, 3, 7]
    assert rules.banned_set() == {1, 4}


def test_unknown_included_category_is_a_422_listing_the_known_ones() -> None:
    # GIVEN a category the model does not know
    # WHEN it is required  THEN the request is invalid, and says which categories exist
    with pytest.raises(ValidationError) as caught:
        build_exclusions(make_catalogue(), banned_ids=(), inactive_rows=EMPTY_ROWS, categories=["Western"])
    assert http_status(caught.value) == 422
    assert caught.value.details == {"unknown": ["Western"], "known": CATEGORIES}


def test_included_rows_are_given_whole_only_when_small() -> None:
    # GIVEN a request for Comedy or Horror (rows {0, 2, 6} and {2, 3, 7})
    rules = build_exclusions(make_catalogue(), banned_ids=(), inactive_rows=EMPTY_ROWS, categories=["Comedy", "Horror"])
    # WHEN the included rows are asked under a generous and a tight limit
    # THEN the union comes back once, and nothing when it exceeds the limit
    assert rules.included_rows(limit=100).tolist() == [0, 2, 3, 6, 7]
    assert rules.included_rows(limit=5) is None
    assert no_rules().included_rows(limit=100) is None


# ---- walking lists and strict backfill ------------------------------------------------------------------
def test_take_allowed_walks_sources_in_order_without_repeats() -> None:
    # GIVEN a segment list and an overall list that overlap, with row 3 banned
    rules = Exclusions(banned=sorted_rows([3]), inactive=EMPTY_ROWS)
    # WHEN four rows are taken from them
    rows = take_allowed([np.array([5, 3, 1]), np.array([1, 0, 5, 7, 2])], rules, 4)
    # THEN they come in source order, skipping banned rows and repeats
    assert rows.tolist() == [5, 1, 0, 7]


def test_take_allowed_stops_reading_a_lazy_source_once_it_has_k() -> None:
    # GIVEN a lazily generated catalogue of a million rows
    consumed = []

    def chunks():
        for chunk in catalogue_chunks(1_000_000, chunk=1000):
            consumed.append(len(chunk))
            yield chunk

    # WHEN ten rows are taken
    rows = take_allowed(chunks(), no_rules(), 10)
    # THEN the first ten come back and only the first chunk was ever built
    assert rows.tolist() == list(range(10))
    assert consumed == [1000]


def test_strict_page_backfills_in_source_order_up_to_exactly_k() -> None:
    # GIVEN two personalised rows, a popularity list and the catalogue, with Horror excluded
    catalogue = make_catalogue()
    rules = build_exclusions(catalogue, banned_ids=(), inactive_rows=EMPTY_ROWS, exclude_categories=["Horror"])
    # WHEN five rows are required
    page = assemble_page(
        np.array([6, 1]),
        PageRules(k=5, strict=True),
        catalogue,
        rules,
        backfill=chain([np.array([1, 4, 3])], catalogue_chunks(8)),
    )
    # THEN popularity fills first (without repeating 1 or taking Horror's 3), then the catalogue
    assert [p.row for p in page] == [6, 1, 4, 0, 5]
    assert [p.applied for p in page[:2]] == [[], []]
    assert all(p.applied == [{"rule": "backfilled"}] for p in page[2:])


def test_strict_page_says_how_many_items_exist_when_fewer_than_k() -> None:
    # GIVEN only Horror items (rows 2, 3, 7), one of them banned
    catalogue = make_catalogue()
    rules = build_exclusions(catalogue, banned_ids={"i3"}, inactive_rows=EMPTY_ROWS, categories=["Horror"])
    # WHEN five are required
    with pytest.raises(NotEnoughItemsError) as caught:
        assemble_page(EMPTY_ROWS, PageRules(k=5, strict=True), catalogue, rules, backfill=catalogue_chunks(8))
    # THEN the error is a 422 that names the requested and available counts
    assert http_status(caught.value) == 422
    assert caught.value.code == "not_enough_items"
    assert caught.value.details == {"requested": 5, "available": 2}


# ---- the service on a popularity-only bundle ------------------------------------------------------------
class FakeSignals:
    """A ``SignalSource`` with fixed answers."""

    def __init__(
        self, user: UserSignals, inactive: frozenset[str] = frozenset(), promotions: tuple[Promotion, ...] = ()
    ) -> None:
        self._user = user
        self._inactive = inactive
        self._promotions = promotions
        self.asked_attributes: list[bool] = []

    def user(self, user_id: str, lookback: int, *, attributes: bool) -> UserSignals:
        self.asked_attributes.append(attributes)
        return self._user

    def inactive_items(self) -> frozenset[str]:
        return self._inactive

    def promotions(self) -> tuple[Promotion, ...]:
        return self._promotions


def popularity_bundle() -> ModelBundle:
    catalogue = make_catalogue()
    order = np.array([3, 0, 6, 1, 2], dtype=np.int64)  # five popular items, best first
    scores = np.zeros(8, dtype=np.float32)
    scores[order] = [1.0, 0.8, 0.6, 0.4, 0.2]
    segments = {"gender=F": np.array([1, 6], dtype=np.int64)}
    return ModelBundle("v1", {}, catalogue, Popularity(order, scores, segments), None, 0.0)


def test_popularity_skips_seen_removed_and_inactive_items() -> None:
    # GIVEN a user who saw i3, removed i0, and an inactive i6
    signals = FakeSignals(UserSignals(("i3",), frozenset({"i0"}), {}), inactive=frozenset({"i6"}))
    service = RecommendationService(popularity_bundle, signals)
    # WHEN three items are recommended
    result = service.recommend("u1", RecommendQuery(k=3))
    # THEN they are the popular ones left, best first, from the popularity strategy
    assert [(i.item_id, i.score, i.rank) for i in result.items] == [("i1", 0.4, 1), ("i2", 0.2, 2)]
    assert result.strategy == "popularity" and result.model_version == "v1" and result.variant is None
    assert result.fallbacks == ("popularity_only_model",)


def test_strict_popularity_backfills_from_the_catalogue() -> None:
    # GIVEN the same user
    signals = FakeSignals(UserSignals(("i3",), frozenset({"i0"}), {}), inactive=frozenset({"i6"}))
    service = RecommendationService(popularity_bundle, signals)
    # WHEN exactly four items are required
    result = service.recommend("u1", RecommendQuery(k=4, strict=True))
    # THEN the two popular ones come first, then catalogue order fills up, with popularity score 0
    assert [(i.item_id, i.score) for i in result.items] == [
        ("i1", 0.4),
        ("i2", 0.2),
        ("i4", 0.0),
        ("i5", 0.0),
    ]
    assert "backfill" in result.fallbacks


def test_segment_popularity_is_used_for_matching_attributes() -> None:
    # GIVEN a new user whose attributes match the gender=F segment
    signals = FakeSignals(UserSignals((), frozenset(), {"gender": "F"}))
    service = RecommendationService(popularity_bundle, signals)
    # WHEN recommended
    result = service.recommend("u1", RecommendQuery(k=2))
    # THEN the segment's ranking is served, and attributes were asked for
    assert [i.item_id for i in result.items] == ["i1", "i6"]
    assert signals.asked_attributes == [True]


def test_explicit_exclusions_and_category_filters_apply_to_popularity() -> None:
    # GIVEN a user with no history
    signals = FakeSignals(UserSignals())
    service = RecommendationService(popularity_bundle, signals)
    # WHEN Comedy is required and i0 excluded by id
    result = service.recommend("u1", RecommendQuery(k=5, exclude=("i0",), categories=("Comedy",)))
    # THEN only the other popular comedies come back, best first
    assert [i.item_id for i in result.items] == ["i6", "i2"]


def test_database_trouble_degrades_to_overall_popularity() -> None:
    # GIVEN a signal source that could not read the database
    signals = FakeSignals(UserSignals(available=False))
    service = RecommendationService(popularity_bundle, signals)
    # WHEN recommended
    result = service.recommend("u1", RecommendQuery(k=2))
    # THEN overall popularity is served and the degradation is reported
    assert [i.item_id for i in result.items] == ["i3", "i0"]
    assert "database_unavailable" in result.fallbacks


def test_rank_orders_by_popularity_and_puts_unknown_items_last() -> None:
    # GIVEN a new user and a list mixing popular, unpopular, repeated and unknown items
    service = RecommendationService(popularity_bundle, FakeSignals(UserSignals()))
    # WHEN it is ranked
    result = service.rank("u1", ["i2", "zz", "i5", "i3", "i2"])
    # THEN popular items lead, the catalogue's unscored one follows, the unknown one is last without a score
    assert [(i.item_id, i.score, i.rank) for i in result.items] == [
        ("i3", 1.0, 1),
        ("i2", 0.2, 2),
        ("i5", 0.0, 3),
        ("zz", None, 4),
    ]
    assert result.strategy == "popularity"


def test_similar_items_needs_the_two_tower_model_and_a_known_item() -> None:
    # GIVEN a popularity-only bundle
    service = RecommendationService(popularity_bundle, FakeSignals(UserSignals()))
    # WHEN similar items are asked for an unknown and for a known item
    # THEN the unknown one is a 404 and the known one a 503 (no embeddings to compare)
    with pytest.raises(NotFoundError) as unknown:
        service.similar_items("nope", 3)
    with pytest.raises(ModelUnavailableError) as no_model:
        service.similar_items("i1", 3)
    assert http_status(unknown.value) == 404
    assert http_status(no_model.value) == 503
