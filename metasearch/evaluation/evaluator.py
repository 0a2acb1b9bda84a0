"""``evaluate(spec, source, budget)``: meta-train one candidate and score it on held-out tasks."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import torch

from metasearch.algorithms import MetaAlgorithm, get_algorithm
from metasearch.errors import SpecError
from metasearch.evaluation.result import Budget, EvaluationResult, Status
from metasearch.evaluation.scoring import held_out_tasks, score
from metasearch.learners.learner import Learner, build_learner
from metasearch.spec import LearnerSpec
from metasearch.tasks.base import TaskBatch, TaskSource

log = logging.getLogger(__name__)

Report = Callable[[int, float], bool]
"""``report(iteration, validation_loss)`` returns True to stop the candidate (pruning)."""


class _Diverged(Exception):
    pass


def evaluate(
    spec: LearnerSpec,
    source: TaskSource,
    budget: Budget | None = None,
    *,
    report: Report | None = None,
) -> EvaluationResult:
    """Meta-trains ``spec`` on ``source``'s training tasks and scores it on held-out tasks.

    ``budget`` defaults to ``Budget()``. Runs on the source's device. Never raises for a
    candidate that diverges or runs out of memory: the result then has status ``failed`` and a
    reason. Raises :class:`SpecError` where the spec cannot work with the source at all.
    """
    budget = budget or Budget()
    check_compatible(spec, source)
    learner = build_learner(
        spec, source.input_shape, source.n_outputs, source.kind, budget.seed, source.device
    )
    tasks = held_out_tasks(source, budget.eval_split, budget.eval_tasks, budget.eval_seed)
    algorithm = get_algorithm(spec.outer.algorithm)
    training = _MetaTraining(learner, source, budget, algorithm, tasks)
    status: Status = "complete"
    reason = None
    try:
        if training.run(report):
            status, reason = "pruned", f"pruned at iteration {training.done}"
    except _Diverged as error:
        status, reason = "failed", str(error)
    except torch.OutOfMemoryError:
        status, reason = "failed", "ran out of device memory; lower meta_batch_size or widths"
    if status == "failed":
        log.info("candidate failed: %s", reason)
        return _failed(learner, reason, training)
    final = score(algorithm, learner, tasks)
    if not math.isfinite(final.loss):
        return _failed(learner, "query loss is not finite after meta-training", training)
    return EvaluationResult(
        status=status,
        query_loss=final.loss,
        query_loss_ci95=final.loss_ci95,
        accuracy=final.accuracy,
        accuracy_ci95=final.accuracy_ci95,
        n_parameters=learner.n_parameters(),
        meta_train_seconds=training.seconds,
        adaptation_seconds=final.seconds_per_task,
        iterations=training.done,
        curve=tuple(training.curve),
        reason=reason,
        learner=learner,
    )


def check_compatible(spec: LearnerSpec, source: TaskSource) -> None:
    """Raises :class:`SpecError` where ``spec`` cannot learn ``source``'s tasks."""
    if spec.outer.algorithm == "protonet" and source.kind != "classification":
        raise SpecError("protonet needs classification tasks; choose a gradient-based algorithm")
    if spec.architecture.family == "conv" and len(source.input_shape) != 3:
        raise SpecError(
            f"the conv family needs image inputs, but this source gives {source.input_shape}; "
            "use architecture.family: mlp"
        )


class _MetaTraining:
    """The outer loop of one candidate, with its progress (``done``, ``curve``, ``seconds``)."""

    def __init__(
        self,
        learner: Learner,
        source: TaskSource,
        budget: Budget,
        algorithm: MetaAlgorithm,
        tasks: TaskBatch,
    ) -> None:
        self.learner, self.source, self.budget = learner, source, budget
        self.algorithm, self.tasks = algorithm, tasks
        self.iterations = budget.iterations or learner.spec.outer.iterations
        self.done, self.seconds = 0, 0.0
        self.curve: list[tuple[int, float]] = []

    def run(self, report: Report | None) -> bool:
        """Meta-trains to the end of the budget; True where ``report`` asked to stop early.

        Raises :class:`_Diverged` when the training loss stops being finite or explodes.
        """
        spec, budget = self.learner.spec, self.budget
        meta_tensors = self.learner.meta_tensors()
        optimizer_type = torch.optim.Adam if spec.outer.optimizer == "adam" else torch.optim.SGD
        optimizer = optimizer_type(meta_tensors, lr=spec.outer.meta_lr)
        generator = torch.Generator(device=self.source.device).manual_seed(budget.seed)
        start = time.perf_counter()
        deadline = None if budget.time_limit is None else start + budget.time_limit
        first_loss = None
        for iteration in range(1, self.iterations + 1):
            batch = self.source.sample("train", spec.outer.meta_batch_size, generator)
            progress = (iteration - 1) / self.iterations
            step = self.algorithm.meta_gradients(self.learner, batch, progress)
            for tensor, grad in zip(meta_tensors, step.grads, strict=True):
                tensor.grad = grad
            optimizer.step()
            self.done, self.seconds = iteration, time.perf_counter() - start
            train_loss = step.task_losses.mean()  # stays on the device until a check reads it
            if first_loss is None:
                first_loss = max(train_loss.item(), 1e-3)
            last = iteration == self.iterations or (
                deadline is not None and time.perf_counter() > deadline
            )
            if iteration % budget.check_every == 0 or last:
                value = train_loss.item()
                if not math.isfinite(value) or value > budget.divergence_factor * first_loss:
                    raise _Diverged(
                        f"diverged: training query loss {value:.4g} at iteration {iteration}"
                    )
            if last:
                return False
            if budget.eval_every and iteration % budget.eval_every == 0:
                validation = score(self.algorithm, self.learner, self.tasks).loss
                if not math.isfinite(validation):
                    raise _Diverged(
                        f"diverged: validation loss {validation} at iteration {iteration}"
                    )
                log.info("iteration %d: validation query loss %.4f", iteration, validation)
                self.curve.append((iteration, validation))
                if report is not None and report(iteration, validation):
                    return True
        return False


def _failed(learner: Learner, reason: str | None, training: _MetaTraining) -> EvaluationResult:
    return EvaluationResult(
        status="failed",
        query_loss=math.nan,
        query_loss_ci95=math.nan,
        accuracy=None,
        accuracy_ci95=None,
        n_parameters=learner.n_parameters(),
        meta_train_seconds=training.seconds,
        adaptation_seconds=math.nan,
        iterations=training.done,
        curve=tuple(training.curve),
        reason=reason,
    )
