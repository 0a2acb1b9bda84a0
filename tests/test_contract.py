"""The contract every registered algorithm meets, on every engine and learner family.

Nothing here names an algorithm: each check runs over :func:`metasearch.registry.registered`,
so a new algorithm is checked by registering it. For each algorithm, family (conv, mlp, cells)
and engine:

- the vmap engine's meta-gradient equals a float64 loop over tasks of the algorithm's own
  per-task objective, and, where the meta-gradient is the exact gradient of that objective
  (second order, the query loss's own), central finite differences of it;
- the grouped engine equals the vmap engine, meta-gradients and predictions (the cells family
  runs on vmap alone, and asking for grouped says so);
- adapting to a support set lowers its loss, where the algorithm adapts parameters;
- meta-training interrupted by a stop and resumed from its checkpoint ends where an
  uninterrupted run ends;
- an exported learner loads with the same tensors and predicts what the learner predicts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from metasearch import Budget, evaluate, load_learner, registry
from metasearch.algorithms import MetaAlgorithm, get_algorithm
from metasearch.engines import GROUPED, VMAP, choose_engine
from metasearch.errors import SpecError
from metasearch.evaluation import CheckpointStore, TrainingInterrupted
from metasearch.export import export_learner
from metasearch.learners import Learner, build_learner
from metasearch.spec import LearnerSpec
from metasearch.tasks import TaskBatch
from metasearch.tasks.classification import ClassificationSource

WAYS, SHOTS, QUERY, TASKS, SIDE = 3, 2, 2, 3, 8
PROGRESS = 0.5
"""Past every algorithm's first-order phase (MAML++ anneals the first quarter)."""
# Smooth activations and average pooling where the family allows: a central difference that
# steps across a kink of ReLU or max-pooling measures nothing.
CELL_GENOTYPE = {
    "normal": [[["conv_3x3", 0], ["skip_connect", 1]]],
    "reduce": [[["avg_pool_3x3", 0], ["conv_3x3", 1]]],
    "layout": ["reduce", "normal"],
}
FAMILIES = {
    "conv": {"family": "conv", "widths": [3, 4], "activation": "tanh", "pooling": "avg"},
    "mlp": {"family": "mlp", "widths": [6, 5], "activation": "tanh"},
    "cells": {"family": "cells", "widths": [4], "genotype": CELL_GENOTYPE},
}
NAMES = [algorithm.name for algorithm in registry.registered()]
ALGORITHMS = pytest.mark.parametrize("name", NAMES)
# The fast tier checks every algorithm on the MLP family; the full suite on every family.
EVERY_FAMILY = pytest.mark.parametrize(
    "family", [pytest.param(f, marks=() if f == "mlp" else pytest.mark.slow) for f in FAMILIES]
)


def spec_of(name: str, family: str, **outer: Any) -> LearnerSpec:
    """A small spec of algorithm ``name``: two inner steps, plus what the algorithm requires."""
    data: dict[str, dict[str, Any]] = {
        "architecture": dict(FAMILIES[family]),
        "inner": {"steps": 2, "lr": 0.1},
        "outer": {"algorithm": name, "meta_batch_size": 2, **outer},
    }
    for field, value in get_algorithm(name).requires.items():
        section, key = field.split(".")
        data[section][key] = value
    return LearnerSpec.from_dict(data)


def learner_of(name: str, family: str, dtype: torch.dtype = torch.float64) -> Learner:
    """A float64 learner whose meta-state is moved off its initial values (a zero output layer
    of a learned optimizer, rates all equal), so that every meta-tensor matters."""
    spec = spec_of(name, family)
    learner = build_learner(spec, (1, SIDE, SIDE), WAYS, "classification", seed=1, dtype=dtype)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for value in learner.meta_state.values():
            value.add_(0.05 * torch.rand(value.shape, generator=generator, dtype=dtype))
    return learner


def random_tasks(dtype: torch.dtype = torch.float64, seed: int = 0) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(WAYS).repeat_interleave
    shape = (1, SIDE, SIDE)
    return TaskBatch(
        torch.randn(TASKS, WAYS * SHOTS, *shape, generator=g, dtype=dtype),
        labels(SHOTS).expand(TASKS, -1),
        torch.randn(TASKS, WAYS * QUERY, *shape, generator=g, dtype=dtype),
        labels(QUERY).expand(TASKS, -1),
    )


def loop_objective(algorithm: MetaAlgorithm, learner: Learner, batch: TaskBatch) -> Tensor:
    """The mean task objective, one task after another, on the plain learner (no engine)."""
    total = torch.zeros((), dtype=torch.float64)
    for sx, sy, qx, qy in zip(*batch, strict=True):
        objective, _ = algorithm.outer_objective(
            learner, learner.params, learner.meta_state, (sx, sy), (qx, qy), PROGRESS
        )
        total = total + objective / batch.n_tasks
    return total


def shifted_objective(
    algorithm: MetaAlgorithm, learner: Learner, batch: TaskBatch, direction: list, step: float
) -> float:
    """The loop objective with every meta-tensor moved by ``step * direction``, then restored."""
    tensors = learner.meta_tensors()
    with torch.no_grad():
        for t, d in zip(tensors, direction, strict=True):
            t.add_(step * d)
    value = loop_objective(algorithm, learner, batch).item()
    with torch.no_grad():
        for t, d in zip(tensors, direction, strict=True):
            t.sub_(step * d)
    return value


def exact(algorithm: MetaAlgorithm, spec: LearnerSpec) -> bool:
    """Whether the meta-gradient is the exact gradient of the objective's value."""
    return algorithm.query_gradient and not algorithm.first_order(spec, PROGRESS)


def assert_all_close(actual: list, expected: list, rtol: float, atol: float) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        assert (a is None) == (e is None)
        if a is not None:
            torch.testing.assert_close(a, e, rtol=rtol, atol=atol)


@ALGORITHMS
@EVERY_FAMILY
def test_vmap_meta_gradient_equals_a_per_task_loop_and_finite_differences(
    name: str, family: str
) -> None:
    algorithm, learner, batch = get_algorithm(name), learner_of(name, family), random_tasks()
    step = VMAP.meta_gradients(algorithm, [learner], batch, PROGRESS)[0]
    tensors = learner.meta_tensors()
    loop = torch.autograd.grad(
        loop_objective(algorithm, learner, batch), tensors, allow_unused=True
    )
    assert_all_close(step.grads, list(loop), rtol=1e-9, atol=1e-11)
    assert step.task_losses.shape == (TASKS,) and torch.isfinite(step.task_losses).all()
    assert any(g is not None and g.abs().max() > 1e-6 for g in step.grads)
    if not exact(algorithm, learner.spec):
        return
    # A small step, as the cells family keeps ReLU: float64's rounding costs ~1e-8 of it.
    generator, eps = torch.Generator().manual_seed(3), 1e-8
    for _ in range(2):
        direction = [torch.randn(t.shape, generator=generator, dtype=t.dtype) for t in tensors]
        numeric = (
            shifted_objective(algorithm, learner, batch, direction, eps)
            - shifted_objective(algorithm, learner, batch, direction, -eps)
        ) / (2 * eps)
        analytic = sum(
            (g * d).sum() for g, d in zip(step.grads, direction, strict=True) if g is not None
        ).item()
        assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-6)


@ALGORITHMS
@EVERY_FAMILY
def test_the_grouped_engine_equals_the_vmap_engine(name: str, family: str) -> None:
    algorithm, learner, batch = get_algorithm(name), learner_of(name, family), random_tasks()
    if family == "cells":
        assert choose_engine(learner) is VMAP
        with pytest.raises(SpecError, match="grouped engine cannot run"):
            choose_engine(learner, "grouped")
        return
    assert choose_engine(learner) is GROUPED
    grouped = GROUPED.meta_gradients(algorithm, [learner], batch, PROGRESS)[0]
    mapped = VMAP.meta_gradients(algorithm, [learner], batch, PROGRESS)[0]
    assert_all_close(grouped.grads, mapped.grads, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(grouped.task_losses, mapped.task_losses, rtol=1e-9, atol=1e-11)
    for normalization in ("transductive", "support"):
        torch.testing.assert_close(
            GROUPED.predict_tasks(algorithm, learner, batch, normalization),
            VMAP.predict_tasks(algorithm, learner, batch, normalization),
            rtol=1e-9,
            atol=1e-11,
        )


@ALGORITHMS
@EVERY_FAMILY
def test_adaptation_lowers_the_support_loss(name: str, family: str) -> None:
    algorithm, learner, batch = get_algorithm(name), learner_of(name, family), random_tasks()
    if not learner.adapted_names:
        assert learner.spec.inner.steps == 0  # nothing adapts: no inner loop
        return
    params = {n: p.detach() for n, p in learner.params.items()}
    meta = {n: v.detach() for n, v in learner.meta_state.items()}
    for sx, sy, _, _ in zip(*batch, strict=True):
        before = learner.loss(learner.forward(params, sx), sy)
        state = algorithm.adapt(learner, params, meta, sx, sy, True)
        after = learner.loss(algorithm.predict(learner, params, state, sx), sy)
        assert after < before - 1e-4, (before.item(), after.item())


def image_source() -> ClassificationSource:
    """Random images, 24 classes of 5: enough for 3-way 2-shot tasks in every split."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (24 * 5, 1, SIDE, SIDE), generator=generator, dtype=torch.uint8)
    return ClassificationSource(
        images,
        torch.arange(24) * 5,
        torch.full((24,), 5),
        {"train": range(16), "val": range(16, 20), "test": range(20, 24)},
        ways=WAYS,
        shots=SHOTS,
        query_shots=QUERY,
    )


@ALGORITHMS
@EVERY_FAMILY
def test_a_resumed_run_ends_where_an_uninterrupted_one_does(
    name: str, family: str, tmp_path: Path
) -> None:
    spec, source = spec_of(name, family), image_source()
    budget = Budget(iterations=6, eval_every=3, eval_tasks=4)
    straight = evaluate(spec, source, budget)
    assert straight.status == "complete", straight.reason
    store = CheckpointStore(tmp_path / "trial", every=2)
    calls = iter(range(100))
    with pytest.raises(TrainingInterrupted, match="meta-iteration 4"):
        evaluate(spec, source, budget, checkpoints=store, stop=lambda: next(calls) == 3)
    resumed = evaluate(spec, source, budget, checkpoints=store)
    assert resumed.resumed_from == 4 and resumed.iterations == 6
    assert resumed.query_loss == pytest.approx(straight.query_loss, rel=1e-6)
    assert straight.learner is not None and resumed.learner is not None
    for key, tensor in straight.learner.state_tensors().items():
        torch.testing.assert_close(resumed.learner.state_tensors()[key], tensor)


@ALGORITHMS
@EVERY_FAMILY
def test_an_exported_learner_loads_and_predicts_as_the_learner(
    name: str, family: str, tmp_path: Path
) -> None:
    algorithm, learner = get_algorithm(name), learner_of(name, family, torch.float32)
    export_learner(learner, tmp_path / "learner", input_shape=(1, SIDE, SIDE))
    loaded = load_learner(tmp_path / "learner")
    assert loaded.spec == learner.spec
    assert set(loaded.learner.state_tensors()) == set(learner.state_tensors())
    for key, tensor in learner.state_tensors().items():
        assert torch.equal(loaded.learner.state_tensors()[key], tensor), key
    batch = random_tasks(torch.float32, seed=1)
    expected = VMAP.predict_tasks(algorithm, learner, batch, "support")
    for t in range(TASKS):
        adapted = loaded.adapt(batch.support_x[t], batch.support_y[t])
        torch.testing.assert_close(adapted(batch.query_x[t]), expected[t], rtol=1e-4, atol=1e-5)
