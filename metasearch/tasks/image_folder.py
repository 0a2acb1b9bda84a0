"""Your own images: ``root/<class>/<image>``, one folder per class, or one level more,
``root/<group>/<class>/<image>``, for tasks whose classes all come from one group.

Classes are split at random (``split_seed``) into meta-train, meta-validation and meta-test by
``fractions``, whatever their group; classes with fewer than ``shots + query_shots`` images are
left out with a warning.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal

import torch

from metasearch.errors import DataError
from metasearch.tasks.classification import ClassificationSource, split_classes
from metasearch.tasks.images import image_files, load_classes

log = logging.getLogger(__name__)


def image_folder(
    root: str | os.PathLike[str],
    ways: int = 5,
    shots: int = 1,
    query_shots: int = 15,
    image_size: int = 28,
    mode: Literal["L", "RGB"] = "RGB",
    invert: bool = False,
    rotations: bool = False,
    classes_from: Literal["any", "group"] = "any",
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    split_seed: int = 0,
    device: torch.device | str = "cpu",
) -> ClassificationSource:
    """A task source over class folders, images resized to ``image_size`` squared.

    ``classes_from="group"`` reads ``root/<group>/<class>/<image>`` and draws all the classes
    of a task from one group; ``"any"`` reads ``root/<class>/<image>``.
    """
    folder = Path(root)
    layout = "<group>/<class>/<image>" if classes_from == "group" else "<class>/<image>"
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist; expected {folder}/{layout}")
    needed = shots + query_shots
    groups = _subfolders(folder) if classes_from == "group" else [folder]
    found = [(g, c) for g, group in enumerate(groups) for c in _subfolders(group)]
    usable = [(g, c) for g, c in found if len(image_files(c)) >= needed]
    if not usable:
        raise DataError(
            f"no class folder under {folder} holds {needed} images (shots + query_shots); "
            f"expected root/{layout} with enough images per class"
        )
    if len(usable) < len(found):
        log.warning(
            "left out %d of %d classes with fewer than %d images",
            len(found) - len(usable),
            len(found),
            needed,
        )
    classes = [c for _, c in usable]
    names = [str(c.relative_to(folder)) for c in classes]
    data = load_classes(classes, names, (image_size, image_size), mode, invert)
    return ClassificationSource(
        data.images.to(device),
        data.class_offsets.to(device),
        data.class_counts.to(device),
        split_classes(len(usable), fractions, split_seed),
        ways=ways,
        shots=shots,
        query_shots=query_shots,
        rotations=rotations,
        class_groups=torch.tensor([g for g, _ in usable]) if classes_from == "group" else None,
        group_kind="group",
        classes_from=classes_from,
        name="image_folder",
        details={
            "root": str(folder),
            "image_size": image_size,
            "mode": mode,
            "invert": invert,
            "split_seed": split_seed,
        },
    )


def _subfolders(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as error:
        raise DataError(f"cannot list the image folder {folder}: {error.strerror}") from None
