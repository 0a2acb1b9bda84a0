"""Scoring a learner on a fixed, seeded set of held-out tasks."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from metasearch.algorithms import MetaAlgorithm
from metasearch.engines import Engine, choose_engine
from metasearch.learners.learner import Learner
from metasearch.spec import NormalizationAtPrediction
from metasearch.tasks.base import Split, TaskBatch, TaskSource

DEFAULT_EVAL_SEED = 20170309  # MAML's arXiv date: any fixed number serves, if it never changes


@dataclass(frozen=True)
class Scores:
    """Mean query loss and accuracy after adaptation, each with a 95% confidence half-width
    over tasks (normal approximation: 1.96 standard errors), named as in
    :class:`~metasearch.evaluation.EvaluationResult`. Accuracy is ``None`` for regression."""

    query_loss: float
    query_loss_ci95: float
    accuracy: float | None
    accuracy_ci95: float | None
    n_tasks: int
    seconds_per_task: float


def held_out_tasks(source: TaskSource, split: Split, n_tasks: int, seed: int) -> TaskBatch:
    """The same ``n_tasks`` tasks of ``split`` for every learner and every device."""
    generator = torch.Generator().manual_seed(seed)
    return source.sample(split, n_tasks, generator)


def mean_ci95(values: Tensor) -> tuple[float, float]:
    """Mean and 95% confidence half-width of per-task values."""
    values = values.double()
    n = values.numel()
    spread = values.std().item() if n > 1 else float("nan")
    return values.mean().item(), 1.96 * spread / math.sqrt(n)


def score(
    algorithm: MetaAlgorithm,
    learner: Learner,
    tasks: TaskBatch,
    chunk_size: int = 32,
    normalization: NormalizationAtPrediction | None = None,
    engine: Engine | None = None,
) -> Scores:
    """Adapts to each task's support set and scores its query set, ``chunk_size`` tasks at once,
    with batch normalization at prediction as ``normalization`` says (by default the spec's),
    on ``engine`` (by default the one :func:`~metasearch.engines.choose_engine` picks)."""
    engine = engine or choose_engine(learner, log=False)
    losses, correct = [], []
    start = time.perf_counter()
    for chunk in tasks.chunks(chunk_size):
        outputs = engine.predict_tasks(algorithm, learner, chunk, normalization)
        losses.append(torch.stack([learner.loss(o, y) for o, y in zip(outputs, chunk.query_y)]))
        if learner.task_kind == "classification":
            correct.append((outputs.argmax(-1) == chunk.query_y).double().mean(1))
    task_losses = torch.cat(losses).cpu()
    seconds = (time.perf_counter() - start) / tasks.n_tasks
    loss, loss_ci = mean_ci95(task_losses)
    if not correct:
        return Scores(loss, loss_ci, None, None, tasks.n_tasks, seconds)
    accuracy, accuracy_ci = mean_ci95(torch.cat(correct).cpu())
    return Scores(loss, loss_ci, accuracy, accuracy_ci, tasks.n_tasks, seconds)
