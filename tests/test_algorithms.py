"""Meta-gradients of the algorithms, on both engines, against independent references.

The references below use plain ``torch.autograd`` with one Python loop over tasks, and central
finite differences, all in float64 so that agreement is tight. Every test that computes a
meta-gradient runs it on the vmap engine (the reference) and on the grouped engine.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from metasearch.algorithms import get_algorithm, step_weights
from metasearch.engines import GROUPED, VMAP, Engine
from metasearch.learners import Learner, build_learner
from metasearch.learners.networks import BatchStatNorm
from metasearch.spec import LearnerSpec
from metasearch.tasks import TaskBatch

WAYS, SHOTS, QUERY, TASKS = 3, 2, 3, 4
ENGINES = pytest.mark.parametrize("engine", [VMAP, GROUPED], ids=["vmap", "grouped"])


def meta_gradients(
    algorithm: str, learner: Learner, batch: TaskBatch, progress: float, engine: Engine
) -> list:
    return engine.meta_gradients(get_algorithm(algorithm), [learner], batch, progress)[0].grads


def rate(learner: Learner, name: str, step: int) -> Tensor:
    """The inner rate of ``name`` at ``step``, read from the stored meta-state."""
    rates = learner.meta_state.get("inner_lr.*", learner.meta_state.get(f"inner_lr.{name}"))
    assert rates is not None
    return rates[step if rates.shape[0] > 1 else 0]


def rates_of(learner: Learner) -> dict[str, Tensor]:
    return {n.removeprefix("inner_lr."): v for n, v in learner.meta_state.items()}


def tiny_learner(algorithm: str, inner: dict | None = None, **architecture) -> Learner:
    spec = LearnerSpec.from_dict(
        {
            "architecture": {"widths": [3, 4], "normalization": "batch", **architecture},
            "inner": {"steps": 2, "lr": 0.3, **(inner or {})},
            "outer": {"algorithm": algorithm},
        }
    )
    learner = build_learner(spec, (1, 6, 6), WAYS, "classification", seed=1, dtype=torch.float64)
    with torch.no_grad():  # make learned rates differ between tensors and steps
        for i, value in enumerate(learner.meta_state.values()):
            value.mul_(1 + 0.1 * torch.rand_like(value) + 0.05 * i)
    return learner


def random_tasks(seed: int = 0) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(WAYS).repeat_interleave
    return TaskBatch(
        torch.randn(TASKS, WAYS * SHOTS, 1, 6, 6, generator=g, dtype=torch.float64),
        labels(SHOTS).expand(TASKS, -1),
        torch.randn(TASKS, WAYS * QUERY, 1, 6, 6, generator=g, dtype=torch.float64),
        labels(QUERY).expand(TASKS, -1),
    )


def reference_inner_loop(
    learner: Learner,
    params: dict[str, Tensor],
    x: Tensor,
    y: Tensor,
    first_order: bool,
    adapted: list[str],
) -> list[dict[str, Tensor]]:
    """Plain autograd, one task: the fast weights after every inner step."""
    fast, trajectory = dict(params), []
    for step in range(learner.spec.inner.steps):
        loss = F.cross_entropy(functional_call(learner.network, fast, (x,)), y)
        grads = torch.autograd.grad(loss, [fast[n] for n in adapted], create_graph=not first_order)
        fast = {
            **fast,
            **{n: fast[n] - rate(learner, n, step) * g for n, g in zip(adapted, grads)},
        }
        trajectory.append(fast)
    return trajectory


def reference_objective(
    learner: Learner,
    batch: TaskBatch,
    first_order: bool,
    weights: list[float] | None = None,
    adapted: list[str] | None = None,
) -> Tensor:
    """Mean over tasks of the (multi-step weighted) query loss, one task at a time."""
    adapted = adapted or list(learner.params)
    total = torch.zeros((), dtype=torch.float64)
    for sx, sy, qx, qy in zip(*batch):
        trajectory = reference_inner_loop(learner, learner.params, sx, sy, first_order, adapted)
        step_losses = [
            F.cross_entropy(functional_call(learner.network, fast, (qx,)), qy)
            for fast in trajectory
        ]
        weights_ = weights or [0.0] * (len(step_losses) - 1) + [1.0]
        total = total + sum(w * loss for w, loss in zip(weights_, step_losses))
    return total / batch.n_tasks


def reference_grads(learner: Learner, objective: Tensor) -> list[Tensor]:
    return list(torch.autograd.grad(objective, learner.meta_tensors(), allow_unused=True))


def assert_grads_close(actual: list, expected: list) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a is not None and e is not None
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-11)


def directional_finite_difference(
    learner: Learner, batch: TaskBatch, direction: list[Tensor]
) -> float:
    """Central difference of the second-order objective along ``direction``."""
    eps = 1e-6
    tensors = learner.meta_tensors()

    def shifted(sign: float) -> float:
        with torch.no_grad():
            for t, d in zip(tensors, direction):
                t.add_(sign * eps * d)
        value = reference_objective(learner, batch, first_order=False).item()
        with torch.no_grad():
            for t, d in zip(tensors, direction):
                t.sub_(sign * eps * d)
        return value

    return (shifted(1.0) - shifted(-1.0)) / (2 * eps)


@pytest.mark.slow
@ENGINES
@pytest.mark.parametrize("normalization", ["batch", "layer", "instance", "none"])
def test_maml_meta_gradient_matches_per_task_loop_and_finite_differences(
    normalization: str, engine: Engine
) -> None:
    learner, batch = tiny_learner("maml", normalization=normalization), random_tasks()
    batched = meta_gradients("maml", learner, batch, 0.0, engine)
    assert_grads_close(
        batched, reference_grads(learner, reference_objective(learner, batch, False))
    )
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        direction = [
            torch.randn(t.shape, generator=g, dtype=t.dtype) for t in learner.meta_tensors()
        ]
        analytic = sum((a * d).sum() for a, d in zip(batched, direction)).item()
        numeric = directional_finite_difference(learner, batch, direction)
        assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-8)


def test_second_order_terms_matter() -> None:
    """Guards the references themselves: first- and second-order gradients must differ."""
    learner, batch = tiny_learner("maml"), random_tasks()
    first = reference_grads(learner, reference_objective(learner, batch, True))
    second = reference_grads(learner, reference_objective(learner, batch, False))
    assert max((a - b).abs().max().item() for a, b in zip(first, second)) > 1e-4


@ENGINES
def test_first_order_maml_matches_first_order_reference(engine: Engine) -> None:
    learner, batch = tiny_learner("fomaml"), random_tasks()
    batched = meta_gradients("fomaml", learner, batch, 0.0, engine)
    assert_grads_close(batched, reference_grads(learner, reference_objective(learner, batch, True)))


@ENGINES
def test_metasgd_learns_per_parameter_rates_with_exact_gradients(engine: Engine) -> None:
    learner = tiny_learner("metasgd", {"learned": True, "granularity": "per_parameter"})
    batch = random_tasks()
    for name, value in rates_of(learner).items():
        assert value.shape == (1, *learner.params[name].shape) and value.requires_grad
    batched = meta_gradients("metasgd", learner, batch, 0.0, engine)
    assert_grads_close(
        batched, reference_grads(learner, reference_objective(learner, batch, False))
    )
    lr_grads = dict(zip(rates_of(learner), batched[len(learner.params) :]))
    body = list(learner.network.body)
    before_norm = {  # a bias that batch normalization subtracts again: its rate cannot matter
        f"body.{i}.bias" for i, m in enumerate(body[:-1]) if isinstance(body[i + 1], BatchStatNorm)
    }
    assert before_norm == {"body.0.bias", "body.4.bias"}
    for name, grad in lr_grads.items():
        if name in before_norm:
            assert grad.abs().max() < 1e-12, name
        else:
            assert grad.abs().max() > 1e-4, name
    direction = [torch.zeros_like(t) for t in learner.params.values()]
    direction += [torch.randn_like(r) for r in learner.meta_state.values()]
    analytic = sum((a * d).sum() for a, d in zip(batched, direction)).item()
    assert analytic == pytest.approx(
        directional_finite_difference(learner, batch, direction), rel=1e-5
    )


@ENGINES
def test_anil_adapts_the_head_only_and_matches_reference(engine: Engine) -> None:
    learner, batch = tiny_learner("anil"), random_tasks()
    head = [n for n in learner.params if n.startswith("head.")]
    assert learner.adapted_names == head
    trajectory = get_algorithm("anil").adapt(
        learner, learner.params, learner.meta_state, batch.support_x[0], batch.support_y[0], True
    )
    for name, value in trajectory[-1].items():
        changed = not torch.equal(value, learner.params[name])
        assert changed == (name in head), name
    batched = meta_gradients("anil", learner, batch, 0.0, engine)
    expected = reference_grads(learner, reference_objective(learner, batch, False, adapted=head))
    assert_grads_close(batched, expected)


@ENGINES
@pytest.mark.parametrize("progress, first_order", [(0.1, True), (0.6, False)])
def test_mamlpp_multi_step_loss_and_derivative_order_annealing(
    progress: float, first_order: bool, engine: Engine
) -> None:
    learner = tiny_learner(
        "mamlpp", {"learned": True, "granularity": "per_layer_per_step", "steps": 3}
    )
    batch = random_tasks()
    rates = rates_of(learner)
    assert all(r.shape == (3,) for r in rates.values()) and set(rates) == set(learner.params)
    weights = step_weights(3, progress, learner.spec.outer.msl_fraction)
    batched = meta_gradients("mamlpp", learner, batch, progress, engine)
    expected = reference_grads(learner, reference_objective(learner, batch, first_order, weights))
    assert_grads_close(batched, expected)


def test_step_weights_anneal_from_uniform_to_the_last_step() -> None:
    assert step_weights(4, 0.0, 0.1) == pytest.approx([0.25] * 4)
    mid = step_weights(4, 0.05, 0.1)
    assert sum(mid) == pytest.approx(1.0) and mid[0] == pytest.approx(0.125)
    late = step_weights(4, 0.5, 0.1)
    assert late[:3] == pytest.approx([0.0075] * 3) and late[3] == pytest.approx(1 - 3 * 0.0075)
    assert step_weights(1, 0.0, 0.1) == [1.0]


@ENGINES
def test_reptile_moves_towards_the_mean_of_sgd_adapted_weights(engine: Engine) -> None:
    learner, batch = tiny_learner("reptile", {"steps": 3}), random_tasks()
    names = list(learner.params)
    adapted_sum = {n: torch.zeros_like(p) for n, p in learner.params.items()}
    for sx, sy, qx, qy in zip(*batch):
        x, y = torch.cat([sx, qx]), torch.cat([sy, qy])
        fast = reference_inner_loop(learner, learner.params, x, y, True, names)[-1]
        for n in names:
            adapted_sum[n] += fast[n].detach()
    expected = [learner.params[n].detach() - adapted_sum[n] / batch.n_tasks for n in names]
    assert_grads_close(meta_gradients("reptile", learner, batch, 0.0, engine), expected)


@ENGINES
def test_protonet_logits_are_negative_squared_distances_to_class_means(engine: Engine) -> None:
    learner, batch = tiny_learner("protonet", {"steps": 0}), random_tasks()
    assert not any(n.startswith("head.") for n in learner.params)
    logits = engine.predict_tasks(get_algorithm("protonet"), learner, batch)
    for t in range(TASKS):
        support = learner.network.features(batch.support_x[t])
        query = learner.network.features(batch.query_x[t])
        prototypes = torch.stack([support[batch.support_y[t] == c].mean(0) for c in range(WAYS)])
        torch.testing.assert_close(logits[t], -(torch.cdist(query, prototypes) ** 2))


@ENGINES
def test_protonet_meta_gradient_matches_per_task_loop(engine: Engine) -> None:
    learner, batch = tiny_learner("protonet", {"steps": 0}), random_tasks()
    total = torch.zeros((), dtype=torch.float64)
    for sx, sy, qx, qy in zip(*batch):
        support = learner.features(learner.params, sx)
        prototypes = torch.stack([support[sy == c].mean(0) for c in range(WAYS)])
        logits = -(torch.cdist(learner.features(learner.params, qx), prototypes) ** 2)
        total = total + F.cross_entropy(logits, qy) / batch.n_tasks
    batched = meta_gradients("protonet", learner, batch, 0.0, engine)
    assert_grads_close(batched, reference_grads(learner, total))


@ENGINES
@pytest.mark.parametrize("normalization", ["batch", "layer", "instance", "none"])
def test_each_task_is_normalized_by_its_own_statistics(normalization: str, engine: Engine) -> None:
    """Batched prediction equals predicting each task alone: no statistics leak across tasks."""
    learner, batch = tiny_learner("maml", normalization=normalization), random_tasks()
    algorithm = get_algorithm("maml")
    together = engine.predict_tasks(algorithm, learner, batch)
    for t in range(TASKS):
        alone = engine.predict_tasks(algorithm, learner, TaskBatch(*(x[t : t + 1] for x in batch)))
        torch.testing.assert_close(together[t], alone[0])


def test_scalar_rate_is_shared_and_per_layer_rates_are_separate() -> None:
    scalar = tiny_learner("maml", {"learned": True})
    assert list(scalar.meta_state) == ["inner_lr.*"]
    assert len(scalar.meta_tensors()) == len(scalar.params) + 1
    per_layer = tiny_learner("maml", {"learned": True, "granularity": "per_layer"})
    assert set(rates_of(per_layer)) == set(per_layer.params)
    fixed = tiny_learner("maml")
    assert not any(v.requires_grad for v in fixed.meta_state.values())
    assert len(fixed.meta_tensors()) == len(fixed.params)
