"""The two-tower retrieval model: feature spec fitting, torch towers and their training loop.

Example::

    >>> from towerlight_offline.model import TwoTowerParams, fit_feature_spec, train_two_tower
    >>> spec = fit_feature_spec(dataset)  # doctest: +SKIP
    >>> trained = train_two_tower(train, dataset.items, dataset.users, spec, TwoTowerParams())  # doctest: +SKIP
"""

from __future__ import annotations

from towerlight_offline.model.spec import fit_feature_spec
from towerlight_offline.model.towers import ItemTower, UserTower, build_towers
from towerlight_offline.model.train import TrainedTwoTower, TwoTowerParams, train_two_tower

__all__ = [
    "ItemTower",
    "TrainedTwoTower",
    "TwoTowerParams",
    "UserTower",
    "build_towers",
    "fit_feature_spec",
    "train_two_tower",
]
