"""The two towers: torch modules written with ONNX-friendly ops only (Embedding, masks, sums, Linear, ReLU).

Both towers end with an L2 normalisation, so a dot product of their outputs is a cosine similarity.
The item id embedding table is shared: the item tower looks up the candidate item in it and the user tower
pools the user's history in it, so what is learned about an item as a target also describes users who
interacted with it.

Example::

    >>> ids = nn.Embedding(100, 8, padding_idx=0)
    >>> items, users = ItemTower(ids, content_size=50, dim=8), UserTower(ids, user_feature_size=10, dim=8)
    >>> items(torch.tensor([3]), torch.tensor([[4, 0]])).shape, users(torch.zeros(1, 1, dtype=torch.long),
    ...                                                             torch.zeros(1, 1, dtype=torch.long)).shape
    (torch.Size([1, 8]), torch.Size([1, 8]))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

_EPS = 1e-12


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """``x / ||x||`` row-wise; a zero row stays zero (no NaN), and it exports to plain ONNX ops."""
    return x / torch.sqrt(torch.sum(x * x, dim=-1, keepdim=True) + _EPS)


def masked_mean(embedded: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Mean of ``embedded`` [B, T, D] over positions whose id is not padding (0); zeros if there are none."""
    mask = (ids != 0).to(embedded.dtype).unsqueeze(-1)
    return torch.sum(embedded * mask, dim=1) / torch.clamp(torch.sum(mask, dim=1), min=1.0)


def _mlp(width_in: int, hidden: int, dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width_in, hidden), nn.ReLU(), nn.Linear(hidden, dim))


class ItemTower(nn.Module):
    """``(item [B], item_content [B, T]) -> [B, D]``: id embedding and mean content embedding, then an MLP.

    A linear skip path beside the MLP keeps the id embedding's information easy to pass through.
    """

    def __init__(self, id_embedding: nn.Embedding, content_size: int, dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.id_embedding = id_embedding
        self.content_embedding = nn.Embedding(content_size, dim, padding_idx=0)
        self.mlp = _mlp(2 * dim, hidden, dim)
        self.skip = nn.Linear(2 * dim, dim, bias=False)

    def forward(self, item: torch.Tensor, item_content: torch.Tensor) -> torch.Tensor:
        content = masked_mean(self.content_embedding(item_content), item_content)
        x = torch.cat([self.id_embedding(item), content], dim=-1)
        return l2_normalize(self.mlp(x) + self.skip(x))


class UserTower(nn.Module):
    """``(history [B, L], user_features [B, F]) -> [B, D]``.

    The history (most recent first, 0 = padding) is pooled several times, each with weights
    ``exp(-rate * position)`` for a learned rate per pool (rate ~0: the long-term taste, larger: the current
    session). User attribute tokens are mean-pooled. An empty history is replaced by a learned default vector,
    so a user with only attributes, or with nothing at all, still gets a finite, useful embedding.
    """

    def __init__(
        self,
        id_embedding: nn.Embedding,
        user_feature_size: int,
        dim: int,
        hidden: int = 256,
        decay_rates: Sequence[float] = (0.01, 0.3),
    ) -> None:
        super().__init__()
        if not decay_rates:
            raise ValueError("the user tower needs at least one history pool")
        self.id_embedding = id_embedding
        self.user_embedding = nn.Embedding(user_feature_size, dim, padding_idx=0)
        # softplus^-1(rate), so the learned rates stay positive
        rates = torch.tensor([float(r) for r in decay_rates])
        self.raw_decay = nn.Parameter(torch.log(torch.expm1(rates.clamp(min=1e-4))))
        self.empty_history = nn.Parameter(torch.zeros(dim))
        width = (len(decay_rates) + 1) * dim
        self.mlp = _mlp(width, hidden, dim)
        self.skip = nn.Linear(width, dim, bias=False)

    @property
    def decay_rates(self) -> torch.Tensor:
        return nn.functional.softplus(self.raw_decay)

    def forward(self, history: torch.Tensor, user_features: torch.Tensor) -> torch.Tensor:
        mask = (history != 0).to(torch.float32)  # [B, L]
        position = torch.cumsum(torch.ones_like(mask), dim=1) - 1.0  # avoids arange: dynamic L in ONNX
        weights = mask.unsqueeze(1) * torch.exp(-self.decay_rates.view(1, -1, 1) * position.unsqueeze(1))
        pooled = torch.matmul(weights, self.id_embedding(history))  # [B, P, D]
        pooled = pooled / torch.clamp(torch.sum(weights, dim=2, keepdim=True), min=_EPS)
        empty = (torch.sum(mask, dim=1, keepdim=True) == 0).to(torch.float32).unsqueeze(-1)  # [B, 1, 1]
        pooled = pooled + empty * self.empty_history
        attributes = masked_mean(self.user_embedding(user_features), user_features)
        x = torch.cat([torch.flatten(pooled, start_dim=1), attributes], dim=-1)
        return l2_normalize(self.mlp(x) + self.skip(x))


def build_towers(
    item_id_size: int,
    content_size: int,
    user_feature_size: int,
    *,
    dim: int = 64,
    hidden: int = 256,
    init_std: float = 0.1,
) -> tuple[ItemTower, UserTower]:
    """Both towers around one shared item id embedding table, embeddings initialised ``N(0, init_std)``.

    Example::

        >>> item_tower, user_tower = build_towers(spec.item_ids.size, spec.item_content_size,
        ...                                       spec.user_tokens.size, dim=64)  # doctest: +SKIP
    """
    id_embedding = nn.Embedding(item_id_size, dim, padding_idx=0)
    item_tower = ItemTower(id_embedding, content_size, dim, hidden)
    user_tower = UserTower(id_embedding, user_feature_size, dim, hidden)
    for table in (id_embedding, item_tower.content_embedding, user_tower.user_embedding):
        nn.init.normal_(table.weight, std=init_std)
        with torch.no_grad():
            table.weight[0].zero_()
    return item_tower, user_tower
