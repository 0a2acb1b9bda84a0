"""``evaluate(spec, source, budget)``: meta-train one candidate and score it on held-out tasks."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import torch

from metasearch.algorithms import MetaAlgorithm, MetaGradients, get_algorithm
from metasearch.errors import SpecError
from metasearch.evaluation.allocator import retain_freed_memory
from metasearch.evaluation.checkpoint import CheckpointStore, TrainingState
from metasearch.evaluation.result import Budget, EvaluationResult, Status
from metasearch.evaluation.scoring import held_out_tasks, score
from metasearch.learners.learner import Learner, build_learner
from metasearch.spec import LearnerSpec
from metasearch.tasks.base import TaskBatch, TaskSource

log = logging.getLogger(__name__)

Report = Callable[[int, float], bool]
"""``report(iteration, validation_loss)`` returns True to stop the candidate (pruning)."""


class Diverged(Exception):
    """The training loss stopped being finite or exploded; the message says where."""


class TrainingInterrupted(Exception):
    """Meta-training stopped on request after ``iteration`` iterations, checkpointed if it had a
    checkpoint store."""

    def __init__(self, iteration: int) -> None:
        super().__init__(f"interrupted at meta-iteration {iteration}")
        self.iteration = iteration


def evaluate(
    spec: LearnerSpec,
    source: TaskSource,
    budget: Budget | None = None,
    *,
    report: Report | None = None,
    checkpoints: CheckpointStore | None = None,
    stop: Callable[[], bool] | None = None,
) -> EvaluationResult:
    """Meta-trains ``spec`` on ``source``'s training tasks and scores it on held-out tasks.

    ``budget`` defaults to ``Budget()``. Runs on the source's device. Never raises for a
    candidate that diverges or runs out of memory: the result then has status ``failed`` and a
    reason. Raises :class:`SpecError` where the spec cannot work with the source at all.

    With ``checkpoints``, meta-training resumes from the store's last checkpoint and saves one
    every ``checkpoints.every`` iterations. Where ``stop()`` turns true (checked every
    iteration), it saves a checkpoint and raises :class:`TrainingInterrupted`.
    """
    budget = budget or Budget()
    check_compatible(spec, source)
    learner = build_learner(
        spec, source.input_shape, source.n_outputs, source.kind, budget.seed, source.device
    )
    tasks = held_out_tasks(source, budget.eval_split, budget.eval_tasks, budget.eval_seed)
    training = MetaTraining(learner, source, budget, get_algorithm(spec.outer.algorithm), tasks)
    try:
        training.run(report, checkpoints, stop)
    except Diverged as error:
        training.failure = str(error)
    except torch.OutOfMemoryError:
        training.failure = OUT_OF_MEMORY
    return training.result()


OUT_OF_MEMORY = "ran out of device memory; lower meta_batch_size or widths"


def check_compatible(spec: LearnerSpec, source: TaskSource) -> None:
    """Raises :class:`SpecError` where ``spec`` cannot learn ``source``'s tasks."""
    if spec.outer.algorithm == "protonet" and source.kind != "classification":
        raise SpecError("protonet needs classification tasks; choose a gradient-based algorithm")
    family = spec.architecture.family
    if family in ("conv", "cells") and len(source.input_shape) != 3:
        raise SpecError(
            f"the {family} family needs image inputs, but this source gives {source.input_shape}; "
            "use architecture.family: mlp"
        )


class MetaTraining:
    """The outer loop of one candidate, with its progress (``done``, ``curve``, ``seconds``) and
    how it ended (``pruned``, or ``failure`` with a reason)."""

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
        retain_freed_memory(source.device)
        self.iterations = budget.iterations or learner.spec.outer.iterations
        self.done, self.seconds = 0, 0.0
        self.curve: list[tuple[int, float]] = []
        self.pruned = False
        self.failure: str | None = None
        outer = learner.spec.outer
        optimizer_type = torch.optim.Adam if outer.optimizer == "adam" else torch.optim.SGD
        self.meta_tensors = learner.meta_tensors()
        self.optimizer = optimizer_type(self.meta_tensors, lr=outer.meta_lr)
        self.start = time.perf_counter()
        self.first_loss: float | None = None
        self.resumed_from: int | None = None

    def run(
        self,
        report: Report | None,
        checkpoints: CheckpointStore | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> None:
        """Meta-trains to the end of the budget or until ``report`` prunes it, resuming from
        and saving to ``checkpoints`` where given.

        Raises :class:`Diverged` when the training loss stops being finite or explodes, and
        :class:`TrainingInterrupted` (after a checkpoint) where ``stop()`` turns true.
        """
        generator = torch.Generator(device=self.source.device).manual_seed(self.budget.seed)
        saved = checkpoints.load() if checkpoints is not None else None
        if saved is not None:
            self._restore(saved, generator)
        self.start = time.perf_counter() - self.seconds
        for iteration in range(self.done + 1, self.iterations + 1):
            batch = self.source.sample("train", self.learner.spec.outer.meta_batch_size, generator)
            step = self.algorithm.meta_gradients(self.learner, batch, self.progress(iteration))
            if self.apply(iteration, step, report):
                return
            stopping = stop is not None and stop()
            if checkpoints is not None and (stopping or iteration % checkpoints.every == 0):
                checkpoints.save(self._state(generator))
            if stopping:
                raise TrainingInterrupted(iteration)

    def _state(self, generator: torch.Generator) -> TrainingState:
        return TrainingState(
            iteration=self.done,
            seconds=self.seconds,
            first_loss=self.first_loss,
            curve=list(self.curve),
            learner=self.learner.state_tensors(),
            optimizer=self.optimizer.state_dict(),
            generator=generator.get_state(),
        )

    def _restore(self, state: TrainingState, generator: torch.Generator) -> None:
        self.learner.load_state_tensors(state.learner)
        self.optimizer.load_state_dict(state.optimizer)
        generator.set_state(state.generator)
        self.done, self.seconds, self.first_loss = state.iteration, state.seconds, state.first_loss
        self.curve = list(state.curve)
        self.resumed_from = state.iteration
        log.info("resumed from the checkpoint of meta-iteration %d", state.iteration)

    def progress(self, iteration: int) -> float:
        return (iteration - 1) / self.iterations

    def apply(self, iteration: int, step: MetaGradients, report: Report | None) -> bool:
        """Takes the outer step of ``iteration`` from its meta-gradients, checks and scores the
        learner as the budget says; True where training is over (the end, the time limit, or
        pruned). Raises :class:`Diverged`."""
        budget = self.budget
        for tensor, grad in zip(self.meta_tensors, step.grads, strict=True):
            tensor.grad = grad
        self.optimizer.step()
        self.done, self.seconds = iteration, time.perf_counter() - self.start
        train_loss = step.task_losses.mean()  # stays on the device until a check reads it
        if self.first_loss is None:
            self.first_loss = max(train_loss.item(), 1e-3)
        last = iteration == self.iterations or (
            budget.time_limit is not None and self.seconds > budget.time_limit
        )
        if iteration % budget.check_every == 0 or last:
            value = train_loss.item()
            if not math.isfinite(value) or value > budget.divergence_factor * self.first_loss:
                raise Diverged(
                    f"diverged: training query loss {value:.4g} at iteration {iteration}"
                )
        if last:
            return True
        if budget.eval_every and iteration % budget.eval_every == 0:
            validation = score(self.algorithm, self.learner, self.tasks).loss
            if not math.isfinite(validation):
                raise Diverged(f"diverged: validation loss {validation} at iteration {iteration}")
            log.info("iteration %d: validation query loss %.4f", iteration, validation)
            self.curve.append((iteration, validation))
            if report is not None and report(iteration, validation):
                self.pruned = True
                return True
        return False

    def result(self) -> EvaluationResult:
        """The candidate's result: scored on the held-out tasks unless it failed."""
        if self.failure is not None:
            log.info("candidate failed: %s", self.failure)
            return self._failed(self.failure)
        final = score(self.algorithm, self.learner, self.tasks)
        if not math.isfinite(final.loss):
            return self._failed("query loss is not finite after meta-training")
        status: Status = "pruned" if self.pruned else "complete"
        return EvaluationResult(
            status=status,
            query_loss=final.loss,
            query_loss_ci95=final.loss_ci95,
            accuracy=final.accuracy,
            accuracy_ci95=final.accuracy_ci95,
            n_parameters=self.learner.n_parameters(),
            meta_train_seconds=self.seconds,
            adaptation_seconds=final.seconds_per_task,
            iterations=self.done,
            curve=tuple(self.curve),
            reason=f"pruned at iteration {self.done}" if self.pruned else None,
            resumed_from=self.resumed_from,
            learner=self.learner,
        )

    def _failed(self, reason: str) -> EvaluationResult:
        return EvaluationResult(
            status="failed",
            query_loss=math.nan,
            query_loss_ci95=math.nan,
            accuracy=None,
            accuracy_ci95=None,
            n_parameters=self.learner.n_parameters(),
            meta_train_seconds=self.seconds,
            adaptation_seconds=math.nan,
            iterations=self.done,
            curve=tuple(self.curve),
            reason=reason,
            resumed_from=self.resumed_from,
        )
