"""onnxruntime sessions configured as serving runs them: one thread, CPU, every graph optimisation.

The user tower and the tree ranker (``ranker.onnx``) both load here; the offline job checks its exported
files with the same settings, so what it verifies is what Lambda runs.

Example::

    >>> session = onnx_session(Path("/tmp/towerlight/20261122T011500Z-3fa2c1/user_tower.onnx"))
    >>> [i.name for i in session.get_inputs()]
    ['history', 'user_features']
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from towerlight.errors import ArtifactError


def onnx_session(path: Path) -> ort.InferenceSession:
    """The session of the ONNX file at ``path``; ``ArtifactError`` naming the file when it cannot load."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # one request at a time per Lambda instance: threads only add latency
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
        raise ArtifactError(f"{path.name} is not a loadable ONNX model: {exc}", {"file": path.name}) from exc
