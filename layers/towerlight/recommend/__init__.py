"""Recommendations: the domain service (strategies, filters, business rules, explanations).

Example::

    >>> from towerlight.recommend import RecommendQuery, get_service
    >>> get_service().recommend("42", RecommendQuery(k=5)).strategy
    'two_tower'
"""

from __future__ import annotations

from towerlight.recommend.rules import NotEnoughItemsError
from towerlight.recommend.service import (
    PostgresSignals,
    Recommendations,
    RecommendationService,
    RecommendQuery,
    ScoredItem,
    SignalSource,
    SimilarItems,
    UserSignals,
    get_service,
)

__all__ = [
    "NotEnoughItemsError",
    "PostgresSignals",
    "RecommendQuery",
    "RecommendationService",
    "Recommendations",
    "ScoredItem",
    "SignalSource",
    "SimilarItems",
    "UserSignals",
    "get_service",
]
