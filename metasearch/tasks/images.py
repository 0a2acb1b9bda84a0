"""Reading class-per-folder image sets into one ``uint8`` tensor, with an on-disk cache.

Decoding tens of thousands of PNG files takes a while, so the decoded array is cached as a
``.npy`` file (no pickle) under ``METASEARCH_CACHE`` (default ``~/.cache/metasearch``) and
reused as long as the folder's files (names, sizes, modification times) and the image settings
are unchanged.

Every file is checked before it is decoded: it must be a regular file (a FIFO, a directory or a
broken link named like an image is refused unopened) of at most ``MAX_PIXELS`` pixels, read from
its header (a small PNG can claim gigapixels). A file that cannot be decoded is named in a
:class:`~metasearch.errors.DataError`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from metasearch.errors import DataError
from metasearch.reading import check_regular, open_regular

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
MAX_IMAGE_SIZE = 512  # the side tasks may resize images to
MAX_PIXELS = 1 << 25  # of one image file, as its header states
log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class ImageSet:
    """Images of many classes: ``images[class_offsets[c] : + class_counts[c]]`` is class ``c``."""

    images: Tensor
    class_offsets: Tensor
    class_counts: Tensor
    class_names: tuple[str, ...]


def resolve_data_root(root: str | os.PathLike[str] | None) -> Path:
    """The data root: ``root`` if given, else ``$METASEARCH_DATA``, else ``./data``."""
    return Path(root if root is not None else os.environ.get("METASEARCH_DATA", "data"))


def cache_dir() -> Path:
    return Path(os.environ.get("METASEARCH_CACHE", Path.home() / ".cache" / "metasearch"))


def image_files(folder: Path) -> list[Path]:
    """The files of ``folder`` named like images, by name; raises :class:`DataError` where one
    is not a regular file."""
    try:
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    except OSError as error:
        raise DataError(f"cannot list the folder {folder}: {error.strerror or error}") from None
    for path in paths:
        check_regular(path, "image", DataError)
    return paths


def read_image(path: Path, decode: Callable[[Image.Image], T]) -> T:
    """``decode`` applied to the image file ``path``, checked as the module says. Call it within
    :func:`refusing_bombs`, which turns PIL's own warning about huge images into an error."""
    with open_regular(path, "image", DataError) as file:
        try:
            with Image.open(file) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise DataError(
                        f"image {path} has {image.width}x{image.height} pixels, more than the "
                        f"limit of {MAX_PIXELS:,}; shrink it or remove it"
                    )
                return decode(image)
        except DataError:
            raise
        except Image.UnidentifiedImageError:
            raise DataError(
                f"image {path} is not in a format PIL can read, or is damaged; replace or remove it"
            ) from None
        except Exception as error:  # PIL raises many kinds for a damaged file
            problem = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise DataError(
                f"cannot decode image {path} ({problem}); replace or remove it"
            ) from None


@contextmanager
def refusing_bombs() -> Iterator[None]:
    """PIL's ``DecompressionBombWarning`` raised as an error. The warning filters are global:
    enter this in the thread that starts any decoding threads, around all of them."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def load_image(path: Path, size: tuple[int, int], mode: str, invert: bool) -> np.ndarray:
    """One image file as ``uint8 [channels, height, width]`` (see :func:`image_pixels`)."""
    return read_image(path, lambda image: image_pixels(image, size, mode, invert))


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
    array = _read_cache(path, int(counts.sum()), size)
    if array is None:
        flat = [f for group in files for f in group]
        log.info("decoding %d images into the cache at %s", len(flat), path)
        with refusing_bombs(), ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
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


def _read_cache(path: Path, n_images: int, size: tuple[int, int]) -> np.ndarray | None:
    """The cached array at ``path``, or None where there is none or it is damaged."""
    if not path.is_file():
        return None
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        log.warning("decoding again: the image cache %s is unreadable (%s)", path, error)
        return None
    shape = (n_images, *size)
    if array.dtype != np.uint8 or array.ndim != 4 or (len(array), *array.shape[2:]) != shape:
        log.warning("decoding again: the image cache %s does not fit its images", path)
        return None
    return array


def _save_atomically(path: Path, array: np.ndarray) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        with open(partial, "wb") as handle:
            np.save(handle, array, allow_pickle=False)
        os.replace(partial, path)
    except OSError as error:  # a read-only cache only costs decoding time next run
        log.warning("could not write the image cache at %s: %s", path, error)
