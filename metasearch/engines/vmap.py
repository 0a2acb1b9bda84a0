"""The reference engine: each task's per-task functions under ``torch.func.vmap``, as in
torch.func's MAML example. It runs every network, on every device."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.func import vmap

from metasearch.algorithms.base import MetaAlgorithm, MetaGradients
from metasearch.learners.learner import Learner
from metasearch.spec import NormalizationAtPrediction
from metasearch.tasks.base import TaskBatch


class VmapEngine:
    name = "vmap"

    def meta_gradients(
        self,
        algorithm: MetaAlgorithm,
        learners: Sequence[Learner],
        batch: TaskBatch,
        progress: float,
    ) -> list[MetaGradients]:
        """The meta-gradient of the mean task objective of each of ``learners`` on ``batch``."""
        return [self._meta_gradients(algorithm, learner, batch, progress) for learner in learners]

    def _meta_gradients(
        self, algorithm: MetaAlgorithm, learner: Learner, batch: TaskBatch, progress: float
    ) -> MetaGradients:
        params, meta = learner.params, learner.meta_state

        def one_task(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> tuple[Tensor, Tensor]:
            return algorithm.outer_objective(learner, params, meta, (sx, sy), (qx, qy), progress)

        objectives, query_losses = vmap(one_task)(*batch)
        grads = torch.autograd.grad(objectives.mean(), learner.meta_tensors(), allow_unused=True)
        return MetaGradients(list(grads), query_losses.detach())

    def predict_tasks(
        self,
        algorithm: MetaAlgorithm,
        learner: Learner,
        batch: TaskBatch,
        normalization: NormalizationAtPrediction | None = None,
    ) -> Tensor:
        """Query outputs ``[T, Q, ...]`` after adapting to each support set, without meta-graph,
        normalized as ``normalization`` says (see ``MetaAlgorithm.predict_normalized``)."""
        params = {n: p.detach() for n, p in learner.params.items()}
        meta = {n: v.detach() for n, v in learner.meta_state.items()}

        def one_task(sx: Tensor, sy: Tensor, qx: Tensor) -> Tensor:
            state = algorithm.adapt(learner, params, meta, sx, sy, True)
            return algorithm.predict_normalized(learner, params, state, sx, qx, normalization)

        with torch.no_grad():
            return vmap(one_task)(batch.support_x, batch.support_y, batch.query_x)
