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
from pathlib import Path
from typing import Literal

import torch

from metasearch.errors import DataError
from metasearch.tasks.classification import ClassificationSource
from metasearch.tasks.images import load_classes

SUBSETS = ("images_background", "images_evaluation")
MISSING_HELP = (
    "Omniglot was not found: expected {folder}/images_background and images_evaluation. "
    "Pass data_root (CLI: --data-root) or set METASEARCH_DATA to the folder that holds "
    "omniglot/omniglot-py/, or pass download=True to fetch it with torchvision."
)


def data_root(root: str | os.PathLike[str] | None) -> Path:
    """The data root: ``root`` if given, else ``$METASEARCH_DATA``, else ``./data``."""
    return Path(root if root is not None else os.environ.get("METASEARCH_DATA", "data"))


def omniglot(
    root: str | os.PathLike[str] | None = None,
    ways: int = 5,
    shots: int = 1,
    query_shots: int = 15,
    image_size: int = 28,
    rotations: bool = True,
    rotate_held_out: bool = False,
    classes_from: Literal["any", "alphabet"] = "any",
    split: Literal["vinyals", "lake"] = "vinyals",
    split_seed: int = 0,
    download: bool = False,
    device: torch.device | str = "cpu",
) -> ClassificationSource:
    """An Omniglot task source with class-disjoint splits, its images resident on ``device``."""
    base = data_root(root)
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
        size=(image_size, image_size),
        mode="L",
        invert=True,
    )
    alphabets = {key: i for i, key in enumerate(dict.fromkeys((s, a) for s, a, _ in characters))}
    n_background = sum(subset == SUBSETS[0] for subset, _, _ in characters)
    groups = [alphabets[s, a] for s, a, _ in characters]
    splits = _splits(groups, n_background, split, split_seed)
    return ClassificationSource(
        data.images.to(device),
        data.class_offsets.to(device),
        data.class_counts.to(device),
        splits,
        ways=ways,
        shots=shots,
        query_shots=query_shots,
        rotations=rotations,
        rotate_held_out=rotate_held_out,
        class_groups=torch.tensor(groups),
        group_kind="alphabet",
        classes_from=classes_from,
        name="omniglot",
        details={
            "split": split,
            "split_seed": split_seed,
            "image_size": image_size,
            "invert": True,
        },
    )


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
