"""Reptile (Nichol, Achiam and Schulman, 2018).

Each task's parameters are trained by plain SGD on all of the task's labelled data (support and
query), and the meta-update moves the initialization towards the mean adapted parameters: the
"gradient" handed to the outer optimizer is ``params - mean(adapted)``. At evaluation, Reptile
adapts on the support set alone, like every other algorithm.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.func import vmap

from metasearch.algorithms.base import MetaGradients
from metasearch.algorithms.gradient_based import GradientBased
from metasearch.learners.learner import Learner
from metasearch.tasks.base import TaskBatch


class Reptile(GradientBased):
    def __init__(self) -> None:
        super().__init__("reptile", first_order=True)

    def meta_gradients(self, learner: Learner, batch: TaskBatch, progress: float) -> MetaGradients:
        params = {n: p.detach() for n, p in learner.params.items()}

        def one_task(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> tuple[dict, Tensor]:
            x, y = torch.cat([sx, qx]), torch.cat([sy, qy])
            adapted = self.adapt(learner, params, x, y, True)[-1]
            return adapted, learner.loss(learner.forward(adapted, qx), qy)

        with torch.no_grad():
            adapted, query_losses = vmap(one_task)(*batch)
            grads = [params[n] - adapted[n].mean(0) for n in learner.params]
        return MetaGradients(grads, query_losses)
