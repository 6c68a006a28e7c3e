"""Impressions and bandit counters on a real Postgres: every unique impression and reward counted exactly once."""

from __future__ import annotations

import random
import threading
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from towerlight.bandit.arms import ArmStats, read_arms
from towerlight.db.connection import connect
from towerlight.db.events import EventRow, insert_events
from towerlight.event_types import EVENT_TYPES
from towerlight.impressions import FeedbackResult, Impression, record_feedback

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def impression(rec: str, strategy: str = "two_tower", segment: str = "warm", items: tuple[str, ...] = ("a", "b")):
    return Impression(rec, "u1", segment, strategy, "v1", items, propensity=0.5, created_at=T0)


def event(rec: str | None, item: str, event_type: str, event_id: str | None = None) -> EventRow:
    return EventRow(event_id or str(uuid.uuid4()), "u1", item, event_type, None, T0, rec)


def ingest(conn: psycopg.Connection, impressions: list[Impression], events: list[EventRow]) -> FeedbackResult:
    """What the ingest function does with one batch: events and feedback in one transaction."""
    with conn.transaction():
        insert_events(conn, events)
        return record_feedback(conn, impressions, [e.recommendation_id for e in events if e.recommendation_id])


def arms(conn: psycopg.Connection) -> dict[tuple[str, str], ArmStats]:
    found = {(a.segment, a.strategy): a for a in read_arms(conn)}
    conn.rollback()
    return found


def test_an_impression_counts_once_however_often_it_is_delivered(db: psycopg.Connection) -> None:
    # GIVEN an impression delivered twice in one batch, then replayed in a later batch
    shown = impression("r1")
    # WHEN both batches are ingested
    first = ingest(db, [shown, shown], [])
    again = ingest(db, [shown], [])
    # THEN it was stored and counted once
    assert (first, again) == (FeedbackResult(("r1",), 0), FeedbackResult((), 0))
    assert arms(db)[("warm", "two_tower")] == ArmStats("warm", "two_tower", 1, 0, 0.0)


def test_the_best_reward_of_attributed_events_is_credited_once(db: psycopg.Connection) -> None:
    # GIVEN a stored impression of items a and b
    ingest(db, [impression("r1")], [])
    click = event("r1", "a", "click")
    # WHEN a click, its replay, a purchase, a click on an item not shown and a click on nothing arrive
    results = [
        ingest(db, [], [click]),
        ingest(db, [], [click]),
        ingest(db, [], [event("r1", "b", "purchase")]),
        ingest(db, [], [event("r1", "z", "purchase"), event(None, "a", "purchase")]),
        ingest(db, [], [event("r1", "a", "view")]),
    ]
    # THEN the impression's reward is the purchase's; the arm gained exactly that, and one success
    assert [r.rewarded for r in results] == [1, 0, 1, 0, 0]
    assert arms(db)[("warm", "two_tower")] == ArmStats("warm", "two_tower", 1, 1, EVENT_TYPES["purchase"].reward)


def test_an_event_that_arrives_before_its_impression_is_credited_when_it_arrives(db: psycopg.Connection) -> None:
    # GIVEN a click whose impression has not been stored yet
    early = ingest(db, [], [event("r1", "b", "click")])
    # WHEN the impression arrives, twice
    late = ingest(db, [impression("r1", strategy="popularity", segment="cold")], [])
    replay = ingest(db, [impression("r1", strategy="popularity", segment="cold")], [])
    # THEN the click is credited to it once
    assert (early, late, replay) == (FeedbackResult((), 0), FeedbackResult(("r1",), 1), FeedbackResult((), 0))
    assert arms(db)[("cold", "popularity")] == ArmStats("cold", "popularity", 1, 1, EVENT_TYPES["click"].reward)


@dataclass
class Traffic:
    """Synthetic recommendations and the events users sent back, with the counters they must produce."""

    impressions: list[Impression]
    events: list[EventRow]
    expected: dict[tuple[str, str], ArmStats]


def synthetic_traffic(rng: random.Random, n: int) -> Traffic:
    rewarding = [t for t, spec in EVENT_TYPES.items() if spec.reward > 0]
    impressions, events = [], []
    totals: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0, 0.0])
    for _ in range(n):
        rec = str(uuid.uuid4())
        shown = tuple(f"i{rng.randrange(50)}" for _ in range(4))
        key = (rng.choice(["cold", "warm"]), rng.choice(["two_tower", "popularity", "content"]))
        impressions.append(Impression(rec, "u1", *key, "v1", shown, 0.3, T0 + timedelta(seconds=len(events))))
        best = 0.0
        for _ in range(rng.randrange(4)):
            event_type = rng.choice([*rewarding, "dislike"])
            item = rng.choice([*shown, "unshown"])
            events.append(event(rec, item, event_type))
            if item != "unshown":
                best = max(best, EVENT_TYPES[event_type].reward)
        events.append(event(None, shown[0], "click"))  # not attributed: must change nothing
        totals[key][0] += 1
        totals[key][1] += best > 0
        totals[key][2] += best
    expected = {k: ArmStats(*k, int(n), int(s), r) for k, (n, s, r) in totals.items()}
    return Traffic(impressions, events, expected)


def test_duplicate_and_concurrent_consumers_count_every_unique_row_exactly_once(db_url: str) -> None:
    # GIVEN synthetic traffic, each message delivered one to three times, shuffled (events often before
    # their impression) and split into batches handled by four consumers with their own connections
    rng = random.Random(7)
    traffic = synthetic_traffic(rng, 300)
    messages: list[Impression | EventRow] = [*traffic.impressions, *traffic.events]
    deliveries = [m for m in messages for _ in range(rng.randint(1, 3))]
    rng.shuffle(deliveries)
    batches = []
    while deliveries:
        size = rng.randint(1, 40)
        batches.append(deliveries[:size])
        deliveries = deliveries[size:]
    queue = list(reversed(batches))
    lock = threading.Lock()
    retried: list[str] = []
    failures: list[BaseException] = []

    def consumer() -> None:
        with connect() as conn:
            while True:
                with lock:
                    if not queue:
                        return
                    batch = queue.pop()
                for _attempt in range(5):  # SQS redelivers a failed batch; a deadlock victim is one
                    try:
                        ingest(
                            conn,
                            [m for m in batch if isinstance(m, Impression)],
                            [m for m in batch if isinstance(m, EventRow)],
                        )
                        break
                    except psycopg.errors.DeadlockDetected as exc:
                        retried.append(str(exc))
                else:
                    failures.append(RuntimeError("a batch failed five times"))

    # WHEN the consumers run at the same time
    threads = [threading.Thread(target=consumer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # THEN every batch went through, and every arm holds exactly the unique impressions and best rewards
    assert failures == []
    with connect() as conn:
        found = arms(conn)
        stored = conn.execute("SELECT count(*), count(*) FILTER (WHERE reward > 0) FROM impressions").fetchone()
    assert stored == (len(traffic.impressions), sum(a.successes for a in traffic.expected.values()))
    assert found.keys() == traffic.expected.keys()
    for key, want in traffic.expected.items():
        got = found[key]
        assert (got.impressions, got.successes) == (want.impressions, want.successes), key
        assert got.reward_sum == pytest.approx(want.reward_sum, abs=1e-9), key
    assert len(retried) <= len(batches) // 10, retried[:3]  # deadlocks, if any, are rare and retried
