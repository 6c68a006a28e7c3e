"""Benchmark reports, and tiny runs of ``towerlight bench ingest|serve`` (completion only: speed is measured
by the benchmarks themselves, never asserted in tests)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from towerlight_offline.bench.report import Report, Target, latency_summary, machine_info, write_report


def small_report() -> Report:
    return Report(
        name="serve",
        title="towerlight bench serve: 10 items",
        config={"items": 10, "out": "bench-results"},
        results={"warm": latency_summary([1_000_000, 2_000_000, 9_000_000])},
        targets=[
            Target("warm p50", 1.5, 2.0, "ms", baseline=4.0),
            Target("ingest", 40_000.0, 50_000.0, "events/s", kind="at_least"),
        ],
        machine_before=machine_info(),
        sections=[("Warm latency (ms)", ["path", "p50 ms"], [["handler", 1.5]])],
        notes=["a note"],
    )


def test_targets_pass_or_miss_by_their_direction() -> None:
    assert Target("p50", 1.9, 2.0, "ms").status == "PASS"
    assert Target("p50", 2.1, 2.0, "ms").status == "MISS"
    assert Target("rate", 50_000.0, 50_000.0, "events/s", kind="at_least").status == "PASS"
    assert Target("rate", 49_999.0, 50_000.0, "events/s", kind="at_least").status == "MISS"
    assert Target("rss", None, 300.0, "MB").status == "n/a"


def test_latency_summary_reports_milliseconds() -> None:
    summary = latency_summary([1_000_000, 2_000_000, 3_000_000, 4_000_000])
    assert summary["n"] == 4
    assert summary["p50_ms"] == 2.5
    assert summary["max_ms"] == 4.0
    assert latency_summary([]) == {"n": 0}


def test_the_report_is_written_as_json_and_markdown(tmp_path: Path) -> None:
    # GIVEN a report  WHEN it is written
    json_path, md_path = write_report(small_report(), tmp_path / "out")
    # THEN the JSON parses and carries the machine, the targets with their status, and the results
    document = json.loads(json_path.read_text())
    assert document["benchmark"] == "serve"
    assert {"cpu_model", "cpu_count", "memory_gb", "python", "load_average", "git_commit"} <= set(document["machine"])
    assert [t["status"] for t in document["targets"]] == ["PASS", "MISS"]
    assert document["results"]["warm"]["n"] == 3
    # AND the markdown names both files' run and has the targets table
    markdown = md_path.read_text()
    assert json_path.stem == md_path.stem and json_path.stem.startswith("serve-")
    assert markdown.startswith("# towerlight bench serve")
    assert "| warm p50" in markdown and "PASS" in markdown and "MISS" in markdown
    assert "## Warm latency (ms)" in markdown and "- a note" in markdown


@pytest.mark.integration
def test_a_tiny_ingest_bench_completes(
    session_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from towerlight_offline.bench.ingest import IngestBenchConfig, run_ingest_bench

    # GIVEN a Postgres server (the benchmark makes its own schema there)
    monkeypatch.setenv("DATABASE_URL", session_database_url)
    config = IngestBenchConfig(
        events=300, batch=100, baseline_events=100, autocommit_events=20, duplicate_batches=1, id_order_batches=3,
        users=20, items=50, out=tmp_path,
    )  # fmt: skip
    # WHEN the benchmark runs
    report, (json_path, md_path) = run_ingest_bench(config)
    # THEN every timed event was stored once, the redelivered batch only counted duplicates, files exist
    results = report.results
    assert (results["handler"]["inserted"], results["handler"]["failed_records"]) == (200, 0)
    assert results["one_insert_per_event"]["inserted"] == 100
    assert results["autocommit_per_event"]["inserted"] == 20
    assert (results["redelivery"]["inserted"], results["redelivery"]["duplicates"]) == (0, 100)
    assert results["rows_at_end"] == 420
    assert results["handler"]["client_cpu_ms_per_batch"] > 0 and results["handler"]["events_per_cpu_second"] > 0
    assert json.loads(json_path.read_text())["targets"][0]["status"] in ("PASS", "MISS")
    assert "## CPU per batch" in md_path.read_text()
    # AND both kinds of event id stored every batch of the primary-key comparison in their own table
    assert [(s["batches"], s["rows"]) for s in results["id_order"].values()] == [(3, 300), (3, 300)]
    assert all(s["primary_key_bytes"] > 0 for s in results["id_order"].values())


@pytest.mark.integration
def test_a_tiny_track_bench_completes(tmp_path: Path) -> None:
    from towerlight_offline.bench.track import TrackBenchConfig, run_track_bench

    # GIVEN a few POSTs of 1 and of 10 events (the benchmark starts its own SQS endpoint)
    config = TrackBenchConfig(plan=((1, 4), (10, 3)), warmup=1, out=tmp_path)
    # WHEN the benchmark runs
    report, (json_path, md_path) = run_track_bench(config)
    # THEN each size was timed, through the handler and the transport alone, and every event is queued
    for size, posts in config.plan:
        measured = report.results[f"post_{size}"]
        assert measured["handler"]["n"] == measured["transport"]["n"] == posts
        assert measured["billed_ms_mean"] >= measured["handler"]["mean_ms"]
    assert report.results["events_in_queue"] >= report.results["events_accepted"] == 2 * (1 * 5 + 10 * 4)
    assert json_path.stem.startswith("track-") and "## Lambda compute" in md_path.read_text()


@pytest.mark.integration
def test_a_tiny_serve_bench_completes(
    session_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from towerlight_offline.bench.serve import ServeBenchConfig, run_serve_bench

    # GIVEN a Postgres server (the benchmark starts its own S3 endpoint and trains its own model)
    monkeypatch.setenv("DATABASE_URL", session_database_url)
    config = ServeBenchConfig(
        items=300, dim=16, requests=20, users=10, warmup=5, history=5, train_users=60, train_events=1500,
        coldstart_runs=1, coldstart_warm_requests=2, out=tmp_path,
    )  # fmt: skip
    # WHEN the benchmark runs
    report, (json_path, _) = run_serve_bench(config)
    # THEN both paths answered every timed request, and the cold start and RSS were measured
    warm = report.results["warm"]
    assert warm["statuses"] == {"200": 40}
    assert warm["handler_hnsw"]["n"] == warm["handler_exact"]["n"] == 20
    assert report.results["cold"]["runs"][0]["status"] == "200"
    assert all(t.value is not None for t in report.targets)
    # AND the report says what re-ranked the candidates, timing it as a stage when a ranker was published
    model = report.results["model"]
    has_ranker = "ranker.json" in model["files"]
    assert (model["ranker"] != "none") == has_ranker
    assert ("ranker: features and scores of top-C" in warm["stages"]) == has_ranker
    assert ("ranker.onnx" in model["files"]) == ("onnxruntime" in model["ranker"])
    # AND the index's build-time recall and layout come with it
    assert model["index"]["recall"] >= 0.95 and model["index"]["centred"] in (True, False)
    assert json.loads(json_path.read_text())["benchmark"] == "serve"
