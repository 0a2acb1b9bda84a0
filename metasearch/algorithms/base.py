"""The meta-algorithm interface: adapt to one task, predict on it, and meta-train on a batch.

An algorithm is written for a single task as pure functions of explicit parameters
(``adapt`` and ``predict``); ``torch.func.vmap`` maps them over every task of a meta-batch at
once. The defaults here give the query-loss meta-gradient of MAML-style algorithms; Reptile
overrides :meth:`MetaAlgorithm.meta_gradients` with its own update direction.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.func import vmap

from metasearch.learners.learner import Learner, Params
from metasearch.tasks.base import TaskBatch


class MetaGradients(NamedTuple):
    """One meta-step's result: a gradient for each of ``learner.meta_tensors()`` (``None`` where
    unused) and the query loss of every task, detached."""

    grads: list[Tensor | None]
    task_losses: Tensor


class MetaAlgorithm:
    """Base class; subclasses implement :meth:`adapt` and :meth:`predict` for one task."""

    name = "base"

    def adapt(
        self, learner: Learner, params: Params, x: Tensor, y: Tensor, first_order: bool
    ) -> Any:
        """The task-specific state learned from one support set ``(x, y)``."""
        raise NotImplementedError

    def predict(self, learner: Learner, params: Params, state: Any, x: Tensor) -> Tensor:
        """Outputs (logits or regression values) for query inputs ``x`` of the same task."""
        raise NotImplementedError

    def first_order(self, learner: Learner, progress: float) -> bool:
        """Whether the meta-gradient ignores second derivatives at ``progress`` in [0, 1]."""
        return False

    def task_losses(
        self, learner: Learner, params: Params, state: Any, x: Tensor, y: Tensor, progress: float
    ) -> tuple[Tensor, Tensor]:
        """For one task: what the outer loop minimizes, and the final query loss. By default
        both are the query loss after adaptation."""
        loss = learner.loss(self.predict(learner, params, state, x), y)
        return loss, loss

    def meta_gradients(self, learner: Learner, batch: TaskBatch, progress: float) -> MetaGradients:
        """Gradient of the mean task objective with respect to every meta-learned tensor."""
        first_order = self.first_order(learner, progress)
        params = learner.params

        def one_task(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> tuple[Tensor, Tensor]:
            state = self.adapt(learner, params, sx, sy, first_order)
            return self.task_losses(learner, params, state, qx, qy, progress)

        objectives, query_losses = vmap(one_task)(*batch)
        grads = torch.autograd.grad(objectives.mean(), learner.meta_tensors(), allow_unused=True)
        return MetaGradients(list(grads), query_losses.detach())

    def predict_tasks(self, learner: Learner, batch: TaskBatch) -> Tensor:
        """Query outputs ``[T, Q, ...]`` after adapting to each support set, without meta-graph."""
        params = {n: p.detach() for n, p in learner.params.items()}

        def one_task(sx: Tensor, sy: Tensor, qx: Tensor) -> Tensor:
            state = self.adapt(learner, params, sx, sy, True)
            return self.predict(learner, params, state, qx)

        with torch.no_grad():
            return vmap(one_task)(batch.support_x, batch.support_y, batch.query_x)
