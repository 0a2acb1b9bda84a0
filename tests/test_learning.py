"""Learning tests: meta-training must really teach fast adaptation, by margins luck can't give."""

from __future__ import annotations

import pytest
import torch

from metasearch import Budget, LearnerSpec, SinusoidSource, evaluate
from metasearch.evaluation import held_out_tasks
from metasearch.tasks import ClassificationSource

pytestmark = pytest.mark.slow


def test_maml_on_sinusoid_adapts_far_below_its_unadapted_loss() -> None:
    spec = LearnerSpec.from_dict(
        {
            "architecture": {"family": "mlp", "widths": [40, 40], "normalization": "none"},
            "init": {"scheme": "xavier"},
            "inner": {"steps": 1, "lr": 0.01},
            "outer": {"meta_lr": 3e-3, "meta_batch_size": 25, "iterations": 1500},
        }
    )
    source = SinusoidSource(shots=10, query_points=10)
    budget = Budget(eval_tasks=200, eval_every=250, eval_split="test")
    result = evaluate(spec, source, budget)
    learner = result.learner
    tasks = held_out_tasks(source, "test", budget.eval_tasks, budget.eval_seed)
    with torch.no_grad():
        unadapted = (
            torch.stack(
                [
                    learner.loss(learner.forward(learner.params, x), y)
                    for x, y in zip(tasks.query_x, tasks.query_y)
                ]
            )
            .mean()
            .item()
        )
    assert result.query_loss < 0.3 * unadapted, (result.query_loss, unadapted)
    losses = [loss for _, loss in result.curve]
    assert losses[-1] < 0.5 * losses[0], losses  # the learning curve falls


@pytest.mark.data
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_maml_learns_omniglot_5way_1shot_on_a_cpu(
    omniglot_5way: ClassificationSource, precision: str
) -> None:
    spec = LearnerSpec.from_dict(
        {
            "architecture": {"widths": [32, 32, 32, 32]},
            "init": {"zero_head": True},
            "inner": {"steps": 1, "lr": 0.4},
            "outer": {
                "algorithm": "maml",
                "meta_lr": 3e-3,
                "meta_batch_size": 8,
                "iterations": 300,
                "precision": precision,
            },
        }
    )
    result = evaluate(spec, omniglot_5way, Budget(eval_tasks=200, eval_split="test"))
    assert result.status == "complete"
    # Chance is 20%; 200 held-out tasks put the 95% interval at about +-1.5 points.
    assert result.accuracy >= 0.80, result
    assert result.accuracy - result.accuracy_ci95 > 0.75
