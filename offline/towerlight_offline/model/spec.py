"""Fit the ``FeatureSpec`` (id vocabularies, content tokens, user attribute buckets) from a ``Dataset``.

Example::

    >>> spec = fit_feature_spec(dataset, history_length=50)  # doctest: +SKIP
    >>> spec.item_ids.size  # padding + catalogue items + OOV buckets  # doctest: +SKIP
    1747
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from towerlight.features import FeatureSpec, ItemRecord
from towerlight_offline.data.dataset import Dataset

logger = logging.getLogger(__name__)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _as_categories(value: Any) -> list[str]:
    if _is_missing(value):
        return []
    if isinstance(value, str):
        return [value] if value else []
    return [str(c) for c in value]


def _as_attributes(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def item_records(items: pd.DataFrame, extra_item_ids: Any = ()) -> list[ItemRecord]:
    """One ``ItemRecord`` per catalogue row (first row wins for a repeated id), then content-less
    records for ``extra_item_ids`` not in the catalogue, in sorted order.

    Example::

        >>> frame = pd.DataFrame({"item_id": ["1"], "title": ["Toy Story (1995)"],
        ...                       "categories": [["Comedy"]], "attributes": [{"year": 1995}]})
        >>> [r.item_id for r in item_records(frame, ["7", "1"])]
        ['1', '7']
    """
    records: dict[str, ItemRecord] = {}
    for item_id, title, categories, attributes in zip(
        items["item_id"].astype(str),
        items["title"] if "title" in items else [None] * len(items),
        items["categories"] if "categories" in items else [None] * len(items),
        items["attributes"] if "attributes" in items else [None] * len(items),
        strict=True,
    ):
        if item_id not in records:
            records[item_id] = ItemRecord(
                item_id=item_id,
                title=None if _is_missing(title) else str(title),
                categories=_as_categories(categories),
                attributes=_as_attributes(attributes),
            )
    extra = sorted({str(i) for i in extra_item_ids} - records.keys())
    records.update((i, ItemRecord(i, None, [], {})) for i in extra)
    return list(records.values())


def user_attributes(users: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """``user_id -> attributes`` from the users frame (first row wins for a repeated id)."""
    out: dict[str, dict[str, Any]] = {}
    for user_id, attributes in zip(users["user_id"].astype(str), users["attributes"], strict=True):
        out.setdefault(user_id, _as_attributes(attributes))
    return out


def fit_feature_spec(
    dataset: Dataset,
    *,
    history_length: int = 50,
    item_oov_buckets: int = 64,
    title_hash_buckets: int = 4096,
    numeric_buckets: int = 8,
    min_token_count: int = 1,
) -> FeatureSpec:
    """The feature spec of ``dataset``: every catalogue item, plus item ids that only appear in interactions
    (as items without content), and the attributes of every user.

    Example::

        >>> spec = fit_feature_spec(dataset)  # doctest: +SKIP
        >>> spec.encode_history(["50", "181"]).tolist()  # doctest: +SKIP
        [50, 181]
    """
    records = item_records(dataset.items, dataset.interactions["item_id"].astype(str).unique())
    missing = len(records) - dataset.items["item_id"].nunique()
    if missing:
        logger.info("%d item ids appear in interactions but not in the catalogue", missing)
    spec = FeatureSpec.fit(
        records,
        user_attributes(dataset.users).values(),
        history_length=history_length,
        item_oov_buckets=item_oov_buckets,
        title_hash_buckets=title_hash_buckets,
        numeric_buckets=numeric_buckets,
        min_token_count=min_token_count,
    )
    logger.info(
        "feature spec: %d items, %d item tokens, %d user tokens over fields %s",
        len(spec.item_ids.values),
        len(spec.item_tokens.values),
        len(spec.user_tokens.values),
        spec.user_fields,
    )
    return spec
