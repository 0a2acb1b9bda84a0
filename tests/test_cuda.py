"""GPU paths: the meta-step runs without waiting for the device, and mixed precision holds.

Skipped without a CUDA device; run them on one with ``python -m pytest -m cuda``.
"""

from __future__ import annotations

import pytest
import torch

from metasearch import LearnerSpec
from metasearch.algorithms import get_algorithm
from metasearch.engines import meta_step
from metasearch.learners import Learner, build_learner
from metasearch.tasks import ClassificationSource

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def random_omniglot(device: str) -> ClassificationSource:
    """Omniglot's layout (100 classes of 20 images, 1x28x28) with random pixels."""
    images = torch.randint(0, 256, (100 * 20, 1, 28, 28), dtype=torch.uint8, device=device)
    return ClassificationSource(
        images,
        torch.arange(0, 2000, 20, device=device),
        torch.full((100,), 20, device=device),
        {"train": range(80), "val": range(80, 90), "test": range(90, 100)},
        ways=5,
        shots=1,
        query_shots=15,
    )


def conv_learner(precision: str, source: ClassificationSource) -> Learner:
    spec = LearnerSpec.from_dict(
        {
            "architecture": {"widths": [64] * 4},
            "outer": {"algorithm": "maml", "meta_batch_size": 16, "precision": precision},
        }
    )
    return build_learner(spec, source.input_shape, source.n_outputs, source.kind, 0, "cuda")


def test_sampling_and_the_meta_step_never_wait_for_the_device() -> None:
    source = random_omniglot("cuda")
    learner, maml = conv_learner("float32", source), get_algorithm("maml")
    generator = torch.Generator(device="cuda").manual_seed(0)
    meta_step(maml, learner, source.sample("train", 16, generator), 0.0)  # warm-up
    torch.cuda.set_sync_debug_mode("error")
    try:
        meta_step(maml, learner, source.sample("train", 16, generator), 0.0)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_bfloat16_meta_gradients_agree_with_float32_on_cuda() -> None:
    source = random_omniglot("cuda")
    batch = source.sample("train", 16, torch.Generator(device="cuda").manual_seed(0))
    grads = {
        precision: meta_step(get_algorithm("maml"), conv_learner(precision, source), batch, 0)
        for precision in ("float32", "bfloat16")
    }
    low, high = (torch.cat([g.flatten() for g in grads[p].grads]) for p in ("bfloat16", "float32"))
    assert not torch.equal(low, high)
    assert torch.nn.functional.cosine_similarity(low, high, 0).item() > 0.99
