"""Build the hnswlib index over the item embeddings, and check its recall against exact search first.

The index uses inner product (``space="ip"``; the towers' outputs are L2-normalised, so this is cosine) with
labels = embedding rows. ``build_index`` measures recall@k of the index against ``ExactRetriever`` on held-out
queries, raising ``ef_search`` step by step until ``min_recall`` is met; if even the last step fails it raises
``IndexQualityError`` rather than publish an index that silently misses neighbours.

Example::

    >>> report = build_index(item_embeddings, Path("build/items.hnsw"), queries=user_embeddings)  # doctest: +SKIP
    >>> report.recall >= 0.95, report.ef_search  # doctest: +SKIP
    (True, 50)
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np

from towerlight.errors import ArtifactError
from towerlight.retrieval import ExactRetriever, HnswRetriever, recall_at_k

logger = logging.getLogger(__name__)

EF_STEPS = (50, 100, 200, 400)


class IndexQualityError(ArtifactError):
    """The approximate index misses too many of the exact nearest neighbours."""

    code = "index_quality_error"


@dataclass(frozen=True)
class IndexReport:
    """What ``build_index`` measured; ``to_json`` goes into the manifest's params."""

    recall: float
    ef_search: int
    M: int  # hnswlib's name for the graph degree
    build_seconds: float
    ef_construction: int = 200
    k: int = 10
    items: int = 0
    dim: int = 0
    queries: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def perturbed_queries(embeddings: np.ndarray, n: int = 1000, noise: float = 0.1, seed: int = 0) -> np.ndarray:
    """Held-out-like queries when no user vectors are at hand: item vectors plus noise, re-normalised.

    Example::

        >>> perturbed_queries(np.eye(4, dtype=np.float32), n=2).shape
        (2, 4)
    """
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(embeddings), size=min(n, len(embeddings)), replace=False)
    q = embeddings[rows] + noise * rng.standard_normal((len(rows), embeddings.shape[1])) / np.sqrt(embeddings.shape[1])
    return (q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def _ef_ladder(ef_search: int | None, k: int) -> list[int]:
    steps = list(EF_STEPS) if ef_search is None else [ef_search] + [e for e in EF_STEPS if e > ef_search]
    return sorted({max(e, k) for e in steps})


def build_index(
    embeddings: np.ndarray,
    path: Path | str,
    *,
    queries: np.ndarray | None,
    M: int = 32,
    ef_construction: int = 200,
    ef_search: int | None = None,
    min_recall: float = 0.95,
    k: int = 10,
    max_queries: int = 1000,
    num_threads: int = 2,
    seed: int = 0,
) -> IndexReport:
    """Build an hnswlib "ip" index of ``embeddings`` [N, D] (labels = rows), save it to ``path`` and return
    the recall@k it reaches on ``queries`` (perturbed item vectors if None) with the chosen ``ef_search``.

    Raises ``IndexQualityError`` if no ``ef_search`` up to 400 reaches ``min_recall``.

    Example::

        >>> build_index(emb, Path("items.hnsw"), queries=users, M=16).ef_search  # doctest: +SKIP
        50
    """
    data = np.ascontiguousarray(embeddings, dtype=np.float32)
    if data.ndim != 2 or len(data) == 0:
        raise ValueError(f"need a non-empty [N, D] embedding matrix, got shape {data.shape}")
    n, dim = data.shape
    k = min(k, n)
    if queries is None:
        queries = perturbed_queries(data, n=max_queries, seed=seed)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if len(queries) > max_queries:
        queries = queries[np.random.default_rng(seed).choice(len(queries), size=max_queries, replace=False)]

    started = time.perf_counter()
    index = hnswlib.Index(space="ip", dim=dim)
    index.init_index(max_elements=n, M=M, ef_construction=ef_construction, random_seed=seed)
    index.set_num_threads(num_threads)
    index.add_items(data, np.arange(n, dtype=np.int64), num_threads=num_threads)
    build_seconds = time.perf_counter() - started
    logger.info("built hnsw index of %d x %d (M=%d) in %.1f s", n, dim, M, build_seconds)

    exact, _ = ExactRetriever(data).search(queries, k)
    recall = 0.0
    for ef in _ef_ladder(ef_search, k):
        approx, _ = HnswRetriever(index, dim, n, ef).search(queries, k)
        recall = recall_at_k(approx, exact)
        logger.info("hnsw recall@%d with ef_search=%d: %.4f", k, ef, recall)
        if recall >= min_recall:
            break
    else:
        raise IndexQualityError(
            f"hnsw recall@{k} is {recall:.3f} < {min_recall} even with ef_search={ef}",
            {"recall": recall, "min_recall": min_recall, "ef_search": ef, "M": M},
        )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    index.save_index(str(path))
    return IndexReport(
        recall=recall,
        ef_search=ef,
        M=M,
        build_seconds=round(build_seconds, 3),
        ef_construction=ef_construction,
        k=k,
        items=n,
        dim=dim,
        queries=len(queries),
    )
