"""iMAML's implicit meta-gradient (Rajeswaran et al., 2019) against finite differences of the
query loss at the solution of the proximally regularized inner problem, re-solved at every
shifted initialization."""

from __future__ import annotations

import torch

from metasearch.algorithms import get_algorithm
from metasearch.engines import VMAP
from metasearch.learners.learner import build_learner
from metasearch.spec import LearnerSpec
from metasearch.tasks.base import TaskBatch

STEPS, LR, LAM = 100, 0.05, 10.0
"""Enough inner steps at this rate for the regularized problem to converge in float64; ``LAM``
above the support loss's most negative curvature here (about -3.7), so that the problem is
strongly convex and the implicit function theorem applies."""


def small_case() -> tuple[object, object, TaskBatch]:
    spec = LearnerSpec.from_dict(
        {
            "architecture": {"family": "mlp", "widths": [6], "activation": "tanh",
                             "normalization": "none"},
            "inner": {"steps": STEPS, "lr": LR},
            "outer": {"algorithm": "imaml", "meta_batch_size": 2,
                      "options": {"lam": LAM, "cg_steps": 60}},
        }
    )  # fmt: skip
    learner = build_learner(spec, (3,), 1, "regression", seed=0, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    batch = TaskBatch(*(torch.randn(2, 5, *s, generator=g, dtype=torch.float64)
                        for s in ((3,), (1,), (3,), (1,))))  # fmt: skip
    return get_algorithm("imaml"), learner, batch


def query_loss_at_solution(algorithm, learner, batch: TaskBatch) -> float:  # type: ignore[no-untyped-def]
    total = 0.0
    for sx, sy, qx, qy in zip(*batch, strict=True):
        adapted = algorithm.adapt(learner, learner.params, learner.meta_state, sx, sy, True)[-1]
        total += learner.loss(learner.forward(adapted, qx), qy).item()
    return total / batch.n_tasks


def test_the_implicit_meta_gradient_matches_finite_differences() -> None:
    algorithm, learner, batch = small_case()
    step = VMAP.meta_gradients(algorithm, [learner], batch, 0.5)[0]
    tensors = learner.meta_tensors()
    generator, eps = torch.Generator().manual_seed(1), 1e-6
    for _ in range(3):
        direction = [torch.randn(t.shape, generator=generator, dtype=t.dtype) for t in tensors]
        values = []
        for sign in (1, -1):
            with torch.no_grad():
                for t, d in zip(tensors, direction, strict=True):
                    t.add_(sign * eps * d)
            values.append(query_loss_at_solution(algorithm, learner, batch))
            with torch.no_grad():
                for t, d in zip(tensors, direction, strict=True):
                    t.sub_(sign * eps * d)
        numeric = (values[0] - values[1]) / (2 * eps)
        analytic = sum((g * d).sum() for g, d in zip(step.grads, direction, strict=True)).item()
        assert abs(analytic - numeric) <= 1e-4 * abs(numeric) + 1e-7, (analytic, numeric)
