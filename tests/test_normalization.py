"""Batch normalization at prediction: transductive (the query batch's statistics) or by the
support set's statistics, on every path that predicts (grouped, vmap, one task)."""

from __future__ import annotations

import pytest
import torch

from metasearch import LearnerSpec
from metasearch.algorithms import get_algorithm
from metasearch.engines import VMAP, predict_tasks
from metasearch.errors import SpecError
from metasearch.learners import Learner, build_learner
from metasearch.tasks.base import TaskBatch

WAYS, SHOTS, QUERY, TASKS = 3, 2, 4, 3


def learner_of(algorithm: str, family: str = "conv", policy: str | None = None) -> Learner:
    architecture = {"family": family, "widths": [3, 4], "normalization": "batch"}
    if policy is not None:
        architecture["normalization_at_prediction"] = policy
    spec = LearnerSpec.from_dict(
        {
            "architecture": architecture,
            "inner": {"steps": 0 if algorithm == "protonet" else 2, "lr": 0.3},
            "outer": {"algorithm": algorithm},
        }
    )
    return build_learner(spec, (1, 6, 6), WAYS, "classification", seed=1, dtype=torch.float64)


def tasks(seed: int = 0) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(WAYS).repeat_interleave
    return TaskBatch(
        torch.randn(TASKS, WAYS * SHOTS, 1, 6, 6, generator=g, dtype=torch.float64),
        labels(SHOTS).expand(TASKS, -1),
        torch.randn(TASKS, WAYS * QUERY, 1, 6, 6, generator=g, dtype=torch.float64) + 0.5,
        labels(QUERY).expand(TASKS, -1),
    )


@pytest.mark.parametrize(
    ("algorithm", "family"),
    [("maml", "conv"), ("anil", "conv"), ("protonet", "conv"), ("maml", "mlp")],
)
def test_support_statistics_make_each_query_independent_on_every_path(
    algorithm: str, family: str
) -> None:
    learner, batch, method = learner_of(algorithm, family), tasks(), get_algorithm(algorithm)
    grouped = predict_tasks(method, learner, batch, "support")  # the scoring path
    vmapped = VMAP.predict_tasks(method, learner, batch, "support")
    torch.testing.assert_close(grouped, vmapped, rtol=1e-9, atol=1e-9)
    params = {n: p.detach() for n, p in learner.params.items()}
    for t in range(TASKS):
        sx, sy, qx = batch.support_x[t], batch.support_y[t], batch.query_x[t]
        state = method.adapt(learner, params, learner.meta_state, sx, sy, True)
        for q in range(len(qx)):  # one query at a time, through the plain network
            alone = method.predict_normalized(learner, params, state, sx, qx[q : q + 1], "support")
            torch.testing.assert_close(alone[0], grouped[t, q], rtol=1e-9, atol=1e-9)
        # the support set's own outputs are the same either way: its statistics are its own
        torch.testing.assert_close(
            method.predict_normalized(learner, params, state, sx, sx, "support"),
            method.predict_normalized(learner, params, state, sx, sx, "transductive"),
            rtol=1e-9,
            atol=1e-9,
        )
    transductive = predict_tasks(method, learner, batch, "transductive")
    assert not torch.allclose(transductive, grouped)  # the queries' statistics differ


def test_transductive_predictions_depend_on_the_batch() -> None:
    learner, batch, method = learner_of("maml"), tasks(), get_algorithm("maml")
    together = predict_tasks(method, learner, batch, "transductive")
    pairs = TaskBatch(batch.support_x, batch.support_y, batch.query_x[:, :2], batch.query_y[:, :2])
    alone = predict_tasks(method, learner, pairs, "transductive")
    assert not torch.allclose(alone, together[:, :2])


def test_the_spec_chooses_the_default_and_old_specs_serialize_as_before() -> None:
    learner, batch, method = learner_of("maml", policy="support"), tasks(), get_algorithm("maml")
    torch.testing.assert_close(
        predict_tasks(method, learner, batch), predict_tasks(method, learner, batch, "support")
    )
    assert learner.spec.to_dict()["architecture"]["normalization_at_prediction"] == "support"
    default = learner_of("maml").spec
    assert default.architecture.normalization_at_prediction == "transductive"
    assert "normalization_at_prediction" not in default.to_dict()["architecture"]
    with pytest.raises(SpecError, match="normalization_at_prediction"):
        LearnerSpec.from_dict({"architecture": {"normalization_at_prediction": "running"}})
