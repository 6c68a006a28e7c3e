"""The whole loop on one machine: fetch, import, train, publish, recommend, track, ingest, recommend again.

Every step goes through the real parts: moto's S3/SQS server over HTTP, a real Postgres, the real
training pipeline and the Lambda handlers called with API Gateway / SQS events shaped like the files
in ``events/``. Nothing is retrained between the two recommendations: the second one differs only
because the user tower reads the user's newest events from Postgres on every request.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import io
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from towerlight.config import get_settings
from towerlight.db.connection import connect
from towerlight_offline import console
from towerlight_offline.commands.serve import QUIET_LAMBDA_ENV, start_local_stack
from towerlight_offline.commands.train import print_summary
from towerlight_offline.data.dataset import Dataset
from towerlight_offline.data.importer import import_files
from towerlight_offline.data.movielens import fetch_movielens_100k, load_movielens
from towerlight_offline.data.sources import dataset_from_postgres
from towerlight_offline.local.moto_server import configure_env, ensure_bucket, ensure_queue, start_moto_server
from towerlight_offline.local.worker import LocalLambdaContext, QueueWorker, load_function_handler
from towerlight_offline.pipeline import TrainConfig, run_training

EVENTS_DIR = Path(__file__).resolve().parents[2] / "events"
DEMO_BUCKET = "towerlight-demo"
DEMO_QUEUE = "towerlight-demo-events"
CLICKS = 5
Catalogue = dict[str, tuple[str, list[str]]]  # item id -> (title, genres)


@dataclass(frozen=True)
class DemoOptions:
    user_id: str = "42"
    k: int = 10
    epochs: int | None = None


def api_event(template: str, path: str, *, query: dict[str, Any] | None = None, body: Any = None) -> dict[str, Any]:
    """An API Gateway HTTP API (v2) event: the shape of ``events/<template>`` with another path/query/body."""
    event = copy.deepcopy(json.loads((EVENTS_DIR / template).read_text()))
    event["rawPath"] = path
    event["requestContext"]["http"]["path"] = path
    event["rawQueryString"] = urlencode(query or {})
    event["queryStringParameters"] = {k: str(v) for k, v in (query or {}).items()} or None
    event["pathParameters"] = None
    if body is not None:
        event["body"] = json.dumps(body)
        event["isBase64Encoded"] = False
        event["headers"]["content-length"] = str(len(event["body"]))
    return {k: v for k, v in event.items() if v is not None}


def _call(handler: Callable[..., Any], event: dict[str, Any], function: str) -> dict[str, Any]:
    with contextlib.redirect_stdout(io.StringIO()):  # Powertools' EMF lines are not part of the story
        response = handler(event, LocalLambdaContext(function_name=function))
    body = json.loads(response["body"])
    if response["statusCode"] >= 400:
        raise RuntimeError(f"{function} answered {response['statusCode']}: {body}")
    return body


def _local_stack(stack: contextlib.ExitStack) -> None:
    """moto for S3 + SQS, a throwaway embedded Postgres (unless DATABASE_URL is set), quiet handlers."""
    for name, value in QUIET_LAMBDA_ENV.items():
        os.environ.setdefault(name, value)
    scratch = Path(tempfile.mkdtemp(prefix="towerlight-demo-"))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)  # registered first, so it runs after Postgres stops
    os.environ.setdefault("TOWERLIGHT_PGDATA", str(scratch / "pgdata"))
    os.environ["TOWERLIGHT_CACHE_DIR"] = str(scratch / "cache")
    server = stack.enter_context(start_moto_server())
    configure_env(server.endpoint_url)
    ensure_bucket(DEMO_BUCKET)
    os.environ["TOWERLIGHT_STORE"] = f"s3://{DEMO_BUCKET}/towerlight"
    os.environ["EVENTS_QUEUE_URL"] = ensure_queue(DEMO_QUEUE)
    console.say(f"S3 + SQS: moto server at {server.endpoint_url}")
    for line in start_local_stack(stack):
        console.say(f"started {line}")


def _describe(items: list[dict[str, Any]], catalogue: Catalogue, marks: set[str], clicks: Sequence[str] = ()) -> None:
    """The page as a table; with ``explain`` reasons, the recent item each is closest to (a click: marked)."""
    headers = ["rank", "item", "title", "genres", "score", ""]
    explained = any("reasons" in item for item in items)
    rows = []
    for item in items:
        title, genres = catalogue.get(item["item_id"], ("?", []))
        row = [item["rank"], item["item_id"], title[:40], ", ".join(genres)[:40], f"{item['score']:.3f}",
               "new" if item["item_id"] in marks else ""]  # fmt: skip
        if explained:
            because = _because(item)
            row.append("" if because is None else catalogue.get(because, ("?", []))[0][:30]
                       + (" (clicked)" if because in clicks else ""))  # fmt: skip
        rows.append(row)
    console.say(console.table(headers + ["because you watched"] * explained, rows))


def _because(item: dict[str, Any]) -> str | None:
    """The user's recent item that ``explain=true`` names as closest to ``item`` (None when it names none)."""
    return ((item.get("reasons") or {}).get("retrieval", {}).get("because") or {}).get("item_id")


def _genre_counts(item_ids: list[str], catalogue: Catalogue) -> Counter[str]:
    return Counter(g for i in item_ids for g in catalogue.get(i, ("", []))[1])


def _pick_clicks(dataset: Dataset, user_id: str, shown: list[str], catalogue: Catalogue) -> tuple[str, list[str]]:
    """The common genre least present in what the user was shown, and its most popular unseen items."""
    frame = dataset.interactions
    seen = set(frame.loc[frame["user_id"] == user_id, "item_id"])
    popular = frame["item_id"].value_counts().index.tolist()
    genre_sizes = Counter(g for _, genres in catalogue.values() for g in genres)
    common = [g for g, n in genre_sizes.items() if n >= 50]
    shown_counts = _genre_counts(shown, catalogue)
    genre = min(common, key=lambda g: (shown_counts[g], -genre_sizes[g]))
    clicks = [i for i in popular if i not in seen and genre in catalogue.get(i, ("", []))[1]][:CLICKS]
    return genre, clicks


def run_demo(options: DemoOptions) -> int:
    """Run the loop and narrate it; returns an exit code."""
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        console.heading("1. Local stack (no AWS account, no Docker)")
        _local_stack(stack)

        console.heading("2. Data: MovieLens-100K into Postgres")
        path = fetch_movielens_100k()
        with connect() as conn:
            report = import_files(conn, path / "interactions.csv", path / "items.csv", path / "users.csv")
        console.say(report.summary())
        items = load_movielens(path).items
        catalogue = {r.item_id: (r.title, list(r.categories)) for r in items.itertuples()}

        console.heading("3. Train, evaluate, publish and promote (from Postgres)")
        with connect() as conn:
            dataset = dataset_from_postgres(conn)
        config = TrainConfig(source="postgres", store_uri=get_settings().require_store())
        if options.epochs is not None:
            config = replace(config, two_tower=replace(config.two_tower, epochs=options.epochs))
        result = run_training(dataset, config, progress=console.say)
        print_summary(result)

        recommend = load_function_handler("Recommend")
        track = load_function_handler("Track")
        worker = QueueWorker(get_settings().require_queue(), load_function_handler("Ingest"))
        user, query = options.user_id, {"k": options.k}

        console.heading(f"4. Recommend for user {user} (Recommend handler, API Gateway v2 event)")
        before = _call(recommend, api_event("recommend_get.json", f"/recommendations/{user}", query=query), "recommend")
        console.say(f"model {before['model_version']}, strategy {before['strategy']}")
        _describe(before["items"], catalogue, set())

        shown = [i["item_id"] for i in before["items"]]
        genre, clicks = _pick_clicks(dataset, user, shown, catalogue)
        console.heading(f"5. User {user} clicks {len(clicks)} {genre} titles (Track handler → SQS)")
        events = [{"user_id": user, "item_id": i, "event_type": "click",
                   "recommendation_id": before["recommendation_id"]} for i in clicks]  # fmt: skip
        accepted = _call(track, api_event("track_batch.json", "/events", body={"events": events}), "track")
        for item_id in clicks:
            console.say(f"  click {item_id}: {catalogue[item_id][0]}")
        console.say(f"202 accepted: {len(accepted['event_ids'])} event ids")

        console.heading("6. Ingest (SQS → Ingest handler → Postgres)")
        drained = worker.drain(timeout=30)
        with connect() as conn:
            stored = conn.execute(
                "SELECT count(*) FROM events WHERE user_id = %s AND event_id = ANY(%s::uuid[])",
                (user, accepted["event_ids"]),
            ).fetchone()
        console.say(f"{drained.received} message(s) received, {drained.deleted} deleted from the queue; "
                    f"{stored[0] if stored else 0} of the clicks are rows in Postgres")  # fmt: skip

        console.heading(f"7. Recommend for user {user} again — same model, no retraining (explain=true)")
        explained = {**query, "explain": "true"}
        after = _call(
            recommend, api_event("recommend_get.json", f"/recommendations/{user}", query=explained), "recommend"
        )
        console.say(f"model {after['model_version']}, strategy {after['strategy']}")
        _describe(after["items"], catalogue, set(i["item_id"] for i in after["items"]) - set(shown), clicks)

        console.heading("What changed and why")
        after_ids = [i["item_id"] for i in after["items"]]
        share_before, share_after = _genre_counts(shown, catalogue)[genre], _genre_counts(after_ids, catalogue)[genre]
        from_clicks = [i["item_id"] for i in after["items"] if _because(i) in clicks]
        console.say(f"{len(set(after_ids) - set(shown))} new item(s) in the top {options.k}; {len(from_clicks)} of "
                    f"the {len(after_ids)} are closest to one of the {len(clicks)} clicked titles (explain=true's "
                    f"'because'); {genre} titles: {share_before} before, {share_after} after.")  # fmt: skip
        console.say(
            "The user tower reads the user's most recent events from Postgres on every request, so the "
            f"{len(clicks)} clicks (now the newest history, weighted most) moved the user's embedding; the "
            "clicked titles themselves are filtered out as seen. The model version is the same in both answers."
        )
    console.say(f"\ndemo finished in {time.perf_counter() - started:.0f} s")
    return 0
