"""The offline job end to end: split, train, evaluate beside the baselines, export, index, publish, gate.

``run_training(dataset, config)`` chains the stages (each a function of its own module) and returns what
happened; the CLI (``towerlight train``) and the scheduled retrain function only build the config and print
the result. The reported metrics always come from the held-out run (model trained on the train split);
with ``refit_on_all`` the published towers are then retrained on every interaction with the same
parameters, so serving has the freshest item embeddings. The manifest says which is which.

Example::

    >>> dataset = load_movielens_dataset()
    >>> result = run_training(dataset, TrainConfig(store_uri="file:///tmp/towerlight-store"))
    >>> result.version, result.promoted, result.metrics["two_tower"]["ndcg@10"]
    ('20261122T011500Z-3fa2c1', True, 0.21)
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from towerlight import artifacts
from towerlight.errors import ArtifactError, ConfigurationError, PointerConflictError, ValidationError
from towerlight.event_types import POSITIVE_EVENT_TYPES
from towerlight.features import FeatureSpec, ItemRecord
from towerlight.store import ArtifactStore, open_store
from towerlight.store.versions import (
    current_version,
    new_version_id,
    promote,
    prune,
    publish_version,
    read_manifest,
)
from towerlight_offline.baselines import BaselineParams, Tuning, TuningGrid, build_baselines, tune_baselines
from towerlight_offline.catalogue import category_codes, csr
from towerlight_offline.champion import HeadToHead, head_to_head
from towerlight_offline.content import content_arrays
from towerlight_offline.data.dataset import Dataset
from towerlight_offline.evaluate import (
    EvaluationSet,
    InteractionMatrix,
    Recommend,
    Scorer,
    evaluate_recommender,
    scoring_recommender,
)
from towerlight_offline.gate import PRIMARY_MODEL, RANKED_MODEL, GateDecision, decide
from towerlight_offline.index import DEFAULT_EF_CONSTRUCTION, DEFAULT_M, IndexedVectors
from towerlight_offline.model.spec import fit_feature_spec, user_attributes
from towerlight_offline.model.train import TrainedTwoTower, TwoTowerParams, train_two_tower
from towerlight_offline.popularity import build_popularity
from towerlight_offline.ranker import (
    FittedRanker,
    RankerParams,
    build_ranking_tables,
    first_event_times,
    reranking_recommender,
    save_ranker,
    train_ranker,
    user_histories_with_times,
)
from towerlight_offline.refit import start_refit
from towerlight_offline.split import Split, chronological_split, user_histories, validation_split

logger = logging.getLogger(__name__)

Progress = bool | Callable[[str], None]
"""``True``: tqdm bars and status lines in the log; a callable also receives each status line."""


@dataclass
class TrainConfig:
    """Everything one training run needs besides the data; stored in the manifest's ``params``.

    ``seed`` is the one seed of the run: user sampling, baselines and the two-tower model
    (it overrides ``two_tower.seed``). ``max_eval_users`` caps the evaluated test users with a seeded
    sample (None: all) so evaluation stays bounded on large data; MovieLens-100K (943 users) is whole.
    ``tolerance`` is the gate's relative tolerance (see ``gate.decide``). ``index_M`` and
    ``index_ef_construction`` shape the hnswlib graph (see ``index.build_index``); the query-time ef is
    found by the build, the lowest that reaches recall@10 >= 0.95 against exact search. ``ranker`` adds the
    second stage (a second two-tower model is trained on the validation part to label its examples);
    ``tune_baselines`` picks item-kNN and ALS parameters from ``tuning_grid`` on the validation part.
    """

    source: str = "dataset"
    store_uri: str | None = None
    two_tower: TwoTowerParams = field(default_factory=TwoTowerParams)
    baselines: bool = True
    baseline_params: BaselineParams = field(default_factory=BaselineParams)
    tune_baselines: bool = True
    tuning_grid: TuningGrid = field(default_factory=TuningGrid)
    ranker: bool = True
    ranker_params: RankerParams = field(default_factory=RankerParams)
    tolerance: float = 0.01
    gate_metric: str = "ndcg@10"
    promote: bool = True
    keep_versions: int = 5
    refit_on_all: bool = True
    seed: int = 0
    max_eval_users: int | None = 10_000
    test_fraction: float = 0.2
    k_values: tuple[int, ...] = (10, 50)
    popularity_half_life_days: float = 30.0
    popularity_top_n: int = 1000
    index_query_users: int = 1000
    index_M: int = DEFAULT_M
    index_ef_construction: int = DEFAULT_EF_CONSTRUCTION


@dataclass
class TrainResult:
    """What a run produced: the version, its manifest, the evaluation table and what the gate did."""

    version: str
    store_uri: str
    manifest: dict[str, Any]
    metrics: dict[str, dict[str, Any]]
    decision: GateDecision
    promoted: bool
    outcome: str
    timings: dict[str, float]
    pruned: list[str]


class _Stages:
    """Times each stage and reports a one-line status as it starts."""

    def __init__(self, progress: Progress) -> None:
        self.report = progress if callable(progress) else None
        self.bars = bool(progress)
        self.timings: dict[str, float] = {}

    def say(self, message: str) -> None:
        logger.info(message)
        if self.report is not None:
            self.report(message)

    @contextlib.contextmanager
    def stage(self, name: str, message: str) -> Iterator[None]:
        self.say(message)
        started = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - started, 2)


def positive_interactions(interactions: pd.DataFrame) -> pd.DataFrame:
    """Events that say the user wanted the item (views, clicks, ratings, purchases, ...).

    >>> positive_interactions(dataset.interactions)["event_type"].unique().tolist()
    ['rating']
    """
    return interactions[interactions["event_type"].isin(POSITIVE_EVENT_TYPES)]


def two_tower_scorer(
    trained: TrainedTwoTower,
    matrix: InteractionMatrix,
    histories: Mapping[str, list[str]],
    attributes: Mapping[str, Mapping[str, Any]],
) -> Scorer:
    """Exact inner-product scores of every catalogue item for users embedded from ``histories``.

    ``matrix`` must list the items in the spec's order (``trained.item_embeddings()`` rows).
    """
    items = trained.item_embeddings()
    if len(items) != matrix.n_items:
        raise ValueError(f"{len(items)} item embeddings for a catalogue of {matrix.n_items}")

    def score(rows: np.ndarray) -> np.ndarray:
        users = matrix.user_ids[rows]
        vectors = trained.user_embeddings([histories[u] for u in users], [attributes.get(u) for u in users])
        return vectors @ items.T

    return score


def items_arrays(records: list[ItemRecord], indexed: IndexedVectors) -> dict[str, np.ndarray]:
    """Arrays of ``items.npz`` (see ``towerlight.artifacts``) for records in feature-id order.

    >>> vectors = IndexedVectors(np.ones((1, 2)), np.zeros(1, dtype=np.int64), np.zeros(2))
    >>> items_arrays([ItemRecord("1", "Toy Story", ["Comedy"], {})], vectors)["category_codes"]
    array([0], dtype=int32)
    """
    names, codes = category_codes(records)
    offsets, flat_codes = csr(codes)
    return {
        "item_ids": np.asarray([r.item_id for r in records], dtype=str),
        # lossless: item_embeddings() are float16 values already
        "vectors": np.ascontiguousarray(indexed.vectors, dtype=np.float16),
        "vector_of_item": indexed.vector_of_item.astype(np.int32),
        "index_center": indexed.center.astype(np.float32),
        "category_names": np.asarray(names, dtype=str),
        "category_offsets": offsets,
        "category_codes": flat_codes,
    }


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(float(timestamp), UTC).isoformat().replace("+00:00", "Z")


def _data_section(dataset: Dataset, config: TrainConfig, prepared: _Prepared) -> dict[str, Any]:
    positives, split = prepared.positives, prepared.split
    timestamps = positives["timestamp"]
    return {
        "source": config.source,
        "name": dataset.name,
        "window": {"start": _iso(timestamps.min()), "end": _iso(timestamps.max())},
        "interactions": len(dataset.interactions),
        "positive_interactions": len(positives),
        "users": int(positives["user_id"].nunique()),
        "items": len(dataset.items),
        "catalogue_items": prepared.matrix.n_items,  # catalogue plus items only seen in interactions
        "train_interactions": len(split.train),
        "test_interactions": len(split.test),
    }


def _current_manifest(store: ArtifactStore) -> tuple[str | None, dict[str, Any] | None]:
    current = current_version(store)
    if current is None:
        return None, None
    try:
        return current, read_manifest(store, current)
    except ArtifactError as exc:
        logger.warning("CURRENT names %s but its manifest cannot be read: %s", current, exc)
        return current, {"version": current}


def _sample(values: list[str], size: int, seed: int) -> list[str]:
    if len(values) <= size:
        return values
    return sorted(np.random.default_rng(seed).choice(values, size=size, replace=False).tolist())


@dataclass
class _Prepared:
    """The split and everything derived from it that several stages share."""

    positives: pd.DataFrame
    split: Split
    spec: FeatureSpec
    matrix: InteractionMatrix
    evaluation: EvaluationSet
    attributes: dict[str, dict[str, Any]]
    validation: Split  # the same rule inside the train part: tuning and ranker labels, never the test


def _prepare(dataset: Dataset, config: TrainConfig, split: Split | None = None) -> _Prepared:
    """The protocol's split of ``dataset`` (or ``split``, one derived from it) and what is built on it."""
    positives = positive_interactions(dataset.interactions)
    if positives.empty:
        raise ConfigurationError(f"dataset {dataset.name!r} has no positive interactions to train on")
    split = split or chronological_split(positives, config.test_fraction)
    spec = fit_feature_spec(dataset)
    catalogue = spec.item_ids.values
    evaluation = EvaluationSet.from_split(
        split, catalogue_size=len(catalogue), max_users=config.max_eval_users, seed=config.seed
    )
    if not evaluation.user_ids:
        raise ValidationError(
            f"dataset {dataset.name!r} has no user with both train and held-out events to evaluate on",
            {"users": int(positives["user_id"].nunique()), "interactions": len(positives)},
        )
    matrix = InteractionMatrix.build(split.train, catalogue)
    attributes = user_attributes(dataset.users)
    validation = validation_split(split.train, config.test_fraction)
    return _Prepared(positives, split, spec, matrix, evaluation, attributes, validation)


@dataclass
class FittedModels:
    """Every model of a run fitted on the train split, each as a ``recommend(user_ids, k)``."""

    trained: TrainedTwoTower
    recommenders: dict[str, Recommend]
    ranker: FittedRanker | None = None
    tuning: Tuning | None = None
    baseline_params: BaselineParams | None = None

    @property
    def served(self) -> str:
        """The row of the table that describes what serving will do (the gate's row)."""
        return RANKED_MODEL if self.ranker is not None else PRIMARY_MODEL


def _tower_scorer(
    trained: TrainedTwoTower, frame: pd.DataFrame, prepared: _Prepared
) -> tuple[Scorer, InteractionMatrix]:
    """Exact two-tower scores of users embedded from their events in ``frame``, and that frame's matrix."""
    split_train = frame is prepared.split.train
    matrix = prepared.matrix if split_train else InteractionMatrix.build(frame, prepared.matrix.item_ids)
    return two_tower_scorer(trained, matrix, user_histories(frame), prepared.attributes), matrix


def _fit_ranker(
    dataset: Dataset, prepared: _Prepared, config: TrainConfig, params: TwoTowerParams, bars: bool
) -> FittedRanker | None:
    """Train the two-tower model on the validation part and the ranker on its candidates (None: too little data)."""
    validation = prepared.validation
    if validation.test.empty or validation.train["user_id"].nunique() < 5:
        logger.warning("too few users with validation events to train a ranker; serving two-tower alone")
        return None
    early = train_two_tower(validation.train, dataset.items, dataset.users, prepared.spec, params, progress=bars)
    score, _ = _tower_scorer(early, validation.train, prepared)
    fitted = train_ranker(validation, score, early.item_records, config.ranker_params)
    if fitted.positives == 0:
        logger.warning("no validation item among the candidates; serving two-tower alone")
        return None
    return fitted


def fit_models(dataset: Dataset, prepared: _Prepared, config: TrainConfig, stages: _Stages) -> FittedModels:
    """Train the two-tower model (and ranker), tune and fit the baselines, all on the train split.

    >>> fitted = fit_models(dataset, _prepare(dataset, config), config, _Stages(False))
    >>> sorted(fitted.recommenders)
    ['als', 'item_knn', 'popularity', 'two_tower', 'two_tower_ranker']
    """
    params = replace(config.two_tower, seed=config.seed)
    with stages.stage("train", f"training two-tower on the train split ({params.epochs} epochs)"):
        trained = train_two_tower(
            prepared.split.train, dataset.items, dataset.users, prepared.spec, params, progress=stages.bars
        )
    score, matrix = _tower_scorer(trained, prepared.split.train, prepared)
    fitted = FittedModels(trained, {PRIMARY_MODEL: scoring_recommender(score, matrix)})
    if config.ranker:
        with stages.stage("ranker", "training the ranker on two-tower candidates of the validation part"):
            fitted.ranker = _fit_ranker(dataset, prepared, config, params, stages.bars)
        if fitted.ranker is not None:
            stages.say(f"ranker: {fitted.ranker.chosen} chosen, validation NDCG@10 {fitted.ranker.validation}")
            catalogue = matrix.item_ids.tolist()
            fitted.recommenders[RANKED_MODEL] = reranking_recommender(
                score,
                matrix,
                build_ranking_tables(prepared.split.train, trained.item_records, config.ranker_params),
                user_histories_with_times(prepared.split.train, catalogue),
                first_event_times(prepared.split.test),
                fitted.ranker.ranker,
                config.ranker_params.candidates,
            )
    if config.baselines:
        baseline_params = config.baseline_params
        if config.tune_baselines:
            with stages.stage("tune", "tuning item-kNN and ALS on the validation part"):
                fitted.tuning = tune_baselines(
                    prepared.validation,
                    matrix.item_ids,
                    config.tuning_grid,
                    baseline_params,
                    seed=config.seed,
                    max_users=config.max_eval_users,
                )
            baseline_params = fitted.tuning.params
        fitted.baseline_params = baseline_params
        with stages.stage("baselines", "fitting popularity, item-kNN and ALS on the train split"):
            for baseline in build_baselines(baseline_params, seed=config.seed, progress=stages.bars):
                baseline.fit(matrix)
                fitted.recommenders[baseline.name] = scoring_recommender(baseline.score, matrix)
    return fitted


def evaluate_models(
    fitted: FittedModels, evaluation: EvaluationSet, k_values: tuple[int, ...], bars: bool = False
) -> dict[str, dict[str, Any]]:
    """A row of the table per model, all on the same users."""
    return {
        name: evaluate_recommender(name, recommend, evaluation, k_values, progress=bars)
        for name, recommend in fitted.recommenders.items()
    }


def _write_ranker(
    final: TrainedTwoTower, prepared: _Prepared, ranker: FittedRanker, config: TrainConfig, out: Path
) -> dict[str, Path]:
    """``ranker.json`` and its tables, built from every interaction (what serving will know)."""
    tables = build_ranking_tables(prepared.positives, final.item_records, config.ranker_params)
    return save_ranker(out, ranker.ranker, tables)


def _write_artifacts(
    final: TrainedTwoTower,
    prepared: _Prepared,
    dataset: Dataset,
    config: TrainConfig,
    out: Path,
    stages: _Stages,
) -> tuple[dict[str, Path], dict[str, Any]]:
    """Every file of ``artifacts.REQUIRED_FILES`` in ``out``, and the manifest sections they report."""
    from towerlight_offline.export import PARITY_TOLERANCE, check_parity, export_towers
    from towerlight_offline.index import build_index

    histories = user_histories(prepared.positives)
    users = _sample(prepared.evaluation.user_ids, config.index_query_users, config.seed)
    query_histories = [histories[u] for u in users]
    query_attributes = [prepared.attributes.get(u) for u in users]

    with stages.stage("export", "exporting the towers to ONNX (parity checked against torch)"):
        files = dict(export_towers(final, out, check=False))
        diffs = check_parity(final, files)
    with stages.stage("index", "building the hnswlib index (recall checked against exact search)"):
        embeddings = final.item_embeddings()
        queries = final.user_embeddings(query_histories, query_attributes)
        report, indexed = build_index(
            embeddings,
            out / artifacts.INDEX,
            queries=queries,
            M=config.index_M,
            ef_construction=config.index_ef_construction,
        )
    with stages.stage("artifacts", "writing items, content, popularity and features"):
        np.savez(out / artifacts.ITEMS, **items_arrays(final.item_records, indexed))
        np.savez(out / artifacts.CONTENT, **content_arrays(final.item_records))
        popularity = build_popularity(
            prepared.positives,
            dataset.users,
            spec=prepared.spec,
            half_life_days=config.popularity_half_life_days,
            top_n=config.popularity_top_n,
        )
        np.savez(out / artifacts.POPULARITY, **popularity)
        (out / artifacts.FEATURES).write_text(json.dumps(prepared.spec.to_json()))
    files.update({name: out / name for name in artifacts.REQUIRED_FILES if name not in files})
    index = {**report.to_json(), "query_users": len(users)}
    parity = {
        "user_tower_max_abs_diff": diffs[artifacts.USER_TOWER],
        "item_tower_max_abs_diff": diffs[artifacts.ITEM_TOWER],
        "tolerance": PARITY_TOLERANCE,
    }
    sections = {
        "model": {
            "type": PRIMARY_MODEL,
            "embedding_dim": int(embeddings.shape[1]),
            "items": int(embeddings.shape[0]),
            "distinct_item_vectors": len(indexed.vectors),
            "user_fields": prepared.spec.user_fields,
            "history_length": prepared.spec.history_length,
            "popularity_segments": len(popularity["segments"]),
        },
        "index": index,
        "parity": parity,
    }
    return files, sections


def _params_section(
    config: TrainConfig, params: TwoTowerParams, index: dict[str, Any], fitted: FittedModels
) -> dict[str, Any]:
    return {
        "two_tower": params.to_json(),
        # serving reads the query-time ef as params.index.ef
        "index": {
            "space": "ip",
            "ef": index["ef_search"],
            "M": index["M"],
            "ef_construction": index["ef_construction"],
        },
        "baselines": asdict(fitted.baseline_params) if fitted.baseline_params else None,
        "ranker": asdict(config.ranker_params) if fitted.ranker else None,
        "popularity": {"half_life_days": config.popularity_half_life_days, "top_n": config.popularity_top_n},
        "split": {"test_fraction": config.test_fraction, "rule": "per user, chronological"},
        "seed": config.seed,
        "refit_on_all": config.refit_on_all,
    }


def _evaluation_section(config: TrainConfig, evaluation: EvaluationSet, fitted: FittedModels) -> dict[str, Any]:
    return {
        "served_row": fitted.served,
        "ranker": fitted.ranker.to_json() if fitted.ranker else None,
        "baseline_tuning": fitted.tuning.to_json() if fitted.tuning else None,
        "protocol": "per-user chronological split; full catalogue ranked excluding each user's train items",
        "users": len(evaluation.user_ids),
        "max_users": config.max_eval_users,
        "k_values": list(config.k_values),
        "served_model": (
            "refit on all interactions after evaluation; metrics are from the held-out run"
            if config.refit_on_all
            else "the evaluated model itself (trained on the train split)"
        ),
    }


def _promote(
    store: ArtifactStore, version: str, current: str | None, decision: GateDecision, config: TrainConfig
) -> tuple[bool, str]:
    if not decision.promote:
        return False, f"not promoted: {decision.reason}"
    if not config.promote:
        return False, f"not promoted (promotion disabled); the gate would pass: {decision.reason}"
    try:
        promote(store, version, expected_current=current)
    except PointerConflictError as exc:
        return False, f"not promoted: CURRENT changed during training ({exc.message})"
    return True, f"promoted: {decision.reason}"


def _duel(
    store: ArtifactStore,
    current_manifest: Mapping[str, Any] | None,
    prepared: _Prepared,
    fitted: FittedModels,
    config: TrainConfig,
    stages: _Stages,
    work_dir: Path,
) -> HeadToHead | str:
    """The new served model and the current version on the same later events, or why not (see ``champion``)."""
    if current_manifest is None:
        return "no current version"
    with stages.stage("duel", f"re-evaluating current version {current_manifest.get('version')} on later events"):
        duel, why = head_to_head(
            store,
            current_manifest,
            prepared.split,
            fitted.recommenders[fitted.served],
            prepared.attributes,
            work_dir,
            catalogue_size=prepared.matrix.n_items,
            k_values=config.k_values,
            max_users=config.max_eval_users,
            seed=config.seed,
        )
    if duel is None:
        stages.say(f"gate on recorded metrics: {why}")
        return why
    metric = config.gate_metric
    stages.say(
        f"same {duel.users} users' events after {duel.after}: {metric} new {duel.new[metric]:.4f}, "
        f"current {duel.current[metric]:.4f}"
    )
    return duel


def run_training(dataset: Dataset, config: TrainConfig, progress: Progress = True) -> TrainResult:
    """Train, evaluate, publish and (when the gate passes) promote one model version.

    >>> result = run_training(load_movielens_dataset(), TrainConfig(store_uri="file:///tmp/store"))
    >>> result.outcome
    'promoted: no current version: nothing to compare with'
    """
    if not config.store_uri:
        raise ConfigurationError("no artifact store: set TOWERLIGHT_STORE or pass a store URI")
    store = open_store(config.store_uri)
    stages = _Stages(progress)
    params = replace(config.two_tower, seed=config.seed)
    started = time.perf_counter()

    with stages.stage("split", f"splitting {dataset.summary()} (last {config.test_fraction:.0%} per user)"):
        prepared = _prepare(dataset, config)
    stages.say(
        f"{len(prepared.split.train):,} train / {len(prepared.split.test):,} test events, "
        f"{len(prepared.evaluation.user_ids):,} test users evaluated, {prepared.matrix.n_items:,} items"
    )
    refit = None
    if config.refit_on_all:
        refit = start_refit(prepared.positives, dataset.items, dataset.users, prepared.spec, params)
        if refit.in_background:
            stages.say("refitting two-tower on all interactions for serving, in a second process meanwhile")
    fitted = fit_models(dataset, prepared, config, stages)
    with stages.stage("evaluate", "evaluating every model on the test split (whole catalogue ranked)"):
        metrics = evaluate_models(fitted, prepared.evaluation, config.k_values, stages.bars)
    final = fitted.trained
    if refit is not None:
        with stages.stage("refit", "refitting two-tower on all interactions for serving"):
            final = refit.result(progress=stages.bars)

    current, current_manifest = _current_manifest(store)
    version = new_version_id()
    with tempfile.TemporaryDirectory(prefix=f"towerlight-{version}-") as tmp:
        duel = _duel(store, current_manifest, prepared, fitted, config, stages, Path(tmp) / "current")
        decision = decide(
            metrics[fitted.served],
            current_manifest,
            metric=config.gate_metric,
            tolerance=config.tolerance,
            same_events=duel.compared() if isinstance(duel, HeadToHead) else None,
        )
        files, sections = _write_artifacts(final, prepared, dataset, config, Path(tmp), stages)
        if fitted.ranker is not None:
            files.update(_write_ranker(final, prepared, fitted.ranker, config, Path(tmp)))
        with stages.stage("publish", f"publishing version {version} to {store.uri}"):
            manifest = publish_version(
                store,
                version,
                files,
                {
                    **sections,
                    "params": _params_section(config, params, sections["index"], fitted),
                    "metrics": metrics,
                    "evaluation": _evaluation_section(config, prepared.evaluation, fitted),
                    "data": _data_section(dataset, config, prepared),
                    "gate": {
                        **decision.to_json(),
                        "same_events": duel.to_json() if isinstance(duel, HeadToHead) else {"skipped": duel},
                    },
                    "timings": {**stages.timings, "total": round(time.perf_counter() - started, 2)},
                },
            )
    with stages.stage("promote", "applying the quality gate"):
        promoted, outcome = _promote(store, version, current, decision, config)
        stages.say(outcome)
        pruned = prune(store, config.keep_versions)
    if pruned:
        stages.say(f"pruned {len(pruned)} old version(s): {', '.join(pruned)}")
    return TrainResult(version, store.uri, manifest, metrics, decision, promoted, outcome, stages.timings, pruned)
