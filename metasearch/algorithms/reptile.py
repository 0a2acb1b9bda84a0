"""Reptile (Nichol, Achiam and Schulman, 2018).

Each task's parameters are trained by plain SGD on all of the task's labelled data (support and
query), and the meta-update moves the initialization towards the mean adapted parameters: the
"gradient" handed to the outer optimizer is ``params - mean(adapted)``. It is written as the
gradient of ``0.5 * ||params - stop_gradient(adapted)||^2``, so that the engines differentiate
it like any other objective. At evaluation, Reptile adapts on the support set alone, like every
other algorithm.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metasearch.algorithms.base import AnyLearner, task_sum
from metasearch.algorithms.gradient_based import GradientBased
from metasearch.learners.learner import MetaState, Params


class Reptile(GradientBased):
    query_gradient = False

    def __init__(self) -> None:
        super().__init__("reptile", first_order=True, learned_rates=False)

    def outer_objective(
        self,
        learner: AnyLearner,
        params: Params,
        meta: MetaState,
        support: tuple[Tensor, Tensor],
        query: tuple[Tensor, Tensor],
        progress: float,
    ) -> tuple[Tensor, Tensor]:
        x = torch.cat([support[0], query[0]], learner.batch_dims)
        y = torch.cat([support[1], query[1]], learner.batch_dims)
        start = {n: p.detach() for n, p in params.items()}  # no graph: the update is a direction
        adapted = self.adapt(learner, start, meta, x, y, True)[-1]
        with torch.no_grad():
            query_loss = learner.loss(learner.forward(adapted, query[0]), query[1])
        distance = sum(task_sum(learner, (params[n] - adapted[n].detach()).pow(2)) for n in params)
        return 0.5 * distance, query_loss  # type: ignore[return-value, operator]


REGISTERED = (Reptile(),)
