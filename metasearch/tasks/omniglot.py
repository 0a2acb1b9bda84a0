"""Omniglot (Lake et al., Science 2015): 1623 handwritten characters, 20 drawings each.

The data root holds ``omniglot/omniglot-py/images_background`` and ``.../images_evaluation`` in
the layout that ``torchvision.datasets.Omniglot`` unpacks to. metasearch reads that layout
directly and uses torchvision only to download it (``download=True``).

Splits (``split="vinyals"``, the default): all 1623 characters, sorted by alphabet and
character, are shuffled with ``split_seed``; 1100 go to meta-training, 100 to meta-validation
and the remaining 423 to meta-test, the meta-test size of Vinyals et al. (2016). With
``split="lake"``, the 30 background alphabets are shuffled with ``split_seed`` and whole alphabets
are held out for validation until they hold at least 100 characters (so that validation, like
the test, meets alphabets never trained on); the rest train, and the 659 characters of the 20
evaluation alphabets form the test split. Images are 28x28, strokes bright on a dark
background.

``rotations`` augments meta-training: the training split adds each character at 90, 180 and 270
degrees as new classes; validation and test characters are seen upright unless
``rotate_held_out`` asks for the protocol of Vinyals et al. (2016), who rotated them too.
``classes_from="alphabet"`` draws all the characters of a task from one alphabet, in every
split, as Lake et al. (2015) posed one-shot tasks; the default draws them across alphabets.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import torch
from pydantic import Field

from metasearch.errors import DataError
from metasearch.tasks.classification import ClassificationSource
from metasearch.tasks.images import MAX_IMAGE_SIZE, load_classes, resolve_data_root
from metasearch.tasks.options import TaskOptions

SUBSETS = ("images_background", "images_evaluation")
MISSING_HELP = (
    "Omniglot was not found: expected {folder}/images_background and images_evaluation. "
    "Pass data_root (CLI: --data-root) or set METASEARCH_DATA to the folder that holds "
    "omniglot/omniglot-py/, or pass download=True to fetch it with torchvision."
)


class OmniglotTask(TaskOptions):
    """Omniglot tasks: ``ways``-way ``shots``-shot with ``query_shots`` queries per class, images
    ``image_size`` squared; the other options as the module says."""

    added_later = ("rotate_held_out", "classes_from", "split_seed")
    source: Literal["omniglot"] = "omniglot"
    ways: int = Field(5, ge=2)
    shots: int = Field(1, ge=1)
    query_shots: int = Field(15, ge=1)
    image_size: int = Field(28, ge=8, le=MAX_IMAGE_SIZE)
    rotations: bool = True  # training classes only
    rotate_held_out: bool = False
    classes_from: Literal["any", "alphabet"] = "any"
    split: Literal["vinyals", "lake"] = "vinyals"
    split_seed: int = 0

    def build(
        self,
        data_root: str | os.PathLike[str] | None = None,
        device: torch.device | str = "cpu",
        download: bool = False,
    ) -> ClassificationSource:
        """See :func:`omniglot`."""
        base = resolve_data_root(data_root)
        folder = base / "omniglot" / "omniglot-py"
        if download and not all((folder / s).is_dir() for s in SUBSETS):
            from torchvision.datasets import Omniglot

            for background in (True, False):
                Omniglot(str(base / "omniglot"), background=background, download=True)
        if not all((folder / s).is_dir() for s in SUBSETS):
            raise DataError(MISSING_HELP.format(folder=folder))

        characters = [
            (subset, alphabet.name, character)
            for subset in SUBSETS
            for alphabet in sorted((folder / subset).iterdir())
            if alphabet.is_dir()
            for character in sorted(alphabet.iterdir())
            if character.is_dir()
        ]
        data = load_classes(
            [c[-1] for c in characters],
            [f"{alphabet}/{character.name}" for _, alphabet, character in characters],
            size=(self.image_size, self.image_size),
            mode="L",
            invert=True,
        )
        alphabets = {
            key: i for i, key in enumerate(dict.fromkeys((s, a) for s, a, _ in characters))
        }
        n_background = sum(subset == SUBSETS[0] for subset, _, _ in characters)
        groups = [alphabets[s, a] for s, a, _ in characters]
        return ClassificationSource(
            data.images.to(device),
            data.class_offsets.to(device),
            data.class_counts.to(device),
            _splits(groups, n_background, self.split, self.split_seed),
            ways=self.ways,
            shots=self.shots,
            query_shots=self.query_shots,
            rotations=self.rotations,
            rotate_held_out=self.rotate_held_out,
            class_groups=torch.tensor(groups),
            group_kind="alphabet",
            classes_from=self.classes_from,
            name="omniglot",
            details={
                "split": self.split,
                "split_seed": self.split_seed,
                "image_size": self.image_size,
                "invert": True,
            },
        )


def omniglot(
    root: str | os.PathLike[str] | None = None,
    *,
    device: torch.device | str = "cpu",
    download: bool = False,
    **options: Any,
) -> ClassificationSource:
    """An Omniglot task source with class-disjoint splits, its images resident on ``device``.

    ``options`` are :class:`OmniglotTask`'s (``ways``, ``shots``, ``split``, ...), as a study
    file's ``task:`` takes them; ````root`` is the data root
    (see :func:`~metasearch.tasks.images.resolve_data_root`).
    """
    return OmniglotTask.of(options).build(root, device, download)


LAKE_VALIDATION_CHARACTERS = 100


def _splits(groups: list[int], n_background: int, scheme: str, seed: int) -> dict[str, list[int]]:
    """Class indices of each split; ``groups`` gives every character's alphabet."""
    n = len(groups)
    generator = torch.Generator().manual_seed(seed)
    if scheme == "vinyals":
        order = torch.randperm(n, generator=generator).tolist()
        n_train, n_val = round(n * 1100 / 1623), round(n * 100 / 1623)
        return {
            "train": sorted(order[:n_train]),
            "val": sorted(order[n_train : n_train + n_val]),
            "test": sorted(order[n_train + n_val :]),
        }
    if scheme == "lake":
        background = sorted(set(groups[:n_background]))
        held_out: set[int] = set()
        for index in torch.randperm(len(background), generator=generator).tolist():
            if sum(groups[c] in held_out for c in range(n_background)) >= (
                LAKE_VALIDATION_CHARACTERS
            ):
                break
            held_out.add(background[index])
        return {
            "train": [c for c in range(n_background) if groups[c] not in held_out],
            "val": [c for c in range(n_background) if groups[c] in held_out],
            "test": list(range(n_background, n)),
        }
    raise ValueError(f"unknown Omniglot split {scheme!r}; choose vinyals or lake")
