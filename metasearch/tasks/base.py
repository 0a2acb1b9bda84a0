"""Task batches and the task-source interface.

A source keeps its whole data set as tensors on one device and samples a batch of tasks with
tensor indexing alone: no DataLoader and no per-task Python loop on the hot path.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
TaskKind = Literal["classification", "regression"]


class TaskBatch(NamedTuple):
    """``T`` tasks: support ``[T, S, *input]`` with labels ``[T, S]``, query likewise ``[T, Q]``.

    Classification labels are class positions ``0..ways-1``; regression targets are ``[T, n, 1]``.
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor

    @property
    def n_tasks(self) -> int:
        return self.support_x.shape[0]

    def to(self, device: torch.device | str) -> TaskBatch:
        return TaskBatch(*(t.to(device, non_blocking=True) for t in self))

    def chunks(self, size: int) -> list[TaskBatch]:
        """Consecutive sub-batches of at most ``size`` tasks."""
        return [TaskBatch(*(t[i : i + size] for t in self)) for i in range(0, self.n_tasks, size)]


class TaskSource(ABC):
    """Where tasks come from: ``sample`` draws ``n_tasks`` tasks of one split.

    ``generator`` decides where the random draws happen; the data stay on ``self.device``. A CPU
    generator with a fixed seed gives the same tasks on every device, which is how held-out tasks
    are fixed for scoring.
    """

    kind: TaskKind
    input_shape: tuple[int, ...]
    n_outputs: int

    @property
    @abstractmethod
    def device(self) -> torch.device: ...

    @abstractmethod
    def to(self, device: torch.device | str) -> TaskSource:
        """This source with its data on ``device`` (a copy where the device differs)."""

    @abstractmethod
    def sample(self, split: Split, n_tasks: int, generator: torch.Generator) -> TaskBatch:
        """``n_tasks`` fresh tasks of ``split``."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Plain data naming the source and its settings, for provenance and exports."""

    def input_transform(self) -> dict[str, Any]:
        """How a raw input becomes the tensor the learner expects (for exported learners)."""
        return {}


def check_split(split: str) -> Split:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return split  # type: ignore[return-value]


def uniform(generator: torch.Generator, shape: tuple[int, ...], low: float, high: float) -> Tensor:
    """Uniform draws in ``[low, high)`` made on the generator's device."""
    return torch.rand(shape, generator=generator, device=generator.device) * (high - low) + low
