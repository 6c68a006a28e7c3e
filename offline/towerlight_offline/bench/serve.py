"""``towerlight bench serve``: the recommend function, warm and cold, beside brute-force scoring, in one run.

Steps, all on a local stack (moto's S3 endpoint, a real Postgres; ``towerlight_offline.bench.local_stack``):

1. a synthetic catalogue of ``items`` items is trained by the real pipeline (``run_training``, one epoch,
   no baselines) and published to the S3 store: ONNX towers, hnswlib index, ``items.npz``; training
   uses ``train_events`` events of ``train_users`` users, and the item tower embeds every item;
2. ``history`` recent events of each of ``users`` benchmark users go into Postgres;
3. cold: ``coldstart_runs`` fresh processes (``coldstart_child.py``) each import the handler, download
   the version from the S3 endpoint into an empty cache directory and answer one request; the time is
   taken from the spawn to the first response, with the child's breakdown and its peak RSS. Each runs
   with the function's variables from template.yaml and ``AWS_LAMBDA_INITIALIZATION_TYPE=on-demand``,
   as Lambda sets them (so the model download starts during the handler's import). Bytecode is cached
   (``PYTHONPYCACHEPREFIX``, primed by one untimed run), as in the layer, which ships .pyc;
4. warm, in one more fresh process (not this one: its heap and torch threads are no Lambda's):
   ``functions/recommend/app.py``'s ``handler(event, context)`` on API Gateway v2 events for random
   benchmark users, timed end to end (Mangum, FastAPI, the Postgres history query, the ONNX user tower,
   hnswlib, filters, JSON). The baseline is the same handler in the same process with the hnswlib
   retriever replaced by ``ExactRetriever`` (numpy: user vector · every item embedding, then
   argpartition; same history lookup, same filters), on the same users, in alternating blocks of
   requests so that load changes hit both. The stages (a bare Postgres round trip, the history query,
   the user tower, both searches) are also timed alone, to show where a slow request spends its time.

Example::

    >>> report, (json_path, md_path) = run_serve_bench(ServeBenchConfig(items=100_000))
    >>> [(t.name, t.status) for t in report.targets][0]
    ('warm p50, handler end to end', 'PASS')
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import numpy as np
import pandas as pd

from towerlight.config import DEFAULT_CANDIDATES
from towerlight.db.connection import connect
from towerlight.db.events import EventRow, insert_events
from towerlight_offline.bench import LocalStack, lambda_env, local_stack, patched_environ
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
from towerlight_offline.commands.invoke import read_function_config
from towerlight_offline.local.worker import project_root

logger = logging.getLogger(__name__)

Say = Callable[[str], None]
BUCKET = "towerlight-bench"
BLOCK = 100  # requests per alternating block of the two paths
COMPONENT_SAMPLES = 500
CANDIDATES = DEFAULT_CANDIDATES  # what the service asks the retriever for
P50_TARGET_MS, P99_TARGET_MS, COLD_TARGET_MS, RSS_TARGET_MB = 2.0, 5.0, 1000.0, 300.0
_FALLBACK_EVENT: dict[str, Any] = {
    "version": "2.0",
    "routeKey": "GET /recommendations/{user_id}",
    "rawPath": "/recommendations/1",
    "rawQueryString": "",
    "headers": {"accept": "application/json", "host": "bench.execute-api.us-east-1.amazonaws.com"},
    "requestContext": {
        "accountId": "123456789012",
        "apiId": "bench",
        "domainName": "bench.execute-api.us-east-1.amazonaws.com",
        "http": {"method": "GET", "path": "/recommendations/1", "protocol": "HTTP/1.1", "sourceIp": "192.0.2.10"},
        "requestId": "bench",
        "routeKey": "GET /recommendations/{user_id}",
        "stage": "$default",
        "timeEpoch": 0,
    },
    "isBase64Encoded": False,
}


@dataclass
class ServeBenchConfig:
    """Sizes of one ``bench serve`` run (the CLI flags)."""

    items: int = 100_000
    dim: int = 64
    requests: int = 2000
    users: int = 500
    warmup: int = 200
    k: int = 10
    history: int = 50
    train_users: int = 20_000
    train_events: int = 100_000
    epochs: int = 1
    coldstart_runs: int = 5
    coldstart_warm_requests: int = 50
    seed: int = 0
    out: Path = field(default_factory=lambda: Path("bench-results"))


@dataclass
class _Model:
    version: str
    manifest: dict[str, Any]
    timings: dict[str, float]
    generate_seconds: float
    users: list[str]  # benchmark users, each with history in Postgres
    history_rows: int


def run_serve_bench(config: ServeBenchConfig, say: Say = logger.info) -> tuple[Report, tuple[Path, Path]]:
    """Run the serving benchmark end to end; returns the report and the JSON and markdown paths."""
    machine = machine_info()
    started = time.perf_counter()
    with local_stack(s3_bucket=BUCKET) as stack, patched_environ(lambda_env()):  # inherited by the processes
        model = _publish_model(config, stack, say)
        cold, warm = _cold_and_warm(config, model, stack, say)
    report = _report(config, machine, stack, model, warm, cold, time.perf_counter() - started)
    return report, write_report(report, config.out)


# ---- the model and the history ---------------------------------------------------------------------------
def _publish_model(config: ServeBenchConfig, stack: LocalStack, say: Say) -> _Model:
    from towerlight_offline.data.synthetic import synthetic_dataset
    from towerlight_offline.model.train import TwoTowerParams
    from towerlight_offline.pipeline import TrainConfig, run_training

    say(
        f"generating {config.items:,} items, {config.train_users:,} users, "
        f"{config.train_events:,} events (synthetic, seed {config.seed})"
    )
    generated = time.perf_counter()
    dataset = synthetic_dataset(config.train_users, config.items, config.train_events, seed=config.seed)
    generate_seconds = time.perf_counter() - generated
    train_config = TrainConfig(
        source=f"bench serve: synthetic {config.items} items",
        store_uri=stack.store_uri,
        two_tower=TwoTowerParams(epochs=config.epochs, dim=config.dim),
        baselines=False,
        refit_on_all=False,
        max_eval_users=1000,
        seed=config.seed,
    )
    result = run_training(dataset, train_config, progress=say)
    if not result.promoted:
        raise RuntimeError(f"the benchmark model was not promoted: {result.outcome}")
    users, history = _history_events(dataset.interactions, config)
    del dataset
    with connect() as conn:
        with conn.transaction():
            for start in range(0, len(history), 5000):
                insert_events(conn, history[start : start + 5000])
        conn.execute("ANALYZE events")  # planner statistics, as a live table has them
        conn.commit()
    say(f"model {result.version} published; {len(history):,} history events of {len(users)} users in Postgres")
    return _Model(result.version, result.manifest, result.timings, generate_seconds, users, len(history))


def _history_events(interactions: pd.DataFrame, config: ServeBenchConfig) -> tuple[list[str], list[EventRow]]:
    """``config.users`` random users with events, and the last ``config.history`` events of each."""
    rng = np.random.default_rng(config.seed)
    active = interactions["user_id"].unique()
    users = sorted(rng.choice(active, size=min(config.users, len(active)), replace=False).tolist())
    mine = interactions[interactions["user_id"].isin(users)].sort_values(["user_id", "timestamp"])
    recent = mine.groupby("user_id", sort=False).tail(config.history)
    rows = [
        EventRow(str(uuid.uuid4()), user, item, kind, None, datetime.fromtimestamp(int(ts), UTC))
        for user, item, kind, ts in zip(
            recent["user_id"], recent["item_id"], recent["event_type"], recent["timestamp"], strict=True
        )
    ]
    return users, rows


# ---- the recommend function in fresh processes ---------------------------------------------------------
@dataclass
class _Warm:
    served_ns: list[int]
    exact_ns: list[int]
    stages: dict[str, list[int]]
    overlap: float | None
    statuses: dict[str, int]
    strategies: dict[str, int]
    index: dict[str, Any]
    ranker: str  # what re-ranks the top-C, as the warm process loaded it ("none" without a ranker)
    process: dict[str, Any]  # the cold start and peak RSS of the process that ran the warm benchmark


def request_event(
    template: dict[str, Any], user_id: str, k: int, number: int, query: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """An API Gateway HTTP API (v2) event for ``GET /recommendations/{user_id}?k=<k>`` (plus ``query``).

    >>> request_event(_FALLBACK_EVENT, "u7", 10, 1, {"strategy": "content"})["rawQueryString"]
    'k=10&strategy=content'
    """
    event = copy.deepcopy(template)
    path = f"/recommendations/{quote(user_id, safe='')}"
    parameters = {"k": str(k), **(query or {})}
    event["rawPath"] = path
    event["pathParameters"] = {"user_id": user_id}
    event["rawQueryString"] = urlencode(parameters)
    event["queryStringParameters"] = parameters
    context = event.setdefault("requestContext", {})
    context.setdefault("http", {})["path"] = path
    context["requestId"] = f"bench-{number}"
    context["timeEpoch"] = int(time.time() * 1000)
    return event


def recommend_event_template() -> dict[str, Any]:
    """``events/recommend_get.json`` (a built-in copy of its shape when the checkout has no events/)."""
    path = project_root() / "events" / "recommend_get.json"
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return copy.deepcopy(_FALLBACK_EVENT)


class _Processes:
    """Starts ``coldstart_child.py`` processes, each with an empty model cache and the shared bytecode cache."""

    def __init__(self, config: ServeBenchConfig, model: _Model, scratch: Path) -> None:
        self.config = config
        self.users = model.users
        self.scratch = scratch
        self.template = recommend_event_template()
        self.app = project_root() / "functions" / "recommend" / "app.py"
        # The function's own variables from template.yaml (MALLOC_ARENA_MAX...), as Lambda sets them.
        self.function_env = read_function_config(project_root() / "template.yaml", "recommend").environment
        self.runs = 0

    def run(self, compare: dict[str, Any] | None = None) -> dict[str, Any]:
        run, users, k = self.runs, self.users, self.config.k
        self.runs += 1
        args = {
            "app": str(self.app),
            "event": request_event(self.template, users[run % len(users)], k, run),
            "warm_events": [
                request_event(self.template, users[(run + i) % len(users)], k, i)
                for i in range(self.config.coldstart_warm_requests)
            ],
            "compare": compare,
        }
        cache = tempfile.mkdtemp(prefix=f"cache-{run}-", dir=self.scratch)  # empty: the model is downloaded
        env: dict[str, str | None] = {
            **{name: value for name, value in self.function_env.items() if name not in os.environ},
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",  # as Lambda sets it: app.py prefetches the model
            "TOWERLIGHT_CACHE_DIR": cache,
            "PYTHONPYCACHEPREFIX": str(self.scratch / "pycache"),
            "PYTHONDONTWRITEBYTECODE": None,
        }
        try:
            return run_coldstart_child(args, env, self.scratch)
        finally:
            shutil.rmtree(cache, ignore_errors=True)  # a 1M-item version is over a GB

    def compare_spec(self) -> dict[str, Any]:
        config, users = self.config, self.users
        rng = np.random.default_rng(config.seed + 1)
        chosen = [users[i] for i in rng.integers(0, len(users), config.requests)]
        return {
            "warmup": [
                request_event(self.template, users[i], config.k, -1) for i in rng.integers(0, len(users), config.warmup)
            ],
            "events": [request_event(self.template, user, config.k, n) for n, user in enumerate(chosen)],
            "block": BLOCK,
            "users": chosen[:COMPONENT_SAMPLES],
            "candidates": CANDIDATES,
        }


def _cold_and_warm(
    config: ServeBenchConfig, model: _Model, stack: LocalStack, say: Say
) -> tuple[list[dict[str, Any]], _Warm]:
    processes = _Processes(config, model, stack.scratch)
    say("priming the bytecode cache (one untimed start)")
    processes.run()
    cold = []
    for run in range(config.coldstart_runs):
        outcome = processes.run()
        say(
            f"cold start {run + 1}/{config.coldstart_runs}: first response after {outcome['total_ms']:.0f} ms, "
            f"peak RSS {outcome.get('peak_rss_mb')} MB"
        )
        cold.append(outcome)
    say(f"warm: {config.warmup} warm-up + {config.requests} timed requests per path, in a fresh process")
    outcome = processes.run(processes.compare_spec())
    compared = outcome.pop("compare")
    warm = _Warm(
        compared["served_ns"],
        compared["exact_ns"],
        compared["stages_ns"],
        compared["topk_overlap_with_exact"],
        compared["statuses"],
        compared["strategies"],
        compared["index"],
        compared["ranker"],
        outcome,
    )
    return cold, warm


def run_coldstart_child(
    args: dict[str, Any], env: dict[str, str | None], scratch: Path, timeout: float = 1800.0
) -> dict[str, Any]:
    """Spawn ``coldstart_child.py`` with ``args`` and the current environment changed by ``env`` (None unsets);
    returns its report with ``total_ms`` (spawn → first response, wall clock) and ``interpreter_ms``
    (spawn → its first line of Python)."""
    read_fd, write_fd = os.pipe()
    args_path = scratch / f"coldstart-{uuid.uuid4().hex[:8]}.json"
    args_path.write_text(json.dumps({**args, "report_fd": write_fd}))
    child_env = {**os.environ, **{k: v for k, v in env.items() if v is not None}}
    for name in (k for k, v in env.items() if v is None):
        child_env.pop(name, None)
    child = Path(__file__).with_name("coldstart_child.py")
    spawned = time.time()
    spawned_perf = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, str(child), str(args_path)],
        env=child_env,
        pass_fds=(write_fd,),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    os.close(write_fd)
    messages: dict[str, dict[str, Any]] = {}
    seen_perf: dict[str, float] = {}
    with os.fdopen(read_fd) as reports:
        for line in reports:
            message = json.loads(line)
            messages[message["stage"]] = message
            seen_perf[message["stage"]] = time.perf_counter()
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
    args_path.unlink(missing_ok=True)
    done = messages.get("done")
    if done is None or "first_response" not in messages:
        raise RuntimeError(f"the recommend process failed (exit {process.returncode}):\n{stderr.decode()[-3000:]}")
    warm = latency_summary(done.pop("warm_ns", []))
    return {
        **done,
        "total_ms": round((messages["first_response"]["wall"] - spawned) * 1000, 1),
        "total_ms_observed": round((seen_perf["first_response"] - spawned_perf) * 1000, 1),
        "interpreter_ms": round((messages["started"]["wall"] - spawned) * 1000, 1),
        "warm_in_child": warm,
        "exit_code": process.returncode,
    }


# ---- the report ------------------------------------------------------------------------------------------
def _report(
    config: ServeBenchConfig,
    machine: dict[str, Any],
    stack: LocalStack,
    model: _Model,
    warm: _Warm,
    cold: list[dict[str, Any]],
    seconds: float,
) -> Report:
    served, exact = latency_summary(warm.served_ns), latency_summary(warm.exact_ns)
    stages = {name: latency_summary(values) for name, values in warm.stages.items()}
    totals = [run["total_ms"] for run in cold]
    rss = [run["peak_rss_mb"] for run in cold if run.get("peak_rss_mb") is not None]
    cold_median = float(np.median(totals)) if totals else None
    files = model.manifest.get("files", {})
    recall = warm.index.get("recall", warm.index.get("recall_at_10"))
    targets = [
        Target(
            "warm p50, handler end to end",
            served.get("p50_ms"),
            P50_TARGET_MS,
            "ms",
            baseline=exact.get("p50_ms"),
            note="baseline: the same handler with exact numpy scoring of every item",
        ),
        Target("warm p99, handler end to end", served.get("p99_ms"), P99_TARGET_MS, "ms", baseline=exact.get("p99_ms")),
        Target(
            "cold start: spawn to first response (median)",
            cold_median,
            COLD_TARGET_MS,
            "ms",
            note=f"max {max(totals):,.0f} ms over {len(totals)} runs" if totals else "",
        ),
        Target(
            "peak RSS of the recommend process (max)",
            max(rss) if rss else None,
            RSS_TARGET_MB,
            "MB",
            note=f"{config.coldstart_warm_requests} warm requests after the first; "
            f"{warm.process.get('peak_rss_after_compare_mb')} MB after the warm benchmark",
        ),
    ]
    cold_headers = [
        "run", "total", "CPU", "interpreter", "imports", "first request", "download began", "download", "load",
        "RSS after imports", "RSS after load", "peak RSS", "warm p50 after",
    ]  # fmt: skip
    cold_rows = [_cold_row(str(i + 1), run) for i, run in enumerate(cold)]
    cold_rows.append(_cold_row("warm-benchmark process", warm.process))
    sections: list[tuple[str, list[str], list[list[Any]]]] = [
        (
            "Warm latency (ms)",
            LATENCY_HEADERS,
            [
                latency_row("handler, hnswlib (served)", served),
                latency_row("handler, exact numpy scoring (baseline)", exact),
            ]
            + [latency_row(f"stage: {name}", summary) for name, summary in stages.items()],
        ),
        ("Cold start (ms; MB)", cold_headers, cold_rows),
        (
            "Model",
            ["version", "items", "dim", "hnsw index", "ranker (re-scores top-C)", "recall@10 (publish check)",
             "top-k overlap, served vs exact", "artifacts MB"],
            [[
                model.version,
                f"{config.items:,}",
                config.dim,
                f"M={warm.index.get('M')}, ef={warm.index.get('ef')}, "
                + ("centred" if warm.index.get("centred") else "uncentred"),
                warm.ranker,
                f"{recall:.4f}" if isinstance(recall, float) else "n/a",
                f"{warm.overlap:.4f}" if warm.overlap is not None else "n/a",
                f"{sum(f.get('bytes', 0) for f in files.values()) / 1e6:,.1f}",
            ]],
        ),
    ]  # fmt: skip
    notes = [
        f"Postgres: {stack.postgres}; " + ", ".join(f"{k}={v}" for k, v in stack.postgres_settings.items()),
        f"S3: moto server at {stack.s3_endpoint}; store {stack.store_uri}",
        f"model (seconds): generate data {model.generate_seconds:.1f}, "
        + ", ".join(f"{k} {v}" for k, v in model.timings.items()),
        f"history: {model.history_rows:,} events of {len(model.users)} users; timed responses by status "
        f"{warm.statuses}, by strategy {warm.strategies}",
        f"warm: both paths in one fresh process, alternating blocks of {BLOCK} requests over the same users; "
        f"stages timed outside the handler for {COMPONENT_SAMPLES} of those users (top-C = {CANDIDATES})",
        "cold start: wall clock from spawning the process to its first response (CPU: the process's user + system "
        "CPU time until then, all threads, which a busy machine inflates less than the wall clock); "
        "imports = importing app.py, which is Lambda's init: it starts the model's download and load in a "
        "thread, imports the web stack meanwhile and waits for the model at its end; first request = the rest "
        "(the DB connection, the answer); download and load are their own durations, 'download began' is when, "
        "after the interpreter started",
        f"total benchmark time {seconds:.0f} s",
    ]
    results = {
        "warm": {
            "handler_hnsw": served,
            "handler_exact": exact,
            "stages": stages,
            "statuses": warm.statuses,
            "strategies": warm.strategies,
            "topk_overlap_with_exact": warm.overlap,
            "process": warm.process,
        },
        "cold": {"runs": cold, "median_total_ms": cold_median, "max_total_ms": max(totals) if totals else None},
        "model": {
            "version": model.version,
            "timings": model.timings,
            "generate_seconds": model.generate_seconds,
            "files": files,
            "index": warm.index,
            "ranker": warm.ranker,
            "model": model.manifest.get("model"),
        },
        "postgres": {"kind": stack.postgres, "settings": stack.postgres_settings},
        "seconds": round(seconds, 1),
    }
    return Report(
        name="serve",
        title=f"towerlight bench serve: {config.items:,} items, {config.dim}-d",
        config={k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        results=results,
        targets=targets,
        machine_before=machine,
        machine_after={"load_average": load_average()},
        sections=sections,
        notes=notes,
    )


def _cold_row(label: str, run: dict[str, Any]) -> list[Any]:
    def ms(key: str) -> str:
        value = run.get(key)
        return f"{value:,.0f}" if isinstance(value, int | float) else ""

    return [
        label,
        ms("total_ms"),
        ms("cpu_to_first_response_ms"),
        ms("interpreter_ms"),
        ms("import_ms"),
        ms("first_request_ms"),
        ms("download_began_ms"),
        ms("download_ms"),
        ms("load_ms"),
        f"{run.get('rss_after_import_mb', 0):.0f}",
        f"{run.get('load_rss_mb', 0):.0f}",
        f"{run.get('peak_rss_mb', 0):.0f}",
        f"{run['warm_in_child']['p50_ms']:.2f}" if run.get("warm_in_child", {}).get("p50_ms") else "",
    ]
