"""Budgets in compute-fair units: time limits honoured before an iteration starts, too-slow
candidates pruned with their reason, evaluation points and schedules that follow what was
really spent."""

from __future__ import annotations

import math
import time

import pytest

from metasearch import Budget, LearnerSpec, SinusoidSource, evaluate
from metasearch.algorithms import get_algorithm
from metasearch.algorithms.gradient_based import step_weights
from metasearch.evaluation import held_out_tasks
from metasearch.evaluation.evaluator import PROBE_ITERATIONS, MetaTraining
from metasearch.learners import build_learner

MLP = {"family": "mlp", "widths": [8], "normalization": "none"}


def spec(algorithm: str = "maml", **outer) -> LearnerSpec:
    inner = {"lr": 0.01, "steps": 2}
    if algorithm == "mamlpp":
        inner |= {"granularity": "per_layer_per_step", "learned": True}
    return LearnerSpec.from_dict(
        {
            "architecture": MLP,
            "inner": inner,
            "outer": {"algorithm": algorithm, "meta_batch_size": 2, "iterations": 1000, **outer},
        }
    )


class SlowEngine:
    """Wraps an engine so that every meta-step takes ``seconds`` longer, and records the
    training progress each step is given."""

    def __init__(self, engine, seconds: float) -> None:
        self.engine, self.seconds, self.progress = engine, seconds, []

    def __getattr__(self, name: str):
        return getattr(self.engine, name)

    def meta_gradients(self, algorithm, learners, batch, progress):
        self.progress.append(progress)
        time.sleep(self.seconds)
        return self.engine.meta_gradients(algorithm, learners, batch, progress)


def training(learner_spec: LearnerSpec, budget: Budget, seconds: float) -> MetaTraining:
    source = SinusoidSource(shots=5, query_points=5)
    learner = build_learner(learner_spec, source.input_shape, 1, source.kind)
    algorithm = get_algorithm(learner_spec.outer.algorithm)
    tasks = held_out_tasks(source, "val", budget.eval_tasks, budget.eval_seed)
    run = MetaTraining(learner, source, budget, algorithm, tasks)
    run.engine = SlowEngine(run.engine, seconds)
    return run


@pytest.mark.slow
@pytest.mark.parametrize("limit, step", [(0.6, 0.05), (0.5, 0.12)])
def test_the_time_limit_is_never_overrun_by_more_than_one_iteration(limit, step) -> None:
    run = training(spec(), Budget(unit="seconds", time_limit=limit, eval_tasks=4), step)
    run.run(report=None)
    assert run.seconds <= limit + max(run.costs)
    assert run.seconds > limit - 2 * max(run.costs)  # and it used the budget
    assert run.iterations is None  # no cap from the spec's nominal 1000 iterations
    result = run.result()
    assert (
        result.iterations == run.done == len(run.costs) and result.meta_train_seconds == run.seconds
    )
    assert result.scoring_seconds > 0


@pytest.mark.slow
def test_scoring_does_not_eat_into_the_time_limit() -> None:
    budget = Budget(unit="seconds", time_limit=0.6, eval_every=0.1, eval_tasks=200)
    run = training(spec(), budget, 0.05)
    run.run(report=None)
    assert len(run.curve) >= 2 and run.scoring_seconds > 0
    assert abs(run.seconds - sum(run.costs)) < 1e-9
    assert run.seconds <= 0.6 + max(run.costs)


@pytest.mark.slow
def test_a_candidate_too_slow_for_its_budget_is_pruned_with_its_reason() -> None:
    budget = Budget(unit="seconds", time_limit=1.0, min_iterations=50, eval_tasks=4)
    run = training(spec(), budget, 0.1)
    run.run(report=None)
    result = run.result()
    assert result.status == "pruned" and result.iterations == PROBE_ITERATIONS
    assert "too slow for its budget" in result.reason and "min_iterations = 50" in result.reason
    fast_enough = training(spec(), Budget(unit="seconds", time_limit=1.0, min_iterations=5), 0.1)
    fast_enough.run(report=None)
    assert fast_enough.result().status == "complete" and fast_enough.done >= 5


def test_a_time_limit_that_ends_training_before_the_minimum_prunes_it() -> None:
    budget = Budget(unit="seconds", time_limit=0.5, min_iterations=10, eval_tasks=4)
    run = training(spec(), budget, 0.3)  # two iterations fit, the probe needs three
    run.run(report=None)
    result = run.result()
    assert result.status == "pruned" and result.iterations < PROBE_ITERATIONS
    assert "ends it after" in result.reason and math.isnan(result.query_loss)


def test_an_examples_budget_prunes_before_any_training_where_it_cannot_reach_the_minimum() -> None:
    # 2 tasks x (5 support x 2 inner steps + 5 queries) = 30 examples per meta-iteration
    budget = Budget(unit="examples", examples=300, min_iterations=11, eval_tasks=4)
    result = evaluate(spec(), SinusoidSource(shots=5, query_points=5), budget)
    assert result.status == "pruned" and result.iterations == 0
    assert "30 examples per meta-iteration allow 10 iterations" in result.reason


def test_an_examples_budget_stops_before_an_overrun_and_reports_in_examples() -> None:
    budget = Budget(unit="examples", examples=310, eval_every=90, eval_tasks=4)
    steps: list[int] = []
    result = evaluate(
        spec(),
        SinusoidSource(shots=5, query_points=5),
        budget,
        report=lambda step, loss: steps.append(step) or False,
    )
    assert result.status == "complete" and result.iterations == 10 and result.examples == 300
    assert steps == [90, 180, 270]  # the evaluation points, in examples


@pytest.mark.slow
def test_mamlpp_annealing_follows_the_real_budget_not_the_nominal_iterations() -> None:
    learner_spec = spec("mamlpp", msl_fraction=0.5, first_order_fraction=0.5)
    run = training(learner_spec, Budget(unit="seconds", time_limit=0.8, eval_tasks=4), 0.04)
    run.run(report=None)
    progress = run.engine.progress
    assert progress == sorted(progress) and progress[0] == 0.0
    # The last step starts within about one iteration of the limit; the nominal 1000 iterations
    # would say 4% at most.
    assert progress[-1] > max(0.5, 1 - 2 * max(run.costs) / 0.8)
    assert run.done < 40
    algorithm = get_algorithm("mamlpp")
    assert algorithm.first_order(run.learner.spec, progress[1])
    assert not algorithm.first_order(run.learner.spec, progress[-1])
    assert step_weights(2, progress[-1], 0.5)[-1] == pytest.approx(1 - 0.03 / 2)


def test_iteration_budgets_keep_their_schedule() -> None:
    run = training(spec("mamlpp"), Budget(iterations=4, eval_tasks=4), 0.0)
    run.run(report=None)
    assert run.engine.progress == [0.0, 0.25, 0.5, 0.75]


def test_cosine_meta_learning_rate_anneals_over_the_budget_spent() -> None:
    run = training(spec(lr_schedule="cosine", meta_lr=0.01), Budget(iterations=10, eval_tasks=4), 0)
    run.run(report=None)
    rate = run.optimizer.param_groups[0]["lr"]
    assert rate == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * 0.9)))
    constant = training(spec(meta_lr=0.01), Budget(iterations=10, eval_tasks=4), 0)
    constant.run(report=None)
    assert constant.optimizer.param_groups[0]["lr"] == 0.01


def test_step_meta_learning_rate_halves_every_so_many_iterations() -> None:
    """Snell et al.'s schedule: the rate of the step after ``done`` iterations is halved once
    for every whole ``lr_halving_every`` of them."""
    learner_spec = spec(lr_schedule="step", meta_lr=0.01, lr_halving_every=3)
    rates = []
    for iterations in (2, 3, 7):
        run = training(learner_spec, Budget(iterations=iterations, eval_tasks=4), 0)
        run.run(report=None)
        rates.append(run.optimizer.param_groups[0]["lr"])
    # The rate seen by the last step: after 1 iteration, after 2, after 6.
    assert rates == pytest.approx([0.01, 0.01, 0.0025])


def test_a_budget_in_seconds_or_examples_needs_its_amount() -> None:
    with pytest.raises(ValueError, match="time_limit"):
        Budget(unit="seconds")
    with pytest.raises(ValueError, match="examples"):
        Budget(unit="examples")
