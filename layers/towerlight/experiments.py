"""Experiments: users bucketed deterministically into weighted variants, each pinning a model or a strategy.

A user's bucket is a number in [0, 1) from SHA-256 of the experiment name and the user id: the same
user gets the same variant on every request, in every process, with no state stored; another experiment
name reshuffles users independently. Variants take consecutive slices of [0, 1) in proportion to their
weights, in the order configured.

A variant pinning a ``model_version`` is served by that version, loaded beside ``CURRENT``
(``towerlight.model.pinned``). The running experiment is configured by ``TOWERLIGHT_EXPERIMENT`` (JSON;
unset means none)::

    {"name": "ranker-2026-12", "variants": [
        {"name": "control", "weight": 0.8},
        {"name": "popular", "weight": 0.1, "strategy": "popularity"},
        {"name": "next-model", "weight": 0.1, "model_version": "20261201T020000Z-ab12cd"}]}

Example::

    >>> experiment = Experiment.model_validate_json(os.environ["TOWERLIGHT_EXPERIMENT"])
    >>> experiment.assign("42").name
    'control'
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from typing import Annotated, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from towerlight.errors import ConfigurationError

EXPERIMENT_ENV = "TOWERLIGHT_EXPERIMENT"

_Name = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]


class Variant(BaseModel):
    """One arm of an experiment; a variant that pins nothing is the control (serves as usual)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: _Name
    weight: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    model_version: str | None = None
    strategy: Literal["auto", "two_tower", "popularity", "content", "hybrid"] | None = None


class Experiment(BaseModel):
    """A named experiment over weighted variants (weights need not sum to 1: they are normalized)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: _Name
    variants: Annotated[tuple[Variant, ...], Field(min_length=1)]

    @pydantic.field_validator("variants")
    @classmethod
    def _distinct_names(cls, variants: tuple[Variant, ...]) -> tuple[Variant, ...]:
        names = [v.name for v in variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be distinct, got {names}")
        return variants

    @property
    def model_versions(self) -> frozenset[str]:
        """The model versions the variants pin (the versions serving keeps beside CURRENT)."""
        return frozenset(v.model_version for v in self.variants if v.model_version)

    def assign(self, user_id: str) -> Variant:
        """The variant of ``user_id``: always the same one for the same experiment and user.

        >>> Experiment(name="e", variants=[Variant(name="a", weight=1)]).assign("u1").name
        'a'
        """
        point = bucket(self.name, user_id) * sum(v.weight for v in self.variants)
        edge = 0.0
        for variant in self.variants:
            edge += variant.weight
            if point < edge:
                return variant
        return self.variants[-1]  # point == total only through float rounding of the sum


def bucket(experiment: str, user_id: str) -> float:
    """A uniform number in [0, 1) fixed by (``experiment``, ``user_id``): the first 53 bits of SHA-256.

    >>> bucket("ranker-2026-12", "42") == bucket("ranker-2026-12", "42")
    True
    """
    digest = hashlib.sha256(f"{experiment}\x00{user_id}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / float(1 << 53)


def current_experiment() -> Experiment | None:
    """The experiment configured by ``TOWERLIGHT_EXPERIMENT``, or None; a bad value is a ``ConfigurationError``."""
    return _parse(os.environ.get(EXPERIMENT_ENV, "").strip())


@lru_cache(maxsize=4)
def _parse(raw: str) -> Experiment | None:
    if not raw:
        return None
    try:
        return Experiment.model_validate_json(raw)
    except pydantic.ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigurationError(f"{EXPERIMENT_ENV} is not a valid experiment: {problems}") from None
