"""Write a tree ranker as ONNX (``ranker.onnx``), so that serving scores it with onnxruntime.

The trees of ``ranker.json`` become one ``ai.onnx.ml`` ``TreeEnsembleRegressor`` (opset 3; onnxruntime's
CPU build runs it). Features are float32, the thresholds float64; each threshold is rounded *down* to
float32, to the largest float32 not above it, so for any float32 feature ``x <= t`` decides exactly as
the float64 comparison of the numpy walk. Only the sums differ (float32 leaves): at most
``COMPILED_TOLERANCE``, which ``compiled_ranker`` checks on probe rows after writing.

Example::

    >>> path = write_ranker_onnx(tree_ranker, Path("build/model"))
    >>> path.name
    'ranker.onnx'
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from towerlight import artifacts
from towerlight.ranking import compiled_ranker
from towerlight.ranking.model import COMPILED_INPUT, TreeRanker

PARITY_PROBES = 2048  # rows compared with the numpy walk after writing (serving checks 32 when loading)
_OUTPUT = "score"
_OPSETS = (("", 17), ("ai.onnx.ml", 3))


def threshold_below(threshold: float) -> float:
    """The largest float32 value not above ``threshold`` (for float32 ``x``: ``x <= t`` iff ``x <= result``).

    >>> threshold_below(0.1) <= 0.1 < np.nextafter(np.float32(threshold_below(0.1)), np.float32(1))
    True
    """
    rounded = np.float32(threshold)
    if np.isfinite(threshold) and float(rounded) > threshold:
        rounded = np.nextafter(rounded, np.float32(-np.inf))
    return float(rounded)


def tree_ranker_model(ranker: TreeRanker) -> onnx.ModelProto:
    """The ONNX model of ``ranker``'s trees: input ``x`` float32 [C, features], output float32 [C, 1]."""
    nodes: dict[str, list[float | int | str]] = {
        name: []
        for name in (
            "nodes_treeids",
            "nodes_nodeids",
            "nodes_featureids",
            "nodes_modes",
            "nodes_values",
            "nodes_truenodeids",
            "nodes_falsenodeids",
            "nodes_missing_value_tracks_true",
            "target_treeids",
            "target_nodeids",
            "target_ids",
            "target_weights",
        )
    }
    for tree, root in enumerate(ranker.roots.tolist()):
        order = _reachable(ranker, root)
        local = {node: i for i, node in enumerate(order)}
        for node in order:
            leaf = ranker.feature[node] < 0
            left, right = int(ranker.left[node]), int(ranker.right[node])
            nodes["nodes_treeids"].append(tree)
            nodes["nodes_nodeids"].append(local[node])
            nodes["nodes_featureids"].append(0 if leaf else int(ranker.feature[node]))
            nodes["nodes_modes"].append("LEAF" if leaf else "BRANCH_LEQ")
            nodes["nodes_values"].append(0.0 if leaf else threshold_below(float(ranker.threshold[node])))
            nodes["nodes_truenodeids"].append(0 if leaf else local[left])  # "<=" holds: left, as in the walk
            nodes["nodes_falsenodeids"].append(0 if leaf else local[right])
            nodes["nodes_missing_value_tracks_true"].append(0 if leaf else int(ranker.missing_left[node]))
            if leaf:
                nodes["target_treeids"].append(tree)
                nodes["target_nodeids"].append(local[node])
                nodes["target_ids"].append(0)
                nodes["target_weights"].append(float(ranker.value[node]))
    ensemble = helper.make_node(
        "TreeEnsembleRegressor",
        [COMPILED_INPUT],
        [_OUTPUT],
        domain="ai.onnx.ml",
        n_targets=1,
        aggregate_function="SUM",
        post_transform="NONE",
        base_values=[float(ranker.baseline)],
        **nodes,
    )
    width = len(ranker.features)
    graph = helper.make_graph(
        [ensemble],
        "towerlight_ranker",
        [helper.make_tensor_value_info(COMPILED_INPUT, TensorProto.FLOAT, [None, width])],
        [helper.make_tensor_value_info(_OUTPUT, TensorProto.FLOAT, [None, 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(domain, v) for domain, v in _OPSETS])
    model.ir_version = 8  # what onnxruntime releases since 1.14 read
    onnx.checker.check_model(model)
    return model


def write_ranker_onnx(ranker: TreeRanker, out: Path) -> Path:
    """Write ``out/ranker.onnx`` and check it against the numpy walk on ``PARITY_PROBES`` probe rows
    (``ArtifactError`` if they disagree); returns its path."""
    path = out / artifacts.RANKER_ONNX
    path.write_bytes(tree_ranker_model(ranker).SerializeToString())
    compiled_ranker(path, ranker, probes=PARITY_PROBES)
    return path


def _reachable(ranker: TreeRanker, root: int) -> list[int]:
    """The nodes of the tree at ``root``, breadth first (a leaf points to itself: not followed)."""
    order, seen = [root], {root}
    for node in order:
        if ranker.feature[node] >= 0:
            for child in (int(ranker.left[node]), int(ranker.right[node])):
                if child not in seen:
                    seen.add(child)
                    order.append(child)
    return order
