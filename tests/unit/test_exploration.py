"""Item exploration without a network: VW features, the PMF and its sampling, the page the explorer returns,
the decision inside impression messages, and the service serving it on a popularity-only bundle."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from towerlight.errors import ArtifactError
from towerlight.exploration.explorer import ItemExplorer, ranked_pmf, sample_action
from towerlight.exploration.features import action_features, escape, user_features, vw_example
from towerlight.exploration.model import (
    VWModel,
    VWModelCache,
    model_key,
    open_workspace,
    publish_vw_model,
    read_vw_pointer,
    save_workspace,
)
from towerlight.exploration.records import Exploration
from towerlight.exploration.settings import ExplorationSettings
from towerlight.features import Vocabulary
from towerlight.impressions import Impression, InvalidImpressionError, impression_message, parse_impression_message
from towerlight.model.bundle import Catalogue, CategoryIndex, ModelBundle, Popularity
from towerlight.recommend.rules import Placement
from towerlight.recommend.service import RecommendationService, RecommendQuery, UserSignals
from towerlight.recommend.strategies import PopularityScorer, UserContext
from towerlight.store import open_store

# Twelve items "m0".."m11"; even rows are Drama, rows divisible by 3 are "Sci Fi" (a space: escaped).
IDS = [f"m{i}" for i in range(12)]
GENRES = ["Drama", "Sci Fi"]
POPULAR = np.arange(12, dtype=np.int64)  # m0 most popular, then m1, ...


def bundle() -> ModelBundle:
    codes = [[g for g, member in ((0, i % 2 == 0), (1, i % 3 == 0)) if member] for i in range(12)]
    offsets = np.concatenate([[0], np.cumsum([len(c) for c in codes])])
    index = CategoryIndex.from_csr(GENRES, offsets, np.array([g for c in codes for g in c], dtype=np.int64))
    catalogue = Catalogue(np.array(IDS), Vocabulary(IDS), index)
    scores = np.array([2.0**-i for i in range(12)], dtype=np.float32)  # each half as popular as the one before
    return ModelBundle("v1", {}, catalogue, Popularity(POPULAR, scores, {}), None, 0.0)


def context(history: list[int] | None = None) -> UserContext:
    return UserContext(bundle(), np.array(history or [], dtype=np.int64), POPULAR, None)


class FixedModel:
    """A ``ModelSource`` whose model always answers ``pmf`` (None: no model learned yet)."""

    def __init__(self, pmf: list[float] | None) -> None:
        self.pmf_answer = pmf
        self.asked: list[list[str]] = []

    def current(self) -> FixedModel | None:
        return None if self.pmf_answer is None else self

    version = "vw-1"

    def pmf(self, example: list[str]) -> list[float]:
        self.asked.append(example)
        assert self.pmf_answer is not None
        return self.pmf_answer


def explorer(model: FixedModel, *, candidates: int = 4, slot: int = 1, epsilon: float = 0.2) -> ItemExplorer:
    return ItemExplorer(model, ExplorationSettings(epsilon=epsilon, candidates=candidates, slot=slot))  # type: ignore[arg-type]


def rows_of(page: list[Placement]) -> list[int]:
    return [p.row for p in page]


def decide(
    explore: ItemExplorer,
    page: list[Placement],
    ranked: list[int],
    rec: str = "r",
    *,
    history: list[int] | None = None,
    reorder_only: bool = False,
) -> tuple[list[Placement], Exploration | None]:
    """``explore.explore`` for a popularity user with ``history``, candidates ``ranked``."""
    user = context(history)
    ranked_rows = np.array(ranked, dtype=np.int64)
    return explore.explore(
        user, PopularityScorer(user), "popularity", page, ranked_rows, rec, reorder_only=reorder_only
    )


# ---- features ---------------------------------------------------------------------------------------------
def test_tokens_with_vw_syntax_are_escaped_into_one_feature() -> None:
    assert escape("Sci Fi|a:b%c\td") == "Sci%20Fi%7Ca%3Ab%25c%09d"
    assert escape("plain-id_42") == "plain-id_42"


def test_user_features_describe_history_length_segments_strategy_and_top_categories() -> None:
    # GIVEN a user whose recent items are rows 0, 3, 6 (Drama + Sci Fi) and 2 (Drama)
    catalogue = bundle().catalogue
    shared = user_features(catalogue, np.array([0, 3, 6, 2]), segment="warm", demographic="age=18", strategy="x")
    # THEN the shared line carries the length bucket, segments, strategy, and categories by count
    assert shared == "shared |User h=2 seg=warm s=x demo=age=18 c=Drama c=Sci%20Fi"
    # AND a new user has none of the categories and the lowest bucket
    new_user = user_features(catalogue, np.array([], dtype=np.int64), segment="cold", demographic=None, strategy="p")
    assert new_user == "shared |User h=0 seg=cold s=p"


def test_action_features_carry_id_categories_position_score_and_popularity_buckets() -> None:
    # GIVEN three candidates in ranked order with their scores
    lines = action_features(bundle().catalogue, bundle().popularity, np.array([3, 0, 5]), np.array([0.9, 0.5, 0.1]))
    # THEN each line names the item, its categories, its place, its score quintile and popularity bucket
    assert lines == [
        "|Item id=m3 c=Sci%20Fi |Rank r=0 sb=4 pb=3",
        "|Item id=m0 c=Drama c=Sci%20Fi |Rank r=1 sb=2 pb=0",
        "|Item id=m5 |Rank r=2 sb=0 pb=5",
    ]


def test_the_label_goes_on_the_chosen_action_only() -> None:
    example = vw_example("shared |User h=1", ["|Item id=a", "|Item id=b", "|Item id=c"], (2, -0.5, 0.25))
    assert example == ["shared |User h=1", "|Item id=a", "|Item id=b", "0:-0.500000:0.25000000 |Item id=c"]


# ---- PMF and sampling -------------------------------------------------------------------------------------
def test_before_any_model_the_ranked_first_option_leads_with_epsilon_spread_evenly() -> None:
    pmf = ranked_pmf(5, 0.25)
    assert pmf == pytest.approx([0.8, 0.05, 0.05, 0.05, 0.05])
    assert sum(pmf) == pytest.approx(1.0)
    assert ranked_pmf(3, 0.0) == [1.0, 0.0, 0.0]


def test_sampling_follows_the_pmf_and_never_picks_a_zero_probability_option() -> None:
    # GIVEN a PMF with a zero entry
    pmf = [0.5, 0.0, 0.3, 0.2]
    # WHEN sampled with 20000 uniform numbers, including the interval edges
    rng = random.Random(7)
    counts = Counter(sample_action(pmf, rng.random()) for _ in range(20_000))
    # THEN the shares match the PMF and option 1 never came up, even at the edges
    assert counts[1] == 0
    for option, p in enumerate(pmf):
        assert counts[option] / 20_000 == pytest.approx(p, abs=0.015)
    assert [sample_action(pmf, u) for u in (0.0, 0.5, 0.8, 0.9999999)] == [0, 2, 3, 3]


# ---- the explorer's page ----------------------------------------------------------------------------------
def test_with_no_model_the_page_keeps_the_ranked_order_or_moves_the_sampled_option_to_the_slot() -> None:
    # GIVEN a page of 3 ranked items and 3 more candidates beyond it, and no model learned yet
    page = [Placement(r) for r in (0, 1, 2)]
    explore = explorer(FixedModel(None), candidates=5, epsilon=0.5)
    outcomes = {}
    for n in range(300):
        arranged, decision = decide(explore, page, list(range(6)), f"r{n}")
        assert decision is not None
        outcomes[decision.chosen] = (rows_of(arranged), decision)
    # THEN every option was chosen at some point, with ε-greedy probabilities around the first
    assert sorted(outcomes) == [0, 1, 2, 3, 4]
    assert outcomes[0][1].probability == pytest.approx(0.6) and outcomes[0][1].greedy
    assert outcomes[3][1].probability == pytest.approx(0.1) and not outcomes[3][1].greedy
    # AND the chosen item is at the slot, the others shift down; one from beyond the page pushes the last out
    assert outcomes[0][0] == [0, 1, 2]
    assert outcomes[2][0] == [2, 0, 1]
    assert outcomes[3][0] == [3, 0, 1]
    # AND the decision names the item and carries one feature line per option, with no model version
    assert outcomes[3][1].item_id == "m3" and len(outcomes[3][1].actions) == 5
    assert outcomes[3][1].model_version is None


def test_the_model_pmf_decides_deterministically_per_recommendation_id() -> None:
    # GIVEN a model that puts almost everything on the third option
    model = FixedModel([0.01, 0.01, 0.97, 0.01])
    page = [Placement(r) for r in (4, 5, 6, 7)]
    explore = explorer(model)
    # WHEN the same recommendation is decided twice, and another one
    first = decide(explore, page, [4, 5, 6, 7], "rec-a", history=[0])
    again = decide(explore, page, [4, 5, 6, 7], "rec-a", history=[0])
    # THEN the choice repeats, item m6 leads, and the logged probability is the PMF's
    assert first[1] == again[1]
    assert rows_of(first[0]) == [6, 4, 5, 7]
    assert first[1] is not None and (first[1].chosen, first[1].probability, first[1].greedy) == (2, 0.97, True)
    assert first[1].model_version == "vw-1"
    # AND the model was asked with the shared line and one line per option, as learning will replay them
    assert model.asked[0][0].startswith("shared |User h=1 seg=warm")
    assert [line.split()[1] for line in model.asked[0][1:]] == ["id=m4", "id=m5", "id=m6", "id=m7"]
    explained = first[0][0].applied
    assert explained == [{"rule": "explored", "probability": 0.97}]


def test_pinned_items_stay_put_and_a_pinned_slot_is_not_explored() -> None:
    pinned = Placement(9, [{"rule": "pinned", "position": 2}])
    page = [Placement(0), pinned, Placement(1)]
    model = FixedModel([0.0, 0.0, 1.0])  # always the first candidate beyond the page
    arranged, decision = decide(explorer(model, candidates=3), page, [0, 1, 2])
    # THEN the options were the unpinned page items then row 2; row 2 leads, the pin keeps position 2
    assert decision is not None and decision.item_id == "m2"
    assert rows_of(arranged) == [2, 9, 0]
    # AND with the slot on the pin, nothing is explored
    assert decide(explorer(model, slot=2), page, [0, 1, 2]) == (page, None)


def test_reorder_only_keeps_the_pages_items_and_too_few_options_mean_no_choice() -> None:
    page = [Placement(0), Placement(1)]
    model = FixedModel([0.0, 1.0])
    arranged, decision = decide(explorer(model), page, list(range(6)), reorder_only=True)
    assert rows_of(arranged) == [1, 0] and decision is not None and len(decision.actions) == 2
    short = [Placement(0)]
    assert decide(explorer(model), short, [0]) == (short, None)


# ---- the decision in an impression message ----------------------------------------------------------------
def shown(exploration: Exploration | None) -> Impression:
    return Impression(
        "rec-1", "u1", "warm", "popularity", "v1", ("m2", "m0"), 1.0, datetime(2026, 11, 30, tzinfo=UTC),
        exploration=exploration,
    )  # fmt: skip


def test_an_exploration_travels_inside_its_impression_message() -> None:
    decision = Exploration(1, "m2", 2, 0.8, True, "shared |User h=0", ("|Item id=m0", "|Item id=m1", "|Item id=m2"))
    assert parse_impression_message(impression_message(shown(decision))) == shown(decision)
    assert parse_impression_message(impression_message(shown(None))).exploration is None


def test_an_exploration_whose_choice_is_not_among_its_actions_is_refused() -> None:
    body = impression_message(shown(Exploration(1, "m0", 0, 0.5, False, "shared |User", ("|Item id=m0",))))
    with pytest.raises(InvalidImpressionError, match="chosen"):
        parse_impression_message(body.replace('"chosen":0', '"chosen":3'))
    with pytest.raises(InvalidImpressionError, match="probability"):
        parse_impression_message(body.replace('"probability":0.5', '"probability":0'))


# ---- the VW model: round trip, cache ---------------------------------------------------------------------
def test_a_saved_model_reloads_with_the_configured_exploration_rate() -> None:
    # GIVEN a model that learned option b is rewarded for this user
    workspace = open_workspace()
    example = ["shared |User seg=warm", "|Item id=a", "|Item id=b", "|Item id=c"]
    for _ in range(50):
        workspace.learn(vw_example(example[0], example[1:], (1, -1.0, 1 / 3)))
    # WHEN saved and reloaded with epsilon 0.3
    reloaded = VWModel(open_workspace(save_workspace(workspace), epsilon=0.3), "v")
    # THEN b takes the greedy share and the others ε/3 each
    assert reloaded.pmf(example) == pytest.approx([0.1, 0.8, 0.1])


def test_the_cache_keeps_the_last_good_model_when_the_store_fails(tmp_path: Path) -> None:
    # GIVEN a store with one published model, read by a cache with a fake clock
    store = open_store(tmp_path.as_uri())
    data = save_workspace(open_workspace())
    publish_vw_model(store, data, learned=1, learned_through=(datetime.now(UTC), "r"), current=None, etag=None)
    now = [0.0]
    broken = [False]

    def source():  # type: ignore[no-untyped-def]
        if broken[0]:
            raise ArtifactError("store down")
        return store

    cache = VWModelCache(source, epsilon=0.1, ttl=10, retry_after=5, clock=lambda: now[0])
    first = cache.current()
    assert first is not None
    # WHEN the store breaks after the TTL
    broken[0] = True
    now[0] = 11.0
    # THEN the same model keeps serving, and a store-less cache has none
    assert cache.current() is first
    assert VWModelCache(None, epsilon=0.1).current() is None


@pytest.mark.parametrize("damage", ["not a VW model", "fails its checksum"])
def test_the_cache_keeps_the_last_good_model_when_a_new_version_is_broken(tmp_path: Path, damage: str) -> None:
    # GIVEN a cache serving a good model
    store = open_store(tmp_path.as_uri())
    learned_through = (datetime.now(UTC), "r")
    publish_vw_model(
        store, save_workspace(open_workspace()), learned=1, learned_through=learned_through, current=None, etag=None
    )
    now = [0.0]
    cache = VWModelCache(lambda: store, epsilon=0.1, ttl=10, retry_after=5, clock=lambda: now[0])
    good = cache.current()
    assert good is not None
    # WHEN the learner publishes a version that cannot be used: bytes VW cannot read (with their true
    # checksum), or a file changed after its pointer was written
    current, etag = read_vw_pointer(store)
    broken = b"garbage" * 10 if damage == "not a VW model" else save_workspace(open_workspace())
    pointer = publish_vw_model(store, broken, learned=1, learned_through=learned_through, current=current, etag=etag)
    if damage == "fails its checksum":
        store.put_bytes(model_key(pointer.version), b"changed after publishing")
    now[0] = 11.0
    # THEN the good model keeps serving
    assert cache.current() is good
    # AND a good version published next is read once retry_after (5 s) has passed, not the whole TTL (10 s)
    current, etag = read_vw_pointer(store)
    fixed = publish_vw_model(
        store, save_workspace(open_workspace()), learned=1, learned_through=learned_through, current=current, etag=etag
    )
    now[0] = 15.9
    assert cache.current() is good
    now[0] = 16.0
    model = cache.current()
    assert model is not None and model.version == fixed.version


# ---- the service ------------------------------------------------------------------------------------------
class OneUser:
    def __init__(self, history: tuple[str, ...]) -> None:
        self._user = UserSignals(history=history)

    def user(self, user_id: str, lookback: int, *, attributes: bool) -> UserSignals:
        return self._user

    def inactive_items(self) -> frozenset[str]:
        return frozenset()

    def promotions(self) -> tuple:  # type: ignore[type-arg]
        return ()


def test_auto_requests_carry_the_exploration_and_explicit_strategies_do_not() -> None:
    # GIVEN a service whose explorer's model always picks the fourth option of the slot
    model = FixedModel([0.0, 0.0, 0.0, 1.0])
    service = RecommendationService(bundle, OneUser(("m0",)), explorer=explorer(model))
    # WHEN a user who saw m0 asks for 2 items, automatically and by name
    auto = service.recommend("u", RecommendQuery(k=2))
    named = service.recommend("u", RecommendQuery(k=2, strategy="popularity"))
    # THEN the auto answer leads with the fourth unseen popular item (m4), found beyond the page
    assert [i.item_id for i in auto.items] == ["m4", "m1"]
    assert auto.exploration is not None and auto.exploration.item_id == "m4"
    assert auto.impression(datetime.now(UTC)).exploration == auto.exploration
    assert service.learns_online
    # AND the named strategy is served as ranked, without a decision
    assert [i.item_id for i in named.items] == ["m1", "m2"] and named.exploration is None
