"""``towerlight bench explain``: what ``explain=true`` costs per request, for each strategy.

The recommend service (``RecommendationService.recommend``: strategy, filters, rules, scores, and with
``explain`` the reasons) runs in this process on a real model version, for real users' histories held
in memory: no Postgres, no HTTP, so the difference between the two paths is the explanation alone. The
two paths alternate request by request on the same users, so load changes hit both alike.

The model is MovieLens-100K trained by the real pipeline into a temporary store (``--epochs``, no
baselines); the users are MovieLens users, each with their newest ``HISTORY`` positive items.

Example::

    $ towerlight bench explain --requests 2000
    | strategy | explain | n | p50 ms | p95 ms | p99 ms | mean ms | max ms |
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from towerlight.db.promotions import Promotion
from towerlight.model.registry import load_version
from towerlight.recommend.service import RecommendationService, RecommendQuery, UserSignals
from towerlight.store import open_store
from towerlight.store.versions import current_version
from towerlight_offline.bench.report import LATENCY_HEADERS, latency_row, latency_summary, load_average
from towerlight_offline.console import table

STRATEGIES = ("two_tower", "content", "hybrid", "popularity")
HISTORY = 50


@dataclass(frozen=True)
class ExplainBenchConfig:
    requests: int = 2000  # per strategy and path
    k: int = 10
    epochs: int = 3
    seed: int = 0


class _Histories:
    """A ``SignalSource`` answering from users' histories held in memory."""

    def __init__(self, histories: dict[str, tuple[str, ...]]) -> None:
        self._histories = histories

    def user(self, user_id: str, lookback: int, *, attributes: bool) -> UserSignals:
        return UserSignals(self._histories[user_id], frozenset(), {} if attributes else None)

    def inactive_items(self) -> frozenset[str]:
        return frozenset()

    def promotions(self) -> tuple[Promotion, ...]:
        return ()


def _trained_store(directory: Path, epochs: int, say: Callable[[str], None]) -> tuple[str, dict[str, tuple[str, ...]]]:
    """MovieLens-100K trained into ``directory``; the store URI and each user's newest positive items."""
    from towerlight_offline.data.movielens import load_movielens_dataset
    from towerlight_offline.model.train import TwoTowerParams
    from towerlight_offline.pipeline import TrainConfig, positive_interactions, run_training

    dataset = load_movielens_dataset()
    store_uri = (directory / "store").as_uri()
    say(f"training MovieLens-100K ({epochs} epochs) into {store_uri}")
    params = TwoTowerParams(epochs=epochs)
    run_training(
        dataset, TrainConfig(store_uri=store_uri, two_tower=params, baselines=False, refit_on_all=False), False
    )
    newest_first = positive_interactions(dataset.interactions).sort_values("timestamp", ascending=False)
    histories = {str(u): tuple(g["item_id"].astype(str).head(HISTORY)) for u, g in newest_first.groupby("user_id")}
    return store_uri, histories


def run_explain_bench(config: ExplainBenchConfig, say: Callable[[str], None]) -> str:
    """Time ``recommend`` with and without ``explain`` per strategy; returns the markdown report."""
    with tempfile.TemporaryDirectory(prefix="towerlight-bench-explain-") as tmp:
        store_uri, histories = _trained_store(Path(tmp), config.epochs, say)
        store = open_store(store_uri)
        version = current_version(store)
        bundle = load_version(store, str(version), Path(tmp) / "cache")
    service = RecommendationService(lambda: bundle, _Histories(histories))
    users = np.random.default_rng(config.seed).choice(sorted(histories), size=config.requests)
    rows, costs = [], []
    for strategy in STRATEGIES:
        samples: dict[bool, list[int]] = {False: [], True: []}
        for n, user in enumerate(users):
            for explain in (n % 2 == 0, n % 2 == 1):  # alternate which path goes first
                query = RecommendQuery(k=config.k, strategy=strategy, explain=explain)
                started = time.perf_counter_ns()
                service.recommend(str(user), query)
                samples[explain].append(time.perf_counter_ns() - started)
        off, on = latency_summary(samples[False]), latency_summary(samples[True])
        rows += [latency_row(f"{strategy}, explain=false", off), latency_row(f"{strategy}, explain=true", on)]
        costs.append([strategy, f"{on['p50_ms'] - off['p50_ms']:.3f}", f"{on['mean_ms'] - off['mean_ms']:.3f}"])
    load = load_average()
    return "\n\n".join(
        [
            f"recommend() in process, model {version} ({bundle.catalogue.size} items), k={config.k}, "
            f"{config.requests} requests per row, histories of up to {HISTORY} items; load average {load}",
            table(LATENCY_HEADERS, rows),
            table(["strategy", "explain cost p50 ms", "explain cost mean ms"], costs),
        ]
    )
