"""Reptile (Nichol, Achiam and Schulman, 2018).

Each task's parameters are trained by plain SGD on all of the task's labelled data (support and
query), and the meta-update moves the initialization towards the mean adapted parameters: the
"gradient" handed to the outer optimizer is ``params - mean(adapted)``. At evaluation, Reptile
adapts on the support set alone, like every other algorithm.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.func import vmap

from metasearch.algorithms.base import MetaGradients, chunk_tasks
from metasearch.algorithms.gradient_based import GradientBased
from metasearch.learners.grouped import GroupedLearner
from metasearch.learners.learner import Learner
from metasearch.tasks.base import TaskBatch


class Reptile(GradientBased):
    def __init__(self) -> None:
        super().__init__("reptile", first_order=True)

    def _grouped_meta_gradients(
        self, learners: Sequence[Learner], batch: TaskBatch, progress: float
    ) -> list[MetaGradients]:
        sums: dict[str, Tensor] = {}
        query_losses = []
        for chunk in batch.chunks(chunk_tasks(learners[0], len(learners), batch)):
            group = GroupedLearner(learners, chunk.n_tasks)
            tasks = group.repeat(chunk)
            x, y = _labelled(tasks)
            with torch.no_grad():
                adapted = self.adapt(group, group.params(detach=True), x, y, True)[-1]
                outputs = group.forward(adapted, tasks.query_x)
                query_losses.append(group.per_learner(group.loss(outputs, tasks.query_y)))
                for name, value in adapted.items():
                    total = group.per_learner(value).sum(1)
                    sums[name] = sums[name] + total if name in sums else total
        return [
            MetaGradients(
                [p.detach() - sums[n][i] / batch.n_tasks for n, p in learner.params.items()],
                losses,
            )
            for i, (learner, losses) in enumerate(zip(learners, torch.cat(query_losses, 1)))
        ]

    def _vmap_meta_gradients(
        self, learner: Learner, batch: TaskBatch, progress: float
    ) -> MetaGradients:
        params = {n: p.detach() for n, p in learner.params.items()}

        def one_task(x: Tensor, y: Tensor, qx: Tensor, qy: Tensor) -> tuple[dict, Tensor]:
            adapted = self.adapt(learner, params, x, y, True)[-1]
            return adapted, learner.loss(learner.forward(adapted, qx), qy)

        with torch.no_grad():
            adapted, query_losses = vmap(one_task)(*_labelled(batch), batch.query_x, batch.query_y)
            grads = [params[n] - adapted[n].mean(0) for n in learner.params]
        return MetaGradients(grads, query_losses)


def _labelled(batch: TaskBatch) -> tuple[Tensor, Tensor]:
    """Each task's support and query sets together, ``[T, S + Q, ...]``."""
    x = torch.cat([batch.support_x, batch.query_x], 1)
    return x, torch.cat([batch.support_y, batch.query_y], 1)
