"""MAML and its family: adaptation by gradient steps on the support set.

- MAML (Finn et al., 2017): the meta-gradient flows through the inner loop (second order).
- First-order MAML (same paper): the inner gradients are treated as constants.
- Meta-SGD (Li et al., 2017): MAML with meta-learned per-parameter inner learning rates; the
  spec's ``inner.learned`` and ``granularity`` select them, the algorithm is MAML's.
- ANIL (Raghu et al., 2020): only the head adapts; the body's features are computed once per
  task and the body is learned by the outer loop alone.
- MAML++ (Antoniou et al., 2019): per-layer per-step learned rates, a multi-step loss that
  anneals towards the last step, and derivative-order annealing (first order early on).
"""

from __future__ import annotations

import torch
from torch import Tensor

from metasearch.algorithms.base import AnyLearner, MetaAlgorithm
from metasearch.learners.learner import Learner, Params

Trajectory = list[Params]


class GradientBased(MetaAlgorithm):
    """Adapts by ``spec.inner.steps`` gradient steps; the state is the trajectory of parameters."""

    def __init__(self, name: str, first_order: bool = False, head_only: bool = False) -> None:
        self.name, self.always_first_order, self.head_only = name, first_order, head_only

    def first_order(self, learner: Learner, progress: float) -> bool:
        return self.always_first_order

    def adapt(
        self, learner: AnyLearner, params: Params, x: Tensor, y: Tensor, first_order: bool
    ) -> Trajectory:
        names = learner.adapted_names
        if self.head_only:
            features = learner.features(params, x)

            def support_loss(fast: Params) -> Tensor:  # summed over the groups of a group
                return learner.loss(learner.head(fast, features), y).sum()
        else:

            def support_loss(fast: Params) -> Tensor:
                return learner.loss(learner.forward({**params, **fast}, x), y).sum()

        fast = {n: params[n] for n in names}
        trajectory = []
        for step in range(learner.spec.inner.steps):
            grads = torch.func.grad(support_loss)(fast)
            if first_order:
                grads = {n: g.detach() for n, g in grads.items()}
            fast = {n: fast[n] - learner.inner_lrs(n, step) * grads[n] for n in names}
            trajectory.append({**params, **fast})
        return trajectory

    def predict(self, learner: AnyLearner, params: Params, state: Trajectory, x: Tensor) -> Tensor:
        return learner.forward(state[-1], x)


class MAMLPlusPlus(GradientBased):
    """MAML++: multi-step loss and derivative-order annealing on top of MAML."""

    def __init__(self) -> None:
        super().__init__("mamlpp")

    def first_order(self, learner: Learner, progress: float) -> bool:
        return progress < learner.spec.outer.first_order_fraction

    def task_losses(
        self,
        learner: AnyLearner,
        params: Params,
        state: Trajectory,
        x: Tensor,
        y: Tensor,
        progress: float,
    ) -> tuple[Tensor, Tensor]:
        weights = step_weights(len(state), progress, learner.spec.outer.msl_fraction)
        losses = [learner.loss(learner.forward(fast, x), y) for fast in state]
        objective = sum(w * loss for w, loss in zip(weights, losses, strict=True))
        return objective, losses[-1]  # type: ignore[return-value]


def step_weights(steps: int, progress: float, anneal_fraction: float) -> list[float]:
    """MAML++'s multi-step loss weights: uniform at the start, then every step but the last
    decays linearly to a floor of ``0.03 / steps`` by ``anneal_fraction`` of training, and the
    last step takes the rest."""
    if steps == 1:
        return [1.0]
    decay = 1.0 if anneal_fraction == 0 else min(progress / anneal_fraction, 1.0)
    early = max(1.0 / steps * (1.0 - decay), 0.03 / steps)
    return [early] * (steps - 1) + [1.0 - early * (steps - 1)]
