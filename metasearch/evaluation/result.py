"""The evaluator's inputs beside the spec (the budget) and its output (the result)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from metasearch.evaluation.scoring import DEFAULT_EVAL_SEED
from metasearch.learners.learner import Learner
from metasearch.tasks.base import Split

Status = Literal["complete", "failed", "pruned"]


@dataclass(frozen=True)
class Budget:
    """How much to spend on one candidate and how to score it.

    Args:
        iterations: meta-iterations; ``None`` keeps the spec's ``outer.iterations``.
        eval_tasks: held-out tasks in the score.
        eval_every: score on held-out tasks every this many iterations and pass the loss to
            ``report`` (for pruning); ``None`` scores only at the end.
        eval_split: the split scored (``val`` during search, ``test`` for a final verdict).
        eval_seed: seeds the held-out tasks; keep it fixed so candidates meet the same tasks.
        seed: seeds the initialization and the training tasks.
        time_limit: stop meta-training after this many seconds (then score as usual).
        check_every: how often (iterations) the training loss is checked for divergence.
        divergence_factor: a training loss above this multiple of the first one has diverged.
    """

    iterations: int | None = None
    eval_tasks: int = 100
    eval_every: int | None = None
    eval_split: Split = "val"
    eval_seed: int = DEFAULT_EVAL_SEED
    seed: int = 0
    time_limit: float | None = None
    check_every: int = 20
    divergence_factor: float = 1e3

    def __post_init__(self) -> None:
        if self.iterations is not None and self.iterations < 1:
            raise ValueError("Budget.iterations must be >= 1")
        if self.eval_tasks < 2:
            raise ValueError("Budget.eval_tasks must be >= 2 for a confidence interval")
        if self.eval_every is not None and self.eval_every < 1:
            raise ValueError("Budget.eval_every must be >= 1")


@dataclass(frozen=True)
class EvaluationResult:
    """What one candidate earned. ``query_loss`` is the score (lower is better); a failed
    candidate has ``status == "failed"``, ``reason`` set and a NaN loss. ``resumed_from`` is the
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
    learner: Learner | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (without the learner) for storage and reports."""
        data = asdict(self) | {"curve": [list(point) for point in self.curve]}
        data.pop("learner")
        return data
