"""A loaded, immutable model version: catalogue, categories, popularity and (when published) the two towers.

A ``ModelBundle`` is built once from a verified local copy of a version (``load_bundle``) and then only
read, so a request can keep using the bundle it started with while the registry swaps in a new one.
Everything a request needs is precomputed here, once per version: the category -> rows index, the
popularity order and score of every row, the hnswlib index and the ONNX user tower.

A version without the two-tower files (``popularity.npz`` and optionally ``items.npz``) loads as a
popularity-only bundle (``bundle.two_tower is None``).

Example::

    >>> model_dir, manifest = download_version(store, "20261122T011500Z-3fa2c1", Path("/tmp/towerlight"))
    >>> bundle = load_bundle(model_dir, manifest)
    >>> bundle.strategy, bundle.catalogue.row_of("50")
    ('two_tower', 49)
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from towerlight import artifacts
from towerlight.errors import ArtifactError
from towerlight.features import FeatureSpec, Vocabulary
from towerlight.model.content import CONTENT_ARRAYS, ContentIndex
from towerlight.model.sessions import onnx_session
from towerlight.ranking import RankingModel, load_ranking
from towerlight.retrieval import HnswRetriever, LabelGroups, Retriever

logger = logging.getLogger(__name__)

DEFAULT_EF = 100
_EMPTY_ROWS = np.empty(0, dtype=np.int64)
TWO_TOWER_FILES = (artifacts.FEATURES, artifacts.USER_TOWER, artifacts.ITEMS, artifacts.INDEX)
CATALOGUE_ARRAYS = ("item_ids", "category_names", "category_offsets", "category_codes")
# "vectors", "vector_of_item", "index_center"; or "embeddings" in versions written before them
ITEM_ARRAYS = (*CATALOGUE_ARRAYS, "vectors", "vector_of_item", "index_center", "embeddings")
POPULARITY_ARRAYS = ("item_ids", "scores", "segments", "segment_offsets", "segment_items")


@dataclass(frozen=True, eq=False)
class CategoryIndex:
    """Category name -> sorted catalogue rows, the transpose of the items' category CSR (built once).

    Names match case-insensitively. ``rows(code)`` is a view, so a request allocates nothing.

    Example::

        >>> index = CategoryIndex.from_csr(["Comedy", "Drama"], np.array([0, 1, 3]), np.array([0, 0, 1]))
        >>> index.codes_of("comedy"), index.rows(0).tolist()
        ((0,), [0, 1])
    """

    names: tuple[str, ...]
    by_name: Mapping[str, tuple[int, ...]]
    offsets: np.ndarray  # int64 [C + 1]
    members: np.ndarray  # int64: rows of category c are members[offsets[c]:offsets[c + 1]], ascending
    item_offsets: np.ndarray  # int64 [N + 1]: codes of row i are item_codes[item_offsets[i]:...]
    item_codes: np.ndarray  # int64

    @classmethod
    def from_csr(cls, names: Sequence[str], item_offsets: np.ndarray, item_codes: np.ndarray) -> CategoryIndex:
        item_offsets = np.asarray(item_offsets, dtype=np.int64)
        item_codes = np.asarray(item_codes, dtype=np.int64)
        n_items, n_codes = len(item_offsets) - 1, len(names)
        if n_items < 0 or item_offsets[-1] != len(item_codes) or np.any(np.diff(item_offsets) < 0):
            raise ArtifactError("items.npz: category_offsets do not describe category_codes")
        if len(item_codes) and (item_codes.min() < 0 or item_codes.max() >= n_codes):
            raise ArtifactError("items.npz: a category code is out of range")
        item_rows = np.repeat(np.arange(n_items, dtype=np.int64), np.diff(item_offsets))
        order = np.argsort(item_codes, kind="stable")  # stable: rows stay ascending within a category
        offsets = np.zeros(n_codes + 1, dtype=np.int64)
        np.cumsum(np.bincount(item_codes, minlength=n_codes), out=offsets[1:])
        by_name: dict[str, tuple[int, ...]] = {}
        for code, name in enumerate(names):
            by_name[name.casefold()] = (*by_name.get(name.casefold(), ()), code)
        return cls(tuple(names), by_name, offsets, item_rows[order], item_offsets, item_codes)

    @classmethod
    def empty(cls) -> CategoryIndex:
        return cls((), {}, np.zeros(1, dtype=np.int64), _EMPTY_ROWS, np.zeros(1, dtype=np.int64), _EMPTY_ROWS)

    def codes_of_row(self, row: int) -> np.ndarray:
        """The category codes of catalogue row ``row`` (none for a row beyond the index)."""
        if row + 1 >= len(self.item_offsets):
            return _EMPTY_ROWS
        return self.item_codes[self.item_offsets[row] : self.item_offsets[row + 1]]

    def codes_of(self, name: str) -> tuple[int, ...]:
        """The codes named ``name`` (any case); ``()`` for an unknown category."""
        return self.by_name.get(name.casefold(), ())

    def rows(self, code: int) -> np.ndarray:
        """Sorted catalogue rows in category ``code`` (a view into the index)."""
        return self.members[self.offsets[code] : self.offsets[code + 1]]


@dataclass(frozen=True, eq=False)
class Catalogue:
    """The items a version knows: row ``i`` is ``item_ids[i]`` (= hnsw label ``i`` = feature id ``i + 1``).

    Example::

        >>> catalogue.row_of("50"), catalogue.row_of("no-such-item")
        (49, None)
    """

    item_ids: np.ndarray  # unicode [N]
    vocabulary: Vocabulary  # the feature spec's item vocabulary: id -> row + 1 for known items
    categories: CategoryIndex

    @property
    def size(self) -> int:
        return len(self.item_ids)

    def row_of(self, item_id: str) -> int | None:
        """The row of ``item_id``, or None when the version does not know it."""
        ident = self._ids.get(item_id)
        return None if ident is None else ident - 1

    def rows_of(self, item_ids: Iterable[str]) -> list[int]:
        """Rows of the known ids among ``item_ids`` (unknown ones are skipped)."""
        ids = self._ids
        return [ident - 1 for item_id in item_ids if (ident := ids.get(item_id)) is not None]

    @property
    def _ids(self) -> Mapping[str, int]:
        return self.vocabulary.known_ids


@dataclass(frozen=True, eq=False)
class Popularity:
    """Rows best first (overall and per demographic segment) and a popularity score per row.

    Example::

        >>> rows, segment = bundle.popularity.for_attributes({"gender": "F", "age": 24})
        >>> segment
        'gender=F'
    """

    rows: np.ndarray  # int64 [P], catalogue rows, best first
    score_by_row: np.ndarray  # float32 [N], 0 for rows without a popularity score
    segments: Mapping[str, np.ndarray]  # segment name -> catalogue rows, best first

    def for_attributes(
        self, attributes: Mapping[str, Any] | None, spec: FeatureSpec | None = None
    ) -> tuple[np.ndarray, str | None]:
        """The ranking for a user with ``attributes``: their first matching segment, else the overall one."""
        if attributes and self.segments:
            for key in segment_keys(attributes, spec):
                rows = self.segments.get(key)
                if rows is not None and len(rows):
                    return rows, key
        return self.rows, None


def segment_keys(attributes: Mapping[str, Any], spec: FeatureSpec | None) -> list[str]:
    """Names a user's demographic segment may have: the spec's attribute tokens, then ``field=value``.

    >>> segment_keys({"gender": "F"}, None)
    ['gender=F']
    """
    keys: list[str] = []
    if spec is not None:
        tokens = spec.user_tokens
        keys += [tokens.values[i - 1] for i in spec.encode_user(attributes) if 0 < i <= len(tokens.values)]
    keys += [f"{name}={value}" for name, value in sorted(attributes.items()) if value not in (None, "")]
    return list(dict.fromkeys(keys))


@dataclass(frozen=True, eq=False)
class ItemVectors:
    """Every catalogue row's item embedding, read like a float32 [N, D] array: ``embeddings[rows]``.

    Held as published, each distinct vector once (float16 [G, D], ``table[of_row[i]]`` is row i's), and
    widened only for the rows a request reads: a float32 copy of every row would cost 4 times the memory
    (26 MB more at 100k items, 64-d) and its load time, for the same values.

    Example::

        >>> vectors = ItemVectors(np.eye(2, dtype=np.float16), np.array([0, 1, 0]))
        >>> vectors[[2, 1]].tolist(), vectors.shape
        ([[1.0, 0.0], [0.0, 1.0]], (3, 2))
    """

    table: np.ndarray  # float16 [G, D] (float32 [N, D] in versions written before)
    of_row: np.ndarray  # int64 [N]: the table row of each catalogue row

    def __getitem__(self, rows: Any) -> np.ndarray:
        return self.table[self.of_row[rows]].astype(np.float32)

    def __len__(self) -> int:
        return len(self.of_row)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        return self[:] if dtype is None else self[:].astype(dtype)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.of_row), int(self.table.shape[1])


@dataclass(frozen=True, eq=False)
class TwoTower:
    """The personalised half of a bundle: feature spec, ONNX user tower, item embeddings and the ANN index."""

    spec: FeatureSpec
    user_tower: ort.InferenceSession
    embeddings: ItemVectors  # [N, D], L2-normalised: embeddings[rows] is float32
    retriever: Retriever

    def user_vector(self, history: Sequence[str], attributes: Mapping[str, Any] | None) -> np.ndarray:
        """The user embedding float32 [D] from item ids (most recent first) and attributes.

        >>> bundle.two_tower.user_vector(["50", "181"], {"age": 24}).shape
        (64,)
        """
        inputs = self.spec.user_inputs([history], [attributes])
        return self.user_tower.run([artifacts.TOWER_OUTPUT], inputs)[0][0]


@dataclass(frozen=True, eq=False)
class ModelBundle:
    """One loaded model version; immutable, shared by every request until the registry swaps it."""

    version: str
    manifest: Mapping[str, Any]
    catalogue: Catalogue
    popularity: Popularity
    two_tower: TwoTower | None
    loaded_at: float
    content: ContentIndex | None = None  # TF-IDF of item metadata, when the version publishes it
    ranking: RankingModel | None = None  # the second stage, when the version publishes one

    @property
    def strategy(self) -> str:
        """The best strategy this bundle can serve: ``two_tower`` or ``popularity``."""
        return "popularity" if self.two_tower is None else "two_tower"


def load_bundle(model_dir: Path, manifest: Mapping[str, Any]) -> ModelBundle:
    """Load a verified local copy of a version (see ``towerlight.store.versions.download_version``).

    Raises ``ArtifactError`` for a version that is inconsistent or cannot be served.

    >>> bundle = load_bundle(Path("/tmp/towerlight/20261122T011500Z-3fa2c1"), manifest)
    """
    started = time.perf_counter()
    files = manifest.get("files", {})
    version = str(manifest.get("version"))

    def arrays(name: str, wanted: tuple[str, ...]) -> dict[str, np.ndarray] | None:
        return _npz(model_dir / name, wanted, version) if name in files else None

    spec = None
    if all(name in files for name in TWO_TOWER_FILES):
        spec = _load_spec((model_dir / artifacts.FEATURES).read_bytes(), version)
    items = arrays(artifacts.ITEMS, ITEM_ARRAYS if spec else CATALOGUE_ARRAYS)
    bundle = _build(version, manifest, items, arrays(artifacts.POPULARITY, POPULARITY_ARRAYS), spec, model_dir)
    content = arrays(artifacts.CONTENT, CONTENT_ARRAYS)
    if content is not None:
        bundle = replace(bundle, content=ContentIndex.from_arrays(content, bundle.catalogue.item_ids, version))
    if bundle.two_tower is not None and artifacts.RANKER in files and artifacts.RANKER_TABLES in files:
        ranking = load_ranking(model_dir, bundle.catalogue.size, compiled=artifacts.RANKER_ONNX in files)
        bundle = replace(bundle, ranking=ranking)
    logger.info(
        "loaded model %s (%s, %d items) in %.0f ms",
        version,
        bundle.strategy,
        bundle.catalogue.size,
        (time.perf_counter() - started) * 1000,
    )
    return bundle


def load_popularity_bundle(manifest: Mapping[str, Any], read: Callable[[str], bytes]) -> ModelBundle:
    """A popularity-only bundle from the popularity (and items) files of a version alone.

    ``read(name) -> bytes`` fetches one file of the version; each is checked against the manifest's
    sha256. This is the last resort when a version's two-tower files cannot be loaded and no earlier
    model is in memory.

    >>> bundle = load_popularity_bundle(manifest, lambda name: store.get_bytes(version_key(version, name)))
    """
    files = manifest.get("files", {})
    version = str(manifest.get("version"))
    if artifacts.POPULARITY not in files:
        raise ArtifactError(f"version {version!r} publishes no popularity table")

    def arrays(name: str, wanted: tuple[str, ...]) -> dict[str, np.ndarray] | None:
        if name not in files:
            return None
        data = read(name)
        entry = files[name]
        if len(data) != entry.get("bytes") or hashlib.sha256(data).hexdigest() != entry.get("sha256"):
            raise ArtifactError(f"{name} of version {version!r} fails its checksum", {"file": name})
        return _npz(io.BytesIO(data), wanted, version, name)

    popularity = arrays(artifacts.POPULARITY, POPULARITY_ARRAYS)
    return _build(version, manifest, arrays(artifacts.ITEMS, CATALOGUE_ARRAYS), popularity, None, None)


def _build(
    version: str,
    manifest: Mapping[str, Any],
    items: Mapping[str, np.ndarray] | None,
    popularity: Mapping[str, np.ndarray] | None,
    spec: FeatureSpec | None,
    model_dir: Path | None,
) -> ModelBundle:
    if spec is None and popularity is None:
        raise ArtifactError(f"version {version!r} has neither a two-tower model nor a popularity table")
    catalogue = _catalogue(items, spec, popularity, version)
    two_tower = None
    if spec is not None and items is not None and model_dir is not None:
        two_tower = _two_tower(spec, items, model_dir, manifest, catalogue.size, version)
    return ModelBundle(
        version, manifest, catalogue, _popularity(popularity, catalogue, version), two_tower, time.time()
    )


def _load_spec(raw: bytes, version: str) -> FeatureSpec:
    try:
        return FeatureSpec.from_json(json.loads(raw))
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{artifacts.FEATURES} of {version!r} is unusable: {exc}") from exc


def _npz(source: Path | io.BytesIO, wanted: tuple[str, ...], version: str, name: str = "") -> dict[str, np.ndarray]:
    """The ``wanted`` arrays of an npz archive (others are never read into memory)."""
    label = name or getattr(source, "name", "npz")
    try:
        with np.load(source, allow_pickle=False) as data:
            return {key: data[key] for key in wanted if key in data.files}
    except (OSError, ValueError, EOFError) as exc:
        raise ArtifactError(f"{label} of {version!r} is not a readable npz archive: {exc}", {"file": label}) from exc


def _require(arrays: Mapping[str, np.ndarray], name: str, file: str, version: str) -> np.ndarray:
    if name not in arrays:
        raise ArtifactError(f"{file} of {version!r} lacks the array {name!r}", {"file": file})
    return arrays[name]


def _catalogue(
    items: Mapping[str, np.ndarray] | None,
    spec: FeatureSpec | None,
    popularity: Mapping[str, np.ndarray] | None,
    version: str,
) -> Catalogue:
    if items is None:  # popularity-only without a catalogue file: the popular items are the catalogue
        if popularity is None:
            raise ArtifactError(f"version {version!r} has no item catalogue")
        ids = _require(popularity, "item_ids", artifacts.POPULARITY, version).astype(str)
        return Catalogue(ids, Vocabulary(ids.tolist()), CategoryIndex.empty())
    ids = _require(items, "item_ids", artifacts.ITEMS, version).astype(str)
    if spec is not None:
        if spec.item_ids.values != ids.tolist():
            raise ArtifactError(f"items.npz and features.json of {version!r} list different items")
        vocabulary = spec.item_ids
    else:
        vocabulary = Vocabulary(ids.tolist())
    if "category_names" in items:
        categories = CategoryIndex.from_csr(
            items["category_names"].astype(str).tolist(),
            _require(items, "category_offsets", artifacts.ITEMS, version),
            _require(items, "category_codes", artifacts.ITEMS, version),
        )
        if len(items["category_offsets"]) != len(ids) + 1:
            raise ArtifactError(f"items.npz of {version!r}: category_offsets does not match item_ids")
    else:
        categories = CategoryIndex.empty()
    return Catalogue(ids, vocabulary, categories)


def _popularity(arrays: Mapping[str, np.ndarray] | None, catalogue: Catalogue, version: str) -> Popularity:
    score_by_row = np.zeros(catalogue.size, dtype=np.float32)
    if arrays is None:  # no table published: every row scores 0, in catalogue order
        return Popularity(_EMPTY_ROWS, score_by_row, {})
    ids = _require(arrays, "item_ids", artifacts.POPULARITY, version).astype(str).tolist()
    scores = _require(arrays, "scores", artifacts.POPULARITY, version).astype(np.float32)
    if len(ids) != len(scores):
        raise ArtifactError(f"popularity.npz of {version!r}: item_ids and scores differ in length")
    # Popular items the catalogue no longer has are dropped (-1), keeping the others' order.
    known_ids = catalogue.vocabulary.known_ids  # id -> row + 1; 0 for an unknown id, so row -1
    table_rows = np.fromiter(map(known_ids.get, ids, repeat(0)), dtype=np.int64, count=len(ids)) - 1
    known = table_rows >= 0
    score_by_row[table_rows[known]] = scores[known]
    segments: dict[str, np.ndarray] = {}
    if "segments" in arrays:
        names = arrays["segments"].astype(str).tolist()
        offsets = _require(arrays, "segment_offsets", artifacts.POPULARITY, version).astype(np.int64)
        members = _require(arrays, "segment_items", artifacts.POPULARITY, version).astype(np.int64)
        if len(offsets) != len(names) + 1 or offsets[-1] != len(members):
            raise ArtifactError(f"popularity.npz of {version!r}: segment_offsets do not match")
        if len(members) and (members.min() < 0 or members.max() >= len(ids)):
            raise ArtifactError(f"popularity.npz of {version!r}: a segment item is out of range")
        for s, name in enumerate(names):
            rows = table_rows[members[offsets[s] : offsets[s + 1]]]
            segments[name] = rows[rows >= 0]
    return Popularity(table_rows[known], score_by_row, segments)


def _hnsw_ef(manifest: Mapping[str, Any]) -> int:
    """The query-time ``ef`` published with the index (``params.index.ef`` or ``params.ef``)."""
    params = manifest.get("params") or {}
    for section in (params.get("index"), params.get("hnsw"), params):
        if isinstance(section, Mapping) and isinstance(section.get("ef"), int):
            return int(section["ef"])
    return DEFAULT_EF


def _item_vectors(
    items: Mapping[str, np.ndarray], n_items: int, version: str
) -> tuple[ItemVectors, LabelGroups, np.ndarray | None]:
    """Every item's embedding, the index labels' rows and the index center (None: none)."""
    if "vectors" not in items:  # versions written before: a float32 row per item, indexed row by row
        embeddings = np.ascontiguousarray(_require(items, "embeddings", artifacts.ITEMS, version), dtype=np.float32)
        if embeddings.ndim != 2 or len(embeddings) != n_items:
            raise ArtifactError(f"items.npz of {version!r}: embeddings must be [{n_items}, D]")
        identity = LabelGroups.identity(n_items)
        return ItemVectors(embeddings, identity.label_of_row), identity, None
    vectors = _require(items, "vectors", artifacts.ITEMS, version)
    of_item = _require(items, "vector_of_item", artifacts.ITEMS, version)
    center = _require(items, "index_center", artifacts.ITEMS, version).astype(np.float32)
    if vectors.ndim != 2 or of_item.shape != (n_items,) or center.shape != (vectors.shape[1],):
        raise ArtifactError(
            f"items.npz of {version!r}: vectors {vectors.shape}, vector_of_item {of_item.shape} and "
            f"index_center {center.shape} do not fit {n_items} items"
        )
    if n_items and (of_item.min() < 0 or of_item.max() >= len(vectors)):
        raise ArtifactError(f"items.npz of {version!r}: vector_of_item points outside vectors")
    try:
        groups = LabelGroups.from_labels(of_item)
    except ValueError as exc:
        raise ArtifactError(f"items.npz of {version!r}: {exc}") from exc
    if groups.n_labels != len(vectors):
        raise ArtifactError(f"items.npz of {version!r}: some vectors belong to no item")
    return ItemVectors(vectors, groups.label_of_row), groups, center


def _two_tower(
    spec: FeatureSpec,
    items: Mapping[str, np.ndarray],
    model_dir: Path,
    manifest: Mapping[str, Any],
    n_items: int,
    version: str,
) -> TwoTower:
    embeddings, groups, center = _item_vectors(items, n_items, version)
    session = onnx_session(model_dir / artifacts.USER_TOWER)
    if tuple(i.name for i in session.get_inputs()) != artifacts.USER_TOWER_INPUTS:
        raise ArtifactError(f"user_tower.onnx of {version!r} does not take {artifacts.USER_TOWER_INPUTS}")
    try:
        retriever = HnswRetriever.load(
            model_dir / artifacts.INDEX, dim=embeddings.shape[1], ef=_hnsw_ef(manifest), groups=groups, center=center
        )
    except (RuntimeError, ValueError) as exc:
        raise ArtifactError(f"items.hnsw of {version!r} cannot be loaded: {exc}", {"file": "items.hnsw"}) from exc
    tower = TwoTower(spec, session, embeddings, retriever)
    # One inference now: it proves the tower matches the embeddings and warms onnxruntime up.
    try:
        probe = tower.user_vector([], None)
    except Exception as exc:  # onnxruntime's own exception types
        raise ArtifactError(f"user_tower.onnx of {version!r} fails to run: {exc}") from exc
    if probe.shape != (embeddings.shape[1],):
        raise ArtifactError(f"user_tower.onnx of {version!r} outputs {probe.shape}, items have {embeddings.shape}")
    return tower
