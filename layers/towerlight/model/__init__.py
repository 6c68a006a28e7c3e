"""The served model: an immutable ``ModelBundle`` per version and the ``ModelRegistry`` that swaps them.

Example::

    >>> from towerlight.model import get_registry
    >>> bundle = get_registry().get()
    >>> bundle.strategy
    'two_tower'
"""

from __future__ import annotations

from towerlight.model.bundle import Catalogue, CategoryIndex, ModelBundle, Popularity, TwoTower, load_bundle
from towerlight.model.registry import ModelRegistry, RegistryStatus, get_registry, load_version, reset

__all__ = [
    "Catalogue",
    "CategoryIndex",
    "ModelBundle",
    "ModelRegistry",
    "Popularity",
    "RegistryStatus",
    "TwoTower",
    "get_registry",
    "load_bundle",
    "load_version",
    "reset",
]
