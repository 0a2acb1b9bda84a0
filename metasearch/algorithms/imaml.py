"""iMAML (Rajeswaran, Finn, Kakade and Levine, 2019): implicit meta-gradients.

A task's adapted parameters minimize the proximally regularized support loss
``L_s(phi) + lam / 2 * ||phi - theta||^2``, found by ``inner.steps`` gradient steps at rate
``inner.lr`` from ``phi = theta``. The meta-gradient does not flow through those steps: at the
solution ``phi*``, ``d phi* / d theta = (I + H / lam)^-1`` with ``H`` the Hessian of the support
loss there, so the meta-gradient is ``x = (I + H / lam)^-1 grad L_q(phi*)``, solved by
``options.cg_steps`` iterations of conjugate gradient on Hessian-vector products. Memory does
not grow with the inner steps. The engines differentiate the surrogate
``<theta, stop_gradient(x)>``, whose gradient is ``x``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from metasearch.algorithms.base import AnyLearner, broadcast_to_task, task_sum
from metasearch.algorithms.gradient_based import INNER_LOOP, GradientBased, Trajectory
from metasearch.algorithms.inner_rates import inner_rate
from metasearch.learners.learner import MetaState, Params


class IMAMLOptions(BaseModel):
    """``lam``: the proximal regularization's strength, how close adaptation stays to the
    initialization; ``cg_steps``: conjugate-gradient iterations per task."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    lam: float = Field(2.0, gt=0)
    cg_steps: int = Field(5, ge=1, le=100)


class IMAML(GradientBased):
    options = IMAMLOptions
    query_gradient = False  # implicit, and only for the adapted parameters
    uses = INNER_LOOP | {"outer.options.lam", "outer.options.cg_steps"}

    def __init__(self) -> None:
        super().__init__("imaml", learned_rates=False)

    def adapt(
        self,
        learner: AnyLearner,
        params: Params,
        meta: MetaState,
        x: Tensor,
        y: Tensor,
        first_order: bool,
    ) -> Trajectory:
        names, lam = learner.adapted_names, self.options_of(learner.spec).lam
        theta = {n: params[n].detach() for n in names}
        support_loss = self.support_loss(learner, params, x, y)

        def regularized(fast: Params) -> Tensor:
            distance = sum((fast[n] - theta[n]).pow(2).sum() for n in names)
            return support_loss(fast) + lam / 2 * distance  # type: ignore[operator]

        fast = dict(theta)
        for step in range(learner.spec.inner.steps):
            grads = torch.func.grad(regularized)(fast)
            fast = {
                n: (fast[n] - inner_rate(learner, meta, n, step, grads[n]) * grads[n]).detach()
                for n in names
            }
        return [{**params, **fast}]

    def outer_objective(
        self,
        learner: AnyLearner,
        params: Params,
        meta: MetaState,
        support: tuple[Tensor, Tensor],
        query: tuple[Tensor, Tensor],
        progress: float,
    ) -> tuple[Tensor, Tensor]:
        names, options = learner.adapted_names, self.options_of(learner.spec)
        fixed = {n: p.detach() for n, p in params.items()}
        adapted = self.adapt(learner, fixed, meta, *support, True)[-1]
        solution = {n: adapted[n] for n in names}

        def query_loss(fast: Params) -> Tensor:
            return learner.loss(learner.forward({**fixed, **fast}, query[0]), query[1])

        query_grad = torch.func.grad(lambda fast: query_loss(fast).sum())(solution)
        support_loss = self.support_loss(learner, fixed, *support)

        def curvature(vector: Params) -> Params:  # (I + H / lam) vector
            def along(fast: Params) -> Tensor:
                grads = torch.func.grad(support_loss)(fast)
                return sum((grads[n] * vector[n]).sum() for n in names)  # type: ignore[return-value]

            hessian_vector = torch.func.grad(along)(solution)
            return {n: vector[n] + hessian_vector[n] / options.lam for n in names}

        implicit = conjugate_gradient(learner, curvature, query_grad, options.cg_steps)
        surrogate = sum(task_sum(learner, params[n] * implicit[n].detach()) for n in names)
        return surrogate, query_loss(solution).detach()  # type: ignore[return-value]


def conjugate_gradient(
    learner: AnyLearner, apply: Callable[[Params], Params], target: Params, steps: int
) -> Params:
    """``steps`` iterations of conjugate gradient for ``apply(x) = target`` from ``x = 0``, each
    task on its own (``apply`` symmetric positive definite)."""

    def dot(a: Params, b: Params) -> Tensor:
        return sum(task_sum(learner, a[n] * b[n]) for n in a)  # type: ignore[return-value]

    def scaled(values: Tensor, like: Tensor) -> Tensor:
        return broadcast_to_task(learner, values, like)

    solution = {n: torch.zeros_like(t) for n, t in target.items()}
    residual = dict(target)
    direction = dict(target)
    norm = dot(residual, residual)
    for _ in range(steps):
        applied = apply(direction)
        curvature = dot(direction, applied)
        alpha = torch.where(curvature > 0, norm / curvature.clamp_min(1e-30), 0.0)
        solution = {n: solution[n] + scaled(alpha, t) * direction[n] for n, t in target.items()}
        residual = {n: residual[n] - scaled(alpha, t) * applied[n] for n, t in target.items()}
        new_norm = dot(residual, residual)
        beta = torch.where(norm > 0, new_norm / norm.clamp_min(1e-30), 0.0)
        direction = {n: residual[n] + scaled(beta, t) * direction[n] for n, t in target.items()}
        norm = new_norm
    return solution


REGISTERED = (IMAML(),)
