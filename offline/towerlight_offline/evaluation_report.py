"""``towerlight evaluate``'s report: every model at several k, overall and per user segment, as markdown + PNG.

The models are those of a training run (``pipeline.fit_models``: two-tower, two-tower + ranker, and the
tuned popularity, item-kNN and ALS baselines), fitted on the train split of the DESIGN.md protocol and
evaluated on the same test users. Segments split those users by the number of training events they have:
fewer than ``light_events`` (new users), and the heaviest ``heavy_share`` of users.

Example::

    >>> report = build_report(dataset, TrainConfig(), k_values=(1, 5, 10, 20, 50))
    >>> paths = write_report(report, Path("towerlight-report"))
    >>> sorted(p.name for p in paths)
    ['all.png', 'heavy.png', 'light.png', 'report.md']
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from towerlight_offline.data.dataset import Dataset
from towerlight_offline.evaluate import EvaluationSet
from towerlight_offline.pipeline import Progress, TrainConfig, _prepare, _Stages, evaluate_models, fit_models

logger = logging.getLogger(__name__)

DEFAULT_K = (1, 5, 10, 20, 50, 100)


@dataclass
class Segment:
    name: str
    description: str
    users: EvaluationSet


@dataclass
class Report:
    """Metrics ``rows[segment][model]`` (evaluate_recommender rows) and what produced them."""

    dataset: str
    k_values: tuple[int, ...]
    segments: list[Segment]
    rows: dict[str, dict[str, dict[str, Any]]]
    notes: list[str] = field(default_factory=list)


def user_segments(
    evaluation: EvaluationSet, train_counts: dict[str, int], light_events: int, heavy_share: float
) -> list[Segment]:
    """All evaluated users, those with fewer than ``light_events`` training events, and the heaviest share.

    >>> [s.name for s in user_segments(evaluation, counts, 5, 0.1)]
    ['all', 'light', 'heavy']
    """
    counts = np.asarray([train_counts.get(u, 0) for u in evaluation.user_ids])
    threshold = float(np.quantile(counts, 1.0 - heavy_share)) if len(counts) else 0.0

    def subset(mask: np.ndarray) -> EvaluationSet:
        chosen = np.flatnonzero(mask)
        return EvaluationSet(
            [evaluation.user_ids[i] for i in chosen],
            [evaluation.relevant[i] for i in chosen],
            evaluation.catalogue_size,
        )

    return [
        Segment("all", "every evaluated user", evaluation),
        Segment("light", f"users with fewer than {light_events} training events", subset(counts < light_events)),
        Segment(
            "heavy",
            f"heaviest {heavy_share:.0%} of users (at least {threshold:.0f} training events)",
            subset(counts >= threshold) if len(counts) else evaluation,
        ),
    ]


def build_report(
    dataset: Dataset,
    config: TrainConfig,
    *,
    k_values: Sequence[int] = DEFAULT_K,
    light_events: int = 5,
    heavy_share: float = 0.1,
    progress: Progress = False,
) -> Report:
    """Fit every model on the train split and evaluate it on each segment at every k."""
    stages = _Stages(progress)
    prepared = _prepare(dataset, config)
    fitted = fit_models(dataset, prepared, config, stages)
    counts = prepared.split.train["user_id"].astype(str).value_counts().to_dict()
    segments = user_segments(prepared.evaluation, counts, light_events, heavy_share)
    k_values = tuple(sorted(set(k_values)))
    rows = {}
    for segment in segments:
        if segment.users.user_ids:
            stages.say(f"evaluating segment {segment.name} ({len(segment.users.user_ids)} users)")
            rows[segment.name] = evaluate_models(fitted, segment.users, k_values)
    notes = [f"served model: {fitted.served}"]
    if fitted.ranker is not None:
        notes.append(f"ranker: {fitted.ranker.chosen}, validation NDCG@10 {fitted.ranker.validation}")
    if fitted.tuning is not None:
        notes.append(f"baselines tuned on the validation part: {fitted.tuning.to_json()['chosen']}")
    return Report(dataset.name, k_values, segments, rows, notes)


def _table(rows: dict[str, dict[str, Any]], metric: str, k_values: tuple[int, ...]) -> list[str]:
    lines = ["| model | " + " | ".join(f"{metric}@{k}" for k in k_values) + " |"]
    lines.append("|---|" + "---:|" * len(k_values))
    for model, row in rows.items():
        lines.append(f"| {model} | " + " | ".join(f"{row[f'{metric}@{k}']:.4f}" for k in k_values) + " |")
    return lines


def _plot(rows: dict[str, dict[str, Any]], k_values: tuple[int, ...], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, metric in zip(axes, ("recall", "ndcg"), strict=True):
        for model, row in rows.items():
            axis.plot(k_values, [row[f"{metric}@{k}"] for k in k_values], marker="o", label=model)
        axis.set_xscale("log")
        axis.set_xticks(k_values, [str(k) for k in k_values])
        axis.set_xlabel("k")
        axis.set_ylabel(f"{'Recall' if metric == 'recall' else 'NDCG'}@k")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(report: Report, out: Path) -> list[Path]:
    """``report.md`` and one ``<segment>.png`` per non-empty segment in ``out``; the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# Towerlight evaluation — {report.dataset}",
        "",
        f"Generated {stamp}. Protocol (DESIGN.md §5): per-user chronological split, last 20% of each user's "
        "events held out; the whole catalogue ranked, each user's training items excluded.",
        "",
        *(f"- {note}" for note in report.notes),
    ]
    for segment in report.segments:
        n_users = len(segment.users.user_ids)
        lines += ["", f"## {segment.name}: {segment.description} ({n_users} users)", ""]
        rows = report.rows.get(segment.name)
        if not rows:
            lines.append("No evaluated user falls in this segment.")
            continue
        coverage = [f"| {m} | {r[f'coverage@{report.k_values[-1]}']:.4f} |" for m, r in rows.items()]
        lines += [*_table(rows, "recall", report.k_values), "", *_table(rows, "ndcg", report.k_values)]
        lines += ["", f"| model | coverage@{report.k_values[-1]} |", "|---|---:|", *coverage]
        path = out / f"{segment.name}.png"
        _plot(rows, report.k_values, f"{report.dataset}: {segment.name} ({n_users} users)", path)
        lines += ["", f"![{segment.name}]({path.name})"]
        written.append(path)
    markdown = out / "report.md"
    markdown.write_text("\n".join(lines) + "\n")
    return [markdown, *written]


def report_config(config: TrainConfig) -> TrainConfig:
    """The training config the report runs with: nothing is published, every user is evaluated."""
    return replace(config, store_uri=None, max_eval_users=None, promote=False)
