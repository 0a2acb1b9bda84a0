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

from collections.abc import Callable, Sequence
from typing import Any

from metasearch.algorithms import get_algorithm
from metasearch.errors import SpecError
from metasearch.evaluation.checkpoint import CheckpointStore
from metasearch.evaluation.evaluator import (
    MetaTraining,
    Report,
    TrainingInterrupted,
    check_compatible,
    train,
)
from metasearch.evaluation.progress import Observer
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
    checkpoints: Sequence[CheckpointStore | None] | None = None,
    stop: Callable[[], bool] | None = None,
    observe: Observer | None = None,
) -> list[EvaluationResult | TrainingInterrupted]:
    """Meta-trains every spec of ``specs`` on ``source`` together; one result per spec, in order.

    The loop is :func:`~metasearch.evaluation.evaluator.train`'s, as for one candidate:
    ``reports[i]`` (optional) prunes candidate ``i`` as ``report`` does in ``evaluate``, a
    pruned, failed or finished candidate leaves the batch and the others go on, and
    ``checkpoints[i]`` is candidate ``i``'s store. Where ``stop()`` turns true, the candidates
    still training are checkpointed and their results are the
    :class:`~metasearch.evaluation.TrainingInterrupted` that says where (those that ended
    before keep theirs). Raises :class:`SpecError` where the specs differ in more than
    :data:`FREE_FIELDS` or one cannot learn ``source``'s tasks. ``observe`` is told the
    progress of the population's first candidate still training (all train in step).
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
    interrupted: TrainingInterrupted | None = None
    try:
        train(trainings, reports, checkpoints, stop, observe)
    except TrainingInterrupted as error:  # the candidates still training: no result
        interrupted = error
    return [training.result() if training.ended else interrupted for training in trainings]


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
