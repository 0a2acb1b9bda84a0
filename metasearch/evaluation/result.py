"""The evaluator's inputs beside the spec (the budget) and its output (the result)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from metasearch.engines import EngineChoice
from metasearch.evaluation.scoring import DEFAULT_EVAL_SEED
from metasearch.learners.learner import Learner
from metasearch.tasks.base import Split

Status = Literal["complete", "failed", "pruned"]
BudgetUnit = Literal["iterations", "seconds", "examples"]


@dataclass(frozen=True)
class Budget:
    """How much to spend on one candidate and how to score it.

    A candidate meta-trains until the first of its limits is reached: ``iterations``,
    ``time_limit`` (seconds of meta-training, scoring excluded) or ``examples``. ``unit`` is
    what evaluation points and pruning reports count in, so that candidates of different cost
    compare at equal compute: meta-iterations, seconds of meta-training, or meta-training
    examples (images or points through the network: support ones once per inner step, query
    ones once). Schedules that follow training progress (MAML++'s annealing, the cosine meta
    learning rate) follow the fraction of the budget really spent.

    Args:
        iterations: cap on meta-iterations; ``None`` keeps the spec's ``outer.iterations`` with
            unit ``iterations`` and sets no cap otherwise.
        unit: ``iterations``, ``seconds`` (needs ``time_limit``) or ``examples`` (needs
            ``examples``).
        time_limit: seconds of meta-training; an iteration that would overrun it (by the
            measured cost of recent ones) is not started.
        examples: meta-training examples; an iteration that would overrun it is not started.
        eval_tasks: held-out tasks in the score.
        eval_every: score on held-out tasks every this much of ``unit`` and pass the loss to
            ``report`` (for pruning); ``None`` scores only at the end.
        min_iterations: a candidate that cannot reach this many meta-iterations within its
            budget (measured over its first :data:`PROBE_ITERATIONS`, or known in advance for
            ``examples``) stops at once as pruned, with the reason.
        eval_split: the split scored (``val`` during search, ``test`` for a final verdict).
        eval_seed: seeds the held-out tasks; keep it fixed so candidates meet the same tasks.
        seed: seeds the initialization and the training tasks.
        check_every: how often (iterations) the training loss is checked for divergence.
        divergence_factor: a training loss above this multiple of the first one has diverged.
        engine: how a meta-batch runs (:func:`metasearch.engines.choose_engine`): ``auto``,
            ``vmap`` (the reference) or ``grouped`` (the hand-batched network).
    """

    iterations: int | None = None
    unit: BudgetUnit = "iterations"
    time_limit: float | None = None
    examples: float | None = None
    eval_tasks: int = 100
    eval_every: float | None = None
    min_iterations: int = 1
    eval_split: Split = "val"
    eval_seed: int = DEFAULT_EVAL_SEED
    seed: int = 0
    check_every: int = 20
    divergence_factor: float = 1e3
    engine: EngineChoice = "auto"

    def __post_init__(self) -> None:
        if self.iterations is not None and self.iterations < 1:
            raise ValueError("Budget.iterations must be >= 1")
        if self.eval_tasks < 2:
            raise ValueError("Budget.eval_tasks must be >= 2 for a confidence interval")
        if self.eval_every is not None and not self.eval_every > 0:
            raise ValueError("Budget.eval_every must be > 0")
        if self.unit == "seconds" and self.time_limit is None:
            raise ValueError("Budget.unit seconds needs time_limit")
        if self.unit == "examples" and self.examples is None:
            raise ValueError("Budget.unit examples needs examples")
        if self.min_iterations < 1:
            raise ValueError("Budget.min_iterations must be >= 1")


@dataclass(frozen=True)
class EvaluationResult:
    """What one candidate earned. ``query_loss`` is the score (lower is better); a failed
    candidate has ``status == "failed"``, ``reason`` set and a NaN loss. ``iterations`` and
    ``examples`` are what it really meta-trained, in ``meta_train_seconds``; scoring on held-out
    tasks (during and after training) took ``scoring_seconds`` besides. ``resumed_from`` is the
    checkpoint's iteration where meta-training resumed from one."""

    status: Status
    query_loss: float
    query_loss_ci95: float
    accuracy: float | None
    accuracy_ci95: float | None
    n_parameters: int
    meta_train_seconds: float
    adaptation_seconds: float
    iterations: int
    curve: tuple[tuple[int, float], ...]
    reason: str | None = None
    resumed_from: int | None = None
    examples: float = 0.0
    scoring_seconds: float = 0.0
    learner: Learner | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (without the learner) for storage and reports."""
        data = asdict(self) | {"curve": [list(point) for point in self.curve]}
        data.pop("learner")
        return data
