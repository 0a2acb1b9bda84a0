"""In-training checkpoints: a candidate's meta-training state, so a retried candidate resumes.

A checkpoint is a folder holding ``state.safetensors`` (the learner's tensors, the optimizer's
moment tensors and the task sampler's random state) and ``state.json`` (iteration, elapsed
time, validation curve, the optimizer's settings). Both are written to temporary names and
renamed into place, JSON last, so a worker killed while writing leaves the previous checkpoint
whole. Nothing is pickled.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import Tensor

TENSORS_FILE, STATE_FILE = "state.safetensors", "state.json"


@dataclass
class TrainingState:
    """Where meta-training stood after ``iteration`` meta-iterations."""

    iteration: int
    seconds: float
    first_loss: float | None
    curve: list[tuple[int, float]]
    learner: dict[str, Tensor]
    optimizer: dict[str, Any]
    generator: Tensor
    examples: float = 0.0


@dataclass(frozen=True)
class CheckpointStore:
    """Checkpoints of one candidate in ``directory``, saved every ``every`` meta-iterations."""

    directory: Path
    every: int

    def save(self, state: TrainingState) -> None:
        tensors, groups = _flatten_optimizer(state.optimizer)
        tensors |= {f"learner.{name}": t for name, t in state.learner.items()}
        tensors["generator"] = state.generator
        tensors["iteration"] = torch.tensor(state.iteration)
        record = {
            "iteration": state.iteration,
            "seconds": state.seconds,
            "examples": state.examples,
            "first_loss": state.first_loss,
            "curve": [list(point) for point in state.curve],
            "optimizer_groups": groups,
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        tensors = {n: t.detach().cpu().contiguous() for n, t in tensors.items()}
        # Serialized here and written by Python, so that a full disk is an OSError with its errno.
        (self.directory / f"{TENSORS_FILE}.tmp").write_bytes(save(tensors))
        (self.directory / f"{STATE_FILE}.tmp").write_text(json.dumps(record))
        os.replace(self.directory / f"{TENSORS_FILE}.tmp", self.directory / TENSORS_FILE)
        os.replace(self.directory / f"{STATE_FILE}.tmp", self.directory / STATE_FILE)

    def load(self) -> TrainingState | None:
        """The last checkpoint, or None where there is none or it cannot be read whole."""
        try:
            record = json.loads((self.directory / STATE_FILE).read_text())
            tensors = load_file(self.directory / TENSORS_FILE)
        except (OSError, ValueError, SafetensorError):
            return None
        if record["iteration"] != int(tensors["iteration"]):
            return None  # killed between the two renames: the tensors are a checkpoint newer
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
        )

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def _flatten_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, Tensor], list[Any]]:
    tensors = {}
    for index, slots in state_dict["state"].items():
        for key, value in slots.items():
            tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value)
    return tensors, json.loads(json.dumps(state_dict["param_groups"]))


def _unflatten_optimizer(tensors: dict[str, Tensor], groups: list[Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Tensor]] = {}
    for name, tensor in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = tensor
    return {"state": state, "param_groups": groups}
