"""``evaluate_population(specs, source, budget)``: meta-train candidates of one shape together.

Candidates that differ only in their initialization (``init``), inner learning rate
(``inner.lr``) and outer optimizer (``outer.meta_lr``, ``outer.optimizer``) have parameters of
the same shapes and draw the same meta-batches under one budget, so every meta-step of all of
them is one batched computation (the engine's ``meta_gradients`` of them all). Each
candidate still has its own optimizer, divergence checks, pruning and score: the results are
those :func:`~metasearch.evaluation.evaluate` gives for each alone, except that
``meta_train_seconds`` is the wall-clock time of the whole population.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from metasearch.algorithms import get_algorithm
from metasearch.errors import SpecError
from metasearch.evaluation.evaluator import (
    OUT_OF_MEMORY,
    Diverged,
    MetaTraining,
    Report,
    check_compatible,
)
from metasearch.evaluation.progress import Observer, ProgressWatch
from metasearch.evaluation.result import Budget, EvaluationResult
from metasearch.evaluation.scoring import held_out_tasks
from metasearch.learners.learner import build_learner
from metasearch.spec import LearnerSpec
from metasearch.tasks.base import TaskSource

FREE_FIELDS = ("init", "inner.lr", "outer.meta_lr", "outer.optimizer")
"""What candidates of one population may differ in; everything else must be equal."""


def evaluate_population(
    specs: Sequence[LearnerSpec],
    source: TaskSource,
    budget: Budget | None = None,
    *,
    reports: Sequence[Report | None] | None = None,
    observe: Observer | None = None,
) -> list[EvaluationResult]:
    """Meta-trains every spec of ``specs`` on ``source`` together; one result per spec, in order.

    ``reports[i]`` (optional) prunes candidate ``i`` as ``report`` does in ``evaluate``; a pruned
    or failed candidate leaves the batch and the others go on. Raises :class:`SpecError` where
    the specs differ in more than :data:`FREE_FIELDS` or one cannot learn ``source``'s tasks.
    ``observe`` is told the progress of the population's first candidate still training (all
    train in step).
    """
    budget = budget or Budget()
    check_population(specs)
    reports = list(reports) if reports is not None else [None] * len(specs)
    if len(reports) != len(specs):
        raise ValueError(f"{len(specs)} specs but {len(reports)} reports")
    for spec in specs:
        check_compatible(spec, source)
    tasks = held_out_tasks(source, budget.eval_split, budget.eval_tasks, budget.eval_seed)
    algorithm = get_algorithm(specs[0].outer.algorithm)
    trainings = [
        MetaTraining(
            build_learner(
                spec, source.input_shape, source.n_outputs, source.kind, budget.seed, source.device
            ),
            source,
            budget,
            algorithm,
            tasks,
        )
        for spec in specs
    ]
    _run(trainings, reports, ProgressWatch(observe) if observe is not None else None)
    return [training.result() for training in trainings]


def check_population(specs: Sequence[LearnerSpec]) -> None:
    """Raises :class:`SpecError` unless ``specs`` (at least one) differ only in
    :data:`FREE_FIELDS`, naming the first fields that differ."""
    if not specs:
        raise SpecError("a population needs at least one candidate")
    shape = _shape(specs[0])
    for index, spec in enumerate(specs[1:], start=1):
        other = _shape(spec)
        if other != shape:
            fields = sorted(k for k in shape.keys() | other.keys() if shape.get(k) != other.get(k))
            raise SpecError(
                f"candidate {index} differs from candidate 0 in {', '.join(fields)}; a population "
                f"may differ only in {', '.join(FREE_FIELDS)}"
            )


def _shape(spec: LearnerSpec) -> dict[str, Any]:
    """The spec's fields, flattened to dotted names, without :data:`FREE_FIELDS`."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if prefix in FREE_FIELDS:
            return
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else key, item)
        else:
            flat[prefix] = value

    walk("", spec.model_dump(mode="json"))
    return flat


def _run(
    trainings: list[MetaTraining], reports: list[Report | None], watch: ProgressWatch | None
) -> None:
    """The outer loops of all ``trainings`` in step; a candidate leaves when it is over. Each
    candidate is charged the whole population's seconds per step."""
    first = trainings[0]
    generator = torch.Generator(device=first.source.device).manual_seed(first.budget.seed)
    active = list(range(len(trainings)))
    while active:
        started = time.perf_counter()
        batch = first.sample(generator)
        over = [i for i in active if trainings[i].over(batch)]
        for i in over:
            try:
                trainings[i].finish()
            except Diverged as error:
                trainings[i].failure = str(error)
        active = [i for i in active if i not in over]
        if not active:
            return
        learners = [trainings[i].train_learner for i in active]
        try:
            steps = first.engine.meta_gradients(
                first.algorithm, learners, batch, trainings[active[0]].progress()
            )
        except torch.OutOfMemoryError:
            for i in active:
                trainings[i].failure = OUT_OF_MEMORY
            return
        elapsed = first.elapsed(started)
        still = []
        for i, step in zip(active, steps, strict=True):
            try:
                if not trainings[i].apply(batch, step, reports[i], elapsed):
                    still.append(i)
            except Diverged as error:
                trainings[i].failure = str(error)
        active = still
        if watch is not None and active:
            trainings[active[0]].tell(watch)
