"""``towerlight bench track``: the track function's duration per ``POST /events`` of 1 and of 100 events.

The real handler (``functions/track/app.py``: Powertools, Mangum, FastAPI, validation, SendMessageBatch
in chunks of 10) takes API Gateway HTTP API v2 events shaped like ``events/track_single.json``, whose
bodies are synthetic events as clients send them (``towerlight_offline.bench.ingest.message_bodies``),
and sends to a queue on moto's SQS endpoint (real HTTP on 127.0.0.1). After each request, the
transport alone: ``send_messages`` of the same messages without the handler, so what the function adds
to the queue's own latency shows. Every response must be 202 and the queue must have received every
event sent.

Example::

    >>> report, (json_path, md_path) = run_track_bench(TrackBenchConfig(plan=((1, 300), (100, 60))))
    >>> report.results["post_1"]["handler"]["p50_ms"]
    3.9
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from towerlight.queue import send_messages
from towerlight_offline.bench import discarded_stdout, lambda_env, patched_environ
from towerlight_offline.bench.ingest import IngestBenchConfig, message_bodies
from towerlight_offline.bench.report import (
    LATENCY_HEADERS,
    Report,
    Target,
    latency_row,
    latency_summary,
    load_average,
    machine_info,
    write_report,
)
from towerlight_offline.local.worker import LocalLambdaContext, load_function_handler, project_root

logger = logging.getLogger(__name__)

Say = Callable[[str], None]
QUEUE_NAME = "towerlight-bench-track"
MEMORY_MB = 512  # TrackFunction's MemorySize in template.yaml
# The README's cost row assumed at most this per single-event POST before track was measured.
SINGLE_EVENT_P99_MS = 10.0


@dataclass
class TrackBenchConfig:
    """Sizes of one ``bench track`` run (the CLI flags)."""

    # (events per POST, timed POSTs): fewer big ones, as each waits on ten SendMessageBatch calls
    plan: tuple[tuple[int, int], ...] = ((1, 300), (100, 60))
    warmup: int = 10  # untimed POSTs first, per size
    seed: int = 0
    out: Path = field(default_factory=lambda: Path("bench-results"))


def http_event(body: str) -> dict[str, Any]:
    """An API Gateway HTTP API v2 ``POST /events`` event carrying ``body`` (events/track_single.json's shape)."""
    template = json.loads((project_root() / "events" / "track_single.json").read_text())
    headers = {**template["headers"], "content-length": str(len(body.encode()))}
    return {**template, "headers": headers, "body": body}


def request_bodies(config: TrackBenchConfig, size: int, count: int) -> list[str]:
    """``count`` request bodies of ``size`` events each: one event object, or ``{"events": [...]}``."""
    events = message_bodies(IngestBenchConfig(events=size * count, users=1000, items=10_000, seed=config.seed + size))
    if size == 1:
        return events
    return ['{"events":[' + ",".join(events[i : i + size]) + "]}" for i in range(0, len(events), size)]


def run_track_bench(config: TrackBenchConfig, say: Say = logger.info) -> tuple[Report, tuple[Path, Path]]:
    """Run the track benchmark against a fresh moto SQS endpoint; returns the report and its two paths."""
    from towerlight_offline.local.moto_server import ensure_queue, env_for_endpoint, start_moto_server

    machine = machine_info()
    started = time.perf_counter()
    results: dict[str, Any] = {}
    with start_moto_server() as moto, patched_environ({**env_for_endpoint(moto.endpoint_url), **lambda_env()}):
        queue_url = ensure_queue(QUEUE_NAME, max_receive_count=None)
        with patched_environ({"EVENTS_QUEUE_URL": queue_url}):
            # Imported afresh, as in a new execution environment: its Powertools objects then read this
            # environment, whatever imported the module before.
            sys.modules.pop("functions.track.app", None)
            handler = load_function_handler("Track")
            for size, posts in config.plan:
                say(f"{config.warmup} + {posts} POSTs of {size} event(s), then the transport alone")
                results[f"post_{size}"] = _measure(handler, queue_url, config, size, posts)
    results["events_in_queue"] = sum(results[f"post_{size}"]["messages_queued"] for size, _ in config.plan)
    # At least once: a send that timed out after SQS took it is sent again, so the queue may hold more.
    sent = sum(size * (config.warmup + posts) for size, posts in config.plan) * 2  # handler and transport each
    if results["events_in_queue"] < sent:
        raise RuntimeError(f"the queue holds {results['events_in_queue']} messages, {sent} were accepted")
    results["events_accepted"] = sent
    report = _report(config, machine, results, time.perf_counter() - started)
    return report, write_report(report, config.out)


def _measure(
    handler: Callable[..., Any], queue_url: str, config: TrackBenchConfig, size: int, posts: int
) -> dict[str, Any]:
    """Each request through the handler, then its messages through the transport alone, interleaved."""
    handler_ns: list[int] = []
    transport_ns: list[int] = []
    queued = 0
    context = LocalLambdaContext(function_name="track", memory_limit_in_mb=MEMORY_MB)
    with discarded_stdout():  # the handler's logs and metrics, and send_messages' retry warnings
        for position, body in enumerate(request_bodies(config, size, config.warmup + posts)):
            begun = time.perf_counter_ns()
            response = handler(http_event(body), context)
            elapsed = time.perf_counter_ns() - begun
            if response["statusCode"] != 202 or json.loads(response["body"])["accepted"] != size:
                raise RuntimeError(f"POST of {size} event(s) answered {response['statusCode']}: {response['body']}")
            queued += _take_messages(queue_url)
            events = [body] if size == 1 else [json.dumps(e, separators=(",", ":")) for e in json.loads(body)["events"]]
            begun_transport = time.perf_counter_ns()
            result = send_messages(queue_url, events)
            elapsed_transport = time.perf_counter_ns() - begun_transport
            if result.failed:
                raise RuntimeError(f"the transport failed {len(result.failed)} messages")
            queued += _take_messages(queue_url)
            if position >= config.warmup:
                handler_ns.append(elapsed)
                transport_ns.append(elapsed_transport)
    billed_ms = [math.ceil(ns / 1e6) for ns in handler_ns]  # Lambda bills each invocation by the ms, rounded up
    mean_billed = sum(billed_ms) / len(billed_ms)
    handler_summary, transport = latency_summary(handler_ns), latency_summary(transport_ns)
    return {
        "events_per_post": size,
        "handler": handler_summary,
        "transport": transport,
        # What the function itself spends: the queue endpoint's latency here is moto's, not SQS's.
        "handler_minus_transport_p50_ms": round(handler_summary["p50_ms"] - transport["p50_ms"], 3),
        "billed_ms_mean": round(mean_billed, 2),
        "gb_seconds_per_million_posts": round(mean_billed / 1000 * MEMORY_MB / 1024 * 1e6, 1),
        "messages_queued": queued,
    }


def _take_messages(queue_url: str) -> int:
    """Receive and delete every message in the queue; returns how many (moto slows as a queue grows)."""
    from towerlight.queue import SQS_BATCH_LIMIT, sqs_client

    sqs, taken = sqs_client(), 0
    while messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=SQS_BATCH_LIMIT).get("Messages"):
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
        sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)
        taken += len(messages)
    return taken


def _report(config: TrackBenchConfig, machine: dict[str, Any], results: dict[str, Any], seconds: float) -> Report:
    single = results.get("post_1", {}).get("handler", {})
    targets = [
        Target(
            "track, POST of 1 event, p99",
            single.get("p99_ms"),
            SINGLE_EVENT_P99_MS,
            "ms",
            note="the bound the README's cost row assumed before track was measured",
        )
    ]
    latency_rows = []
    cost_rows = []
    for size, _ in config.plan:
        measured = results[f"post_{size}"]
        latency_rows.append(latency_row(f"handler, POST of {size}", measured["handler"]))
        latency_rows.append(latency_row(f"transport alone (send_messages of {size})", measured["transport"]))
        cost_rows.append(
            [
                size,
                f"{measured['handler']['mean_ms']:.2f}",
                f"{measured['handler_minus_transport_p50_ms']:.2f}",
                f"{measured['billed_ms_mean']:.2f}",
                f"{measured['gb_seconds_per_million_posts']:,.0f}",
                f"{measured['gb_seconds_per_million_posts'] / size:,.1f}",
            ]
        )
    notes = [
        "handler = the whole invocation as Lambda times it (Powertools, Mangum, FastAPI, validation, "
        "SendMessageBatch in chunks of 10, sent concurrently); transport = send_messages alone, on the same "
        "endpoint: moto's server on this machine, whose latency is not SQS's",
        f"{results['events_in_queue']:,} messages reached the queue for {results['events_accepted']:,} accepted "
        "(more: a send that timed out was retried); the queue is drained after each request, untimed, as "
        "moto's SendMessageBatch slows down as a queue grows",
        f"billed: each invocation's duration rounded up to the ms, at {MEMORY_MB} MB (TrackFunction)",
        f"total benchmark time {seconds:.0f} s",
    ]
    return Report(
        name="track",
        title="towerlight bench track: " + ", ".join(f"{posts} POSTs of {size}" for size, posts in config.plan),
        config={k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        results={**results, "seconds": round(seconds, 1)},
        targets=targets,
        machine_before=machine,
        machine_after={"load_average": load_average()},
        sections=[
            ("Duration per POST", LATENCY_HEADERS, latency_rows),
            (
                "Lambda compute",
                [
                    "events per POST",
                    "mean ms",
                    "p50 ms less the transport's",
                    "mean billed ms",
                    "GB-s per million POSTs",
                    "GB-s per million events",
                ],
                cost_rows,
            ),
        ],
        notes=notes,
    )
