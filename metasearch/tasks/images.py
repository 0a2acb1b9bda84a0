"""Reading class-per-folder image sets into one ``uint8`` tensor, with an on-disk cache.

Decoding tens of thousands of PNG files takes a while, so the decoded array is cached as a
``.npy`` file (no pickle) under ``METASEARCH_CACHE`` (default ``~/.cache/metasearch``) and
reused as long as the folder's files (names, sizes, modification times) and the image settings
are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageSet:
    """Images of many classes: ``images[class_offsets[c] : + class_counts[c]]`` is class ``c``."""

    images: Tensor
    class_offsets: Tensor
    class_counts: Tensor
    class_names: tuple[str, ...]


def cache_dir() -> Path:
    return Path(os.environ.get("METASEARCH_CACHE", Path.home() / ".cache" / "metasearch"))


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def load_image(path: Path, size: tuple[int, int], mode: str, invert: bool) -> np.ndarray:
    """One image file as ``uint8 [channels, height, width]`` (see :func:`image_pixels`)."""
    with Image.open(path) as image:
        return image_pixels(image, size, mode, invert)


def image_pixels(image: Image.Image, size: tuple[int, int], mode: str, invert: bool) -> np.ndarray:
    """``uint8 [channels, height, width]``: converted to ``mode``, resized to ``size`` (height,
    width) with Lanczos filtering, and inverted if asked."""
    image = image.convert(mode).resize((size[1], size[0]), Image.Resampling.LANCZOS)
    array = np.asarray(image, dtype=np.uint8)
    if invert:
        array = 255 - array
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def load_classes(
    class_folders: Sequence[Path],
    class_names: Sequence[str],
    size: tuple[int, int],
    mode: str = "L",
    invert: bool = False,
) -> ImageSet:
    """Decodes every image of every class folder (or reads them from the cache)."""
    files = [image_files(folder) for folder in class_folders]
    counts = np.array([len(f) for f in files], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    key = _cache_key(files, size, mode, invert)
    path = cache_dir() / f"images-{key}.npy"
    if path.exists():
        array = np.load(path, allow_pickle=False)
    else:
        flat = [f for group in files for f in group]
        log.info("decoding %d images into the cache at %s", len(flat), path)
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            decoded = list(pool.map(lambda p: load_image(p, size, mode, invert), flat))
        array = np.stack(decoded) if decoded else np.zeros((0, 1, *size), np.uint8)
        _save_atomically(path, array)
    return ImageSet(
        torch.from_numpy(array),
        torch.from_numpy(offsets),
        torch.from_numpy(counts),
        tuple(class_names),
    )


def _cache_key(files: list[list[Path]], size: tuple[int, int], mode: str, invert: bool) -> str:
    digest = hashlib.sha256(json.dumps([list(size), mode, invert]).encode())
    for group in files:
        for f in group:
            digest.update(str(f.resolve()).encode())
            stat = f.stat()  # size and mtime: an edited image of the same size shows by its mtime
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:20]


def _save_atomically(path: Path, array: np.ndarray) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        with open(partial, "wb") as handle:
            np.save(handle, array, allow_pickle=False)
        os.replace(partial, path)
    except OSError as error:  # a read-only cache only costs decoding time next run
        log.warning("could not write the image cache at %s: %s", path, error)
