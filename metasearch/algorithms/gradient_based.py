"""MAML and its family: adaptation by gradient steps on the support set.

- MAML (Finn et al., 2017): the meta-gradient flows through the inner loop (second order).
- First-order MAML (same paper): the inner gradients are treated as constants.
- Meta-SGD (Li et al., 2017): MAML with meta-learned per-parameter inner learning rates; the
  spec's ``inner.learned`` and ``granularity`` select them, the algorithm is MAML's.
- ANIL (Raghu et al., 2020): only the head adapts; the body's features are computed once per
  task and the body is learned by the outer loop alone.
- MAML++ (Antoniou et al., 2019): per-layer per-step learned rates, a multi-step loss that
  anneals towards the last step, and derivative-order annealing (first order early on).

The inner rates are the family's meta-state (:mod:`metasearch.algorithms.inner_rates`); the
update of one step is :meth:`GradientBased.update`, which a subclass may replace.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from metasearch.algorithms.base import AnyLearner, MetaAlgorithm
from metasearch.algorithms.inner_rates import initial_rates, inner_rate
from metasearch.learners.learner import MetaState, Params
from metasearch.spec import LearnerSpec

Trajectory = list[Params]
INNER_LOOP = frozenset(
    {"init.zero_head", "inner.steps", "inner.lr", "inner.learned", "inner.granularity"}
)
"""The spec fields every gradient-based algorithm reads: its inner loop and output layer."""
_EPISODE_OPTIONS = ("train_ways", "train_shots", "train_query_shots")


class GradientBased(MetaAlgorithm):
    """Adapts by ``spec.inner.steps`` gradient steps; the state is the trajectory of parameters.

    ``learned_rates`` is ``True`` where the algorithm needs meta-learned inner rates, ``False``
    where it cannot learn them, ``None`` where the spec decides.
    """

    uses = INNER_LOOP

    def __init__(
        self,
        name: str,
        first_order: bool = False,
        head_only: bool = False,
        learned_rates: bool | None = None,
    ) -> None:
        self.name, self.always_first_order, self.head_only = name, first_order, head_only
        self.learned_rates = learned_rates
        self.requires = {"inner.learned": True} if learned_rates else {}

    def check(self, spec: LearnerSpec) -> None:
        inner, outer = spec.inner, spec.outer
        if self.learned_rates and not inner.learned:
            raise ValueError(f"{self.name} meta-learns its inner learning rates: set inner.learned")
        if self.learned_rates is False and inner.learned:
            raise ValueError(
                f"{self.name} cannot meta-learn inner learning rates: set learned false"
            )
        if inner.steps == 0:
            raise ValueError(f"{self.name} adapts by gradient steps: set inner.steps >= 1")
        if any(getattr(outer, o) is not None for o in _EPISODE_OPTIONS) or (
            outer.distance != "euclidean"
        ):
            raise ValueError(
                "outer.train_ways, train_shots, train_query_shots and distance are Prototypical "
                f"Networks options; {self.name} trains on the task's own episodes"
            )

    def adapted_names(self, spec: LearnerSpec, names: list[str]) -> list[str]:
        return [n for n in names if n.startswith("head.")] if self.head_only else names

    def initial_meta_state(
        self, spec: LearnerSpec, params: Params, adapted: list[str]
    ) -> MetaState:
        return initial_rates(spec.inner, params, adapted)

    def first_order(self, spec: LearnerSpec, progress: float) -> bool:
        return self.always_first_order

    def update(
        self,
        learner: AnyLearner,
        meta: MetaState,
        name: str,
        step: int,
        fast: Tensor,
        grad: Tensor,
    ) -> Tensor:
        """One inner step of parameter ``name``: gradient descent at its inner rate."""
        return fast - inner_rate(learner, meta, name, step, grad) * grad

    def support_loss(
        self, learner: AnyLearner, params: Params, x: Tensor, y: Tensor
    ) -> Callable[[Params], Tensor]:
        """The support loss as a function of the adapted parameters (summed over the groups of
        a group, so that each group's gradient is its own)."""
        if self.head_only:
            features = learner.features(params, x)

            def head_loss(fast: Params) -> Tensor:
                return learner.loss(learner.head(fast, features), y).sum()

            return head_loss

        def loss(fast: Params) -> Tensor:
            return learner.loss(learner.forward({**params, **fast}, x), y).sum()

        return loss

    def adapt(
        self,
        learner: AnyLearner,
        params: Params,
        meta: MetaState,
        x: Tensor,
        y: Tensor,
        first_order: bool,
    ) -> Trajectory:
        names = learner.adapted_names
        support_loss = self.support_loss(learner, params, x, y)
        fast = {n: params[n] for n in names}
        trajectory = []
        for step in range(learner.spec.inner.steps):
            grads = torch.func.grad(support_loss)(fast)
            if first_order:
                grads = {n: g.detach() for n, g in grads.items()}
            fast = {n: self.update(learner, meta, n, step, fast[n], grads[n]) for n in names}
            trajectory.append({**params, **fast})
        return trajectory

    def predict(self, learner: AnyLearner, params: Params, state: Trajectory, x: Tensor) -> Tensor:
        return learner.forward(state[-1], x)


class MAMLPlusPlus(GradientBased):
    """MAML++: multi-step loss and derivative-order annealing on top of MAML."""

    uses = INNER_LOOP | {"outer.msl_fraction", "outer.first_order_fraction"}

    def __init__(self) -> None:
        super().__init__("mamlpp", learned_rates=True)
        self.requires = {"inner.learned": True, "inner.granularity": "per_layer_per_step"}

    def check(self, spec: LearnerSpec) -> None:
        super().check(spec)
        if spec.inner.granularity != "per_layer_per_step":
            raise ValueError("mamlpp uses per_layer_per_step inner learning rates")

    def first_order(self, spec: LearnerSpec, progress: float) -> bool:
        return progress < spec.outer.first_order_fraction

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


REGISTERED = (
    GradientBased("maml"),
    GradientBased("fomaml", first_order=True),
    GradientBased("metasgd", learned_rates=True),
    GradientBased("anil", head_only=True),
    MAMLPlusPlus(),
)
