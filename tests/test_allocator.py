"""The CPU allocator setting: freed activation buffers are reused, not faulted in again."""

from __future__ import annotations

import subprocess
import sys

import pytest

STEPS = """
import resource, sys, torch
from metasearch import LearnerSpec
from metasearch.algorithms import get_algorithm
from metasearch.engines import meta_step
from metasearch.evaluation.allocator import retain_freed_memory
from metasearch.learners import build_learner
from metasearch.tasks import TaskBatch
if sys.argv[1] == "retain":
    assert retain_freed_memory(torch.device("cpu"))
torch.set_num_threads(1)
spec = LearnerSpec.from_dict({"architecture": {"widths": [64] * 4}})
learner = build_learner(spec, (1, 28, 28), 5, "classification")
labels = torch.arange(5).repeat_interleave
batch = TaskBatch(  # two 5-way 1-shot tasks with 15 query images per class
    torch.rand(2, 5, 1, 28, 28), labels(1).expand(2, -1),
    torch.rand(2, 75, 1, 28, 28), labels(15).expand(2, -1),
)
maml = get_algorithm("maml")
meta_step(maml, learner, batch, 0.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    meta_step(maml, learner, batch, 0.0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    run = subprocess.run(
        [sys.executable, "-c", STEPS, mode], capture_output=True, text=True, check=True
    )
    return int(run.stdout)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_retained_memory_spares_the_page_faults_of_every_step() -> None:
    default, retained = page_faults("default"), page_faults("retain")
    assert retained < default / 5, (retained, default)
