"""``evaluate(spec, source, budget)``: meta-train one candidate and score it on held-out tasks."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch

from metasearch.algorithms import MetaAlgorithm, MetaGradients, get_algorithm
from metasearch.engines import choose_engine
from metasearch.errors import SpecError
from metasearch.evaluation.allocator import retain_freed_memory
from metasearch.evaluation.checkpoint import CheckpointStore, TrainingState
from metasearch.evaluation.progress import Observer, ProgressWatch
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
    observe: Observer | None = None,
) -> EvaluationResult:
    """Meta-trains ``spec`` on ``source``'s training tasks and scores it on held-out tasks.

    ``budget`` defaults to ``Budget()``. Runs on the source's device. Never raises for a
    candidate that diverges or runs out of memory: the result then has status ``failed`` and a
    reason. Raises :class:`SpecError` where the spec cannot work with the source at all.

    With ``checkpoints``, meta-training resumes from the store's last checkpoint and saves one
    every ``checkpoints.every`` iterations. Where ``stop()`` turns true (checked every
    iteration), it saves a checkpoint and raises :class:`TrainingInterrupted`. ``observe`` is
    told the progress of meta-training as it goes (see :mod:`metasearch.evaluation.progress`).
    """
    budget = budget or Budget()
    check_compatible(spec, source)
    learner = build_learner(
        spec, source.input_shape, source.n_outputs, source.kind, budget.seed, source.device
    )
    tasks = held_out_tasks(source, budget.eval_split, budget.eval_tasks, budget.eval_seed)
    training = MetaTraining(learner, source, budget, get_algorithm(spec.outer.algorithm), tasks)
    training.run(report, checkpoints, stop, observe)
    return training.result()


OUT_OF_MEMORY = "ran out of device memory; lower meta_batch_size or widths"


def check_compatible(spec: LearnerSpec, source: TaskSource) -> None:
    """Raises :class:`SpecError` where ``spec`` cannot learn ``source``'s tasks."""
    if get_algorithm(spec.outer.algorithm).classification_only and source.kind != "classification":
        raise SpecError(
            f"{spec.outer.algorithm} needs classification tasks; choose a gradient-based algorithm"
        )
    family = spec.architecture.family
    if family in ("conv", "cells") and len(source.input_shape) != 3:
        raise SpecError(
            f"the {family} family needs image inputs, but this source gives {source.input_shape}; "
            "use architecture.family: mlp"
        )


PROBE_ITERATIONS = 3
"""Meta-iterations timed before deciding whether a candidate can reach its ``min_iterations``
in its time limit (the first one, with its warm-up, does not count in the estimate)."""


class MetaTraining:
    """The outer loop of one candidate, with its progress (``done`` iterations, ``seconds`` and
    ``examples`` of meta-training, ``curve``), whether it ``ended``, and how (``pruned`` with
    ``reason``, or ``failure`` with a reason).

    Spending is measured per iteration (sampling, meta-gradient, outer step), so held-out
    scoring and checkpoints do not eat into a candidate's budget; they are timed apart
    (``scoring_seconds``). ``tasks`` are the held-out tasks, None for a training that scores
    nothing (no ``eval_every``, and no :meth:`result`).

    Subclasses change an iteration through :meth:`sample`, :meth:`meta_gradients` and
    :meth:`outer_step`, and what a checkpoint keeps through :meth:`save_state` and
    :meth:`load_state`.
    """

    def __init__(
        self,
        learner: Learner,
        source: TaskSource,
        budget: Budget,
        algorithm: MetaAlgorithm,
        tasks: TaskBatch | None,
    ) -> None:
        if tasks is None and budget.eval_every:
            raise ValueError("scoring every eval_every needs held-out tasks")
        self.learner, self.source, self.budget = learner, source, budget
        self.algorithm, self.tasks = algorithm, tasks
        retain_freed_memory(source.device)
        outer = learner.spec.outer
        self.iterations: int | None = budget.iterations or (
            outer.iterations if budget.unit == "iterations" else None
        )
        self.train_source, self.train_learner = training_episodes(learner, source)
        self.engine = choose_engine(self.train_learner, budget.engine)
        self.done, self.seconds, self.examples, self.scoring_seconds = 0, 0.0, 0.0, 0.0
        self.costs: list[float] = []  # seconds of each iteration since the start or resume
        self.curve: list[tuple[int, float]] = []
        self.pruned = self.too_slow = self.ended = False
        self.reason: str | None = None
        self.failure: str | None = None
        optimizer_type = torch.optim.Adam if outer.optimizer == "adam" else torch.optim.SGD
        self.meta_tensors = learner.meta_tensors()
        self.optimizer = optimizer_type(self.meta_tensors, lr=outer.meta_lr)
        self.first_loss: float | None = None
        self.resumed_from: int | None = None
        self._last_loss: torch.Tensor | None = None

    def run(
        self,
        report: Report | None,
        checkpoints: CheckpointStore | None = None,
        stop: Callable[[], bool] | None = None,
        observe: Observer | None = None,
    ) -> None:
        """Meta-trains to the end of the budget or until ``report`` prunes it, resuming from
        and saving to ``checkpoints`` where given, telling ``observe`` how far it is: the
        population of one of :func:`train`, whose rules it keeps."""
        train([self], [report], [checkpoints], stop, observe)

    def tell(self, watch: ProgressWatch) -> None:
        """Updates ``watch`` with how far training is."""
        validation = self.curve[-1][1] if self.curve else None
        watch.update(self.done, self.iterations, self.progress(), validation)

    def finish(self) -> None:
        """Checks the last training loss once training is over; raises :class:`Diverged`."""
        self._check_loss(force=True)

    def batch_gradients(
        self, members: Sequence[MetaTraining], batch: TaskBatch
    ) -> list[MetaGradients]:
        """The meta-gradients of ``members`` (of one shape, this one among them) on ``batch``:
        this one's :meth:`meta_gradients` where it trains alone, else one batched computation
        of the engine over all of them, at the progress of the first."""
        if len(members) == 1:
            return [members[0].meta_gradients(batch)]
        learners = [member.train_learner for member in members]
        return self.engine.meta_gradients(self.algorithm, learners, batch, members[0].progress())

    def sample(self, generator: torch.Generator) -> TaskBatch:
        """The next meta-batch of training tasks."""
        return self.train_source.sample("train", self.learner.spec.outer.meta_batch_size, generator)

    def meta_gradients(self, batch: TaskBatch) -> MetaGradients:
        """The engine's meta-gradient of the training learner on ``batch``."""
        return self.engine.meta_gradients(
            self.algorithm, [self.train_learner], batch, self.progress()
        )[0]

    def over(self, batch: TaskBatch) -> bool:
        """Whether training ends before the iteration of ``batch``: a limit would be reached or
        overrun by it, or the candidate proved too slow for ``min_iterations`` (then pruned)."""
        budget = self.budget
        if budget.examples is not None and self.done == 0:
            per_iteration = examples_per_iteration(self.learner.spec, batch)
            possible = int(budget.examples // per_iteration)
            if possible < budget.min_iterations:
                return self._too_slow(
                    f"{per_iteration:.0f} examples per meta-iteration allow {possible} "
                    f"iterations in {budget.examples:.3g} examples"
                )
        if budget.time_limit is not None and self.probed():
            cost = self.iteration_cost()
            possible = self.done + int((budget.time_limit - self.seconds) // cost)
            if possible < budget.min_iterations:
                return self._too_slow(
                    f"{cost:.3g} s per meta-iteration allow about {possible} iterations in "
                    f"{budget.time_limit:g} s"
                )
        if not self.exhausted(examples_per_iteration(self.learner.spec, batch)):
            return False
        if self.done < budget.min_iterations and budget.time_limit is not None:
            return self._too_slow(
                f"its time limit of {budget.time_limit:g} s ends it after {self.done} iterations"
            )
        return True

    def exhausted(self, next_examples: float) -> bool:
        """Whether one more iteration (of ``next_examples`` examples and the measured cost)
        would reach or overrun a limit."""
        budget = self.budget
        if self.iterations is not None and self.done >= self.iterations:
            return True
        if budget.examples is not None and self.examples + next_examples > budget.examples:
            return True
        return (
            budget.time_limit is not None
            and bool(self.costs)
            and self.seconds + self.iteration_cost() > budget.time_limit
        )

    def probed(self) -> bool:
        """Whether the candidate's speed was just measured: its first iterations are done."""
        return len(self.costs) == PROBE_ITERATIONS and self.resumed_from is None

    def iteration_cost(self) -> float:
        """Expected seconds of the next iteration: the mean of the last few, leaving out the
        first (warm-up) once there are others."""
        recent = self.costs[1:] if len(self.costs) > 1 else self.costs
        return sum(recent[-5:]) / len(recent[-5:])

    def progress(self) -> float:
        """The fraction of the budget spent: the largest over its limits, in [0, 1]."""
        spent = [0.0]
        if self.iterations is not None:
            spent.append(self.done / self.iterations)
        if self.budget.time_limit is not None:
            spent.append(self.seconds / self.budget.time_limit)
        if self.budget.examples is not None:
            spent.append(self.examples / self.budget.examples)
        return min(max(spent), 1.0)

    def spent(self) -> float:
        """What has been spent, in the budget's unit."""
        return {"iterations": float(self.done), "seconds": self.seconds}.get(
            self.budget.unit, self.examples
        )

    def apply(
        self, batch: TaskBatch, step: MetaGradients, report: Report | None, elapsed: float
    ) -> bool:
        """Takes the outer step from ``step``'s meta-gradients on ``batch`` (``elapsed`` seconds
        went into sampling and computing them), checks the learner and scores it where the
        budget says; True where training is over (pruned). Raises :class:`Diverged`."""
        started = time.perf_counter()
        self._schedule()
        self.outer_step(step)
        self._last_loss = step.task_losses.mean()  # stays on the device until a check reads it
        spend = examples_per_iteration(self.learner.spec, batch)
        self.done += 1
        self.examples += spend
        cost = elapsed + self.elapsed(started)
        self.costs.append(cost)
        self.seconds += cost
        if self.first_loss is None:
            self.first_loss = max(self._last_loss.item(), 1e-3)
        self._check_loss()
        last_spend = {"iterations": 1.0, "seconds": cost}.get(self.budget.unit, spend)
        if self.exhausted(spend):
            return False  # the final score follows; no evaluation point just before it
        return self._validate(report, last_spend)

    def outer_step(self, step: MetaGradients) -> None:
        """Updates the meta tensors with ``step``'s meta-gradients."""
        for tensor, grad in zip(self.meta_tensors, step.grads, strict=True):
            tensor.grad = grad
        self.optimizer.step()

    def _schedule(self) -> None:
        """The meta learning rate for the next step: constant, cosine-annealed to zero over the
        budget spent (Loshchilov and Hutter, 2017), or halved every ``lr_halving_every``
        iterations (Snell et al., 2017)."""
        outer = self.learner.spec.outer
        if outer.lr_schedule == "constant":
            return
        if outer.lr_schedule == "cosine":
            rate = outer.meta_lr * 0.5 * (1.0 + math.cos(math.pi * self.progress()))
        else:
            rate = outer.meta_lr * 0.5 ** (self.done // outer.lr_halving_every)
        for group in self.optimizer.param_groups:
            group["lr"] = rate

    def _check_loss(self, force: bool = False) -> None:
        if self._last_loss is None or not (force or self.done % self.budget.check_every == 0):
            return
        value = self._last_loss.item()
        assert self.first_loss is not None
        if not math.isfinite(value) or value > self.budget.divergence_factor * self.first_loss:
            raise Diverged(f"diverged: training query loss {value:.4g} at iteration {self.done}")

    def _validate(self, report: Report | None, last_spend: float) -> bool:
        """Scores on the held-out tasks where the last iteration (which spent ``last_spend`` of
        the budget's unit) passed an evaluation point; True if pruned."""
        every = self.budget.eval_every
        spent = self.spent()
        if not every or spent // every <= (spent - last_spend) // every:
            return False
        assert self.tasks is not None  # eval_every needs them (see __init__)
        started = time.perf_counter()
        validation = score(self.algorithm, self.learner, self.tasks, engine=self.engine).query_loss
        self.scoring_seconds += time.perf_counter() - started
        if not math.isfinite(validation):
            raise Diverged(f"diverged: validation loss {validation} at iteration {self.done}")
        log.info("iteration %d: validation query loss %.4f", self.done, validation)
        self.curve.append((self.done, validation))
        if report is not None and report(round(spent), validation):
            self.pruned, self.reason = True, f"pruned at iteration {self.done}"
            return True
        return False

    def _too_slow(self, why: str) -> bool:
        self.pruned = self.too_slow = True
        self.reason = f"too slow for its budget: {why}, fewer than {self.minimum()}"
        return True

    def minimum(self) -> str:
        """The iterations a candidate needs, as a too-slow reason names them."""
        return f"min_iterations = {self.budget.min_iterations}"

    def elapsed(self, started: float) -> float:
        """Seconds since ``started``, once the device has finished the work queued since."""
        if self.source.device.type == "cuda":
            torch.cuda.synchronize(self.source.device)
        return time.perf_counter() - started

    def save_state(self, generator: torch.Generator) -> TrainingState:
        """Where training stands, with the task sampler's ``generator``, for a checkpoint."""
        return TrainingState(
            iteration=self.done,
            seconds=self.seconds,
            first_loss=self.first_loss,
            curve=list(self.curve),
            learner=self.learner.state_tensors(),
            optimizer=self.optimizer.state_dict(),
            generator=generator.get_state(),
            examples=self.examples,
        )

    def load_state(self, state: TrainingState, generator: torch.Generator) -> None:
        """Resumes from a checkpoint's ``state``, setting ``generator`` where it stood."""
        self.learner.load_state_tensors(state.learner)
        self.optimizer.load_state_dict(state.optimizer)
        generator.set_state(state.generator)
        self.done, self.seconds, self.first_loss = state.iteration, state.seconds, state.first_loss
        self.examples = state.examples
        self.curve = list(state.curve)
        self.resumed_from = state.iteration
        log.info("resumed from the checkpoint of meta-iteration %d", state.iteration)

    def result(self) -> EvaluationResult:
        """The candidate's result: scored on the held-out tasks unless it failed."""
        if self.failure is not None:
            log.info("candidate failed: %s", self.failure)
            return self._failed(self.failure)
        if self.too_slow:
            return self._failed(self.reason or "too slow", status="pruned")
        assert self.tasks is not None, "a training without held-out tasks has no score"
        started = time.perf_counter()
        final = score(self.algorithm, self.learner, self.tasks, engine=self.engine)
        self.scoring_seconds += time.perf_counter() - started
        if not math.isfinite(final.query_loss):
            return self._failed("query loss is not finite after meta-training")
        status: Status = "pruned" if self.pruned else "complete"
        return EvaluationResult(
            status=status,
            query_loss=final.query_loss,
            query_loss_ci95=final.query_loss_ci95,
            accuracy=final.accuracy,
            accuracy_ci95=final.accuracy_ci95,
            n_parameters=self.learner.n_parameters(),
            meta_train_seconds=self.seconds,
            adaptation_seconds=final.seconds_per_task,
            iterations=self.done,
            curve=tuple(self.curve),
            reason=self.reason,
            resumed_from=self.resumed_from,
            examples=self.examples,
            scoring_seconds=self.scoring_seconds,
            learner=self.learner,
        )

    def _failed(self, reason: str, status: Status = "failed") -> EvaluationResult:
        """A result without a score: failed, or pruned before it could learn anything."""
        return EvaluationResult(
            status=status,
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
            examples=self.examples,
            scoring_seconds=self.scoring_seconds,
        )


def train(
    trainings: Sequence[MetaTraining],
    reports: Sequence[Report | None],
    checkpoints: Sequence[CheckpointStore | None] | None = None,
    stop: Callable[[], bool] | None = None,
    observe: Observer | None = None,
) -> None:
    """The one outer loop of metasearch: meta-trains ``trainings`` (one candidate, a population
    of one shape, a differentiable search) in step on the same meta-batches until each is over.

    Each candidate keeps its own budget (time limits are honoured to one measured iteration,
    charging each candidate the whole step's seconds and its own update), its pruning by
    ``reports[i]`` and its divergence checks; one that ends leaves the others training. Never
    raises for a candidate that diverges (its ``failure`` says why) or runs out of memory (every
    candidate still training then fails with :data:`OUT_OF_MEMORY`). With ``checkpoints`` (one
    store per candidate), every candidate still training saves a checkpoint every ``every``
    iterations; training resumes where every candidate has a checkpoint of the same iteration
    and task sampler state (else all start over). Where ``stop()`` turns true (checked every
    iteration), the candidates still training save checkpoints and :class:`TrainingInterrupted`
    is raised; their ``ended`` stays False. ``observe`` follows the first candidate still
    training.
    """
    first = trainings[0]
    stores = list(checkpoints) if checkpoints is not None else [None] * len(trainings)
    report_of = dict(zip(map(id, trainings), reports, strict=True))
    store_of = dict(zip(map(id, trainings), stores, strict=True))
    generator = torch.Generator(device=first.source.device).manual_seed(first.budget.seed)
    _resume(trainings, stores, generator)
    watch = ProgressWatch(observe, first.progress()) if observe is not None else None
    active = list(trainings)
    while active:
        started = time.perf_counter()
        batch = active[0].sample(generator)
        for training in [t for t in active if t.over(batch)]:
            _end(training)
        active = [t for t in active if not t.ended]
        if not active:
            return
        try:
            steps = active[0].batch_gradients(active, batch)
            elapsed = first.elapsed(started)
            for training, step in zip(active, steps, strict=True):
                try:
                    if training.apply(batch, step, report_of[id(training)], elapsed):
                        _end(training)
                except Diverged as error:
                    training.failure, training.ended = str(error), True
        except torch.OutOfMemoryError:
            for training in active:
                training.failure, training.ended = OUT_OF_MEMORY, True
            return
        if watch is not None:
            active[0].tell(watch)
        active = [t for t in active if not t.ended]
        stopping = stop is not None and stop()
        for training in active:
            store = store_of[id(training)]
            if store is not None and (stopping or training.done % store.every == 0):
                store.save(training.save_state(generator))
        if stopping and active:
            raise TrainingInterrupted(active[0].done)


def _end(training: MetaTraining) -> None:
    """Ends ``training``: its last loss is checked (a diverged one fails it)."""
    training.ended = True
    try:
        training.finish()
    except Diverged as error:
        training.failure = str(error)


def _resume(
    trainings: Sequence[MetaTraining],
    stores: Sequence[CheckpointStore | None],
    generator: torch.Generator,
) -> None:
    """Loads every candidate's checkpoint where all have one of the same iteration and task
    sampler state: candidates that train in step resume only together."""
    saved = [store.load() if store is not None else None for store in stores]
    states = [state for state in saved if state is not None]
    if not states:
        return
    if len(states) < len(saved) or any(
        state.iteration != states[0].iteration
        or not torch.equal(state.generator, states[0].generator)
        for state in states
    ):
        log.warning(
            "%d of %d candidates have checkpoints, not all of one meta-iteration; all start over",
            len(states),
            len(saved),
        )
        return
    for training, state in zip(trainings, states, strict=True):
        training.load_state(state, generator)


def examples_per_iteration(spec: LearnerSpec, batch: TaskBatch) -> float:
    """Examples one meta-iteration on ``batch`` puts through the network: each task's support
    examples once per inner step (once where there is no inner loop), its queries once."""
    support, query = batch.support_x.shape[1], batch.query_x.shape[1]
    return float(batch.n_tasks * (support * max(spec.inner.steps, 1) + query))


def training_episodes(learner: Learner, source: TaskSource) -> tuple[TaskSource, Learner]:
    """The source of training tasks and the learner that meets them: the spec's
    ``outer.train_ways``, ``train_shots`` and ``train_query_shots`` (Prototypical Networks, whose
    prototypes work at any number of classes) reshape the training episodes only; held-out tasks
    keep the source's shape."""
    outer = learner.spec.outer
    shape = (outer.train_ways, outer.train_shots, outer.train_query_shots)
    if shape == (None, None, None):
        return source, learner
    with_episodes = getattr(source, "with_episodes", None)
    if with_episodes is None:
        raise SpecError(
            "outer.train_ways, train_shots and train_query_shots need a classification task source"
        )
    episodes = with_episodes(*shape, splits=["train"])
    return episodes, replace(learner, n_outputs=episodes.n_outputs)
