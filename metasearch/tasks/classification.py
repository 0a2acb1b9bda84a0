"""N-way K-shot classification over a tensor-resident image set.

All images of all classes sit in one ``uint8`` tensor on the evaluation device; a batch of tasks
is drawn with a handful of random tensors and one gather. Every class belongs to exactly one
split, and rotated copies of a class (when ``rotations`` is on) stay in its split.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from metasearch.errors import DataError
from metasearch.tasks.base import SPLITS, Split, TaskBatch, TaskSource, check_split


class ClassificationSource(TaskSource):
    """Tasks of ``ways`` classes with ``shots`` support and ``query_shots`` query images each.

    Args:
        images: ``uint8`` images of every class, ``[n_images, channels, height, width]``.
        class_offsets, class_counts: where each class's images start in ``images`` and how many
            it has.
        splits: class indices of each split; they must not overlap.
        rotations: draw each class at 0, 90, 180 or 270 degrees as four distinct classes.
        invert: present ``1 - pixel`` (strokes on black for Omniglot-like scans).
        name, details: how :meth:`describe` names the source.
    """

    kind = "classification"

    def __init__(
        self,
        images: Tensor,
        class_offsets: Tensor,
        class_counts: Tensor,
        splits: dict[Split, Sequence[int]],
        ways: int = 5,
        shots: int = 1,
        query_shots: int = 15,
        rotations: bool = False,
        name: str = "images",
        details: dict[str, Any] | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError("images must be a uint8 tensor [n_images, channels, height, width]")
        _check_shape(ways, shots, query_shots)
        if rotations and images.shape[-1] != images.shape[-2]:
            raise ValueError("rotations need square images")
        self.images, self.class_offsets, self.class_counts = images, class_offsets, class_counts
        self.ways, self.shots, self.query_shots = ways, shots, query_shots
        self.rotations, self.name, self.details = rotations, name, dict(details or {})
        self.input_shape = tuple(images.shape[1:])
        self.n_outputs = ways
        self.split_classes = {s: torch.as_tensor(list(splits[s]), dtype=torch.long) for s in SPLITS}
        self._check_splits()
        self.split_classes = {s: c.to(images.device) for s, c in self.split_classes.items()}
        self._max_count = int(class_counts.max())

    def _check_splits(self) -> None:
        seen: set[int] = set()
        needed = self.shots + self.query_shots
        n_classes = self.class_counts.numel()
        for split, classes in self.split_classes.items():
            members = set(classes.tolist())
            if len(members) < classes.numel() or not all(0 <= c < n_classes for c in members):
                raise ValueError(
                    f"split {split!r} must list distinct class indices in [0, {n_classes})"
                )
            if members & seen:
                raise ValueError(f"split {split!r} shares classes with another split")
            seen |= members
            counts = self.class_counts.cpu()[classes.cpu()]
            if classes.numel() and int(counts.min()) < needed:
                raise DataError(
                    f"split {split!r} has a class with {int(counts.min())} images, fewer than "
                    f"shots + query_shots = {needed}; lower query_shots or drop small classes"
                )
            available = classes.numel() * (4 if self.rotations else 1)
            if available < self.ways:
                raise DataError(
                    f"split {split!r} has {available} classes, fewer than ways = {self.ways}"
                )

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: torch.device | str) -> ClassificationSource:
        if torch.device(device) == self.device:
            return self
        return ClassificationSource(
            self.images.to(device),
            self.class_offsets.to(device),
            self.class_counts.to(device),
            {s: c.tolist() for s, c in self.split_classes.items()},
            self.ways,
            self.shots,
            self.query_shots,
            self.rotations,
            self.name,
            self.details,
        )

    def with_episodes(
        self, ways: int | None = None, shots: int | None = None, query_shots: int | None = None
    ) -> ClassificationSource:
        """This source drawing tasks of another shape; it shares the images, nothing is copied.

        Unset arguments keep this source's value. Prototypical Networks train on wider episodes
        than they are tested on (Snell et al., 2017, "Prototypical Networks for Few-shot
        Learning").
        """
        ways = self.ways if ways is None else ways
        shots = self.shots if shots is None else shots
        query_shots = self.query_shots if query_shots is None else query_shots
        _check_shape(ways, shots, query_shots)
        view = copy.copy(self)
        view.ways, view.shots, view.query_shots, view.n_outputs = ways, shots, query_shots, ways
        view._check_splits()
        return view

    def n_classes(self, split: Split) -> int:
        """Distinct classes of ``split``, rotated copies included."""
        return self.split_classes[split].numel() * (4 if self.rotations else 1)

    def sample(self, split: Split, n_tasks: int, generator: torch.Generator) -> TaskBatch:
        check_split(split)
        rand_device = generator.device
        pool = self.n_classes(split)
        # A random permutation per task: its first ``ways`` entries are the task's classes, and
        # their order is the task's labelling, so labels are permuted afresh for every task.
        picked = torch.rand(n_tasks, pool, generator=generator, device=rand_device)
        picked = picked.argsort(dim=1)[:, : self.ways].to(self.device)
        base, turns = (picked // 4, picked % 4) if self.rotations else (picked, None)
        classes = self.split_classes[split][base]  # [T, N]

        per_class = self.shots + self.query_shots
        counts = self.class_counts[classes]  # [T, N]
        shape = (n_tasks, self.ways, self._max_count)
        order = torch.rand(shape, generator=generator, device=rand_device)
        order = order.to(self.device)
        slots = torch.arange(self._max_count, device=self.device)
        order = order.masked_fill(slots >= counts[..., None], 2.0)  # past a class's end: last
        chosen = order.argsort(dim=2)[..., :per_class]  # [T, N, K+Q], no repeats
        index = self.class_offsets[classes][..., None] + chosen

        x = self.images[index].float().div_(255.0)  # [T, N, K+Q, C, H, W]
        if turns is not None:
            x = _rotate(x, turns)
        labels = torch.arange(self.ways, device=self.device).expand(n_tasks, self.ways)
        support_x = x[:, :, : self.shots].flatten(1, 2)
        query_x = x[:, :, self.shots :].flatten(1, 2)
        support_y = labels[..., None].expand(-1, -1, self.shots).flatten(1)
        query_y = labels[..., None].expand(-1, -1, self.query_shots).flatten(1)
        return TaskBatch(support_x, support_y, query_x, query_y)

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.name,
            **self.details,
            "ways": self.ways,
            "shots": self.shots,
            "query_shots": self.query_shots,
            "rotations": self.rotations,
            "classes": {s: int(c.numel()) for s, c in self.split_classes.items()},
        }

    def input_transform(self) -> dict[str, Any]:
        channels, height, width = self.input_shape
        return {
            "size": [height, width],
            "mode": "L" if channels == 1 else "RGB",
            "invert": bool(self.details.get("invert", False)),
            "scale": "divide by 255",
        }


def _check_shape(ways: int, shots: int, query_shots: int) -> None:
    if ways < 2 or shots < 1 or query_shots < 1:
        raise ValueError("tasks need ways >= 2, shots >= 1 and query_shots >= 1")


def _rotate(x: Tensor, turns: Tensor) -> Tensor:
    """Rotates each class ``[T, N, ...]`` of ``x`` by its own number of quarter turns."""
    turns = turns.view(*turns.shape, 1, 1, 1, 1)
    out = x
    for k in (1, 2, 3):
        out = torch.where(turns == k, torch.rot90(x, k, dims=(-2, -1)), out)
    return out


def split_classes(
    n_classes: int, fractions: tuple[float, float, float], seed: int
) -> dict[Split, list[int]]:
    """A seeded random partition of ``range(n_classes)`` into train, val and test."""
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    order = torch.randperm(n_classes, generator=torch.Generator().manual_seed(seed)).tolist()
    n_train = round(fractions[0] * n_classes)
    n_val = min(round(fractions[1] * n_classes), n_classes - n_train)
    return {
        "train": sorted(order[:n_train]),
        "val": sorted(order[n_train : n_train + n_val]),
        "test": sorted(order[n_train + n_val :]),
    }
