"""Train the two towers on next-item prediction with a sampled softmax over in-batch negatives.

Every positive interaction ``(u, i, t)`` is one example: the input is ``u``'s earlier items (most recent
first, cut to ``history_length``) and attributes, the target is ``i``. Examples are never materialised:
events are sorted by (user, time) into one flat array, and each mini-batch gathers its padded histories
from it with offsets, so memory stays O(events) at millions of events.

The loss is a softmax over the other targets of the batch, with the log-Q correction (``logits -= log q_j``,
``q_j`` the item's share of training targets, so popular items are not punished for being sampled often)
and with "accidental hits" (another row of the batch with the same target) masked out. With probability
``id_dropout`` an item id is replaced by its out-of-vocabulary bucket, so the OOV embeddings (what a new
item gets) learn to stand for "an item with this content".

Example::

    >>> spec = fit_feature_spec(dataset)  # doctest: +SKIP
    >>> trained = train_two_tower(train, dataset.items, dataset.users, spec, TwoTowerParams(epochs=5))  # doctest: +SKIP
    >>> trained.item_embeddings().shape  # doctest: +SKIP
    (1682, 64)
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from towerlight.artifacts import USER_TOWER_INPUTS
from towerlight.event_types import POSITIVE_EVENT_TYPES
from towerlight.features import FeatureSpec, ItemRecord, stable_hash
from towerlight_offline.model.spec import item_records, user_attributes
from towerlight_offline.model.towers import ItemTower, UserTower, build_towers

logger = logging.getLogger(__name__)


@dataclass
class TwoTowerParams:
    """Hyper-parameters of the two-tower model; stored in the manifest with ``to_json``.

    Example::

        >>> TwoTowerParams(epochs=3, dim=32).to_json()["dim"]
        32
    """

    dim: int = 64
    hidden: int = 256
    epochs: int = 5
    batch_size: int = 1024
    lr: float = 6e-3
    weight_decay: float = 1e-5  # on the dense layers; the embedding tables are updated sparsely
    temperature: float = 0.15
    history_length: int | None = None  # None (recommended): the spec's history_length, what serving feeds
    id_dropout: float = 0.1
    logq_correction: float = 1.0  # weight of the log-Q correction: 1 = unbiased, > 1 tilts to popular items
    init_std: float = 0.1
    seed: int = 0
    max_train_examples: int | None = None  # keep only the most recent examples
    # torch intra-op threads while training and embedding; None leaves torch's setting. One thread is the
    # default: results are then identical on every machine, and the ops are too small to gain much from more,
    # while OpenMP's spin-waiting made two threads 4-10x slower whenever other processes shared the cores.
    num_threads: int | None = 1

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` torch intra-op threads (``None``: unchanged), restoring the setting after."""
    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass
class TrainedTwoTower:
    """The trained towers (in eval mode) with everything needed to use and export them."""

    spec: FeatureSpec
    params: TwoTowerParams
    item_tower: ItemTower
    user_tower: UserTower
    item_records: list[ItemRecord]  # in spec.item_ids.values order: record i has feature id i + 1
    epoch_losses: list[float] = field(default_factory=list)
    train_seconds: float = 0.0
    train_examples: int = 0

    @torch.no_grad()
    def item_embeddings(self, batch_size: int = 8192) -> np.ndarray:
        """float32 [N, D]: the item tower output for every catalogue item, row i = feature id i + 1, rounded to
        float16 as ``items.npz`` publishes it, so what is evaluated and indexed is what is served.

        Example::

            >>> trained.item_embeddings().shape  # doctest: +SKIP
            (1682, 64)
        """
        chunks = [np.zeros((0, self.params.dim), dtype=np.float32)]
        with torch_threads(self.params.num_threads):
            for start in range(0, len(self.item_records), batch_size):
                item, content = self.spec.encode_items(self.item_records[start : start + batch_size])
                chunks.append(self.item_tower(torch.from_numpy(item), torch.from_numpy(content)).numpy())
        return np.concatenate(chunks).astype(np.float16).astype(np.float32)

    @torch.no_grad()
    def user_embeddings(
        self,
        histories: Sequence[Sequence[str]],
        attributes: Sequence[Mapping[str, Any] | None],
        batch_size: int = 8192,
    ) -> np.ndarray:
        """float32 [B, D] for raw histories (item ids, most recent first) and attribute dicts (or None).

        Example::

            >>> trained.user_embeddings([["50", "181"], []], [{"age": 24}, None]).shape  # doctest: +SKIP
            (2, 64)
        """
        if len(histories) != len(attributes):
            raise ValueError(f"{len(histories)} histories but {len(attributes)} attribute dicts")
        chunks = [np.zeros((0, self.params.dim), dtype=np.float32)]
        with torch_threads(self.params.num_threads):
            for start in range(0, len(histories), batch_size):
                inputs = self.spec.user_inputs(
                    histories[start : start + batch_size], attributes[start : start + batch_size]
                )
                history, features = (torch.from_numpy(inputs[name]) for name in USER_TOWER_INPUTS)
                chunks.append(self.user_tower(history, features).numpy())
        return np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)


@dataclass
class _Events:
    """Positive events sorted by (user, time): what the mini-batches gather their examples from."""

    items: np.ndarray  # int64 [E] encoded item ids
    user_start: np.ndarray  # int64 [E] flat index of the first event of the same user
    user_row: np.ndarray  # int64 [E] row of the user in ``user_features``
    user_features: np.ndarray  # int64 [U, F]
    targets: np.ndarray  # int64 [X] flat indexes of the events used as training targets


def _encode_column(values: pd.Series, encode: Any) -> np.ndarray:
    codes, uniques = pd.factorize(values.astype(str))
    lookup = np.fromiter((encode(v) for v in uniques), dtype=np.int64, count=len(uniques))
    return lookup[codes]


def _collect_events(
    interactions: pd.DataFrame, users: pd.DataFrame, spec: FeatureSpec, max_examples: int | None
) -> _Events:
    positive = interactions[interactions["event_type"].isin(POSITIVE_EVENT_TYPES)]
    if positive.empty:
        raise ValueError("no positive interactions to train on")
    user_codes, user_ids = pd.factorize(positive["user_id"].astype(str))
    timestamps = positive["timestamp"].to_numpy(dtype=np.int64)
    order = np.lexsort((np.arange(len(positive)), timestamps, user_codes))  # stable: ties keep frame order
    user_codes = user_codes[order]
    items = _encode_column(positive["item_id"], spec.item_ids.encode)[order]

    first = np.flatnonzero(np.r_[True, user_codes[1:] != user_codes[:-1]])
    user_start = np.repeat(first, np.diff(np.r_[first, len(user_codes)]))

    attributes = user_attributes(users)
    features = [spec.encode_user(attributes.get(u)) for u in user_ids]
    user_features = np.asarray(features, dtype=np.int64).reshape(len(user_ids), len(spec.user_fields))
    if user_features.shape[1] == 0:
        user_features = np.zeros((len(user_ids), 1), dtype=np.int64)

    targets = np.arange(len(items), dtype=np.int64)
    if max_examples is not None and len(targets) > max_examples:
        targets = np.sort(np.argsort(timestamps[order], kind="stable")[-max_examples:])
    return _Events(items, user_start, user_codes.astype(np.int64), user_features, targets)


def _oov_ids(spec: FeatureSpec) -> np.ndarray:
    """For every item feature id, the OOV bucket the same item would get if it were unknown."""
    vocab = spec.item_ids
    n = len(vocab.values)
    out = np.arange(vocab.size, dtype=np.int64)
    buckets = np.fromiter((stable_hash(v) % vocab.oov_buckets for v in vocab.values), dtype=np.int64, count=n)
    out[1 : n + 1] = 1 + n + buckets
    return out


def _content_table(spec: FeatureSpec, records: Sequence[ItemRecord]) -> np.ndarray:
    """int64 [item_ids.size, T]: content ids of every feature id (OOV buckets and padding have none)."""
    ids, content = spec.encode_items(records)
    table = np.zeros((spec.item_ids.size, content.shape[1]), dtype=np.int64)
    table[ids] = content
    return table


def _histories(events: _Events, positions: np.ndarray, length: int) -> np.ndarray:
    """int64 [B, W]: for each event, the items of the same user just before it, most recent first."""
    available = np.minimum(positions - events.user_start[positions], length)
    offsets = np.arange(1, max(int(available.max(initial=0)), 1) + 1)
    mask = offsets[None, :] <= available[:, None]
    gathered = events.items[np.maximum(positions[:, None] - offsets[None, :], 0)]
    return np.where(mask, gathered, 0)


def _training_history_length(params: TwoTowerParams, spec: FeatureSpec) -> int:
    """Serving always feeds ``spec.history_length`` items, so training should see no more than that."""
    if params.history_length is None:
        return spec.history_length
    if params.history_length != spec.history_length:
        logger.warning(
            "training on histories of %d items while serving feeds up to %d (spec.history_length)",
            min(params.history_length, spec.history_length),
            spec.history_length,
        )
    return min(params.history_length, spec.history_length)


def _records_in_vocab_order(spec: FeatureSpec, items: pd.DataFrame) -> list[ItemRecord]:
    by_id = {r.item_id: r for r in item_records(items)}
    return [by_id.get(i, ItemRecord(i, None, [], {})) for i in spec.item_ids.values]


def _share_oov_with_untrained(item_tower: ItemTower, n_items: int, trained_ids: np.ndarray, oov: np.ndarray) -> int:
    """Items never seen in training take their OOV bucket's embedding (trained on unknown items) instead of
    their random initial one, so the item tower and the history pooling treat them as new items."""
    untrained = np.setdiff1d(np.arange(1, n_items + 1), trained_ids)
    if len(untrained):
        with torch.no_grad():
            weight = item_tower.id_embedding.weight
            weight[torch.from_numpy(untrained)] = weight[torch.from_numpy(oov[untrained])]
    return len(untrained)


def round_to_float16(table: torch.nn.Embedding) -> None:
    """Round a table's weights to float16 values (kept in float32): the towers publish the item id table as
    float16 (half the bytes), so evaluation and the ONNX parity check run on the weights that are served."""
    with torch.no_grad():
        table.weight.copy_(table.weight.half().float())


def _warmup_cosine(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then a cosine decay to 2% at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * progress))


class _Optimizer:
    """AdamW for the dense weights, SparseAdam for the embedding tables: their gradients touch only the rows
    of the batch, so a step costs O(batch), not O(catalogue). Both follow one warm-up + cosine schedule."""

    def __init__(self, item_tower: ItemTower, user_tower: UserTower, params: TwoTowerParams, steps: int) -> None:
        tables = [item_tower.id_embedding, item_tower.content_embedding, user_tower.user_embedding]
        self.tables = tables
        for table in tables:
            table.sparse = True
        sparse_ids = {id(t.weight) for t in tables}
        dense = [p for p in torch.nn.ModuleList([item_tower, user_tower]).parameters() if id(p) not in sparse_ids]
        self.optimizers: list[torch.optim.Optimizer] = [
            torch.optim.AdamW(dense, lr=params.lr, weight_decay=params.weight_decay),
            torch.optim.SparseAdam([t.weight for t in tables], lr=params.lr),
        ]
        warmup = max(1, steps // 10)
        self.schedules = [
            torch.optim.lr_scheduler.LambdaLR(o, lambda step: _warmup_cosine(step, warmup, steps))
            for o in self.optimizers
        ]

    def step(self, loss: torch.Tensor) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for optimizer, schedule in zip(self.optimizers, self.schedules, strict=True):
            optimizer.step()
            schedule.step()

    def close(self) -> None:
        """Back to dense lookups: sparse gradients only matter while training."""
        for table in self.tables:
            table.sparse = False


def train_two_tower(
    interactions: pd.DataFrame,
    items: pd.DataFrame,
    users: pd.DataFrame,
    spec: FeatureSpec,
    params: TwoTowerParams | None = None,
    progress: bool = True,
) -> TrainedTwoTower:
    """Train both towers on the positive events of ``interactions`` (frames as in ``data.dataset``).

    Deterministic for a given ``params.seed`` and thread count.

    Example::

        >>> trained = train_two_tower(train, dataset.items, dataset.users, spec,
        ...                           TwoTowerParams(epochs=8), progress=False)  # doctest: +SKIP
        >>> trained.user_embeddings([["50"]], [None]).shape  # doctest: +SKIP
        (1, 64)
    """
    params = params or TwoTowerParams()
    started = time.perf_counter()
    with torch_threads(params.num_threads):
        torch.manual_seed(params.seed)
        rng = np.random.default_rng(params.seed)
        history_length = _training_history_length(params, spec)

        events = _collect_events(interactions, users, spec, params.max_train_examples)
        records = _records_in_vocab_order(spec, items)
        content = _content_table(spec, records)
        oov = _oov_ids(spec)
        target_ids = events.items[events.targets]
        counts = np.bincount(target_ids, minlength=spec.item_ids.size).astype(np.float64)
        log_q = torch.from_numpy(np.log(np.maximum(counts, 1.0) / counts.sum()).astype(np.float32))

        item_tower, user_tower = build_towers(
            spec.item_ids.size,
            spec.item_content_size,
            spec.user_tokens.size,
            dim=params.dim,
            hidden=params.hidden,
            init_std=params.init_std,
        )
        with torch.no_grad():  # OOV buckets start as "no id information"; buckets no item falls in stay so
            item_tower.id_embedding.weight[len(spec.item_ids.values) + 1 :] = 0.0
        n_examples = len(events.targets)
        steps_per_epoch = max(1, -(-n_examples // params.batch_size))
        optimizer = _Optimizer(item_tower, user_tower, params, steps_per_epoch * params.epochs)
        logger.info(
            "training two towers on %d examples (%d users, %d items), %d epochs of %d steps",
            n_examples,
            len(events.user_features),
            len(np.unique(target_ids)),
            params.epochs,
            steps_per_epoch,
        )
        item_tower.train()
        user_tower.train()
        epoch_losses: list[float] = []
        for epoch in range(params.epochs):
            order = events.targets[rng.permutation(n_examples)]
            total, seen = 0.0, 0
            bar = tqdm(
                range(steps_per_epoch),
                desc=f"two-tower epoch {epoch + 1}/{params.epochs}",
                disable=not progress,
                leave=False,
            )
            for step in bar:
                positions = order[step * params.batch_size : (step + 1) * params.batch_size]
                loss = _step_loss(
                    events, positions, history_length, content, oov, log_q, params, rng, item_tower, user_tower
                )
                optimizer.step(loss)
                total += float(loss.detach()) * len(positions)
                seen += len(positions)
                bar.set_postfix(loss=f"{total / seen:.4f}", refresh=False)
            epoch_losses.append(total / max(seen, 1))
            logger.info("epoch %d/%d: loss %.4f", epoch + 1, params.epochs, epoch_losses[-1])

        item_tower.eval()
        user_tower.eval()
        optimizer.close()
        untrained = _share_oov_with_untrained(item_tower, len(spec.item_ids.values), np.unique(events.items), oov)
        if untrained:
            logger.info("%d catalogue items had no training events: they use their OOV embedding", untrained)
        round_to_float16(item_tower.id_embedding)
    seconds = time.perf_counter() - started
    logger.info("two-tower training took %.1f s", seconds)
    return TrainedTwoTower(
        spec=spec,
        params=params,
        item_tower=item_tower,
        user_tower=user_tower,
        item_records=records,
        epoch_losses=epoch_losses,
        train_seconds=seconds,
        train_examples=n_examples,
    )


def _step_loss(
    events: _Events,
    positions: np.ndarray,
    history_length: int,
    content: np.ndarray,
    oov: np.ndarray,
    log_q: torch.Tensor,
    params: TwoTowerParams,
    rng: np.random.Generator,
    item_tower: ItemTower,
    user_tower: UserTower,
) -> torch.Tensor:
    history = _histories(events, positions, history_length)
    targets = events.items[positions]
    target_input = targets
    if params.id_dropout > 0:
        target_input = np.where(rng.random(len(targets)) < params.id_dropout, oov[targets], targets)
        history = np.where(rng.random(history.shape) < params.id_dropout, oov[history], history)
    users = user_tower(torch.from_numpy(history), torch.from_numpy(events.user_features[events.user_row[positions]]))
    items = item_tower(torch.from_numpy(target_input), torch.from_numpy(content[targets]))
    logits = users @ items.T / params.temperature
    target_tensor = torch.from_numpy(targets)
    if params.logq_correction:
        logits = logits - params.logq_correction * log_q[target_tensor].unsqueeze(0)
    hits = target_tensor.unsqueeze(0) == target_tensor.unsqueeze(1)
    hits.fill_diagonal_(False)
    logits = logits.masked_fill(hits, float("-inf"))
    return torch.nn.functional.cross_entropy(logits, torch.arange(len(targets)))
