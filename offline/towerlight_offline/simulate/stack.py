"""The functions the simulator drives, on a local stack: recommend, track and ingest as Lambda runs them.

``publish_model`` trains the real pipeline on the world's synthetic data and publishes it to the stack's
S3 store (moto). Each simulated policy then runs in ``policy_environment``: a fresh Postgres schema
holding the simulated users' past events, a fresh SQS queue, and the policy's environment variables, so
no state (events, impressions, bandit counters) leaks from one policy to the next. ``Functions`` calls
the handlers with API Gateway v2 events (shaped like ``events/recommend_get.json`` and
``events/track_batch.json``) and drains the queue into ingest's handler with SQS events, as Lambda's
event source mapping does.

Example::

    >>> with local_stack(s3_bucket="towerlight-sim") as stack:
    ...     version = publish_model(world, stack.store_uri, ModelConfig())
    ...     env = {"TOWERLIGHT_BANDIT_STRATEGIES": "two_tower,popularity"}
    ...     with policy_environment(stack, history_rows(world, users, 50), env) as functions:
    ...         functions.recommend("u7", k=10)["strategy"]
    'two_tower'
"""

from __future__ import annotations

import contextlib
import copy
import json
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from towerlight.config import get_settings
from towerlight.db.connection import connect
from towerlight.db.events import EventRow, insert_events
from towerlight_offline.bench import LocalStack, discarded_stdout, fresh_schema, lambda_env, patched_environ
from towerlight_offline.bench.serve import recommend_event_template, request_event
from towerlight_offline.local.moto_server import ensure_queue
from towerlight_offline.local.worker import (
    DrainResult,
    Handler,
    LocalLambdaContext,
    QueueWorker,
    load_function_handler,
)
from towerlight_offline.simulate.world import SimulatedWorld


@dataclass(frozen=True)
class ModelConfig:
    """How the served model is trained (the real pipeline, small: it takes well under a minute)."""

    epochs: int = 5
    dim: int = 32
    ranker: bool = False
    seed: int = 0


def publish_model(
    world: SimulatedWorld, store_uri: str, config: ModelConfig, say: Callable[[str], None] | None = None
) -> str:
    """Train on ``world.dataset`` with ``run_training``, publish and promote into ``store_uri``; the version."""
    from towerlight_offline.model.train import TwoTowerParams
    from towerlight_offline.pipeline import TrainConfig, run_training

    train = TrainConfig(
        source=f"simulator: {world.dataset.summary()}",
        store_uri=store_uri,
        two_tower=TwoTowerParams(epochs=config.epochs, dim=config.dim),
        baselines=False,
        ranker=config.ranker,
        refit_on_all=False,
        seed=config.seed,
    )
    result = run_training(world.dataset, train, progress=say or False)
    if not result.promoted:
        raise RuntimeError(f"the simulator's model was not promoted: {result.outcome}")
    return result.version


class Functions:
    """The recommend, track and ingest handlers of this checkout, called as Lambda calls them."""

    def __init__(self, queue_url: str) -> None:
        self.recommend_handler = _cold_handler("Recommend")
        self.track_handler = _cold_handler("Track")
        self.worker = QueueWorker(queue_url, _cold_handler("Ingest"), wait_seconds=0)
        self._recommend_template = recommend_event_template()
        self._track_template = _track_template()
        self._requests = 0

    def recommend(self, user_id: str, k: int, strategy: str = "auto") -> dict[str, Any]:
        """``GET /recommendations/{user_id}?k=&strategy=``: the response body (raises on a non-200)."""
        self._requests += 1
        event = request_event(self._recommend_template, user_id, k, self._requests, {"strategy": strategy})
        with discarded_stdout():  # the handlers' JSON logs and EMF metrics
            response = self.recommend_handler(event, LocalLambdaContext(function_name="recommend"))
        return _body(response, 200)

    def track(self, events: Sequence[Mapping[str, Any]]) -> list[str]:
        """``POST /events`` with ``{"events": [...]}``: the event ids (raises unless 202)."""
        event = copy.deepcopy(self._track_template)
        event["body"] = json.dumps({"events": list(events)})
        event["headers"]["content-length"] = str(len(event["body"]))
        with discarded_stdout():
            response = self.track_handler(event, LocalLambdaContext(function_name="track"))
        return list(_body(response, 202)["event_ids"])

    def drain(self) -> DrainResult:
        """Everything in the queue through the ingest handler (impressions and events)."""
        with discarded_stdout():
            return self.worker.drain()


def _cold_handler(name: str) -> Handler:
    """The handler imported afresh, as a new execution environment would: module-level objects (ingest's
    exploration learner, recommend's prefetched model) read this policy's environment, not the last one's."""
    sys.modules.pop(f"functions.{name.lower()}.app", None)
    return load_function_handler(name)


def _body(response: dict[str, Any], status: int) -> dict[str, Any]:
    body = json.loads(response["body"])
    if response["statusCode"] != status:
        raise RuntimeError(f"handler answered {response['statusCode']}: {body}")
    return dict(body)


def _track_template() -> dict[str, Any]:
    from towerlight_offline.local.worker import project_root

    return dict(json.loads((project_root() / "events" / "track_batch.json").read_text()))


def history_rows(world: SimulatedWorld, users: Sequence[str], per_user: int) -> list[EventRow]:
    """The last ``per_user`` training events of each of ``users``: what Postgres knows of them at the start."""
    frame = world.dataset.interactions
    mine = frame[frame["user_id"].isin(set(users))].sort_values(["user_id", "timestamp"])
    recent = mine.groupby("user_id", sort=False).tail(per_user)
    return [
        EventRow(str(uuid.uuid4()), user, item, kind, None, datetime.fromtimestamp(int(ts), UTC))
        for user, item, kind, ts in zip(
            recent["user_id"], recent["item_id"], recent["event_type"], recent["timestamp"], strict=True
        )
    ]


@contextlib.contextmanager
def policy_environment(
    stack: LocalStack, history: Sequence[EventRow], env: Mapping[str, str | None]
) -> Iterator[Functions]:
    """A fresh schema with ``history`` stored, a fresh queue, and ``env`` set.

    The counters are re-read on every request (``TOWERLIGHT_BANDIT_REFRESH_SECONDS=0``): the simulator
    ingests in steps of a few rounds, far faster than the 30 s a live function would wait.
    """
    with fresh_schema(stack.server_url, "towerlight_sim") as (url, schema):
        with connect(url=url) as conn, conn.transaction():
            for start in range(0, len(history), 5000):
                insert_events(conn, history[start : start + 5000])
        queue_url = ensure_queue(schema.replace("_", "-"), max_receive_count=None)
        settings = {
            **lambda_env(),
            "DATABASE_URL": url,
            "EVENTS_QUEUE_URL": queue_url,
            "TOWERLIGHT_CACHE_DIR": str(stack.scratch / "model-cache"),
            "TOWERLIGHT_BANDIT_REFRESH_SECONDS": "0",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
            **env,
        }
        with patched_environ(settings):
            get_settings()  # validated now: a bad value fails before any round
            yield Functions(queue_url)
