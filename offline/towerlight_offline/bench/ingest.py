"""``towerlight bench ingest``: the ingest function's throughput into Postgres, beside one INSERT per event.

Synthetic interactions become the message bodies the track function sends (canonical event JSON, a
quarter of them with a ``recommendation_id`` and a ``context``), grouped into real SQS events of
``batch`` records (``towerlight_offline.local.worker.sqs_event``). Then, on one Postgres (a fresh
schema; ``towerlight_offline.bench.local_stack``):

- ``functions/ingest/app.py``'s ``handler`` ingests every batch once (new events, with ids as track
  makes them: time-ordered UUIDv7);
- the baselines, interleaved with those batches so load changes hit all paths: the same handler with
  its writer replaced by one ``INSERT ... ON CONFLICT DO NOTHING`` per event, all in one transaction
  per batch (the same atomicity as the real writer); and, on fewer events, one INSERT per event each
  committed on its own (autocommit);
- the first ``duplicate_batches`` batches are delivered again whole (SQS redelivery): every event is
  a duplicate;
- apart from the handler, ``id_order_batches`` batches of new events are written with the real writer
  (``copy_events``) into two fresh ``events`` tables, one keyed by time-ordered ids and one by random
  (v4) ids, as a client naming its own events may send: what the kind of id costs Postgres.

Example::

    >>> report, (json_path, md_path) = run_ingest_bench(IngestBenchConfig(events=200_000, batch=1000))
    >>> report.results["handler"]["events_per_second"], report.targets[0].status
    (39112.0, 'MISS')
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import psycopg

from towerlight import ingest as ingest_service
from towerlight.db.connection import shared_connection
from towerlight.db.events import copy_events, event_record
from towerlight.ids import time_ordered_id
from towerlight.ingest import EventBatchProcessor, IngestBatch
from towerlight_offline.bench import (
    LocalStack,
    discarded_stdout,
    fresh_schema,
    lambda_env,
    local_stack,
    patched_environ,
)
from towerlight_offline.bench.report import (
    Report,
    Target,
    latency_summary,
    load_average,
    machine_info,
    write_report,
)
from towerlight_offline.local.worker import LocalLambdaContext, load_function_handler, sqs_event

logger = logging.getLogger(__name__)

Say = Callable[[str], None]
QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:towerlight-bench-events"
RATE_TARGET = 50_000.0
_INSERT_ONE = (
    "INSERT INTO events (event_id, user_id, item_id, event_type, value, ts, recommendation_id, context)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb) ON CONFLICT (event_id) DO NOTHING RETURNING event_id::text"
)


@dataclass
class IngestBenchConfig:
    """Sizes of one ``bench ingest`` run (the CLI flags)."""

    events: int = 200_000
    batch: int = 1000
    baseline_events: int = 20_000  # one INSERT per event, one transaction per batch
    autocommit_events: int = 2_000  # one INSERT per event, each its own transaction
    duplicate_batches: int = 20
    id_order_batches: int = 300  # per kind of id, in the primary-key comparison
    users: int = 10_000
    items: int = 100_000
    seed: int = 0
    out: Path = field(default_factory=lambda: Path("bench-results"))


def message_bodies(config: IngestBenchConfig, *, now: float | None = None) -> list[str]:
    """``config.events`` event bodies as the track function enqueues them (canonical JSON, fresh ids).

    Who did what comes from ``synthetic_dataset``; the times are those of live traffic: spread over the
    hour before ``now``, in arrival order with a few seconds of jitter (as clients' clocks and SQS give).

    >>> json.loads(message_bodies(IngestBenchConfig(events=1, users=1, items=1))[0])["event_type"]
    'view'
    """
    from towerlight_offline.data.synthetic import synthetic_dataset

    data = synthetic_dataset(config.users, config.items, config.events, seed=config.seed).interactions
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(data))  # interleave users, as a live stream does
    end = time.time() if now is None else now
    times = end - 3600 + np.linspace(0, 3590, len(data)) + rng.uniform(0, 5, len(data))
    with_context = rng.random(len(data)) < 0.25
    positions = rng.integers(1, 20, len(data))
    users, items, kinds = (data[column].to_numpy()[order] for column in ("user_id", "item_id", "event_type"))
    bodies = []
    for user, item, kind, ts, tagged, position in zip(users, items, kinds, times, with_context, positions, strict=True):
        body: dict[str, Any] = {
            "event_id": time_ordered_id(),
            "user_id": user,
            "item_id": item,
            "event_type": kind,
            "timestamp": datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
        if tagged:
            body["recommendation_id"] = str(uuid.uuid4())
            body["context"] = {"page": "home", "position": int(position)}
        bodies.append(json.dumps(body, separators=(",", ":")))
    return bodies


def sqs_batches(bodies: Sequence[str], size: int) -> list[dict[str, Any]]:
    """Lambda SQS events of ``size`` records each (the last one may be shorter).

    >>> len(sqs_batches(["{}"] * 5, 2))
    3
    """
    messages = [{"MessageId": str(uuid.uuid4()), "ReceiptHandle": uuid.uuid4().hex, "Body": body} for body in bodies]
    return [sqs_event(messages[i : i + size], QUEUE_ARN, "us-east-1") for i in range(0, len(messages), size)]


def insert_one_by_one(batch: IngestBatch, *, autocommit: bool = False) -> int:
    """The baseline writer: one ``INSERT ... ON CONFLICT DO NOTHING`` round trip per event, all in one
    transaction (``autocommit=False``) or each committed on its own; returns how many were new."""
    conn = shared_connection()
    inserted = 0
    conn.autocommit = autocommit
    try:
        with contextlib.nullcontext() if autocommit else conn.transaction():
            for event_id, user_id, item_id, event_type, value, ts, recommendation_id, context in batch.events.values():
                found = conn.execute(
                    _INSERT_ONE,
                    [
                        uuid.UUID(bytes=event_id),
                        user_id,
                        item_id,
                        event_type,
                        value,
                        ts,
                        recommendation_id,
                        None if context is None else context[1:].decode(),  # jsonb's wire form: version byte, text
                    ],
                ).fetchone()
                inserted += found is not None
    finally:
        conn.autocommit = False
    return inserted


@dataclass
class _Timed:
    """Per batch: wall time, time in the writer and in storing the events (ns), size; and the processor's counts."""

    total_ns: list[int] = field(default_factory=list)
    write_ns: list[int] = field(default_factory=list)
    insert_ns: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    inserted: int = 0
    duplicates: int = 0
    failures: int = 0
    client_cpu_ns: int = 0
    server_cpu_s: float = 0.0

    def add(self, elapsed: int, spent: dict[str, int], records: int, stats: Any, failures: int) -> None:
        self.total_ns.append(elapsed)
        self.write_ns.append(spent["write"])
        self.insert_ns.append(spent["insert"])
        self.sizes.append(records)
        self.inserted += stats.inserted
        self.duplicates += stats.duplicates
        self.failures += failures

    def summary(self) -> dict[str, Any]:
        total = sum(self.total_ns)
        events = sum(self.sizes)
        per_batch = [n / (ns / 1e9) for ns, n in zip(self.total_ns, self.sizes, strict=True) if ns]
        rest = [w - i for w, i in zip(self.write_ns, self.insert_ns, strict=True)]
        return {
            "batches": len(self.total_ns),
            "events": events,
            "inserted": self.inserted,
            "duplicates": self.duplicates,
            "failed_records": self.failures,
            "seconds": round(total / 1e9, 3),
            "events_per_second": round(events / (total / 1e9), 1) if total else None,
            "batch_p50_events_per_second": round(float(np.median(per_batch)), 1) if per_batch else None,
            "batch_latency": latency_summary(self.total_ns),
            "write_latency": latency_summary(self.write_ns),
            "store_events_latency": latency_summary(self.insert_ns) if any(self.insert_ns) else None,
            "write_minus_insert_latency": latency_summary(rest) if any(self.insert_ns) else None,
            "write_share": round(sum(self.write_ns) / total, 3) if total else None,
            **self._cpu(events),
        }

    def _cpu(self, events: int) -> dict[str, Any]:
        # CPU time, unlike wall time, hardly depends on what else the machine runs.
        client = self.client_cpu_ns / 1e9
        cpu = client + self.server_cpu_s
        return {
            "client_cpu_ms_per_batch": round(client * 1e3 / len(self.sizes), 2) if self.sizes else None,
            "postgres_cpu_ms_per_batch": round(self.server_cpu_s * 1e3 / len(self.sizes), 2) if self.sizes else None,
            "events_per_cpu_second": round(events / cpu, 1) if cpu else None,
        }


class _Handler:
    """The real ingest handler, with its writer swappable; time in the writer and in storing events noted."""

    def __init__(self) -> None:
        self.handler = load_function_handler("Ingest")
        self.module: ModuleType = sys.modules["functions.ingest.app"]
        self.real_processor = self.module.processor
        self.spent = {"write": 0, "insert": 0}
        self._restore: list[Callable[[], None]] = []
        self._wrap(self.module, "write_events", "write")  # BEGIN, the events, the feedback, COMMIT
        self._wrap(ingest_service, "copy_events", "insert")  # the events (new ones: COPY)
        self._wrap(ingest_service, "store_new_events", "insert")  # the events (after a COPY met a stored one)

    def _wrap(self, module: ModuleType, name: str, counter: str) -> None:
        original = getattr(module, name)
        setattr(module, name, self._timing(original, counter))
        self._restore.append(lambda: setattr(module, name, original))

    def _timing(self, function: Callable[..., int], counter: str) -> Callable[..., int]:
        def timed(*args: Any) -> int:
            started = time.perf_counter_ns()
            try:
                return function(*args)
            finally:
                self.spent[counter] += time.perf_counter_ns() - started

        return timed

    @contextlib.contextmanager
    def writer(self, write: Callable[[IngestBatch], int]) -> Iterator[None]:
        """Use ``write`` (a baseline) instead of the real writer inside the block."""
        self.module.processor = EventBatchProcessor(write=self._timing(write, "write"), metrics=self.module.metrics)
        try:
            yield
        finally:
            self.module.processor = self.real_processor

    def run(self, event: dict[str, Any], into: _Timed) -> None:
        self.spent = {"write": 0, "insert": 0}
        context = LocalLambdaContext(function_name="ingest")
        backend = shared_connection().info.backend_pid
        with discarded_stdout():
            server_cpu = backend_cpu_seconds(backend)
            client_cpu = time.thread_time_ns()
            started = time.perf_counter_ns()
            response = self.handler(event, context)
            elapsed = time.perf_counter_ns() - started
            into.client_cpu_ns += time.thread_time_ns() - client_cpu
            into.server_cpu_s += backend_cpu_seconds(backend) - server_cpu
        failures = len(response.get("batchItemFailures", []))
        into.add(elapsed, self.spent, len(event["Records"]), self.module.processor.stats, failures)

    def close(self) -> None:
        for restore in self._restore:
            restore()


def backend_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of the Postgres backend ``pid`` so far (Linux /proc; 0 elsewhere).

    The clock ticks are coarse (10 ms), but summed over hundreds of batches the total is close.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _schedule(handler_batches: int, baseline_batches: int) -> list[int]:
    """Positions (after which handler batch) to run each baseline batch, spread evenly."""
    if baseline_batches <= 0:
        return []
    step = handler_batches / baseline_batches
    return [min(handler_batches - 1, math.floor(step * (i + 0.5))) for i in range(baseline_batches)]


def run_ingest_bench(config: IngestBenchConfig, say: Say = logger.info) -> tuple[Report, tuple[Path, Path]]:
    """Run the ingest benchmark; returns the report and the JSON and markdown paths."""
    machine = machine_info()
    started = time.perf_counter()
    say(f"building {config.events:,} events (+ baselines) as SQS batches of {config.batch}")
    extra = config.baseline_events + config.autocommit_events
    bodies = message_bodies(IngestBenchConfig(**{**asdict(config), "events": config.events + extra}))
    batches = sqs_batches(bodies[: config.events], config.batch)
    baseline = sqs_batches(bodies[config.events : config.events + config.baseline_events], config.batch)
    autocommit = sqs_batches(bodies[config.events + config.baseline_events :], min(config.batch, 100))
    del bodies
    with local_stack() as stack, patched_environ(lambda_env()):
        ingest = _Handler()
        try:
            results = _measure(ingest, batches, baseline, autocommit, config, say)
            postgres_rows = _count_events()
        finally:
            ingest.close()
        say(f"primary key: {config.id_order_batches} batches of new events per kind of id, alternately")
        id_order = compare_id_order(stack.server_url, config)
    report = _report(config, machine, stack, results, postgres_rows, id_order, time.perf_counter() - started)
    return report, write_report(report, config.out)


def _measure(
    ingest: _Handler,
    batches: list[dict[str, Any]],
    baseline: list[dict[str, Any]],
    autocommit: list[dict[str, Any]],
    config: IngestBenchConfig,
    say: Say,
) -> dict[str, _Timed]:
    results = {name: _Timed() for name in ("handler", "one_insert_per_event", "autocommit_per_event", "redelivery")}
    ingest.run(batches[0], _Timed())  # warm-up: the connection, psycopg's caches (stored, then redelivered)
    timed = batches[1:]
    extras: dict[int, list[tuple[str, dict[str, Any]]]] = {}
    for name, events in (("one_insert_per_event", baseline), ("autocommit_per_event", autocommit)):
        for at, event in zip(_schedule(len(timed), len(events)), events, strict=True):
            extras.setdefault(at, []).append((name, event))
    writers = {
        "one_insert_per_event": insert_one_by_one,
        "autocommit_per_event": functools.partial(insert_one_by_one, autocommit=True),
    }
    for position, event in enumerate(timed):
        ingest.run(event, results["handler"])
        for name, extra in extras.get(position, []):
            with ingest.writer(writers[name]):
                ingest.run(extra, results[name])
        if position and position % 50 == 0:
            say(f"  {position:,}/{len(timed):,} batches")
    say(f"redelivering {config.duplicate_batches} batches whole")
    for event in batches[: config.duplicate_batches]:
        ingest.run(event, results["redelivery"])
    return results


# The kinds of event id compared, each with how one is made.
ID_KINDS: dict[str, Callable[[], str]] = {
    "time-ordered (UUIDv7, as track makes them)": time_ordered_id,
    "random (UUIDv4)": lambda: str(uuid.uuid4()),
}


def compare_id_order(server_url: str, config: IngestBenchConfig) -> dict[str, dict[str, Any]]:
    """What storing new events costs under each kind of id (``ID_KINDS``), measured side by side.

    Each kind writes into its own freshly migrated ``events`` table, with ``copy_events`` (the ingest
    function's writer), one transaction per batch. Every batch's rows (users, items) are the same for
    both kinds, only the ids differ, and the kinds take turns going first.
    """
    rng = np.random.default_rng(config.seed)
    now = datetime.now(UTC)
    timed: dict[str, _Timed] = {kind: _Timed() for kind in ID_KINDS}
    with contextlib.ExitStack() as stack:
        conns = {}
        for kind in ID_KINDS:
            url, _ = stack.enter_context(fresh_schema(server_url, prefix="towerlight_bench_ids"))
            conns[kind] = stack.enter_context(psycopg.connect(url))
        for position in range(config.id_order_batches):
            users, items = rng.integers(config.users, size=config.batch), rng.integers(config.items, size=config.batch)
            for kind in ID_KINDS if position % 2 else reversed(ID_KINDS):
                make_id, conn = ID_KINDS[kind], conns[kind]
                records = [
                    event_record(make_id(), f"u{u}", f"i{i}", "click", None, now, None, None)
                    for u, i in zip(users, items, strict=True)
                ]
                server_cpu = backend_cpu_seconds(conn.info.backend_pid)
                started = time.perf_counter_ns()
                with conn.transaction():
                    copy_events(conn, records)
                timed[kind].total_ns.append(time.perf_counter_ns() - started)
                timed[kind].sizes.append(len(records))
                timed[kind].server_cpu_s += backend_cpu_seconds(conn.info.backend_pid) - server_cpu
        index_bytes = {
            kind: int(conn.execute("SELECT pg_relation_size('events_pkey')").fetchone()[0])
            for kind, conn in conns.items()
        }
    summaries = {kind: t.summary() for kind, t in timed.items()}
    return {
        kind: {
            "batches": s["batches"],
            "rows": s["events"],
            "batch_latency": s["batch_latency"],
            "postgres_cpu_ms_per_batch": s["postgres_cpu_ms_per_batch"],
            "primary_key_bytes": index_bytes[kind],
        }
        for kind, s in summaries.items()
    }


def _count_events() -> int:
    conn = shared_connection()
    with conn.transaction():
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])


def _report(
    config: IngestBenchConfig,
    machine: dict[str, Any],
    stack: LocalStack,
    results: dict[str, _Timed],
    postgres_rows: int,
    id_order: dict[str, dict[str, Any]],
    seconds: float,
) -> Report:
    summaries = {name: timed.summary() for name, timed in results.items()}
    handler, one = summaries["handler"], summaries["one_insert_per_event"]
    targets = [
        Target(
            f"ingest through the handler, batches of {config.batch}",
            handler["events_per_second"],
            RATE_TARGET,
            "events/s",
            kind="at_least",
            baseline=one["events_per_second"],
            note="baseline: one INSERT per event, one transaction per batch",
        ),
        Target(
            "same, per-batch median",
            handler["batch_p50_events_per_second"],
            RATE_TARGET,
            "events/s",
            kind="at_least",
            baseline=one["batch_p50_events_per_second"],
        ),
        Target(
            "same, per CPU-second (client + Postgres backend)",
            handler["events_per_cpu_second"],
            RATE_TARGET,
            "events/s",
            kind="at_least",
            baseline=one["events_per_cpu_second"],
            note="what an otherwise idle machine would approach (fsync waits aside); load-independent",
        ),
    ]
    labels = {
        "handler": "handler, new events (COPY)",
        "one_insert_per_event": "baseline: one INSERT per event, one transaction per batch",
        "autocommit_per_event": "baseline: one INSERT per event, each committed (autocommit)",
        "redelivery": "handler, whole batches redelivered (all duplicates)",
    }
    rows = [
        [
            labels[name],
            s["batches"],
            s["events"],
            s["inserted"],
            s["duplicates"],
            s["failed_records"],
            f"{s['events_per_second']:,.0f}" if s["events_per_second"] else "",
            f"{s['batch_p50_events_per_second']:,.0f}" if s["batch_p50_events_per_second"] else "",
            _ms(s["batch_latency"], "p50_ms"),
            _ms(s["batch_latency"], "p99_ms"),
            _ms(s["write_latency"], "p50_ms"),
            _ms(s["store_events_latency"], "p50_ms"),
            _ms(s["write_minus_insert_latency"], "p50_ms"),
        ]
        for name, s in summaries.items()
    ]
    notes = [
        f"Postgres: {stack.postgres}; " + ", ".join(f"{k}={v}" for k, v in stack.postgres_settings.items()),
        "events/s = events / total handler time; per-batch median = the median of each batch's own rate; "
        "write = the processor's writer (write_events: BEGIN, SET LOCAL, the events, the feedback, COMMIT; "
        "or the baseline's), store events = the COPY (or the ON CONFLICT insert), commit etc. = write - store "
        "events; the rest of a batch is parsing and validating records and Powertools' batch machinery",
        f"baseline batches run interleaved with the handler's; the autocommit baseline uses batches of "
        f"{min(config.batch, 100)}; {postgres_rows:,} rows in events at the end",
        "primary key: copy_events alone (BEGIN, COPY, COMMIT) into two fresh events tables, the same users and "
        "items under each kind of id, the kinds alternating which goes first",
        f"total benchmark time {seconds:.0f} s",
    ]
    return Report(
        name="ingest",
        title=f"towerlight bench ingest: {config.events:,} events, batches of {config.batch}",
        config={k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        results={
            **summaries,
            "postgres": {"kind": stack.postgres, "settings": stack.postgres_settings},
            "rows_at_end": postgres_rows,
            "id_order": id_order,
            "seconds": round(seconds, 1),
        },
        targets=targets,
        machine_before=machine,
        machine_after={"load_average": load_average()},
        sections=[
            (
                "CPU per batch",
                ["path", "client ms", "Postgres backend ms", "events per CPU-second"],
                [
                    [
                        labels[name],
                        s["client_cpu_ms_per_batch"],
                        s["postgres_cpu_ms_per_batch"],
                        f"{s['events_per_cpu_second']:,.0f}" if s["events_per_cpu_second"] else "",
                    ]
                    for name, s in summaries.items()
                ],
            ),
            (
                "Throughput",
                [
                    "path",
                    "batches",
                    "events",
                    "inserted",
                    "duplicates",
                    "failed",
                    "events/s",
                    "batch p50 events/s",
                    "batch p50 ms",
                    "batch p99 ms",
                    "write p50 ms",
                    "store events p50 ms",
                    "commit etc. p50 ms",
                ],
                rows,
            ),
            (
                "Primary key: time-ordered vs random event ids",
                [
                    "event ids",
                    "batches",
                    "rows at end",
                    "batch p50 ms",
                    "batch p99 ms",
                    "Postgres backend ms",
                    "primary key MB",
                ],
                [
                    [
                        kind,
                        s["batches"],
                        s["rows"],
                        _ms(s["batch_latency"], "p50_ms"),
                        _ms(s["batch_latency"], "p99_ms"),
                        s["postgres_cpu_ms_per_batch"],
                        f"{s['primary_key_bytes'] / 1e6:.1f}",
                    ]
                    for kind, s in id_order.items()
                ],
            ),
        ],
        notes=notes,
    )


def _ms(summary: dict[str, Any] | None, key: str) -> str:
    return f"{summary[key]:.2f}" if summary and key in summary else ""
