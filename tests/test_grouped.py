"""The hand-batched network equals each task's network run alone, folded normalization included."""

from __future__ import annotations

import pytest
import torch

from metasearch.learners import build_learner
from metasearch.learners.grouped import GroupedLearner
from metasearch.learners.input_block import folds_input_norm
from metasearch.spec import LearnerSpec


@pytest.mark.parametrize(
    "channels, kernel, folded",
    [(1, 3, True), (3, 5, True), (4, 5, False)],  # 4 x 5 x 5 patches: too large to fold
)
def test_grouped_features_and_gradients_equal_each_task_alone(
    channels: int, kernel: int, folded: bool
) -> None:
    spec = LearnerSpec.from_dict(
        {"architecture": {"widths": [4, 5], "normalization": "batch", "kernel_size": kernel}}
    )
    learner = build_learner(spec, (channels, 8, 8), 3, "classification", 0, dtype=torch.float64)
    assert folds_input_norm(list(learner.network.body)) == folded
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 6, channels, 8, 8, generator=g, dtype=torch.float64) * 2 + 1  # mean != 0
    weights = torch.randn(3, 6, 3, generator=g, dtype=torch.float64)

    group = GroupedLearner([learner], tasks=3)
    grouped = group.forward(group.params(), x)
    alone = torch.stack([learner.forward(learner.params, task) for task in x])
    torch.testing.assert_close(grouped, alone, rtol=1e-10, atol=1e-12)

    tensors = list(learner.params.values())
    grouped_grads = torch.autograd.grad((grouped * weights).sum(), tensors)
    alone_grads = torch.autograd.grad((alone * weights).sum(), tensors)
    for name, a, b in zip(learner.params, grouped_grads, alone_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10, msg=name)
