"""What every way of running a trial shares: the spec as trained, pruning reports, objectives."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import optuna

from metasearch.evaluation import Budget, EvaluationResult
from metasearch.spec import LearnerSpec


def as_trained(spec: LearnerSpec, budget: Budget) -> LearnerSpec:
    """``spec`` with the meta-iterations the budget gives it, so the spec records what ran."""
    if budget.iterations is None:
        return spec
    outer = spec.outer.model_copy(update={"iterations": budget.iterations})
    return spec.model_copy(update={"outer": outer})


def reporter(trial: optuna.Trial) -> Callable[[int, float], bool]:
    """The evaluator's ``report``: intermediate validation losses go to the trial's pruner."""

    def report(iteration: int, validation_loss: float) -> bool:
        trial.report(validation_loss, iteration)
        return trial.should_prune()

    return report


def objective_values(result: EvaluationResult, objectives: Sequence[str]) -> list[float]:
    """The study's objectives read off ``result`` (NaN where the result has none)."""
    values = [getattr(result, name) for name in objectives]
    return [math.nan if value is None else float(value) for value in values]
