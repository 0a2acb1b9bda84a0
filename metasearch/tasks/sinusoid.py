"""Sinusoid regression (Finn et al., 2017, section 5.1).

Each task is ``y = A sin(x - phase)`` with amplitude ``A`` in [0.1, 5], phase in [0, pi] and
inputs in [-5, 5]; the support set holds ``shots`` points and the query set ``query_points``
further points of the same function. Functions are continuous, so the splits differ only in the
random stream that draws them: each split draws from its own stream, derived from the caller's
generator, so that validation and test tasks are never the same functions.
"""

from __future__ import annotations

import math
import os
from typing import Any, Literal

import torch
from pydantic import Field, field_validator

from metasearch.tasks.base import Split, TaskBatch, TaskSource, check_split, uniform
from metasearch.tasks.options import TaskOptions

_SPLIT_STREAMS = {"train": 0, "val": 1, "test": 2}
Range = tuple[float, float]


class SinusoidTask(TaskOptions):
    """Sinusoid tasks: ``shots`` support and ``query_points`` query points per function, drawn
    from the ``amplitude``, ``phase`` and ``x_range`` intervals (low, high)."""

    added_later = ("amplitude", "phase", "x_range")
    source: Literal["sinusoid"] = "sinusoid"
    shots: int = Field(10, ge=1)
    query_points: int = Field(10, ge=1)
    amplitude: Range = (0.1, 5.0)
    phase: Range = (0.0, math.pi)
    x_range: Range = (-5.0, 5.0)

    @field_validator("amplitude", "phase", "x_range")
    @classmethod
    def _ordered(cls, interval: Range) -> Range:
        if not all(math.isfinite(end) for end in interval) or interval[0] > interval[1]:
            raise ValueError("give an interval [low, high] of finite numbers, low <= high")
        return interval

    def build(
        self, data_root: str | os.PathLike[str] | None = None, device: torch.device | str = "cpu"
    ) -> SinusoidSource:
        return SinusoidSource(device=device, **self.options())


class SinusoidSource(TaskSource):
    """Sinusoid tasks on ``device``; ``options`` are :class:`SinusoidTask`'s."""

    kind = "regression"
    input_shape = (1,)
    n_outputs = 1

    def __init__(self, *, device: torch.device | str = "cpu", **options: Any) -> None:
        task = self.task = SinusoidTask.of(options)
        self.shots, self.query_points = task.shots, task.query_points
        self.amplitude, self.phase, self.x_range = task.amplitude, task.phase, task.x_range
        self._device = torch.device(device)

    @property
    def device(self) -> torch.device:
        return self._device

    def to(self, device: torch.device | str) -> SinusoidSource:
        return self.task.build(device=device)

    def sample(self, split: Split, n_tasks: int, generator: torch.Generator) -> TaskBatch:
        check_split(split)
        generator = _split_stream(generator, split)
        points = self.shots + self.query_points
        amplitude = uniform(generator, (n_tasks, 1, 1), *self.amplitude)
        phase = uniform(generator, (n_tasks, 1, 1), *self.phase)
        x = uniform(generator, (n_tasks, points, 1), *self.x_range)
        y = amplitude * torch.sin(x - phase)
        x, y = x.to(self._device), y.to(self._device)
        return TaskBatch(
            x[:, : self.shots], y[:, : self.shots], x[:, self.shots :], y[:, self.shots :]
        )

    def describe(self) -> dict[str, Any]:
        return {
            "source": "sinusoid",
            "shots": self.shots,
            "query_points": self.query_points,
            "amplitude": list(self.amplitude),
            "phase": list(self.phase),
            "x_range": list(self.x_range),
        }


def _split_stream(generator: torch.Generator, split: Split) -> torch.Generator:
    """A generator for ``split`` seeded from one draw of ``generator``, on the same device."""
    draw = torch.randint(0, 2**40, (1,), generator=generator, device=generator.device).item()
    stream = torch.Generator(device=generator.device)
    return stream.manual_seed(int(draw) * 3 + _SPLIT_STREAMS[split])
