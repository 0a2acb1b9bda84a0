"""Sinusoid regression (Finn et al., 2017, section 5.1).

Each task is ``y = A sin(x - phase)`` with amplitude ``A`` in [0.1, 5], phase in [0, pi] and
inputs in [-5, 5]; the support set holds ``shots`` points and the query set ``query_points``
further points of the same function. Functions are continuous, so the splits differ only in the
random stream that draws them: each split draws from its own stream, derived from the caller's
generator, so that validation and test tasks are never the same functions.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from metasearch.tasks.base import Split, TaskBatch, TaskSource, check_split, uniform

_SPLIT_STREAMS = {"train": 0, "val": 1, "test": 2}


class SinusoidSource(TaskSource):
    kind = "regression"
    input_shape = (1,)
    n_outputs = 1

    def __init__(
        self,
        shots: int = 10,
        query_points: int = 10,
        amplitude: tuple[float, float] = (0.1, 5.0),
        phase: tuple[float, float] = (0.0, math.pi),
        x_range: tuple[float, float] = (-5.0, 5.0),
        device: torch.device | str = "cpu",
    ) -> None:
        if shots < 1 or query_points < 1:
            raise ValueError("sinusoid tasks need shots >= 1 and query_points >= 1")
        self.shots, self.query_points = shots, query_points
        self.amplitude, self.phase, self.x_range = amplitude, phase, x_range
        self._device = torch.device(device)

    @property
    def device(self) -> torch.device:
        return self._device

    def to(self, device: torch.device | str) -> SinusoidSource:
        return SinusoidSource(
            self.shots, self.query_points, self.amplitude, self.phase, self.x_range, device
        )

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
