"""The published ranker, evaluated in numpy: a standardised linear model or an ensemble of trees.

Both come from ``ranker.json`` (written by the offline job from scikit-learn, never a pickle) and give a
score per candidate (higher is better) plus each feature's contribution to it, for explanations:

- ``linear``: ``score = intercept + Σ coef_i · (x_i − mean_i) / scale_i``; contribution ``i`` is its term.
- ``trees``: ``score = baseline + Σ_trees leaf value``, the nodes of every tree packed in flat arrays;
  contributions are path-based (Saabas): each split moves the score from its node's value to its child's,
  and that change is credited to the split's feature.

Example::

    >>> ranker = ranker_from_json(json.loads(Path("ranker.json").read_text()))
    >>> ranker.score(features).shape, ranker.contributions(features).shape
    ((200,), (200, 14))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

COMPILED_INPUT = "x"  # the input of ranker.onnx (float32 [C, features]); its one output is float32 [C, 1]
COMPILED_TOLERANCE = 1e-4  # ranker.onnx sums leaves in float32, ranker.json in float64


class Ranker(Protocol):
    features: tuple[str, ...]

    def score(self, x: np.ndarray) -> np.ndarray: ...

    def contributions(self, x: np.ndarray) -> np.ndarray: ...

    def to_json(self) -> dict[str, Any]: ...


@dataclass(frozen=True, eq=False)
class LinearRanker:
    """Logistic regression on standardised features."""

    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    def contributions(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) * self.coef

    def score(self, x: np.ndarray) -> np.ndarray:
        return self.contributions(x).sum(axis=1) + self.intercept

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "linear",
            "features": list(self.features),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept,
        }


@dataclass(frozen=True, eq=False)
class TreeRanker:
    """Binary trees in flat arrays; node ``i`` of any tree: ``x[feature[i]] <= threshold[i]`` goes left.

    Leaves have ``feature == -1`` and point to themselves, so every sample walks ``depth`` steps.
    ``value`` holds the leaf value, and for inner nodes the count-weighted mean of their leaves.
    """

    features: tuple[str, ...]
    baseline: float
    roots: np.ndarray  # int64 [T]
    feature: np.ndarray  # int64 [nodes]
    threshold: np.ndarray  # float64 [nodes]
    missing_left: np.ndarray  # bool [nodes]: where NaN goes
    left: np.ndarray  # int64 [nodes]
    right: np.ndarray  # int64 [nodes]
    value: np.ndarray  # float64 [nodes]
    depth: int
    _split_feature: np.ndarray = field(init=False, repr=False)
    _children: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # walk-friendly copies: leaves split on feature 0 at +inf (always "left", i.e. themselves), and
        # both children of node i at children[2i], children[2i + 1], so a step is one gather
        object.__setattr__(self, "_split_feature", np.maximum(self.feature, 0))
        object.__setattr__(self, "_children", np.stack([self.left, self.right], axis=1).ravel())

    def _walk(self, x: np.ndarray, credit: np.ndarray | None) -> np.ndarray:
        """Leaf node of every (sample, tree); adds each step's change of value to ``credit`` when given."""
        n_samples, width = x.shape
        flat = np.ascontiguousarray(x, dtype=np.float64).ravel()
        offsets = (np.arange(n_samples) * width)[:, None]
        nodes = np.tile(self.roots, (n_samples, 1))
        has_nan = bool(np.isnan(flat).any())
        for _ in range(self.depth):
            feature = self._split_feature[nodes]
            values = flat[offsets + feature]
            go_right = ~(values <= self.threshold[nodes])
            if has_nan:
                go_right = np.where(np.isnan(values), ~self.missing_left[nodes], go_right)
            nxt = self._children[2 * nodes + go_right]
            if credit is not None:
                change = self.value[nxt] - self.value[nodes]  # 0 at leaves: they step to themselves
                np.add.at(credit, (np.broadcast_to(offsets // width, nodes.shape), feature), change)
            nodes = nxt
        return nodes

    def score(self, x: np.ndarray) -> np.ndarray:
        return self.value[self._walk(x, None)].sum(axis=1) + self.baseline

    def contributions(self, x: np.ndarray) -> np.ndarray:
        credit = np.zeros((len(x), len(self.features)), dtype=np.float64)
        self._walk(x, credit)
        return credit

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "trees",
            "features": list(self.features),
            "baseline": self.baseline,
            "depth": self.depth,
            "roots": self.roots.tolist(),
            "feature": self.feature.tolist(),
            "threshold": [None if np.isinf(t) else float(t) for t in self.threshold],
            "missing_left": self.missing_left.astype(int).tolist(),
            "left": self.left.tolist(),
            "right": self.right.tolist(),
            "value": self.value.tolist(),
        }


def probe_rows(ranker: TreeRanker, n: int, seed: int = 0) -> np.ndarray:
    """``n`` float32 feature rows on and one float32 step beside the trees' split thresholds (where two
    scorers of the same trees would first disagree), plus a row of NaN (the missing-value branches).

    >>> probe_rows(ranker, 32).shape == (32, len(ranker.features))
    True
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(ranker.features))).astype(np.float32)
    for f in range(len(ranker.features)):
        thresholds = ranker.threshold[(ranker.feature == f) & np.isfinite(ranker.threshold)].astype(np.float32)
        if len(thresholds):
            on = rng.choice(thresholds, size=n)
            x[:, f] = np.nextafter(on, np.where(rng.random(n) < 0.5, -np.inf, np.inf).astype(np.float32))
            x[::3, f] = on[::3]
    x[0] = np.nan
    return x


def ranker_from_json(data: Mapping[str, Any]) -> LinearRanker | TreeRanker:
    """The ranker a ``to_json`` dict describes; ``ValueError`` for anything else.

    >>> ranker_from_json({"type": "linear", "features": ["a"], "mean": [0], "scale": [1], "coef": [2],
    ...                   "intercept": 0}).score(np.array([[3.0]]))
    array([6.])
    """
    try:
        features = tuple(str(f) for f in data["features"])
        if data["type"] == "linear":
            arrays = [np.asarray(data[k], dtype=np.float64) for k in ("mean", "scale", "coef")]
            if any(a.shape != (len(features),) for a in arrays) or np.any(arrays[1] == 0):
                raise ValueError("linear ranker arrays do not match its features")
            return LinearRanker(features, *arrays, float(data["intercept"]))
        if data["type"] == "trees":
            threshold = np.asarray([np.inf if t is None else t for t in data["threshold"]], dtype=np.float64)
            ranker = TreeRanker(
                features,
                float(data["baseline"]),
                np.asarray(data["roots"], dtype=np.int64),
                np.asarray(data["feature"], dtype=np.int64),
                threshold,
                np.asarray(data["missing_left"], dtype=bool),
                np.asarray(data["left"], dtype=np.int64),
                np.asarray(data["right"], dtype=np.int64),
                np.asarray(data["value"], dtype=np.float64),
                int(data["depth"]),
            )
            n = len(ranker.feature)
            arrays = (ranker.threshold, ranker.missing_left, ranker.left, ranker.right, ranker.value)
            if any(len(a) != n for a in arrays) or ranker.feature.max(initial=-1) >= len(features):
                raise ValueError("tree ranker arrays differ in length or name unknown features")
            if n and (
                min(ranker.left.min(), ranker.right.min(), ranker.roots.min(initial=0)) < 0
                or max(ranker.left.max(), ranker.right.max(), ranker.roots.max(initial=0)) >= n
            ):
                raise ValueError("tree ranker child or root index out of range")
            return ranker
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed ranker: {exc}") from exc
    raise ValueError(f"unknown ranker type {data.get('type')!r}")
