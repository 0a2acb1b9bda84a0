"""N-way K-shot classification over a tensor-resident image set.

All images of all classes sit in one ``uint8`` tensor on the evaluation device; a batch of tasks
is drawn with a handful of random tensors and one gather. Every class belongs to exactly one
split, and rotated copies of a class (when rotations are on) stay in its split.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from metasearch.errors import DataError
from metasearch.tasks.base import SPLITS, Split, TaskBatch, TaskSource, check_split

HELD_OUT: tuple[Split, ...] = ("val", "test")


@dataclass(frozen=True)
class _Pool:
    """What a split's tasks draw from. A pool entry ``p`` is class ``p // turns`` of the split
    seen at ``p % turns`` quarter turns; entries are sorted by group, and only the groups that
    can host a task (``ways`` entries or more) are listed, by first entry and size."""

    entries: Tensor
    starts: Tensor
    sizes: Tensor
    cumulative: Tensor  # running total of ``sizes``, as floats
    widest: int

    def to(self, device: torch.device | str) -> _Pool:
        entries, starts, sizes, cumulative = (
            t.to(device) for t in (self.entries, self.starts, self.sizes, self.cumulative)
        )
        return _Pool(entries, starts, sizes, cumulative, self.widest)


class ClassificationSource(TaskSource):
    """Tasks of ``ways`` classes with ``shots`` support and ``query_shots`` query images each.

    Args:
        images: ``uint8`` images of every class, ``[n_images, channels, height, width]``.
        class_offsets, class_counts: where each class's images start in ``images`` and how many
            it has.
        splits: class indices of each split; they must not overlap.
        rotations: a training augmentation: the ``train`` split draws each class at 0, 90, 180
            or 270 degrees as four distinct classes.
        rotate_held_out: rotate the ``val`` and ``test`` classes too, as Vinyals et al. (2016,
            "Matching Networks for One Shot Learning") did on Omniglot; off, held-out classes
            are seen as they were drawn.
        class_groups: the group of every class (Omniglot: its alphabet), as group indices.
        group_kind: what a group is called (``"alphabet"``); it names ``classes_from``'s choice.
        classes_from: ``"any"`` draws a task's classes from its whole split; ``group_kind``
            draws all of them from one group of the split (Lake et al., 2015, "Human-level
            concept learning through probabilistic program induction").
        name, details: how :meth:`describe` names the source.
        shortage_help: what to do where a split has fewer classes than a task needs (after
            where its classes come from, say).
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
        rotate_held_out: bool = False,
        class_groups: Tensor | None = None,
        group_kind: str = "group",
        classes_from: str = "any",
        name: str = "images",
        details: dict[str, Any] | None = None,
        shortage_help: str = "lower ways",
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError("images must be a uint8 tensor [n_images, channels, height, width]")
        _check_shape(ways, shots, query_shots)
        if (rotations or rotate_held_out) and images.shape[-1] != images.shape[-2]:
            raise ValueError("rotations need square images")
        if class_groups is not None and class_groups.shape != class_counts.shape:
            raise ValueError("class_groups must give one group per class")
        self.images, self.class_offsets, self.class_counts = images, class_offsets, class_counts
        self.ways, self.shots, self.query_shots = ways, shots, query_shots
        self.rotations, self.rotate_held_out = rotations, rotate_held_out
        self.class_groups = None if class_groups is None else class_groups.long().cpu()
        self.group_kind, self.classes_from = group_kind, classes_from
        self.name, self.details = name, dict(details or {})
        self.shortage_help = shortage_help
        self.input_shape = tuple(images.shape[1:])
        self.n_outputs = ways
        self.split_classes = {s: torch.as_tensor(list(splits[s]), dtype=torch.long) for s in SPLITS}
        self._prepare()
        self._max_count = int(class_counts.max())

    def _prepare(self, splits: Sequence[Split] = SPLITS) -> None:
        """Checks the settings against the splits and builds each split's pool; a split outside
        ``splits`` that cannot host a task says so when it is sampled."""
        if self.classes_from not in ("any", self.group_kind):
            raise ValueError(f"classes_from must be 'any' or {self.group_kind!r}")
        if self.classes_from != "any" and self.class_groups is None:
            raise ValueError(f"classes_from={self.classes_from!r} needs class_groups")
        self._check_splits()
        self._pools: dict[Split, _Pool | str] = {}
        for split in SPLITS:
            try:
                self._pools[split] = self._pool(split)
            except DataError as error:
                if split in splits:
                    raise
                self._pools[split] = str(error)
        self.split_classes = {s: c.to(self.device) for s, c in self.split_classes.items()}

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

    def _turns(self, split: Split) -> int:
        """How many orientations each class of ``split`` is drawn at."""
        rotated = self.rotate_held_out if split in HELD_OUT else self.rotations
        return 4 if rotated else 1

    def _pool(self, split: Split) -> _Pool:
        available = self.n_classes(split)
        if available < self.ways:
            each = ", ".join(f"{s} {self.n_classes(s)}" for s in SPLITS)
            raise DataError(
                f"split {split!r} has {available} classes but a {self.ways}-way task needs "
                f"{self.ways} (classes per split: {each}); {self.shortage_help}"
            )
        turns = self._turns(split)
        entries = torch.arange(available)
        if self.classes_from == "any":
            sizes = torch.tensor([entries.numel()])
        else:
            assert self.class_groups is not None
            groups = self.class_groups[self.split_classes[split].cpu()].repeat_interleave(turns)
            entries = entries[groups.argsort(stable=True)]
            sizes = groups.bincount()
            hosts = sizes >= self.ways
            if not hosts.any():
                raise DataError(
                    f"no {self.group_kind} of split {split!r} has the {self.ways} classes a "
                    f"{self.ways}-way task needs: the largest of its {int((sizes > 0).sum())} "
                    f"{self.group_kind}s has {int(sizes.max())}; lower ways or set "
                    "classes_from: any"
                )
            starts = sizes.cumsum(0) - sizes
            return self._on_device(entries, starts[hosts], sizes[hosts])
        return self._on_device(entries, torch.zeros(1, dtype=torch.long), sizes)

    def _on_device(self, entries: Tensor, starts: Tensor, sizes: Tensor) -> _Pool:
        pool = _Pool(entries, starts, sizes, sizes.cumsum(0).float(), int(sizes.max()))
        return pool.to(self.device)

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: torch.device | str) -> ClassificationSource:
        if torch.device(device) == self.device:
            return self
        moved = copy.copy(self)
        moved.images, moved.class_offsets, moved.class_counts = (
            t.to(device) for t in (self.images, self.class_offsets, self.class_counts)
        )
        moved.split_classes = {s: c.to(device) for s, c in self.split_classes.items()}
        moved._pools = {
            s: p if isinstance(p, str) else p.to(device) for s, p in self._pools.items()
        }
        return moved

    def with_episodes(
        self,
        ways: int | None = None,
        shots: int | None = None,
        query_shots: int | None = None,
        *,
        splits: Sequence[Split] = SPLITS,
    ) -> ClassificationSource:
        """This source drawing tasks of another shape; it shares the images, nothing is copied.

        Unset arguments keep this source's value. Each split of ``splits`` must be able to host
        such tasks; another that cannot says so when it is sampled. Prototypical Networks train
        on wider episodes than they are tested on (Snell et al., 2017, "Prototypical Networks
        for Few-shot Learning").
        """
        ways = self.ways if ways is None else ways
        shots = self.shots if shots is None else shots
        query_shots = self.query_shots if query_shots is None else query_shots
        _check_shape(ways, shots, query_shots)
        return self._view(splits, ways=ways, shots=shots, query_shots=query_shots, n_outputs=ways)

    def with_sampling(
        self,
        rotate_held_out: bool | None = None,
        classes_from: str | None = None,
        *,
        splits: Sequence[Split] = SPLITS,
    ) -> ClassificationSource:
        """This source drawing its classes another way (as a meta-test protocol asks): held-out
        classes rotated or not, and a task's classes from its whole split or from one group; it
        shares the images. Unset arguments keep this source's value; ``splits`` as in
        :meth:`with_episodes`."""
        if rotate_held_out and self.images.shape[-1] != self.images.shape[-2]:
            raise ValueError("rotations need square images")
        return self._view(
            splits,
            rotate_held_out=self.rotate_held_out if rotate_held_out is None else rotate_held_out,
            classes_from=self.classes_from if classes_from is None else classes_from,
        )

    def _view(self, splits: Sequence[Split], **settings: Any) -> ClassificationSource:
        view = copy.copy(self)
        view.__dict__.update(settings)
        view._prepare(splits)
        return view

    def n_classes(self, split: Split) -> int:
        """Distinct classes of ``split``, rotated copies included."""
        return self.split_classes[split].numel() * self._turns(split)

    def sample(self, split: Split, n_tasks: int, generator: torch.Generator) -> TaskBatch:
        """``n_tasks`` tasks of ``split``. With ``classes_from`` a group, each task picks one
        group of those that can host it, with probability proportional to its classes in the
        split (so every class of those groups is about equally likely), then ``ways`` distinct
        classes of that group."""
        check_split(split)
        rand_device = generator.device
        pool, turns = self._pools[split], self._turns(split)
        if isinstance(pool, str):
            raise DataError(pool)
        groups = pool.starts.numel()
        if groups > 1:
            draw = torch.rand(n_tasks, generator=generator, device=rand_device).to(self.device)
            group = torch.searchsorted(pool.cumulative, draw * pool.cumulative[-1], right=True)
            group = group.clamp_(max=groups - 1)
        else:
            group = torch.zeros(n_tasks, dtype=torch.long, device=self.device)
        # A random permutation of the group per task: its first ``ways`` entries are the task's
        # classes, and their order is the task's labelling, so labels are permuted afresh for
        # every task.
        order = torch.rand(n_tasks, pool.widest, generator=generator, device=rand_device)
        order = order.to(self.device)
        if groups > 1:
            slots = torch.arange(pool.widest, device=self.device)
            order = order.masked_fill(slots >= pool.sizes[group][:, None], 2.0)
        position = pool.starts[group][:, None] + order.argsort(dim=1)[:, : self.ways]
        picked = pool.entries[position]  # [T, N]
        base, turns_of = picked // turns, picked % turns
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
        if turns > 1:
            x = _rotate(x, turns_of)
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
            "held_out_rotations": self.rotate_held_out,
            "classes_from": self.classes_from,
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
    """A seeded random partition of ``range(n_classes)`` into train, val and test, by
    ``fractions`` (>= 0, summing to 1)."""
    order = torch.randperm(n_classes, generator=torch.Generator().manual_seed(seed)).tolist()
    n_train = round(fractions[0] * n_classes)
    n_val = min(round(fractions[1] * n_classes), n_classes - n_train)
    return {
        "train": sorted(order[:n_train]),
        "val": sorted(order[n_train : n_train + n_val]),
        "test": sorted(order[n_train + n_val :]),
    }
