"""The meta-algorithm interface: adapt to one task, predict on it, and meta-train on a batch.

An algorithm is written for a single task as pure functions of explicit parameters
(``adapt`` and ``predict``). A meta-batch runs them for all its tasks at once: through a
:class:`~metasearch.learners.grouped.GroupedLearner`, which stands in for the learner with a
leading group dimension on every tensor and one loss per group (the same code, batched by hand
as grouped convolutions, so also over several learners of one shape), or, for networks it does
not support, under ``torch.func.vmap``. The defaults here give the query-loss meta-gradient of
MAML-style algorithms; Reptile has its own update direction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.func import vmap

from metasearch.learners import grouped
from metasearch.learners.grouped import GroupedLearner
from metasearch.learners.learner import Learner, Params
from metasearch.learners.networks import has_batch_norm, statistics_from_first
from metasearch.spec import NormalizationAtPrediction
from metasearch.tasks.base import TaskBatch

CPU_GROUPS = {"float32": 2, "bfloat16": 4}
"""Learner-task pairs per chunk on the CPU, by ``outer.precision``: measured best for the conv
learners (1 to 4 are close; bfloat16's halved activations fit twice as many; the whole
meta-batch at once is 1.5x slower, its activations no longer fit in cache)."""
AnyLearner = Learner | GroupedLearner
"""What an algorithm's per-task functions receive: a learner, or a group of tasks of learners."""


class MetaGradients(NamedTuple):
    """One meta-step's result: a gradient for each of ``learner.meta_tensors()`` (``None`` where
    unused) and the query loss of every task, detached."""

    grads: list[Tensor | None]
    task_losses: Tensor


class MetaAlgorithm:
    """Base class; subclasses implement :meth:`adapt` and :meth:`predict` for one task."""

    name = "base"

    def adapt(
        self, learner: AnyLearner, params: Params, x: Tensor, y: Tensor, first_order: bool
    ) -> Any:
        """The task-specific state learned from one support set ``(x, y)``."""
        raise NotImplementedError

    def predict(self, learner: AnyLearner, params: Params, state: Any, x: Tensor) -> Tensor:
        """Outputs (logits or regression values) for query inputs ``x`` of the same task."""
        raise NotImplementedError

    def predict_normalized(
        self,
        learner: AnyLearner,
        params: Params,
        state: Any,
        support_x: Tensor,
        x: Tensor,
        normalization: NormalizationAtPrediction | None = None,
    ) -> Tensor:
        """:meth:`predict` with batch normalization by the statistics of the query batch ``x``
        itself (``transductive``) or of the support set (``support``: the support set runs
        before the queries, its statistics alone normalize both, and each query's output
        depends on nothing but the support set and itself); by default as the spec's
        ``architecture.normalization_at_prediction`` says."""
        normalization = normalization or learner.spec.architecture.normalization_at_prediction
        if normalization == "transductive" or not has_batch_norm(learner.network):
            return self.predict(learner, params, state, x)
        examples = 1 if isinstance(learner, GroupedLearner) else 0
        rows = support_x.shape[examples]
        with statistics_from_first(learner.network, rows):
            both = self.predict(learner, params, state, torch.cat([support_x, x], examples))
        return both.narrow(examples, rows, x.shape[examples])

    def first_order(self, learner: Learner, progress: float) -> bool:
        """Whether the meta-gradient ignores second derivatives at ``progress`` in [0, 1]."""
        return False

    def task_losses(
        self, learner: AnyLearner, params: Params, state: Any, x: Tensor, y: Tensor, progress: float
    ) -> tuple[Tensor, Tensor]:
        """For one task: what the outer loop minimizes, and the final query loss. By default
        both are the query loss after adaptation."""
        loss = learner.loss(self.predict(learner, params, state, x), y)
        return loss, loss

    def meta_gradients(self, learner: Learner, batch: TaskBatch, progress: float) -> MetaGradients:
        """Gradient of the mean task objective with respect to every meta-learned tensor."""
        return self.population_meta_gradients([learner], batch, progress)[0]

    def population_meta_gradients(
        self, learners: Sequence[Learner], batch: TaskBatch, progress: float
    ) -> list[MetaGradients]:
        """:meth:`meta_gradients` of each of ``learners`` (one shape) on the same batch, computed
        together: all at once, or :data:`CPU_GROUPS` learner-task pairs at a time where
        :func:`_in_cache` says so."""
        if not grouped.supports(learners[0].network):
            return [self._vmap_meta_gradients(learner, batch, progress) for learner in learners]
        size = _cpu_groups(learners[0]) if _in_cache(learners[0], batch) else len(learners)
        return [
            result
            for start in range(0, len(learners), size)
            for result in self._grouped_meta_gradients(
                learners[start : start + size], batch, progress
            )
        ]

    def _grouped_meta_gradients(
        self, learners: Sequence[Learner], batch: TaskBatch, progress: float
    ) -> list[MetaGradients]:
        first_order = self.first_order(learners[0], progress)
        meta_tensors = [t for learner in learners for t in learner.meta_tensors()]
        total: list[Tensor | None] = [None] * len(meta_tensors)
        query_losses = []
        for chunk in batch.chunks(chunk_tasks(learners[0], len(learners), batch)):
            group = GroupedLearner(learners, chunk.n_tasks)
            params, tasks = group.params(), group.repeat(chunk)
            state = self.adapt(group, params, tasks.support_x, tasks.support_y, first_order)
            with query_precision(learners[0], tasks.query_x.device):
                objectives, losses = self.task_losses(
                    group, params, state, tasks.query_x, tasks.query_y, progress
                )
            objective = group.per_learner(objectives).sum() / batch.n_tasks
            grads = torch.autograd.grad(objective, meta_tensors, allow_unused=True)
            total = [_add(t, g) for t, g in zip(total, grads)]
            query_losses.append(group.per_learner(losses.detach()))
        return _split(learners, total, torch.cat(query_losses, 1))

    def _vmap_meta_gradients(
        self, learner: Learner, batch: TaskBatch, progress: float
    ) -> MetaGradients:
        first_order = self.first_order(learner, progress)
        params = learner.params

        def one_task(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> tuple[Tensor, Tensor]:
            state = self.adapt(learner, params, sx, sy, first_order)
            with query_precision(learner, qx.device):
                return self.task_losses(learner, params, state, qx, qy, progress)

        objectives, query_losses = vmap(one_task)(*batch)
        grads = torch.autograd.grad(objectives.mean(), learner.meta_tensors(), allow_unused=True)
        return MetaGradients(list(grads), query_losses.detach())

    def predict_tasks(
        self,
        learner: Learner,
        batch: TaskBatch,
        normalization: NormalizationAtPrediction | None = None,
    ) -> Tensor:
        """Query outputs ``[T, Q, ...]`` after adapting to each support set, without meta-graph,
        normalized as ``normalization`` says (see :meth:`predict_normalized`)."""
        if not grouped.supports(learner.network):
            return self._vmap_predict_tasks(learner, batch, normalization)
        outputs = []
        for chunk in batch.chunks(chunk_tasks(learner, 1, batch)):
            group = GroupedLearner([learner], chunk.n_tasks)
            params = group.params(detach=True)
            with torch.no_grad():
                state = self.adapt(group, params, chunk.support_x, chunk.support_y, True)
                outputs.append(
                    self.predict_normalized(
                        group, params, state, chunk.support_x, chunk.query_x, normalization
                    )
                )
        return torch.cat(outputs)

    def _vmap_predict_tasks(
        self,
        learner: Learner,
        batch: TaskBatch,
        normalization: NormalizationAtPrediction | None = None,
    ) -> Tensor:
        params = {n: p.detach() for n, p in learner.params.items()}

        def one_task(sx: Tensor, sy: Tensor, qx: Tensor) -> Tensor:
            state = self.adapt(learner, params, sx, sy, True)
            return self.predict_normalized(learner, params, state, sx, qx, normalization)

        with torch.no_grad():
            return vmap(one_task)(batch.support_x, batch.support_y, batch.query_x)


def chunk_tasks(learner: Learner, learners: int, batch: TaskBatch) -> int:
    """Tasks per chunk of the grouped path for ``learners`` learners like ``learner``: about
    :data:`CPU_GROUPS` learner-task pairs where :func:`_in_cache` says so, else all tasks."""
    if not _in_cache(learner, batch):
        return batch.n_tasks
    return max(1, _cpu_groups(learner) // learners)


def _cpu_groups(learner: Learner) -> int:
    return CPU_GROUPS[learner.spec.outer.precision]


def query_precision(learner: Learner, device: torch.device) -> torch.autocast:
    """For the query pass: ``torch.autocast`` to bfloat16 where the spec's ``outer.precision``
    asks for mixed precision, a context that changes nothing otherwise. The inner loop stays
    float32: bfloat16's rounding of its gradients compounds over the steps (five steps of MAML
    on Omniglot at rate 0.4 lose the meta-gradient's direction), while the query pass, most of
    the arithmetic, only rounds the meta-gradient once. The cache of cast weights is off: the
    query pass may run under the inner loop's transforms, which wrap one weight at several
    levels."""
    mixed = learner.spec.outer.precision == "bfloat16"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=mixed, cache_enabled=False)


def _in_cache(learner: Learner, batch: TaskBatch) -> bool:
    """Whether to keep the activations of a chunk in cache rather than memory: feature maps on
    the CPU. Dense networks are small, and an accelerator wants all the work at once."""
    return batch.support_x.device.type == "cpu" and grouped.has_maps(learner.network)


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
