"""In-training checkpoints: a candidate's meta-training state, so a retried candidate resumes.

A checkpoint is one file, ``state.safetensors``, in the candidate's folder: the learner's
tensors, the optimizers' moment tensors and the task sampler's random state, with the rest
(iteration, elapsed time, validation curve, the optimizers' settings, a trainer's own record)
as JSON in the file's metadata. It is written to a temporary name, synced and renamed into
place, so a worker killed while writing leaves the previous checkpoint whole. Nothing is
pickled.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import Tensor

STATE_FILE = "state.safetensors"
RECORD_KEY = "metasearch.checkpoint"
"""The metadata entry of the state file that holds its JSON record."""


@dataclass
class TrainingState:
    """Where meta-training stood after ``iteration`` meta-iterations. A trainer with more than
    the outer optimizer keeps the others' state dicts in ``optimizers`` (by name), and plain
    JSON data of its own in ``extra``."""

    iteration: int
    seconds: float
    first_loss: float | None
    curve: list[tuple[int, float]]
    learner: dict[str, Tensor]
    optimizer: dict[str, Any]
    generator: Tensor
    examples: float = 0.0
    optimizers: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckpointStore:
    """Checkpoints of one candidate in ``directory``, saved every ``every`` meta-iterations."""

    directory: Path
    every: int

    def save(self, state: TrainingState) -> None:
        tensors, groups = _flatten_optimizer(state.optimizer)
        more_groups = {}
        for name, optimizer in state.optimizers.items():
            more, more_groups[name] = _flatten_optimizer(optimizer, f"optimizers.{name}.")
            tensors |= more
        tensors |= {f"learner.{name}": t for name, t in state.learner.items()}
        tensors["generator"] = state.generator
        record = {
            "iteration": state.iteration,
            "seconds": state.seconds,
            "examples": state.examples,
            "first_loss": state.first_loss,
            "curve": [list(point) for point in state.curve],
            "optimizer_groups": groups,
            "optimizers_groups": more_groups,
            "extra": state.extra,
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        tensors = {n: t.detach().cpu().contiguous() for n, t in tensors.items()}
        # Serialized here and written by Python, so that a full disk is an OSError with its errno.
        data = save(tensors, metadata={RECORD_KEY: json.dumps(record)})
        partial = self.directory / f"{STATE_FILE}.partial"
        try:
            with partial.open("wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, self.directory / STATE_FILE)
        finally:
            partial.unlink(missing_ok=True)

    def load(self) -> TrainingState | None:
        """The last checkpoint, or None where there is none or it cannot be read whole."""
        try:
            with safe_open(str(self.directory / STATE_FILE), framework="pt") as file:
                record = json.loads((file.metadata() or {})[RECORD_KEY])
                tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118
        except (OSError, ValueError, KeyError, SafetensorError):
            return None
        learner = {n.removeprefix("learner."): t for n, t in tensors.items() if n[:8] == "learner."}
        return TrainingState(
            iteration=record["iteration"],
            seconds=record["seconds"],
            first_loss=record["first_loss"],
            curve=[(int(i), float(v)) for i, v in record["curve"]],
            learner=learner,
            optimizer=_unflatten_optimizer(tensors, record["optimizer_groups"]),
            generator=tensors["generator"],
            examples=record.get("examples", 0.0),
            optimizers={
                name: _unflatten_optimizer(tensors, groups, f"optimizers.{name}.")
                for name, groups in record.get("optimizers_groups", {}).items()
            },
            extra=record.get("extra", {}),
        )

    def within(self, folder: str) -> CheckpointStore:
        """The store of a part of the candidate's training, in ``folder`` of this one's (which
        :meth:`clear` removes with it)."""
        return CheckpointStore(self.directory / folder, self.every)

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def _flatten_optimizer(
    state_dict: dict[str, Any], prefix: str = "optimizer."
) -> tuple[dict[str, Tensor], list[Any]]:
    tensors = {}
    for index, slots in state_dict["state"].items():
        for key, value in slots.items():
            tensors[f"{prefix}{index}.{key}"] = torch.as_tensor(value)
    return tensors, json.loads(json.dumps(state_dict["param_groups"]))


def _unflatten_optimizer(
    tensors: dict[str, Tensor], groups: list[Any], prefix: str = "optimizer."
) -> dict[str, Any]:
    state: dict[int, dict[str, Tensor]] = {}
    for name, tensor in tensors.items():
        if name.startswith(prefix):
            index, key = name.removeprefix(prefix).split(".", 1)
            state.setdefault(int(index), {})[key] = tensor
    return {"state": state, "param_groups": groups}
