"""The contract between the offline job that writes a model version and the serving code that reads it.

A published version holds these files (names are keys of the manifest's ``files`` table):

``features.json``   the ``FeatureSpec`` (vocabularies, hash buckets, bucket boundaries) — see features.py
``user_tower.onnx`` inputs ``history`` int64 [B, L] (item ids, most recent first, 0 = padding) and
                    ``user_features`` int64 [B, F]; output ``embedding`` float32 [B, D], L2-normalised
``item_tower.onnx`` inputs ``item`` int64 [B] and ``item_content`` int64 [B, T]; output ``embedding``
                    (both towers store the item id table as float16, widened to float32 after the lookup)
``items.npz``       ``item_ids`` (unicode [N]; row i is feature id i + 1), ``vectors`` float16 [G, D] (each
                    distinct item tower output once; hnsw label g), ``vector_of_item`` int32 [N] (item i's
                    embedding is ``vectors[vector_of_item[i]]``), ``index_center`` float32 [D] (the index
                    holds ``vectors - index_center``), ``category_names`` (unicode [C]),
                    ``category_offsets`` int64 [N + 1] and ``category_codes`` int32 (CSR: categories of item
                    i are codes[offsets[i]:offsets[i + 1]]). No titles: serving never read them (84 MB at
                    1M items), they stay in the item catalogue. Versions written
                    before hold ``embeddings`` float32 [N, D] instead, indexed row by row: still served.
``items.hnsw``      hnswlib index (space "ip", labels = rows of ``vectors``), params in the manifest
``popularity.npz``  ``item_ids`` (unicode [P]) and ``scores`` float32 [P], time-decayed, best first;
                    optional ``segments`` (unicode [S]) with ``segment_offsets`` int64 [S + 1] and
                    ``segment_items`` int64 (rows into item_ids) for demographic popularity
``content.npz``     TF-IDF of item metadata: ``item_ids`` [N] (as items.npz), ``terms`` [V], ``idf``
                    float32 [V], L2-normalised rows as CSR ``indptr`` int64 [N + 1], ``indices`` int32,
                    ``values`` float32 (optional: versions published before it serve without ``content``)
``ranker.json``     optional second stage (``towerlight.ranking.model``): a linear model or flat trees over
                    ``towerlight.ranking.features.FEATURE_NAMES``, as plain JSON
``ranker_tables.npz`` per-item tables the ranker's features read (``RankingTables``: item-kNN top-N
                    neighbours as CSR, popularity, trend, first-seen time, category and title-word CSR),
                    rows = rows of items.npz
``ranker.onnx``     optional, with tree rankers: the trees of ranker.json as one ai.onnx.ml
                    TreeEnsembleRegressor, input ``x`` float32 [C, features], output float32 [C, 1]
                    (thresholds rounded down to float32, so every split decides as ranker.json's does)

The manifest (written by ``towerlight.store.versions.publish_version``) also carries ``params``
(hyper-parameters, embedding dim, hnsw ``ef``/``M``), ``metrics`` (evaluation table), ``data`` (window,
counts) and ``gate`` (the quality-gate decision). Arrays are always loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

FEATURES = "features.json"
USER_TOWER = "user_tower.onnx"
ITEM_TOWER = "item_tower.onnx"
ITEMS = "items.npz"
INDEX = "items.hnsw"
POPULARITY = "popularity.npz"
CONTENT = "content.npz"
RANKER = "ranker.json"
RANKER_TABLES = "ranker_tables.npz"
RANKER_ONNX = "ranker.onnx"  # tree rankers only: ranker.json's trees for onnxruntime

REQUIRED_FILES = (FEATURES, USER_TOWER, ITEM_TOWER, ITEMS, INDEX, POPULARITY, CONTENT)
# serving embeds no items: no item tower
SERVING_FILES = (FEATURES, USER_TOWER, ITEMS, INDEX, POPULARITY, CONTENT, RANKER, RANKER_TABLES, RANKER_ONNX)
OPTIONAL_SERVING_FILES = (CONTENT, RANKER, RANKER_TABLES, RANKER_ONNX)  # served when the version has them

USER_TOWER_INPUTS = ("history", "user_features")
ITEM_TOWER_INPUTS = ("item", "item_content")
TOWER_OUTPUT = "embedding"
