"""Item exploration through the handlers: ingest stores decisions and learns them into a versioned VW model
(a ``file://`` store, real Postgres); recommend explores with it on the trained model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest
from conftest import LambdaContext, fresh_handler, load_event

from towerlight.config import get_settings
from towerlight.exploration.features import vw_example
from towerlight.exploration.model import VW_CURRENT, VWModelCache, read_vw_pointer
from towerlight.model import registry
from towerlight.recommend import service
from towerlight.store import open_store


@pytest.fixture
def exploring(db: psycopg.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Exploration on (ε = 0.2), decisions learnable at once, every batch followed by a learning pass."""
    monkeypatch.setenv("TOWERLIGHT_STORE", (tmp_path / "store").as_uri())
    monkeypatch.setenv("TOWERLIGHT_EXPLORATION_EPSILON", "0.2")
    monkeypatch.setenv("TOWERLIGHT_EXPLORATION_WINDOW_SECONDS", "0")
    monkeypatch.setenv("TOWERLIGHT_EXPLORATION_LEARN_SECONDS", "0")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "TowerlightTest")
    get_settings.cache_clear()
    yield (tmp_path / "store").as_uri()
    get_settings.cache_clear()


def invoke(ingest: ModuleType, event: dict[str, Any]) -> list[str]:
    response = ingest.handler(event, LambdaContext(function_name="ingest"))
    return [item["itemIdentifier"] for item in response["batchItemFailures"]]


def test_ingest_stores_the_decision_and_learns_it_once(exploring: str, db: psycopg.Connection) -> None:
    ingest = fresh_handler("ingest")
    event = load_event("ingest_exploration.json")
    # WHEN an impression whose explore slot showed i1002, and a click on i1002 crediting it, are ingested
    assert invoke(ingest, event) == []
    # THEN the decision is stored with its probability, and a first VW model learned it
    stored = db.execute("SELECT recommendation_id, item_id, chosen, probability, greedy FROM explorations").fetchall()
    db.rollback()
    assert stored == [("rec-x1", "i1002", 1, 0.85, True)]
    pointer, _ = read_vw_pointer(open_store(exploring))
    assert pointer is not None and pointer.examples == 1
    assert pointer.learned_through is not None and pointer.learned_through[1] == "rec-x1"
    # AND the model, asked about the same options, now puts the clicked one first
    body = json.loads(event["Records"][0]["body"])["impression"]["exploration"]
    model = VWModelCache(lambda: open_store(exploring), epsilon=0.2).current()
    assert model is not None
    pmf = model.pmf(vw_example(body["shared"], body["actions"]))
    assert max(range(3), key=pmf.__getitem__) == 1
    # WHEN SQS delivers the same batch again
    assert invoke(ingest, event) == []
    # THEN nothing new is learned: the same version, still one example
    assert read_vw_pointer(open_store(exploring))[0] == pointer


def test_a_learning_failure_never_fails_the_batch(
    exploring: str, db: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a store whose VW pointer is unreadable
    open_store(exploring).put_bytes(VW_CURRENT, b"not json")
    ingest = fresh_handler("ingest")
    # WHEN a batch with a decision is ingested
    failures = invoke(ingest, load_event("ingest_exploration.json"))
    # THEN the batch succeeded and is stored, and the failure was counted
    assert failures == []
    assert db.execute("SELECT count(*) FROM explorations").fetchone() == (1,)
    db.rollback()
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    assert any(d.get("ExplorationLearnFailed") == [1.0] for d in documents)


def test_decisions_wait_for_their_attribution_window(
    exploring: str, db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN clicks are given an hour to arrive
    monkeypatch.setenv("TOWERLIGHT_EXPLORATION_WINDOW_SECONDS", "3600")
    ingest = fresh_handler("ingest")
    # WHEN a fresh decision is ingested
    assert invoke(ingest, load_event("ingest_exploration.json")) == []
    # THEN it is stored but not learned yet: no model exists
    assert db.execute("SELECT count(*) FROM explorations").fetchone() == (1,)
    db.rollback()
    assert read_vw_pointer(open_store(exploring)) == (None, None)


def test_recommend_explores_auto_requests_and_explains_the_slot(
    exploring: str, trained_model: tuple[str, dict[str, Any]], db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the trained model served with exploration on (no VW model learned yet: ε-greedy on the ranking)
    monkeypatch.setenv("TOWERLIGHT_STORE", trained_model[0])
    monkeypatch.setenv("TOWERLIGHT_CACHE_DIR", str(Path(exploring.removeprefix("file://")).parent / "cache"))
    get_settings.cache_clear()
    registry.reset()
    service.get_service.cache_clear()
    recommend = fresh_handler("recommend")
    event = load_event("recommend_explain.json")
    try:
        response = recommend.handler(event, LambdaContext(function_name="recommend"))
    finally:
        registry.reset()
        service.get_service.cache_clear()
    # THEN the first item says it was chosen by exploration, with its probability
    body = json.loads(response["body"])
    first = body["items"][0]
    assert response["statusCode"] == 200
    explored = [rule for rule in first["reasons"]["rules"] if rule["rule"] == "explored"]
    assert len(explored) == 1 and 0 < explored[0]["probability"] <= 1
