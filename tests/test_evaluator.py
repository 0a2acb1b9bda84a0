"""The evaluator's contract: scores, failures, pruning and equal terms for every candidate."""

from __future__ import annotations

import math

import pytest
import torch

from metasearch import Budget, LearnerSpec, SinusoidSource, SpecError, evaluate
from metasearch.algorithms import get_algorithm
from metasearch.engines import predict_tasks
from metasearch.evaluation import held_out_tasks, mean_ci95, score
from metasearch.learners import build_learner

MLP = {"family": "mlp", "widths": [16, 16], "normalization": "none"}


def sinusoid_spec(**outer) -> LearnerSpec:
    return LearnerSpec.from_dict(
        {
            "architecture": MLP,
            "init": {"scheme": "xavier"},
            "inner": {"lr": 0.01},
            "outer": {"meta_batch_size": 4, "iterations": 30, **outer},
        }
    )


def test_result_reports_scores_with_confidence_and_costs() -> None:
    result = evaluate(sinusoid_spec(), SinusoidSource(), Budget(eval_tasks=20, eval_every=10))
    assert result.status == "complete" and result.reason is None
    assert result.iterations == 30 and [step for step, _ in result.curve] == [10, 20]
    assert math.isfinite(result.query_loss) and result.query_loss_ci95 > 0
    assert result.accuracy is None  # regression
    assert result.n_parameters == (1 * 16 + 16) + (16 * 16 + 16) + (16 + 1)
    assert result.meta_train_seconds > 0 and result.adaptation_seconds > 0
    assert set(result.to_dict()) >= {"status", "query_loss", "curve", "n_parameters"}


def test_held_out_tasks_are_the_same_for_every_candidate() -> None:
    source = SinusoidSource()
    first, second = held_out_tasks(source, "val", 5, 7), held_out_tasks(source, "val", 5, 7)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    a = evaluate(sinusoid_spec(), source, Budget(iterations=1, eval_tasks=10, seed=1))
    b = evaluate(sinusoid_spec(), source, Budget(iterations=1, eval_tasks=10, seed=1))
    assert a.query_loss == b.query_loss  # same seed, same tasks: same score


def test_score_matches_a_direct_computation() -> None:
    source = SinusoidSource()
    learner = build_learner(sinusoid_spec(), (1,), 1, "regression")
    tasks = held_out_tasks(source, "test", 6, 0)
    scores = score(get_algorithm("maml"), learner, tasks, chunk_size=4)
    outputs = predict_tasks(get_algorithm("maml"), learner, tasks)
    losses = ((outputs - tasks.query_y) ** 2).mean(dim=(1, 2))
    assert scores.query_loss == pytest.approx(losses.mean().item())
    assert scores.query_loss_ci95 == pytest.approx(1.96 * losses.std().item() / math.sqrt(6))


def test_mean_ci95() -> None:
    mean, half = mean_ci95(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert mean == 2.5 and half == pytest.approx(1.96 * 1.2909944 / 2)


def test_a_diverging_candidate_fails_cleanly() -> None:
    spec = LearnerSpec.from_dict(
        {"architecture": MLP, "inner": {"lr": 50.0, "steps": 5}, "outer": {"iterations": 40}}
    )
    result = evaluate(spec, SinusoidSource(), Budget(eval_tasks=10, check_every=5))
    assert result.status == "failed" and "diverged" in result.reason
    assert math.isnan(result.query_loss) and result.learner is None


def test_report_can_prune_a_candidate() -> None:
    calls = []

    def report(iteration: int, loss: float) -> bool:
        calls.append(iteration)
        return iteration >= 20

    result = evaluate(
        sinusoid_spec(), SinusoidSource(), Budget(eval_every=10, eval_tasks=10), report=report
    )
    assert result.status == "pruned" and calls == [10, 20] and result.iterations == 20
    assert math.isfinite(result.query_loss)  # a pruned candidate is still scored


def test_time_limit_stops_meta_training_early() -> None:
    result = evaluate(
        sinusoid_spec(iterations=100_000), SinusoidSource(), Budget(time_limit=0.5, eval_tasks=5)
    )
    assert result.status == "complete" and 0 < result.iterations < 100_000


def test_incompatible_spec_and_source_are_rejected_before_training() -> None:
    protonet = LearnerSpec.from_dict(
        {"architecture": MLP, "inner": {"steps": 0}, "outer": {"algorithm": "protonet"}}
    )
    with pytest.raises(SpecError, match="classification"):
        evaluate(protonet, SinusoidSource())
    with pytest.raises(SpecError, match="family: mlp"):
        evaluate(LearnerSpec(), SinusoidSource())


def test_budget_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="eval_tasks"):
        Budget(eval_tasks=1)


def test_protonet_trains_on_wider_episodes_than_it_is_scored_on() -> None:
    from metasearch.tasks import ClassificationSource

    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40 * 4, 1, 8, 8), dtype=torch.uint8, generator=generator)
    source = ClassificationSource(
        images,
        torch.arange(40) * 4,
        torch.full((40,), 4),
        {"train": range(16), "val": range(16, 28), "test": range(28, 40)},
        ways=3,
        shots=1,
        query_shots=2,
    )
    spec = LearnerSpec.from_dict(
        {
            "architecture": {"family": "conv", "widths": [8], "pooling": "none"},
            "inner": {"steps": 0},
            "outer": {
                "algorithm": "protonet",
                "meta_batch_size": 2,
                "train_ways": 12,
                "train_shots": 2,
                "train_query_shots": 1,
            },
        }
    )
    from metasearch.evaluation.evaluator import training_episodes

    learner = build_learner(spec, source.input_shape, 3, source.kind)
    episodes, trained = training_episodes(learner, source)
    batch = episodes.sample("train", 2, torch.Generator().manual_seed(1))
    assert batch.support_x.shape[1] == 24 and batch.query_x.shape[1] == 12
    assert trained.n_outputs == 12 and learner.n_outputs == 3
    assert trained.params is learner.params  # one set of meta-parameters
    result = evaluate(spec, source, Budget(iterations=3, eval_tasks=6))
    assert result.status == "complete" and 0 <= result.accuracy <= 1
    assert result.examples == 3 * 2 * (24 + 12 * 1)  # the wider episodes are what it trained on
    with pytest.raises(SpecError, match="classification task source"):
        training_episodes(learner, SinusoidSource())
