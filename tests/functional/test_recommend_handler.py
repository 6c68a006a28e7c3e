"""The recommend Lambda handler, called with the events/ files, on a real trained model and real Postgres.

``trained_model`` is the real pipeline's output (ONNX towers, hnswlib index, popularity) on a MovieLens
slice in a ``file://`` store; ``db`` is a fresh migrated database. Interactions are inserted the way the
ingest function writes them, so each test reads like a user's session.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from conftest import LambdaContext, fresh_handler, load_event
from fixtures_model import copy_version, publish_without_ranker

from towerlight.config import get_settings
from towerlight.db.catalog import ItemRow, UserRow, set_item_active, upsert_items, upsert_users
from towerlight.db.events import EventRow, insert_events
from towerlight.db.promotions import Promotion, remove_promotion, set_promotion
from towerlight.model import registry
from towerlight.recommend import service
from towerlight.store import open_store
from towerlight.store.versions import download_version

USER = "42"  # the user of the events/recommend_*.json files
HISTORY = ["1", "71", "95", "588", "99", "418"]  # Toy Story, Lion King, Aladdin, Beauty and the Beast, ...

Model = tuple[str, dict[str, Any]]


@pytest.fixture(scope="session")
def item_categories(trained_model: Model, tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """Categories of every catalogue item of the trained model (read from its items.npz)."""
    store_uri, manifest = trained_model
    model_dir, _ = download_version(open_store(store_uri), manifest["version"], tmp_path_factory.mktemp("m"))
    with np.load(model_dir / "items.npz", allow_pickle=False) as items:
        names, offsets, codes = items["category_names"], items["category_offsets"], items["category_codes"]
        return {
            str(item): {str(names[c]) for c in codes[offsets[row] : offsets[row + 1]]}
            for row, item in enumerate(items["item_ids"])
        }


Caller = Callable[..., tuple[int, dict[str, Any]]]


@pytest.fixture(autouse=True)
def lambda_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Powertools and cache settings of a test process; every test starts and ends without a model."""
    monkeypatch.setenv("TOWERLIGHT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "TowerlightTest")
    library = logging.getLogger("towerlight")
    saved = (library.handlers[:], library.propagate, library.level)
    yield
    forget_process_state()
    # The handler hands the library loggers to Powertools; give them back to the other tests.
    library.handlers, library.propagate, library.level = saved


def forget_process_state() -> None:
    """What a new Lambda execution environment starts without: settings, model, service caches."""
    get_settings.cache_clear()
    registry.reset()
    service.get_service.cache_clear()


def new_process() -> Caller:
    """A cold recommend function: call it like API Gateway, ``call("recommend_get.json", query="k=3")``.

    The handler module is imported afresh, as in a new execution environment, so its Powertools
    objects read this test's environment and write to this test's stdout.
    """
    forget_process_state()
    app = fresh_handler("recommend")

    def call(
        event_name: str, *, query: str | None = None, path: str | None = None, body: Any = None
    ) -> tuple[int, dict[str, Any]]:
        event = load_event(event_name)
        if query is not None:
            event["rawQueryString"] = query
        if path is not None:
            event["rawPath"] = event["requestContext"]["http"]["path"] = path
        if body is not None:  # the same request as a JSON POST (API Gateway passes the body as a string)
            event["requestContext"]["http"]["method"] = "POST"
            event["routeKey"] = event["requestContext"]["routeKey"] = f"POST {event['rawPath']}"
            event["headers"]["content-type"] = "application/json"
            event["body"] = json.dumps(body)
            event.pop("pathParameters", None)
        response = app.handler(event, LambdaContext(function_name="recommend"))
        assert response["headers"]["content-type"] == "application/json"
        return response["statusCode"], json.loads(response["body"])

    return call


@pytest.fixture
def serve(trained_model: Model, db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch) -> Caller:
    """A cold recommend function on the trained model and this test's database."""
    monkeypatch.setenv("TOWERLIGHT_STORE", trained_model[0])
    return new_process()


def add_events(conn: psycopg.Connection, user_id: str, items: list[str], event_type: str = "click") -> None:
    """``items`` as the user's events, the first one the most recent."""
    now = datetime.now(UTC)
    rows = [
        EventRow(str(uuid.uuid4()), user_id, item, event_type, None, now - timedelta(minutes=i))
        for i, item in enumerate(items)
    ]
    insert_events(conn, rows)
    conn.commit()


def item_ids(body: dict[str, Any]) -> list[str]:
    return [item["item_id"] for item in body["items"]]


# ---- GET /recommendations/{user_id} ---------------------------------------------------------------------
def test_recommendations_are_personal_and_respect_the_event_filters(
    serve: Caller,
    db: psycopg.Connection,
    trained_model: Model,
    item_categories: dict[str, set[str]],
) -> None:
    # GIVEN user 42 who clicked a few animated family films
    add_events(db, USER, HISTORY)
    # WHEN the recommend_get event asks for 5 items without 50/181 and without Horror
    status, body = serve("recommend_get.json")
    # THEN the two-tower model answers with the full response contract
    assert status == 200
    assert set(body) == {"user_id", "recommendation_id", "model_version", "strategy", "variant", "items"}
    assert body["user_id"] == USER and body["variant"] is None
    assert body["strategy"] == "two_tower"
    assert body["model_version"] == trained_model[1]["version"]
    assert uuid.UUID(body["recommendation_id"])
    # AND exactly 5 distinct catalogue items, ranked 1..5 by decreasing score
    ids = item_ids(body)
    assert len(ids) == len(set(ids)) == 5
    assert [item["rank"] for item in body["items"]] == [1, 2, 3, 4, 5]
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True)
    # AND nothing seen, excluded by id, or in the excluded category
    assert not set(ids) & (set(HISTORY) | {"50", "181"})
    assert all("Horror" not in item_categories[i] for i in ids)


def test_a_click_is_visible_in_the_very_next_recommendation(serve: Caller, db: psycopg.Connection) -> None:
    # GIVEN a user with no events, who is served popularity
    _, before = serve("recommend_get.json", query="k=10", path="/recommendations/newcomer")
    # WHEN they click on animated films
    add_events(db, "newcomer", HISTORY)
    _, after = serve("recommend_get.json", query="k=10", path="/recommendations/newcomer")
    # THEN the next response is two-tower and different, without the clicked items
    assert before["strategy"] == "popularity" and after["strategy"] == "two_tower"
    assert item_ids(before) != item_ids(after)
    assert not set(item_ids(after)) & set(HISTORY)


def test_blocked_and_disliked_items_are_never_recommended_again(serve: Caller, db: psycopg.Connection) -> None:
    # GIVEN user 42's top two recommendations
    add_events(db, USER, HISTORY)
    _, first = serve("recommend_get.json", query="k=10")
    top, second = item_ids(first)[:2]
    # WHEN the user blocks the first and dislikes the second
    add_events(db, USER, [top], "block")
    add_events(db, USER, [second], "dislike")
    _, after = serve("recommend_get.json", query="k=10&exclude_seen=false")
    # THEN neither comes back, even with exclude_seen=false
    assert top not in item_ids(after) and second not in item_ids(after)


def test_inactive_items_are_left_out(serve: Caller, db: psycopg.Connection) -> None:
    # GIVEN user 42's top recommendation and most similar item to 50, then both marked inactive
    add_events(db, USER, HISTORY)
    top = item_ids(serve("recommend_get.json", query="k=5")[1])[0]
    nearest = item_ids(serve("similar_items.json")[1])[0]
    upsert_items(db, [ItemRow(top, "retired film"), ItemRow(nearest, "retired film")])
    set_item_active(db, top, False)
    set_item_active(db, nearest, False)
    db.commit()
    # WHEN asked again by a process that read the catalogue after the change
    serve = new_process()
    _, after = serve("recommend_get.json", query="k=5")
    _, similar = serve("similar_items.json")
    # THEN the items are gone from both answers
    assert top not in item_ids(after)
    assert nearest not in item_ids(similar)


def test_new_users_get_their_demographic_segment_popularity(
    serve: Caller, db: psycopg.Connection, trained_model: Model
) -> None:
    # GIVEN a new user without events, whose attributes put them in a published segment
    upsert_users(db, [UserRow("newcomer", {"gender": "F", "age": 24, "occupation": "writer"})])
    db.commit()
    # WHEN recommended, and an anonymous user too
    _, segment = serve("recommend_get.json", query="k=10", path="/recommendations/newcomer")
    _, overall = serve("recommend_get.json", query="k=10", path="/recommendations/anonymous")
    # THEN both are popularity, and the segment's ranking differs from the overall one
    assert segment["strategy"] == overall["strategy"] == "popularity"
    assert len(item_ids(segment)) == len(item_ids(overall)) == 10
    assert item_ids(segment) != item_ids(overall)
    scores = [item["score"] for item in overall["items"]]
    assert scores == sorted(scores, reverse=True) and scores[0] == pytest.approx(1.0)


def test_strict_returns_exactly_k_from_the_requested_categories(
    serve: Caller, db: psycopg.Connection, item_categories: dict[str, set[str]]
) -> None:
    # GIVEN user 42 with history
    add_events(db, USER, HISTORY)
    # WHEN recommend_strict asks for exactly 20 Animation or Children's items
    status, body = serve("recommend_strict.json")
    # THEN there are exactly 20 distinct ones, all in those categories, none seen
    ids = item_ids(body)
    assert status == 200 and len(ids) == len(set(ids)) == 20
    assert all(item_categories[i] & {"Animation", "Children's"} for i in ids)
    assert not set(ids) & set(HISTORY)


def test_strict_backfills_a_new_user_beyond_the_popular_items(
    serve: Caller, item_categories: dict[str, set[str]]
) -> None:
    # GIVEN every Documentary in the catalogue
    documentaries = {i for i, cats in item_categories.items() if "Documentary" in cats}
    # WHEN a new user strictly asks for all of them
    status, body = serve("recommend_get.json", query=f"k={len(documentaries)}&category=Documentary&strict=true")
    # THEN every one is returned, exactly once
    assert status == 200 and sorted(item_ids(body)) == sorted(documentaries)


def test_strict_with_fewer_items_than_k_says_so(serve: Caller, item_categories: dict[str, set[str]]) -> None:
    # GIVEN a category with fewer than 100 items
    available = sum("Film-Noir" in cats for cats in item_categories.values())
    assert available < 100
    # WHEN 100 are strictly asked for
    status, body = serve("recommend_strict.json", query="k=100&category=Film-Noir&strict=true")
    # THEN the answer is a 422 that says how many exist
    assert status == 422
    assert body["error"]["code"] == "not_enough_items"
    assert body["error"]["details"] == {"requested": 100, "available": available}


def test_an_unknown_category_is_a_422_listing_the_known_ones(
    serve: Caller,
) -> None:
    # GIVEN / WHEN a category the catalogue does not have
    status, body = serve("recommend_get.json", query="category=Polka")
    # THEN the error names it and lists the real ones
    assert status == 422
    assert body["error"]["details"]["unknown"] == ["Polka"]
    assert "Comedy" in body["error"]["details"]["known"]


def test_k_out_of_range_is_a_422(serve: Caller) -> None:
    # GIVEN / WHEN the recommend_bad_k event (k=500)
    status, body = serve("recommend_bad_k.json")
    # THEN the error contract names the parameter, without a stack trace
    assert status == 422
    assert body["error"]["code"] == "invalid_request"
    assert body["error"]["details"][0]["location"] == "query.k"
    assert "Traceback" not in json.dumps(body)


# ---- POST /rank ------------------------------------------------------------------------------------------------
def test_rank_orders_the_callers_items_for_the_user(serve: Caller, db: psycopg.Connection) -> None:
    # GIVEN user 42 with history, and a list with a repeat and an id the model does not know
    add_events(db, USER, HISTORY)
    _, recommended = serve("recommend_get.json", query="k=4")
    mine = list(reversed(item_ids(recommended)))
    # WHEN those items are ranked
    status, body = serve("recommend_rank.json", body={"user_id": USER, "item_ids": [*mine, "new", mine[0]]})
    # THEN they come back in the model's order (the recommendation order), the unknown one last, unscored
    assert status == 200 and body["strategy"] == "two_tower" and body["user_id"] == USER
    assert item_ids(body) == [*item_ids(recommended), "new"]
    assert [item["rank"] for item in body["items"]] == [1, 2, 3, 4, 5]
    assert body["items"][-1]["score"] is None


def test_rank_refuses_too_many_or_no_items(serve: Caller) -> None:
    # GIVEN / WHEN a rank request with 501 items, and one without item_ids
    too_many, big = serve("recommend_rank.json", body={"user_id": USER, "item_ids": ["1"] * 501})
    missing, invalid = serve("recommend_rank.json", body={"user_id": USER})
    # THEN the first is a 413 and the second a 422, both in the error contract
    assert (too_many, big["error"]["code"]) == (413, "payload_too_large")
    assert (missing, invalid["error"]["code"]) == (422, "invalid_request")


# ---- GET /items/{item_id}/similar -------------------------------------------------------------------------
def test_similar_items_are_the_nearest_other_items(serve: Caller, trained_model: Model) -> None:
    # GIVEN / WHEN the similar_items event (item 50, k=5)
    status, body = serve("similar_items.json")
    # THEN five other items come back, best first
    assert status == 200
    assert body["item_id"] == "50" and body["model_version"] == trained_model[1]["version"]
    ids = item_ids(body)
    assert len(ids) == len(set(ids)) == 5 and "50" not in ids
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True) and all(-1.0 <= s <= 1.0 + 1e-6 for s in scores)


def test_similar_items_of_an_unknown_item_is_a_404(serve: Caller) -> None:
    # GIVEN / WHEN the similar_unknown event
    status, body = serve("similar_unknown.json")
    # THEN a JSON 404 names the item
    assert status == 404
    assert body["error"]["code"] == "not_found"
    assert "no-such-item" in body["error"]["message"]


# ---- operations ---------------------------------------------------------------------------------------------
def test_health(serve: Caller) -> None:
    # GIVEN / WHEN the health_recommend event
    status, body = serve("health_recommend.json")
    # THEN the function says it is up
    assert status == 200 and body["status"] == "ok" and body["function"] == "recommend"


def test_logs_carry_the_correlation_id_and_metrics_are_emitted(
    serve: Caller, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a cold process whose Powertools log handler writes to a buffer
    log_handler = sys.modules["functions.recommend.app"].logger.registered_handler
    buffer = io.StringIO()
    previous = log_handler.setStream(buffer)
    capsys.readouterr()
    # WHEN the first recommendation is served (it loads the model, which is logged)
    try:
        serve("recommend_get.json", path="/recommendations/newcomer")
    finally:
        log_handler.setStream(previous)
    # THEN the library's log lines carry API Gateway's request id as correlation id
    logs = [json.loads(line) for line in buffer.getvalue().splitlines()]
    request_id = load_event("recommend_get.json")["requestContext"]["requestId"]
    loaded = [line for line in logs if line["message"].startswith("serving model")]
    assert loaded and loaded[0]["correlation_id"] == request_id
    assert loaded[0]["service"] == "recommend" and loaded[0]["name"] == "towerlight.model.registry"
    # AND one EMF blob on stdout carries latency, the model version and the cold-user fallback
    blobs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    emf = [blob for blob in blobs if "Latency" in blob]
    assert len(emf) == 1
    assert emf[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "TowerlightTest"
    assert emf[0]["route"] == "recommendations" and emf[0]["model_version"]
    assert emf[0]["Fallback_cold_user"] in (1.0, [1.0])


def test_database_trouble_degrades_to_popularity(trained_model: Model, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a model but a database that refuses connections
    monkeypatch.setenv("TOWERLIGHT_STORE", trained_model[0])
    monkeypatch.setenv("DATABASE_URL", "postgresql://towerlight@127.0.0.1:9/none?connect_timeout=1")
    serve = new_process()
    # WHEN a recommendation is asked for
    status, body = serve("recommend_get.json")
    # THEN it is still served, from popularity
    assert status == 200
    assert body["strategy"] == "popularity" and len(body["items"]) == 5


def test_no_published_model_is_a_503(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN an empty store
    monkeypatch.setenv("TOWERLIGHT_STORE", (tmp_path / "empty").as_uri())
    serve = new_process()
    # WHEN a recommendation is asked for
    status, body = serve("recommend_get.json")
    # THEN a JSON 503 says no model is published
    assert status == 503
    assert body["error"]["code"] == "model_unavailable"
    assert "no model is published yet" in body["error"]["message"]


# ---- strategies: content, hybrid, auto --------------------------------------------------------------------
ANIMATED = {"Animation", "Children's"}  # what every film of HISTORY is


def test_content_recommends_items_whose_metadata_matches_the_recent_ones(
    serve: Caller, db: psycopg.Connection, item_categories: dict[str, set[str]]
) -> None:
    # GIVEN user 42 who clicked animated family films
    add_events(db, USER, HISTORY)
    # WHEN the recommend_content event asks for 10 items by content, explained
    status, body = serve("recommend_content.json")
    # THEN the content strategy answers with unseen items, by decreasing cosine in (0, 1]
    assert status == 200 and body["strategy"] == "content"
    ids = item_ids(body)
    assert len(ids) == len(set(ids)) == 10 and not set(ids) & set(HISTORY)
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True) and 0 < scores[-1] <= scores[0] <= 1 + 1e-6
    # AND the best ones are animated or children's films, like the history
    assert all(item_categories[i] & ANIMATED for i in ids[:5])
    # AND each says which recent film it resembles and which metadata terms matched
    for item in body["items"]:
        retrieval = item["reasons"]["retrieval"]
        assert retrieval["source"] == "content" and retrieval["because"]["item_id"] in HISTORY
        assert retrieval["terms"] and all(":" in t or "=" in t for t in retrieval["terms"])


def test_hybrid_blends_normalised_scores_with_the_requested_weights(serve: Caller, db: psycopg.Connection) -> None:
    # GIVEN user 42 with history
    add_events(db, USER, HISTORY)
    # WHEN recommend_hybrid asks for an even blend of two-tower and content, explained
    status, body = serve("recommend_hybrid.json")
    # THEN the hybrid answers, and each score is the weighted mean of its normalised components
    assert status == 200 and body["strategy"] == "hybrid"
    for item in body["items"]:
        parts = item["reasons"]["retrieval"]["components"]
        assert set(parts) == {"two_tower", "content"} and all(0 <= v <= 1 for v in parts.values())
        assert item["score"] == pytest.approx((parts["two_tower"] + parts["content"]) / 2, abs=1e-3)
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True)
    # AND the blend is neither strategy alone
    _, two_tower = serve("recommend_get.json", query="k=10&strategy=two_tower")
    _, content = serve("recommend_content.json", query="k=10&strategy=content")
    assert item_ids(body) not in (item_ids(two_tower), item_ids(content))


def test_hybrid_by_default_weighs_every_strategy(serve: Caller, db: psycopg.Connection) -> None:
    # GIVEN user 42 with history
    add_events(db, USER, HISTORY)
    # WHEN hybrid is asked without weights
    status, body = serve("recommend_hybrid.json", query="k=3&strategy=hybrid&explain=true")
    # THEN the default weights blend all three strategies
    assert status == 200 and body["strategy"] == "hybrid"
    assert set(body["items"][0]["reasons"]["retrieval"]["components"]) == {"two_tower", "content", "popularity"}


def test_a_new_user_asking_for_content_or_hybrid_is_served_popularity_and_told_so(serve: Caller) -> None:
    # GIVEN a user without history WHEN content and hybrid are asked for
    _, content = serve("recommend_content.json", path="/recommendations/newcomer")
    _, hybrid = serve("recommend_hybrid.json", path="/recommendations/newcomer")
    _, auto = serve("recommend_get.json", query="k=10", path="/recommendations/newcomer")
    # THEN popularity answers both, and the response names it
    assert content["strategy"] == hybrid["strategy"] == "popularity"
    assert item_ids(content) == item_ids(hybrid) == item_ids(auto)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("strategy=bandit", "query.strategy"),
        ("max_per_category=0", "query.max_per_category"),
        ("strategy=two_tower&weights=content:1", "weights apply to strategy=hybrid only"),
        ("strategy=hybrid&weights=content:-1", "is not <strategy>:<weight>"),
        ("strategy=hybrid&weights=ratings:1", "is not <strategy>:<weight>"),
        ("strategy=hybrid&weights=content:0", "at least one weight must be positive"),
    ],
)
def test_bad_strategy_and_rule_parameters_are_422s(serve: Caller, query: str, expected: str) -> None:
    # GIVEN / WHEN a request with a bad parameter
    status, body = serve("recommend_get.json", query=query)
    # THEN a 422 in the error contract names what is wrong
    assert status == 422 and body["error"]["code"] == "invalid_request"
    assert expected in json.dumps(body["error"])


# ---- explain -----------------------------------------------------------------------------------------------
def test_explain_names_the_recent_item_each_recommendation_comes_from(serve: Caller, db: psycopg.Connection) -> None:
    # GIVEN user 42 with history, and their page without explanations
    add_events(db, USER, HISTORY)
    _, plain = serve("recommend_get.json", query="k=5")
    # WHEN recommend_explain asks for the same page, explained
    status, body = serve("recommend_explain.json")
    # THEN the page is the same, and every item names its source, the recent item it resembles and why it ranks
    assert status == 200 and item_ids(body) == item_ids(plain)
    assert all("reasons" not in item for item in plain["items"])
    for item in body["items"]:
        reasons = item["reasons"]
        assert reasons["retrieval"]["source"] == "two_tower"
        assert reasons["retrieval"]["because"]["item_id"] in HISTORY
        assert -1 <= reasons["retrieval"]["because"]["similarity"] <= 1 + 1e-6
        assert reasons["rules"] == []
        # AND the published ranker names its strongest positive feature contributions (at most three)
        assert 1 <= len(reasons["ranker"]) <= 3 and all(r["contribution"] > 0 for r in reasons["ranker"])


def test_explain_of_popularity_names_the_segment(serve: Caller, db: psycopg.Connection) -> None:
    # GIVEN a new user in a published demographic segment
    upsert_users(db, [UserRow("newcomer", {"gender": "F", "age": 24, "occupation": "writer"})])
    db.commit()
    # WHEN explained
    _, body = serve("recommend_explain.json", path="/recommendations/newcomer")
    # THEN popularity found the items, in that segment, with no recent item to point at
    retrieval = body["items"][0]["reasons"]["retrieval"]
    assert body["strategy"] == "popularity" and retrieval["source"] == "popularity"
    assert retrieval["segment"] and "because" not in retrieval


# ---- business rules: promotions, caps, strict backfill ----------------------------------------------------
def test_promotions_are_pinned_or_boosted_within_the_per_page_cap(serve: Caller, db: psycopg.Connection) -> None:
    # GIVEN user 42's top 20, and promotions: a seen film pinned first, rank 10 pinned second, rank 13
    # pinned fourth, and rank 16 boosted to the top (three eligible promotions, two allowed per page)
    add_events(db, USER, HISTORY)
    ranked = item_ids(serve("recommend_get.json", query="k=20")[1])
    for promotion in (
        Promotion(HISTORY[0], "pin", position=1),
        Promotion(ranked[9], "pin", position=2),
        Promotion(ranked[12], "pin", position=4),
        Promotion(ranked[15], "boost", boost=1.0),
    ):
        set_promotion(db, promotion)
    db.commit()
    # WHEN recommend_promotions asks for 5 items, explained
    status, body = new_process()("recommend_promotions.json")
    # THEN the two pins hold their places, the seen film and the boost (over the cap) are left out
    assert status == 200
    assert item_ids(body) == [ranked[0], ranked[9], ranked[1], ranked[12], ranked[2]]
    rules = [item["reasons"]["rules"] for item in body["items"]]
    assert rules == [[], [{"rule": "pinned", "position": 2}], [], [{"rule": "pinned", "position": 4}], []]
    # WHEN one pin is removed
    remove_promotion(db, ranked[12])
    db.commit()
    _, body = new_process()("recommend_promotions.json")
    # THEN the boosted film, now within the cap, climbs to the top
    assert item_ids(body) == [ranked[15], ranked[9], ranked[0], ranked[1], ranked[2]]
    assert body["items"][0]["reasons"]["rules"] == [{"rule": "promoted", "boost": 1.0}]


def test_max_per_category_caps_every_category_on_the_page(
    serve: Caller, db: psycopg.Connection, item_categories: dict[str, set[str]]
) -> None:
    # GIVEN user 42, whose uncapped top 10 repeats a category more than twice
    add_events(db, USER, HISTORY)
    _, uncapped = serve("recommend_get.json", query="k=10")
    assert max(Counter(c for i in item_ids(uncapped) for c in item_categories[i]).values()) > 2
    # WHEN recommend_caps allows at most 2 per category
    status, body = serve("recommend_caps.json")
    # THEN 10 items come back with no category more than twice
    ids = item_ids(body)
    assert status == 200 and len(ids) == 10 and not set(ids) & set(HISTORY)
    assert max(Counter(c for i in ids for c in item_categories[i]).values()) <= 2
    # AND the items that took the place of capped ones say so
    capped = [r for item in body["items"] for r in item["reasons"]["rules"] if r["rule"] == "capped"]
    assert capped and all(r["skipped"] >= 1 for r in capped)


def test_strict_backfill_still_respects_the_category_cap(serve: Caller, item_categories: dict[str, set[str]]) -> None:
    # GIVEN / WHEN a new user strictly asks for 20 items, at most 3 per category
    status, body = serve(
        "recommend_caps.json", path="/recommendations/newcomer", query="k=20&max_per_category=3&strict=true"
    )
    # THEN exactly 20 come back within the cap
    ids = item_ids(body)
    assert status == 200 and len(set(ids)) == 20
    assert max(Counter(c for i in ids for c in item_categories[i]).values()) <= 3
    # WHEN 3 Animation films are strictly asked for, at most 2 per category
    status, body = serve(
        "recommend_caps.json",
        path="/recommendations/newcomer",
        query="k=3&category=Animation&max_per_category=2&strict=true",
    )
    # THEN the cap makes it impossible, and the 422 says only 2 can be recommended
    assert status == 422 and body["error"]["code"] == "not_enough_items"
    assert body["error"]["details"] == {"requested": 3, "available": 2}


# ---- POST /rank by strategy, explained -------------------------------------------------------------------
def test_rank_by_content_explains_known_items_and_puts_unknown_ones_last(serve: Caller, db: psycopg.Connection) -> None:
    # GIVEN user 42 with history (Toy Story, "1", the newest)
    add_events(db, USER, HISTORY)
    # WHEN recommend_rank_explain ranks Toy Story, four other films and an unknown id by content
    status, body = serve("recommend_rank_explain.json")
    # THEN content orders the known ones, Toy Story first (it resembles itself), the unknown one last
    assert status == 200 and body["strategy"] == "content"
    ids = item_ids(body)
    assert ids[0] == "1" and ids[-1] == "999999" and sorted(ids[1:-1]) == ["100", "181", "258", "50"]
    scores = [item["score"] for item in body["items"][:-1]]
    assert scores == sorted(scores, reverse=True) and body["items"][-1]["score"] is None
    assert body["items"][0]["reasons"]["retrieval"]["because"] == {"item_id": "1", "similarity": 1.0}
    assert body["items"][-1]["reasons"] == {"retrieval": {"source": "unknown"}, "ranker": [], "rules": []}


def test_rank_by_hybrid_normalises_over_the_callers_list(serve: Caller, db: psycopg.Connection) -> None:
    # GIVEN user 42 with history, and six known films to order
    add_events(db, USER, HISTORY)
    films = ["50", "181", "100", "258", "1", "95"]
    # WHEN they are ranked by an even hybrid of two-tower and content, explained
    body = {"user_id": USER, "item_ids": films, "strategy": "hybrid", "weights": "two_tower:1,content:1"}
    status, ranked = serve("recommend_rank.json", body={**body, "explain": True})
    # THEN each component spans [0, 1] over the list, and each score is their mean, best first
    assert status == 200 and ranked["strategy"] == "hybrid" and sorted(item_ids(ranked)) == sorted(films)
    parts = [item["reasons"]["retrieval"]["components"] for item in ranked["items"]]
    for name in ("two_tower", "content"):
        assert min(p[name] for p in parts) == 0 and max(p[name] for p in parts) == 1
    scores = [item["score"] for item in ranked["items"]]
    assert scores == sorted(scores, reverse=True)
    assert scores == pytest.approx([(p["two_tower"] + p["content"]) / 2 for p in parts], abs=1e-3)
    # AND weights without strategy=hybrid are refused
    status, error = serve("recommend_rank.json", body={**body, "strategy": "content"})
    assert status == 422 and "weights apply to strategy=hybrid only" in error["error"]["message"]


# ---- experiments ------------------------------------------------------------------------------------------
def test_an_experiment_variant_is_reported_and_may_pin_the_strategy_of_auto_requests(
    trained_model: Model, db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN user 42 with history, in an experiment whose only variant pins popularity
    add_events(db, USER, HISTORY)
    monkeypatch.setenv("TOWERLIGHT_STORE", trained_model[0])
    pinned = {"name": "pop-test", "variants": [{"name": "popular", "weight": 1, "strategy": "popularity"}]}
    monkeypatch.setenv("TOWERLIGHT_EXPERIMENT", json.dumps(pinned))
    call = new_process()
    # WHEN an auto request and an explicit two_tower request arrive
    _, auto = call("recommend_get.json", query="k=3")
    _, explicit = call("recommend_get.json", query="k=3&strategy=two_tower")
    # THEN both report the variant; the pin applies to auto only
    assert (auto["variant"], auto["strategy"]) == ("popular", "popularity")
    assert (explicit["variant"], explicit["strategy"]) == ("popular", "two_tower")


def test_an_experiment_serves_each_variant_the_model_version_it_pins(
    trained_model: Model, db: psycopg.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a store whose CURRENT is the trained version (with its ranker), the same model without the ranker
    # as a second version, and an experiment sending half the users to each
    source_uri, manifest = trained_model
    store_uri = (tmp_path / "store").as_uri()
    copy_version(source_uri, store_uri, manifest["version"])
    second = publish_without_ranker(source_uri, manifest["version"], store_uri)
    variants = [{"name": "control", "weight": 1}, {"name": "next-model", "weight": 1, "model_version": second}]
    monkeypatch.setenv("TOWERLIGHT_STORE", store_uri)
    monkeypatch.setenv("TOWERLIGHT_EXPERIMENT", json.dumps({"name": "ab-models", "variants": variants}))
    users = [f"ab-{n}" for n in range(24)]
    for user in users:
        add_events(db, user, HISTORY)
    call = new_process()
    # WHEN each user asks for recommendations
    answers = [call("recommend_get.json", path=f"/recommendations/{user}", query="k=5")[1] for user in users]
    # THEN each variant is served by its version, and the two versions order the same user differently
    served = {(a["variant"], a["model_version"]) for a in answers}
    assert served == {("control", manifest["version"]), ("next-model", second)}
    pages = {a["variant"]: {tuple(item_ids(b)) for b in answers if b["variant"] == a["variant"]} for a in answers}
    assert len(pages["control"]) == len(pages["next-model"]) == 1 and pages["control"] != pages["next-model"]
    # AND the pinned version is cached in the function's cache directory, keyed by its id
    assert (Path(get_settings().cache_dir) / second).is_dir()
    # AND a variant pinning a version the store does not have is served by CURRENT, outside the experiment
    broken = [{"name": "next-model", "weight": 1, "model_version": "20991231T000000Z-000000"}]
    monkeypatch.setenv("TOWERLIGHT_EXPERIMENT", json.dumps({"name": "broken", "variants": broken}))
    status, body = new_process()("recommend_get.json", query="k=5")
    assert (status, body["variant"], body["model_version"]) == (200, None, manifest["version"])
