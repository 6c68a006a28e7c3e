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
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from towerlight.recommend.strategies import DEFAULT_HYBRID_WEIGHTS, HybridWeights
from towerlight_offline.data.dataset import Dataset
from towerlight_offline.evaluate import EvaluationSet
from towerlight_offline.pipeline import (
    FittedModels,
    Progress,
    TrainConfig,
    _prepare,
    _Prepared,
    _Stages,
    evaluate_models,
    fit_models,
)
from towerlight_offline.served import SERVED_STRATEGIES, evaluation_bundle, served_recommender, served_users
from towerlight_offline.split import cold_start_split

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


def _fit_every_model(
    dataset: Dataset, prepared: _Prepared, config: TrainConfig, weights: HybridWeights, stages: _Stages
) -> FittedModels:
    """``fit_models``' models plus the strategies only serving implements, scored by the serving code."""
    fitted = fit_models(dataset, prepared, config, stages)
    with (
        stages.stage("bundle", "writing and loading the train-split version for the served strategies"),
        tempfile.TemporaryDirectory(prefix="towerlight-evaluate-") as tmp,
    ):
        bundle = evaluation_bundle(fitted, prepared, dataset, config, Path(tmp), stages)
    users = served_users(prepared, bundle)
    for strategy in SERVED_STRATEGIES:
        fitted.recommenders[strategy] = served_recommender(
            bundle, strategy, weights, users, config.ranker_params.candidates
        )
    return fitted


def cold_start_users(evaluation: EvaluationSet, share: float, light_events: int, seed: int) -> dict[str, int]:
    """A seeded ``share`` of the evaluated users, each with the number (1 .. light_events - 1) of first
    training events they keep in the cold-start simulation.

    >>> cold_start_users(evaluation, 0.2, 5, 0)
    {'104': 3, '118': 1, ...}
    """
    rng = np.random.default_rng(seed)
    size = round(len(evaluation.user_ids) * share)
    chosen = sorted(rng.choice(evaluation.user_ids, size=size, replace=False).tolist()) if size else []
    kept = rng.integers(1, max(light_events, 2), size=len(chosen))
    return dict(zip(chosen, kept.tolist(), strict=True))


def _cold_start(
    dataset: Dataset,
    prepared: _Prepared,
    config: TrainConfig,
    weights: HybridWeights,
    users: dict[str, int],
    stages: _Stages,
) -> tuple[EvaluationSet, FittedModels]:
    """Every model refitted with ``users`` cut to their first events, and those users to evaluate."""
    cold = _prepare(dataset, config, cold_start_split(prepared.split, users))
    fitted = _fit_every_model(dataset, cold, config, weights, stages)
    chosen = [i for i, user in enumerate(cold.evaluation.user_ids) if user in users]
    evaluation = EvaluationSet(
        [cold.evaluation.user_ids[i] for i in chosen],
        [cold.evaluation.relevant[i] for i in chosen],
        cold.evaluation.catalogue_size,
    )
    return evaluation, fitted


def build_report(
    dataset: Dataset,
    config: TrainConfig,
    *,
    k_values: Sequence[int] = DEFAULT_K,
    light_events: int = 5,
    heavy_share: float = 0.1,
    cold_share: float = 0.2,
    weights: HybridWeights = DEFAULT_HYBRID_WEIGHTS,
    progress: Progress = False,
) -> Report:
    """Fit every model on the train split and evaluate it on each segment at every k.

    With ``cold_share`` > 0, every model is fitted a second time on a train split where that share of the
    users keep only their first 1 .. ``light_events`` - 1 events (the ``cold_start`` segment).
    """
    stages = _Stages(progress)
    prepared = _prepare(dataset, config)
    fitted = _fit_every_model(dataset, prepared, config, weights, stages)
    counts = prepared.split.train["user_id"].astype(str).value_counts().to_dict()
    segments = user_segments(prepared.evaluation, counts, light_events, heavy_share)
    k_values = tuple(sorted(set(k_values)))
    rows = {}
    for segment in segments:
        if segment.users.user_ids:
            stages.say(f"evaluating segment {segment.name} ({len(segment.users.user_ids)} users)")
            rows[segment.name] = evaluate_models(fitted, segment.users, k_values)
    notes = [
        f"served model: {fitted.served}",
        f"{', '.join(SERVED_STRATEGIES)}: the serving strategies (towerlight.recommend.strategies) on the "
        "version a train-split run would publish, each request replayed at the user's first held-out event; "
        f"hybrid weights {_weights_text(weights)}",
    ]
    if fitted.ranker is not None:
        notes.append(f"ranker: {fitted.ranker.chosen}, validation NDCG@10 {fitted.ranker.validation}")
    if fitted.tuning is not None:
        notes.append(f"baselines tuned on the validation part: {fitted.tuning.to_json()['chosen']}")
    cold_users = cold_start_users(prepared.evaluation, cold_share, light_events, config.seed)
    if cold_users:
        stages.say(f"cold-start simulation: refitting every model with {len(cold_users)} users cut to 1-4 events")
        # the baselines keep the parameters tuned above: the simulation measures users, not tuning
        cold_config = replace(
            config, tune_baselines=False, baseline_params=fitted.baseline_params or config.baseline_params
        )
        evaluation, cold_fitted = _cold_start(dataset, prepared, cold_config, weights, cold_users, stages)
        description = (
            f"light users simulated: {len(cold_users)} users ({cold_share:.0%}, seeded) whose training history "
            f"is cut to their first 1–{max(light_events - 1, 1)} events; every model refitted without their "
            "later training events, evaluated on the same held-out events"
        )
        segments.insert(2, Segment("cold_start", description, evaluation))
        if cold_fitted.ranker is not None:
            notes.append(f"cold_start refit's ranker: {cold_fitted.ranker.chosen}")
        if evaluation.user_ids:
            stages.say(f"evaluating segment cold_start ({len(evaluation.user_ids)} users)")
            rows["cold_start"] = evaluate_models(cold_fitted, evaluation, k_values)
    return Report(dataset.name, k_values, segments, rows, notes)


def _weights_text(weights: HybridWeights) -> str:
    return ",".join(f"{name}:{weight:g}" for name, weight in weights.weights.items())


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
