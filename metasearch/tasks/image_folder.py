"""Your own images: ``root/<class>/<image>``, one folder per class.

Classes are split at random (``split_seed``) into meta-train, meta-validation and meta-test by
``fractions``; classes with fewer than ``shots + query_shots`` images are left out with a
warning.
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
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    split_seed: int = 0,
    device: torch.device | str = "cpu",
) -> ClassificationSource:
    """A task source over class folders, images resized to ``image_size`` squared."""
    folder = Path(root)
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist; expected {folder}/<class>/<image>")
    needed = shots + query_shots
    try:
        classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as error:
        raise DataError(f"cannot list the image folder {folder}: {error.strerror}") from None
    usable = [c for c in classes if len(image_files(c)) >= needed]
    if not usable:
        raise DataError(
            f"no class folder under {folder} holds {needed} images (shots + query_shots); "
            "expected root/<class>/<image> with enough images per class"
        )
    if len(usable) < len(classes):
        log.warning(
            "left out %d of %d classes with fewer than %d images",
            len(classes) - len(usable),
            len(classes),
            needed,
        )
    data = load_classes(usable, [c.name for c in usable], (image_size, image_size), mode, invert)
    return ClassificationSource(
        data.images.to(device),
        data.class_offsets.to(device),
        data.class_counts.to(device),
        split_classes(len(usable), fractions, split_seed),
        ways=ways,
        shots=shots,
        query_shots=query_shots,
        rotations=rotations,
        name="image_folder",
        details={
            "root": str(folder),
            "image_size": image_size,
            "mode": mode,
            "invert": invert,
            "split_seed": split_seed,
        },
    )
