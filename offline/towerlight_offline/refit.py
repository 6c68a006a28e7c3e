"""The serving refit (two-tower on every interaction), trained in a second process beside the evaluation.

The refit needs nothing the evaluation computes, and training uses one torch thread, so on a machine
with two or more cores it runs in a spawned process while the split model, the ranker and the
baselines train and are evaluated. Where a process cannot be started (one core, or an environment
without the shared memory that multiprocessing needs, such as Lambda) or the process dies, the refit
runs in this process instead: the result is the same model, since ``train_two_tower`` seeds itself.

Example::

    >>> refit = start_refit(positives, dataset.items, dataset.users, spec, params)  # doctest: +SKIP
    >>> ...  # train and evaluate the other models meanwhile
    >>> final = refit.result()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import pandas as pd

from towerlight.features import FeatureSpec
from towerlight_offline.model.train import TrainedTwoTower, TwoTowerParams, train_two_tower

logger = logging.getLogger(__name__)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Refit:
    """A refit running in a background process, or deferred to ``result()`` when none could start."""

    def __init__(
        self,
        args: tuple[Any, ...],
        executor: ProcessPoolExecutor | None = None,
        future: Future[TrainedTwoTower] | None = None,
    ) -> None:
        self._args = args
        self._executor = executor
        self._future = future

    @property
    def in_background(self) -> bool:
        return self._future is not None

    def result(self, progress: bool = False) -> TrainedTwoTower:
        """The refitted towers: the background process's, else trained here and now."""
        try:
            if self._future is not None:
                try:
                    return self._future.result()
                except BrokenProcessPool as exc:  # killed (out of memory, say): train it here instead
                    logger.warning("the background refit died (%s); refitting in this process", exc)
            return train_two_tower(*self._args, progress=progress)
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)


def start_refit(
    interactions: pd.DataFrame,
    items: pd.DataFrame,
    users: pd.DataFrame | None,
    spec: FeatureSpec,
    params: TwoTowerParams,
    *,
    background: bool = True,
) -> Refit:
    """Start training ``train_two_tower(interactions, ...)`` in a spawned process when it can help.

    ``background=False``, or fewer than two usable CPUs, defers the whole training to ``result()``.
    """
    args = (interactions, items, users, spec, params)
    if not background or usable_cpus() < 2:
        return Refit(args, None)
    executor = None
    try:
        # spawn, not fork: torch's OpenMP pool in this process must not be inherited half-initialised.
        executor = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        future = executor.submit(train_two_tower, *args, progress=False)
    except OSError as exc:  # no /dev/shm (Lambda): its semaphores and queues cannot be created
        logger.info("refitting in this process: no worker process can be started here (%s)", exc)
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        return Refit(args)
    return Refit(args, executor, future)
