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
from typing import Any, Literal

import torch
from pydantic import Field, field_validator

from metasearch.errors import DataError
from metasearch.tasks.classification import ClassificationSource, split_classes
from metasearch.tasks.images import MAX_IMAGE_SIZE, image_files, load_classes, resolve_data_root
from metasearch.tasks.options import TaskOptions

log = logging.getLogger(__name__)


class ImageFolderTask(TaskOptions):
    """Tasks over the class folders under ``root``, images resized to ``image_size`` squared and
    converted to ``mode``; a relative ``root`` is read under the data root.

    ``classes_from="group"`` reads ``root/<group>/<class>/<image>`` and draws all the classes
    of a task from one group; ``"any"`` reads ``root/<class>/<image>``. ``rotations`` adds each
    training class at 90, 180 and 270 degrees as new classes.
    """

    added_later = ("invert", "rotations", "classes_from", "fractions", "split_seed")
    source: Literal["image_folder"] = "image_folder"
    root: str
    ways: int = Field(5, ge=2)
    shots: int = Field(1, ge=1)
    query_shots: int = Field(15, ge=1)
    image_size: int = Field(28, ge=8, le=MAX_IMAGE_SIZE)
    mode: Literal["L", "RGB"] = "RGB"
    invert: bool = False
    rotations: bool = False  # training classes only
    classes_from: Literal["any", "group"] = "any"  # group: root/<group>/<class>/<image>
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)  # train, val, test
    split_seed: int = 0

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, fractions: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
            raise ValueError(
                f"fractions (train, val, test) must be >= 0 and sum to 1, got {list(fractions)}"
            )
        return fractions

    def build(
        self, data_root: str | os.PathLike[str] | None = None, device: torch.device | str = "cpu"
    ) -> ClassificationSource:
        """See :func:`image_folder`; an absolute ``root`` replaces the data root."""
        folder = resolve_data_root(data_root) / self.root
        grouped = self.classes_from == "group"
        layout = "<group>/<class>/<image>" if grouped else "<class>/<image>"
        if not folder.is_dir():
            raise DataError(f"image folder {folder} does not exist; expected {folder}/{layout}")
        needed = self.shots + self.query_shots
        groups = _subfolders(folder) if grouped else [folder]
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
        size = (self.image_size, self.image_size)
        data = load_classes(classes, names, size, self.mode, self.invert)
        return ClassificationSource(
            data.images.to(device),
            data.class_offsets.to(device),
            data.class_counts.to(device),
            split_classes(len(usable), self.fractions, self.split_seed),
            ways=self.ways,
            shots=self.shots,
            query_shots=self.query_shots,
            rotations=self.rotations,
            class_groups=torch.tensor([g for g, _ in usable]) if grouped else None,
            group_kind="group",
            classes_from=self.classes_from,
            name="image_folder",
            details={
                "root": str(folder),
                "image_size": self.image_size,
                "mode": self.mode,
                "invert": self.invert,
                "fractions": list(self.fractions),
                "split_seed": self.split_seed,
            },
            shortage_help=(
                f"the folder has {len(usable)} usable classes split by fractions "
                f"{self.fractions}: add classes, lower ways or change task.fractions"
            ),
        )


def image_folder(
    root: str | os.PathLike[str], *, device: torch.device | str = "cpu", **options: Any
) -> ClassificationSource:
    """A task source over the class folders under ``root``, its images resident on ``device``.

    ``options`` are :class:`ImageFolderTask`'s (``ways``, ``fractions``, ...), as a study
    file's ``task:`` takes them; a relative ``root`` is read from the working directory.
    """
    task = ImageFolderTask.of({"root": os.fspath(root), **options})
    return task.build(".", device)


def _subfolders(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as error:
        raise DataError(f"cannot list the image folder {folder}: {error.strerror}") from None
