"""Engines: how a meta-batch of tasks runs an algorithm's per-task functions.

- ``vmap`` (:class:`VmapEngine`): the reference, every network on every device;
- ``grouped`` (:class:`GroupedEngine`): the tasks as one hand-batched network, folded input
  block and CPU chunking included, the faster on the CPU (`benchmarks/evaluator_throughput.py`).

:func:`choose_engine` picks one for a learner (``auto``: grouped where it runs the network,
else vmap) and logs its choice; a study file's ``budget.engine`` and
:class:`~metasearch.evaluation.Budget`'s ``engine`` override it.
"""

from __future__ import annotations

import logging
from typing import Literal, Protocol

from torch import Tensor

from metasearch.algorithms.base import MetaAlgorithm, MetaGradients
from metasearch.engines.grouped import GroupedEngine
from metasearch.engines.vmap import VmapEngine
from metasearch.errors import SpecError
from metasearch.learners.grouped import unsupported
from metasearch.learners.learner import Learner
from metasearch.spec import NormalizationAtPrediction
from metasearch.tasks.base import TaskBatch

EngineChoice = Literal["auto", "vmap", "grouped"]
ENGINE_CHOICES: tuple[str, ...] = EngineChoice.__args__  # type: ignore[attr-defined]
logger = logging.getLogger(__name__)


class Engine(Protocol):
    name: str

    def meta_gradients(
        self, algorithm: MetaAlgorithm, learners: list[Learner], batch: TaskBatch, progress: float
    ) -> list[MetaGradients]:
        """The meta-gradient of each of ``learners`` (one shape) on ``batch``."""
        ...

    def predict_tasks(
        self,
        algorithm: MetaAlgorithm,
        learner: Learner,
        batch: TaskBatch,
        normalization: NormalizationAtPrediction | None = None,
    ) -> Tensor:
        """Query outputs ``[T, Q, ...]`` after adapting to each support set."""
        ...


VMAP, GROUPED = VmapEngine(), GroupedEngine()


def choose_engine(learner: Learner, requested: EngineChoice = "auto", log: bool = True) -> Engine:
    """The engine for ``learner``: ``requested``, or for ``auto`` the grouped engine where it
    runs the network and vmap elsewhere (logged with what the grouped engine lacks)."""
    missing = unsupported(learner.network)
    if requested == "vmap":
        return VMAP
    if requested == "grouped":
        if missing:
            raise SpecError(
                f"the grouped engine cannot run {', '.join(missing)} "
                f"({learner.spec.architecture.family} family); use engine auto or vmap"
            )
        return GROUPED
    if requested != "auto":
        raise SpecError(f"unknown engine {requested!r}; choose one of {', '.join(ENGINE_CHOICES)}")
    if missing:
        if log:
            logger.info(
                "engine vmap: the grouped engine cannot run %s (%s family)",
                ", ".join(missing),
                learner.spec.architecture.family,
            )
        return VMAP
    if log:
        logger.debug("engine grouped for the %s family", learner.spec.architecture.family)
    return GROUPED


def meta_step(
    algorithm: MetaAlgorithm,
    learner: Learner,
    batch: TaskBatch,
    progress: float,
    engine: EngineChoice = "auto",
) -> MetaGradients:
    """The meta-gradient of ``learner`` on ``batch`` at ``progress``, on the ``engine`` chosen."""
    chosen = choose_engine(learner, engine, log=False)
    return chosen.meta_gradients(algorithm, [learner], batch, progress)[0]


def predict_tasks(
    algorithm: MetaAlgorithm,
    learner: Learner,
    batch: TaskBatch,
    normalization: NormalizationAtPrediction | None = None,
    engine: EngineChoice = "auto",
) -> Tensor:
    """Query outputs ``[T, Q, ...]`` of ``learner`` adapted to each task of ``batch``."""
    chosen = choose_engine(learner, engine, log=False)
    return chosen.predict_tasks(algorithm, learner, batch, normalization)


__all__ = [
    "ENGINE_CHOICES",
    "GROUPED",
    "VMAP",
    "Engine",
    "EngineChoice",
    "GroupedEngine",
    "VmapEngine",
    "choose_engine",
    "meta_step",
    "predict_tasks",
]
