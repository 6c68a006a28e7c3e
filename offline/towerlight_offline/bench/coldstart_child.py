"""The recommend function in a fresh process, as Lambda runs it: one cold start, then optionally the warm runs.

Run by ``towerlight bench serve`` as ``python coldstart_child.py <args.json>``; the file holds
``{"app": path of functions/recommend/app.py, "event": the first API Gateway event, "warm_events": [...],
"report_fd": n, "compare": {...} (optional)}``. The environment names the store, the database and an
empty ``TOWERLIGHT_CACHE_DIR``.

1. Like Lambda, import ``app.py`` as module ``app`` and call ``handler`` once: that first response
   includes downloading the version from the S3 endpoint, loading it and the first Postgres query. The
   parent sets ``AWS_LAMBDA_INITIALIZATION_TYPE=on-demand`` as Lambda does, so ``app.py`` starts the
   model's download in a background thread at import and waits for it at its end; the download and
   load are timed where they run (by wrapping ``download_version`` and ``load_bundle`` as their
   modules are imported).
2. Serve ``warm_events``, then read the peak RSS (``VmHWM``).
3. With ``compare`` (``{"warmup": [...], "events": [...], "block": n, "users": [...], "candidates": c}``):
   time ``handler`` on ``events`` with the served (hnswlib) model and with the same bundle searched by
   ``ExactRetriever`` (brute-force numpy), alternating blocks of ``block`` requests, and time the
   stages (history query, user tower, both searches) for ``users``. Done here rather than in the
   benchmark's own process, whose heap and threads (pandas, torch) a Lambda instance never has.

Progress goes to file descriptor ``report_fd`` as JSON lines, leaving the handler's stdout alone:
``{"stage": "started"|"first_response", "wall": time.time()}``, then ``{"stage": "done", ...}``. Wall
clock times let the parent measure from the moment it spawned this process. Only the standard library
is imported before ``app.py``: anything else would be counted as the function's startup.
"""

import time

STARTED = time.time()  # the first thing after the interpreter's own startup

import contextlib  # noqa: E402
import importlib.abc  # noqa: E402
import importlib.machinery  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable, Iterator, Sequence  # noqa: E402
from types import ModuleType  # noqa: E402
from typing import Any  # noqa: E402


class LambdaContext:
    """The attributes of Lambda's context object that Powertools reads."""

    function_name = "recommend"
    memory_limit_in_mb = 1769
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:recommend"
    aws_request_id = "00000000-0000-4000-8000-000000000000"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def memory_mb() -> dict[str, float]:
    """``VmRSS`` and ``VmHWM`` (peak) of this process, in MB."""
    values: dict[str, float] = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = round(int(rest.split()[0]) / 1024, 1)
    return values


def timed(record: dict[str, float], key: str, function: Any) -> Any:
    """``function`` wrapped to add its duration to ``record[key + "_ms"]``, note when it began (ms after
    the process started, ``record[key + "_began_ms"]``) and the resident and peak memory after it
    (``record[key + "_rss_mb"]``, ``record[key + "_peak_mb"]``)."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        record.setdefault(f"{key}_began_ms", (time.time() - STARTED) * 1000)
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            record[f"{key}_ms"] = record.get(f"{key}_ms", 0.0) + (time.perf_counter() - started) * 1000
            memory = memory_mb()
            record[f"{key}_rss_mb"], record[f"{key}_peak_mb"] = memory["VmRSS"], memory["VmHWM"]

    return wrapper


class TimeOnImport(importlib.abc.MetaPathFinder):
    """Wraps a function of a module with ``timed`` as soon as the module is imported, by whichever thread.

    ``targets`` maps a module name to ``(function name, record key)``. The module is found and executed
    as usual; only its function is replaced before anyone else can call it.
    """

    def __init__(self, record: dict[str, float], targets: dict[str, tuple[str, str]]) -> None:
        self.record = record
        self.targets = targets

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name not in self.targets:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is None or spec.loader is None:
            return None
        execute, (function, key) = spec.loader.exec_module, self.targets[name]

        def exec_and_wrap(module: ModuleType) -> None:
            execute(module)
            setattr(module, function, timed(self.record, key, getattr(module, function)))

        spec.loader.exec_module = exec_and_wrap  # type: ignore[method-assign]
        return spec


@contextlib.contextmanager
def discarded_stdout() -> Iterator[None]:
    """File descriptor 1 to /dev/null: the handler's logs and metrics cost what a pipe costs.

    A copy of ``towerlight_offline.bench.discarded_stdout`` on purpose: importing that package here would
    be counted as the function's own start-up.
    """
    sys.stdout.flush()
    saved, null = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)


class Caller:
    """Calls the handler, timing each call and tallying statuses and strategies."""

    def __init__(self, handler: Callable[[dict[str, Any], Any], dict[str, Any]]) -> None:
        self.handler = handler
        self.context = LambdaContext()
        self.statuses: dict[str, int] = {}
        self.strategies: dict[str, int] = {}
        self.last: dict[str, Any] = {}  # status, strategy and error of the last response

    def __call__(self, event: dict[str, Any]) -> tuple[int, list[str]]:
        with discarded_stdout():
            started = time.perf_counter_ns()
            response = self.handler(event, self.context)
            elapsed = time.perf_counter_ns() - started
        body = json.loads(response.get("body") or "{}")
        status, strategy = str(response.get("statusCode")), str(body.get("strategy"))
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.strategies[strategy] = self.strategies.get(strategy, 0) + 1
        self.last = {"status": status, "strategy": strategy, "error": body.get("error")}
        return elapsed, [item["item_id"] for item in body.get("items", [])]


def compare(call: Caller, spec: dict[str, Any]) -> dict[str, Any]:
    """The served model against brute-force scoring, through the same handler; and the stage timings."""
    from dataclasses import replace

    from towerlight.db.connection import shared_connection
    from towerlight.model.registry import ModelRegistry, get_registry, reset
    from towerlight.ranking.features import UserHistory
    from towerlight.recommend.service import SEEN_LOOKBACK, PostgresSignals
    from towerlight.recommend.strategies import history_rows
    from towerlight.retrieval import ExactRetriever

    served = get_registry()

    def exact_bundle(*_: Any) -> Any:
        bundle = served.get()
        tower = bundle.two_tower
        return replace(bundle, two_tower=replace(tower, retriever=ExactRetriever(tower.embeddings)))

    exact = ModelRegistry(served.store_uri, served.cache_dir, served.refresh_seconds, loader=exact_bundle)
    for registry in (served, exact):
        reset(registry)
        for event in spec["warmup"]:
            call(event)
    call.statuses.clear()
    call.strategies.clear()
    served_ns: list[int] = []
    exact_ns: list[int] = []
    overlaps: list[float] = []
    events, block = spec["events"], int(spec["block"])
    for start in range(0, len(events), block):
        reset(served)
        found = [call(event) for event in events[start : start + block]]
        reset(exact)
        truth = [call(event) for event in events[start : start + block]]
        served_ns += [ns for ns, _ in found]
        exact_ns += [ns for ns, _ in truth]
        overlaps += [len(set(f).intersection(t)) / len(t) for (_, f), (_, t) in zip(found, truth, strict=True) if t]
    reset(served)

    bundle, exact_retriever = served.get(), exact.get().two_tower.retriever
    tower = bundle.two_tower
    signals = PostgresSignals()
    wants_attributes = bool(bundle.popularity.segments) or bool(tower.spec.user_fields)
    candidates = int(spec["candidates"])
    stages: dict[str, list[int]] = {
        "Postgres round trip (SELECT 1)": [],
        "history query": [],
        "user tower": [],
        "hnswlib top-C": [],
        "exact top-C": [],
    }
    if bundle.ranking is not None:
        stages["ranker: features and scores of top-C"] = []
    for user in spec["users"]:
        conn = shared_connection()
        conn.autocommit = True  # as PostgresSignals reads: one round trip, no BEGIN/ROLLBACK
        started = time.perf_counter_ns()
        conn.execute("SELECT 1").fetchone()
        stages["Postgres round trip (SELECT 1)"].append(time.perf_counter_ns() - started)
        conn.autocommit = False
        started = time.perf_counter_ns()
        signals_of_user = signals.user(user, SEEN_LOOKBACK, attributes=wants_attributes)
        stages["history query"].append(time.perf_counter_ns() - started)
        started = time.perf_counter_ns()
        vector = tower.user_vector(signals_of_user.history, signals_of_user.attributes)
        stages["user tower"].append(time.perf_counter_ns() - started)
        started = time.perf_counter_ns()
        labels, scores = tower.retriever.search(vector, candidates)
        stages["hnswlib top-C"].append(time.perf_counter_ns() - started)
        if bundle.ranking is not None:
            known = UserHistory(*history_rows(bundle.catalogue, signals_of_user.history, signals_of_user.times))
            started = time.perf_counter_ns()
            bundle.ranking.rescore(known, time.time(), labels[0], scores[0])
            stages["ranker: features and scores of top-C"].append(time.perf_counter_ns() - started)
        started = time.perf_counter_ns()
        exact_retriever.search(vector, candidates)
        stages["exact top-C"].append(time.perf_counter_ns() - started)
    return {
        "served_ns": served_ns,
        "exact_ns": exact_ns,
        "topk_overlap_with_exact": sum(overlaps) / len(overlaps) if overlaps else None,
        "statuses": dict(call.statuses),
        "strategies": dict(call.strategies),
        "stages_ns": stages,
        # what the build measured (recall, centred...) and what serving uses (params: ef, M)
        "index": {**(bundle.manifest.get("index") or {}), **(bundle.manifest.get("params", {}).get("index") or {})},
        "ranker": _ranker_description(bundle.ranking),
    }


def _ranker_description(ranking: Any) -> str:
    """What re-ranks the served candidates: the ranker's kind and what scores it, or "none"."""
    if ranking is None:
        return "none"
    scorer = "onnxruntime (ranker.onnx)" if ranking.compiled is not None else "numpy"
    return f"{type(ranking.ranker).__name__}, {len(ranking.ranker.features)} features, scored by {scorer}"


def main(args_path: str) -> int:
    with open(args_path) as handle:
        args = json.load(handle)
    report = os.fdopen(int(args["report_fd"]), "w", buffering=1)
    report.write(json.dumps({"stage": "started", "wall": STARTED}) + "\n")

    # Time the two big steps of the first load without changing what it does.
    steps: dict[str, float] = {}
    sys.meta_path.insert(
        0,
        TimeOnImport(
            steps,
            {
                "towerlight.store.versions": ("download_version", "download"),
                "towerlight.model.bundle": ("load_bundle", "load"),
            },
        ),
    )
    spec = importlib.util.spec_from_file_location("app", args["app"])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["app"] = module
    spec.loader.exec_module(module)
    imported = time.time()
    after_import = memory_mb()

    call = Caller(module.handler)
    _, first_items = call(args["event"])
    first = time.time()
    report.write(json.dumps({"stage": "first_response", "wall": first}) + "\n")
    after_first = memory_mb()
    cpu = resource.getrusage(resource.RUSAGE_SELF)  # CPU time is what a busy machine inflates least
    first_response = call.last
    warm_ns = [call(event)[0] for event in args.get("warm_events", [])]
    done: dict[str, Any] = {
        "stage": "done",
        **first_response,
        "items": len(first_items),
        "wall": {"started": STARTED, "imported": imported, "first_response": first},
        "import_ms": round((imported - STARTED) * 1000, 1),
        "cpu_to_first_response_ms": round((cpu.ru_utime + cpu.ru_stime) * 1000, 1),
        "first_request_ms": round((first - imported) * 1000, 1),
        **{key: round(value, 1) for key, value in steps.items()},
        "rss_after_import_mb": after_import.get("VmRSS"),
        "rss_after_first_mb": after_first.get("VmRSS"),
        "warm_ns": warm_ns,
        "peak_rss_mb": memory_mb().get("VmHWM"),
    }
    if args.get("compare"):
        done["compare"] = compare(call, args["compare"])
        done["peak_rss_after_compare_mb"] = memory_mb().get("VmHWM")
    report.write(json.dumps(done) + "\n")
    report.close()
    return 0 if first_response["status"] == "200" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
