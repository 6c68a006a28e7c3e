"""The one declarative table of event types: reward weights for ranker labels and bandits, and filter effects.

Example::

    >>> EVENT_TYPES["purchase"].reward
    1.0
    >>> "block" in REMOVING_EVENT_TYPES
    True
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EventType:
    name: str
    reward: float  # bandit reward and ranker label weight; 0 means "seen, not a success"
    positive: bool  # counts as a positive interaction for training
    removes_item: bool = False  # the item is never recommended to this user again


EVENT_TYPES: dict[str, EventType] = {
    t.name: t
    for t in (
        EventType("impression", reward=0.0, positive=False),
        EventType("view", reward=0.1, positive=True),
        EventType("click", reward=0.5, positive=True),
        EventType("add_to_cart", reward=0.7, positive=True),
        EventType("rating", reward=0.6, positive=True),
        EventType("like", reward=0.8, positive=True),
        EventType("purchase", reward=1.0, positive=True),
        EventType("dislike", reward=0.0, positive=False, removes_item=True),
        EventType("block", reward=0.0, positive=False, removes_item=True),
    )
}

REMOVING_EVENT_TYPES: tuple[str, ...] = tuple(t.name for t in EVENT_TYPES.values() if t.removes_item)
POSITIVE_EVENT_TYPES: tuple[str, ...] = tuple(t.name for t in EVENT_TYPES.values() if t.positive)
