"""Benchmark reports: latency summaries, targets with PASS/MISS, the machine, and the JSON + markdown files.

A report is one JSON document (everything measured, for tools) and one markdown page (the tables a
person reads), written side by side as ``<out>/<name>-<timestamp>.json`` and ``.md``.

Example::

    >>> summary = latency_summary([1_200_000, 1_500_000, 4_000_000])  # nanoseconds
    >>> summary["p50_ms"], summary["n"]
    (1.5, 3)
    >>> Target("warm p99", 3.1, 5.0, "ms").status
    'PASS'
    >>> json_path, md_path = write_report(report, Path("bench-results"))
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from towerlight_offline.console import table


@dataclass(frozen=True)
class Target:
    """One figure beside its goal: ``value <= limit`` (``at_most``) or ``value >= limit`` (``at_least``)."""

    name: str
    value: float | None
    limit: float
    unit: str
    kind: Literal["at_most", "at_least"] = "at_most"
    baseline: float | None = None  # the same figure for the baseline measured in the same run
    note: str = ""

    @property
    def status(self) -> str:
        if self.value is None:
            return "n/a"
        passed = self.value <= self.limit if self.kind == "at_most" else self.value >= self.limit
        return "PASS" if passed else "MISS"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status}

    def row(self) -> list[str]:
        sign = "≤" if self.kind == "at_most" else "≥"
        return [
            self.name,
            _figure(self.value, self.unit),
            f"{sign} {_figure(self.limit, self.unit)}",
            self.status,
            _figure(self.baseline, self.unit) if self.baseline is not None else "",
            self.note,
        ]


@dataclass
class Report:
    """Everything one benchmark run produced; ``sections`` are extra markdown tables (title, headers, rows)."""

    name: str
    title: str
    config: dict[str, Any]
    results: dict[str, Any]
    targets: list[Target]
    machine_before: dict[str, Any]
    machine_after: dict[str, Any] = field(default_factory=dict)
    sections: list[tuple[str, list[str], list[list[Any]]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": self.name,
            "title": self.title,
            "started_at": self.started_at,
            "machine": self.machine_before,
            "machine_after": self.machine_after,
            "config": self.config,
            "targets": [t.to_json() for t in self.targets],
            "results": self.results,
            "notes": self.notes,
        }

    def to_markdown(self) -> str:
        machine = self.machine_before
        load_after = self.machine_after.get("load_average")
        lines = [
            f"# {self.title}",
            "",
            f"- run: {self.started_at}, commit `{machine.get('git_commit')}`"
            + (" (uncommitted changes)" if machine.get("git_dirty") else ""),
            f"- machine: {machine.get('cpu_model')}, {machine.get('cpu_count')} cores, "
            f"{machine.get('memory_gb')} GB RAM, Python {machine.get('python')} on {machine.get('platform')}",
            f"- load average (1/5/15 min): {_load(machine.get('load_average'))} at start"
            + (f", {_load(load_after)} at end" if load_after else ""),
            "- config: " + ", ".join(f"{k}={v}" for k, v in self.config.items()),
            "",
            "## Targets",
            "",
            table(["figure", "measured", "target", "status", "baseline", "note"], [t.row() for t in self.targets]),
        ]
        for title, headers, rows in self.sections:
            lines += ["", f"## {title}", "", table(headers, rows)]
        if self.notes:
            lines += ["", "## Notes", ""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


def latency_summary(samples_ns: Sequence[int] | np.ndarray) -> dict[str, float]:
    """Count, mean, min, p50, p95, p99 and max of latencies given in nanoseconds, in milliseconds.

    >>> latency_summary([1_000_000, 3_000_000])["mean_ms"]
    2.0
    """
    values = np.asarray(samples_ns, dtype=np.float64) / 1e6
    if values.size == 0:
        return {"n": 0}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {
        "n": int(values.size),
        "mean_ms": _round(values.mean()),
        "min_ms": _round(values.min()),
        "p50_ms": _round(p50),
        "p95_ms": _round(p95),
        "p99_ms": _round(p99),
        "max_ms": _round(values.max()),
    }


def latency_row(label: str, summary: dict[str, float]) -> list[Any]:
    """A markdown row ``label | n | p50 | p95 | p99 | mean | max`` for ``latency_summary`` output."""
    keys = ("p50_ms", "p95_ms", "p99_ms", "mean_ms", "max_ms")
    return [label, summary.get("n", 0), *(f"{summary[k]:.3f}" if k in summary else "" for k in keys)]


LATENCY_HEADERS = ["path", "n", "p50 ms", "p95 ms", "p99 ms", "mean ms", "max ms"]


def _round(value: float) -> float:
    return round(float(value), 4)


def _figure(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "events/s":
        return f"{value:,.0f} {unit}"
    return f"{value:.3g} {unit}" if abs(value) < 100 else f"{value:,.0f} {unit}"


def _load(load: Sequence[float] | None) -> str:
    return " / ".join(f"{x:.2f}" for x in load) if load else "n/a"


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, Python, platform, load average and the git commit of the checkout.

    >>> sorted(machine_info())[:3]
    ['cpu_count', 'cpu_model', 'git_commit']
    """
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "load_average": load_average(),
        **_git(),
        "taken_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none)."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def _git() -> dict[str, Any]:
    root = Path(__file__).resolve().parents[3]

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": bool(status) if status is not None else None}


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB (``VmHWM``; ``ru_maxrss`` where /proc is missing).

    >>> peak_rss_mb() > 0
    True
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale, 1)


def write_report(report: Report, out_dir: Path) -> tuple[Path, Path]:
    """Write ``<out_dir>/<name>-<timestamp>.json`` and ``.md``; returns both paths.

    >>> write_report(report, Path("bench-results"))
    (PosixPath('bench-results/serve-20261122T011500Z.json'), PosixPath('bench-results/serve-20261122T011500Z.md'))
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromisoformat(report.started_at).strftime("%Y%m%dT%H%M%SZ")
    base = out_dir / f"{report.name}-{stamp}"
    json_path, md_path = base.with_suffix(".json"), base.with_suffix(".md")
    json_path.write_text(json.dumps(report.to_json(), indent=2, default=str) + "\n")
    md_path.write_text(report.to_markdown())
    return json_path, md_path
