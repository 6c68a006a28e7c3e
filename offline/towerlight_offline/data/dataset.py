"""The in-memory dataset every offline stage takes: three pandas frames with fixed columns.

- ``interactions``: ``user_id`` (str), ``item_id`` (str), ``timestamp`` (int64, unix seconds),
  ``event_type`` (str, a key of ``towerlight.event_types.EVENT_TYPES``), ``value`` (float, NaN if none).
- ``items``: ``item_id`` (str), ``title`` (str), ``categories`` (list[str]), ``attributes`` (dict),
  ``active`` (bool). ``attributes`` holds anything else (e.g. ``{"year": 1995}``).
- ``users``: ``user_id`` (str), ``attributes`` (dict), e.g. ``{"age": 24, "gender": "M", ...}``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp", "event_type", "value")
ITEM_COLUMNS = ("item_id", "title", "categories", "attributes", "active")
USER_COLUMNS = ("user_id", "attributes")


@dataclass
class Dataset:
    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame

    def __post_init__(self) -> None:
        for frame, columns, label in (
            (self.interactions, INTERACTION_COLUMNS, "interactions"),
            (self.items, ITEM_COLUMNS, "items"),
            (self.users, USER_COLUMNS, "users"),
        ):
            missing = [c for c in columns if c not in frame.columns]
            if missing:
                raise ValueError(f"{label} frame lacks columns {missing}")

    def summary(self) -> str:
        return (
            f"{self.name}: {len(self.interactions):,} interactions, "
            f"{self.interactions['user_id'].nunique():,} users, {len(self.items):,} items"
        )
