"""The quality gate: a new version is promoted only if it is not worse than the current one.

The comparison is relative: promote when ``new >= current × (1 − tolerance)``, so a tolerance of 0.01
accepts a new NDCG@10 down to 1% below the current one (noise between two trainings on fresh data)
while an actual regression is kept out. With no current version (or a current version that never
recorded the metric) there is nothing to compare with, and the new version is promoted. A missing or
non-finite new metric is never promoted.

Which two numbers: when the data window moved, the training job re-runs the current version on this
run's test events that came after its own window (``towerlight_offline.champion``) and passes both
models' rows on those same events as ``same_events``; the gate then compares like with like. Without
such events (the window did not move) it compares the new model's row with the current version's
recorded one, and its reason says which basis it used.

Example::

    >>> decide({"ndcg@10": 0.20}, {"version": "v1", "metrics": {"two_tower": {"ndcg@10": 0.21}}}).promote
    False
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

PRIMARY_MODEL = "two_tower"
RANKED_MODEL = "two_tower_ranker"  # retrieval + ranker: the served row when a version has a ranker


def served_row(manifest: Mapping[str, Any]) -> str:
    """The metrics row a manifest says it serves (versions before the ranker: the two-tower row)."""
    return str((manifest.get("evaluation") or {}).get("served_row") or PRIMARY_MODEL)


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    new: float | None
    current: float | None
    metric: str
    tolerance: float
    current_version: str | None = None
    basis: str = "recorded"  # "same events": both models re-scored on later test events; see the module doc

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def manifest_metric(manifest: Mapping[str, Any], metric: str, model: str = PRIMARY_MODEL) -> float | None:
    """A model's metric from a manifest's ``metrics`` table (``None`` when absent).

    >>> manifest_metric({"metrics": {"two_tower": {"ndcg@10": 0.3}}}, "ndcg@10")
    0.3
    """
    row = (manifest.get("metrics") or {}).get(model) or {}
    return _number(row.get(metric))


def decide(
    new_metrics: Mapping[str, Any],
    current_manifest: Mapping[str, Any] | None,
    *,
    metric: str = "ndcg@10",
    tolerance: float = 0.01,
    same_events: tuple[Mapping[str, Any], Mapping[str, Any], str] | None = None,
) -> GateDecision:
    """Whether the model with ``new_metrics`` (its row of the metrics table) may replace the current one.

    ``same_events`` is ``(new_row, current_row, description)``: both models evaluated on the same
    later events; when given, those two rows are compared instead of ``new_metrics`` and the
    current manifest's recorded row.

    >>> decide({"ndcg@10": 0.2}, None).reason
    'no current version: nothing to compare with'
    >>> decide({"ndcg@10": 0.199}, {"metrics": {"two_tower": {"ndcg@10": 0.2}}}).promote
    True
    """
    if not 0.0 <= tolerance < 1.0:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance}")
    basis, where = "recorded", ""
    if same_events is not None and current_manifest is not None:
        new_metrics, current_row, description = same_events
        basis, where = "same events", f" on {description}"
    new = _number(new_metrics.get(metric))
    current_version = str(current_manifest.get("version")) if current_manifest else None

    def decision(promote: bool, reason: str, current: float | None = None) -> GateDecision:
        return GateDecision(promote, reason, new, current, metric, tolerance, current_version, basis)

    if new is None:
        return decision(False, f"new model has no finite {metric}{where}")
    if current_manifest is None:
        return decision(True, "no current version: nothing to compare with")
    if basis == "same events":
        current = _number(current_row.get(metric))
    else:
        current = manifest_metric(current_manifest, metric, served_row(current_manifest))
    if current is None:
        return decision(True, f"current version {current_version} has no {metric}{where}: nothing to compare with")
    floor = current * (1.0 - tolerance)
    bound = f"{floor:.4f} = current {current:.4f} × (1 − {tolerance:g}){where}"
    if new >= floor:
        return decision(True, f"{metric} {new:.4f} >= {bound}", current)
    return decision(False, f"{metric} {new:.4f} < {bound}", current)
