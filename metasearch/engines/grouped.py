"""The grouped engine: a meta-batch's tasks (and a population's learners) as one hand-batched
network (:class:`~metasearch.learners.grouped.GroupedLearner`), in chunks that keep the
activations in cache on the CPU."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from metasearch.algorithms.base import MetaAlgorithm, MetaGradients
from metasearch.learners import grouped
from metasearch.learners.grouped import GroupedLearner
from metasearch.learners.learner import Learner
from metasearch.spec import NormalizationAtPrediction
from metasearch.tasks.base import TaskBatch

CPU_GROUPS = {"float32": 2, "bfloat16": 4}
"""Learner-task pairs per chunk on the CPU, by ``outer.precision``: measured best for the conv
learners (1 to 4 are close; bfloat16's halved activations fit twice as many; the whole
meta-batch at once is 1.5x slower, its activations no longer fit in cache)."""


class GroupedEngine:
    name = "grouped"

    def meta_gradients(
        self,
        algorithm: MetaAlgorithm,
        learners: Sequence[Learner],
        batch: TaskBatch,
        progress: float,
    ) -> list[MetaGradients]:
        """The meta-gradient of each of ``learners`` (one shape) on the same batch, computed
        together: all at once, or :data:`CPU_GROUPS` learner-task pairs at a time where
        :func:`in_cache` says so."""
        size = _cpu_groups(learners[0]) if in_cache(learners[0], batch) else len(learners)
        return [
            result
            for start in range(0, len(learners), size)
            for result in self._meta_gradients(
                algorithm, learners[start : start + size], batch, progress
            )
        ]

    def _meta_gradients(
        self,
        algorithm: MetaAlgorithm,
        learners: Sequence[Learner],
        batch: TaskBatch,
        progress: float,
    ) -> list[MetaGradients]:
        meta_tensors = [t for learner in learners for t in learner.meta_tensors()]
        total: list[Tensor | None] = [None] * len(meta_tensors)
        query_losses = []
        for chunk in batch.chunks(chunk_tasks(learners[0], len(learners), batch)):
            group = GroupedLearner(learners, chunk.n_tasks)
            tasks = group.repeat(chunk)
            objectives, losses = algorithm.outer_objective(
                group,
                group.params(),
                group.meta_state(),
                (tasks.support_x, tasks.support_y),
                (tasks.query_x, tasks.query_y),
                progress,
            )
            objective = group.per_learner(objectives).sum() / batch.n_tasks
            grads = torch.autograd.grad(objective, meta_tensors, allow_unused=True)
            total = [_add(t, g) for t, g in zip(total, grads)]
            query_losses.append(group.per_learner(losses.detach()))
        return _split(learners, total, torch.cat(query_losses, 1))

    def predict_tasks(
        self,
        algorithm: MetaAlgorithm,
        learner: Learner,
        batch: TaskBatch,
        normalization: NormalizationAtPrediction | None = None,
    ) -> Tensor:
        """Query outputs ``[T, Q, ...]`` after adapting to each support set, without meta-graph,
        normalized as ``normalization`` says (see ``MetaAlgorithm.predict_normalized``)."""
        outputs = []
        for chunk in batch.chunks(chunk_tasks(learner, 1, batch)):
            group = GroupedLearner([learner], chunk.n_tasks)
            params, meta = group.params(detach=True), group.meta_state(detach=True)
            with torch.no_grad():
                state = algorithm.adapt(group, params, meta, chunk.support_x, chunk.support_y, True)
                outputs.append(
                    algorithm.predict_normalized(
                        group, params, state, chunk.support_x, chunk.query_x, normalization
                    )
                )
        return torch.cat(outputs)


def chunk_tasks(learner: Learner, learners: int, batch: TaskBatch) -> int:
    """Tasks per chunk for ``learners`` learners like ``learner``: about :data:`CPU_GROUPS`
    learner-task pairs where :func:`in_cache` says so, else all tasks."""
    if not in_cache(learner, batch):
        return batch.n_tasks
    return max(1, _cpu_groups(learner) // learners)


def in_cache(learner: Learner, batch: TaskBatch) -> bool:
    """Whether to keep the activations of a chunk in cache rather than memory: feature maps on
    the CPU. Dense networks are small, and an accelerator wants all the work at once."""
    return batch.support_x.device.type == "cpu" and grouped.has_maps(learner.network)


def _cpu_groups(learner: Learner) -> int:
    return CPU_GROUPS[learner.spec.outer.precision]


def _add(total: Tensor | None, grad: Tensor | None) -> Tensor | None:
    if grad is None:
        return total
    return grad if total is None else total + grad


def _split(
    learners: Sequence[Learner], grads: list[Tensor | None], query_losses: Tensor
) -> list[MetaGradients]:
    """Per-learner :class:`MetaGradients` from the gradients of all learners' meta-tensors."""
    results, start = [], 0
    for learner, losses in zip(learners, query_losses):
        end = start + len(learner.meta_tensors())
        results.append(MetaGradients(grads[start:end], losses))
        start = end
    return results
