"""Turning one raw input (an image, or numbers) into the tensor an exported learner expects.

The image transform takes a PIL image, an image file's path, or an image's pixels as an array
or tensor, makes a PIL image of it and applies :func:`metasearch.tasks.images.image_pixels`,
exactly as training images were read, then divides by 255.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError
from torch import Tensor

from metasearch.errors import InputError
from metasearch.spec import format_validation_error
from metasearch.tasks.images import MAX_IMAGE_SIZE, image_pixels, read_image, refusing_bombs

Transform = Callable[[Any], Tensor]
CHANNELS = {"L": 1, "RGB": 3}
Side = Annotated[int, Field(ge=1, le=MAX_IMAGE_SIZE)]
IMAGE_INPUTS = (
    "a PIL image, an image file's path (str or Path), a numpy array [H, W] or [H, W, C] or a "
    "torch tensor [H, W] or [C, H, W] (C of 1, 3 or 4; uint8 0-255 or float 0-1)"
)


class ImageTransform(BaseModel):
    """One image to a float tensor ``[C, H, W]`` in [0, 1]; ``size`` is ``[height, width]``.

    It takes what :data:`IMAGE_INPUTS` says: arrays are laid out as PIL and numpy images are
    (channels last), tensors as torch's are (channels first), and float pixels in [0, 1] are
    rounded to the 8 bits training images had. Anything else raises :class:`InputError`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    size: tuple[Side, Side]
    mode: Literal["L", "RGB"]
    invert: StrictBool = False
    scale: Literal["divide by 255"] = "divide by 255"

    def __call__(self, image: Any) -> Tensor:
        if isinstance(image, (str, os.PathLike)):
            with refusing_bombs():
                return read_image(Path(image), self)
        if isinstance(image, Tensor):
            image = _channels_last(image.detach().cpu().numpy())
        if isinstance(image, np.ndarray):
            image = Image.fromarray(_pixels(image))
        if not isinstance(image, Image.Image):
            raise InputError(f"learner.transform takes {IMAGE_INPUTS}; got {type(image).__name__}")
        pixels = image_pixels(image, self.size, self.mode, self.invert)
        return torch.from_numpy(pixels.copy()).float().div_(255.0)


def _channels_last(array: np.ndarray) -> np.ndarray:
    """A tensor's ``[C, H, W]`` pixels as ``[H, W, C]``; ``[H, W]`` stays."""
    if array.ndim == 3 and array.shape[0] in (1, 3, 4):
        return array.transpose(1, 2, 0)
    if array.ndim == 2:
        return array
    raise InputError(f"learner.transform takes {IMAGE_INPUTS}; got a tensor {list(array.shape)}")


def _pixels(array: np.ndarray) -> np.ndarray:
    """``array`` as ``uint8 [H, W]`` or ``[H, W, C]`` for :func:`PIL.Image.fromarray`."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    channels = array.shape[2] if array.ndim == 3 else None
    if array.ndim not in (2, 3) or channels not in (None, 3, 4) or not array.size:
        raise InputError(
            f"learner.transform takes {IMAGE_INPUTS}; got an array {list(array.shape)}"
        )
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype.kind != "f":
        raise InputError(f"learner.transform takes {IMAGE_INPUTS}; got {array.dtype} pixels")
    if not (np.isfinite(array).all() and 0 <= array.min() <= array.max() <= 1):
        raise InputError(f"learner.transform takes {IMAGE_INPUTS}; got float pixels outside 0-1")
    return np.ascontiguousarray(np.rint(array * 255).astype(np.uint8))


@dataclass(frozen=True)
class NumericTransform:
    """Numbers, arrays or tensors to a float tensor of ``input_shape``."""

    input_shape: tuple[int, ...]

    def __call__(self, value: Any) -> Tensor:
        try:
            tensor = torch.as_tensor(value, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError):
            raise InputError(
                f"learner.transform takes numbers, a numpy array or a tensor of "
                f"{int(np.prod(self.input_shape))} values; got {type(value).__name__}"
            ) from None
        if tensor.numel() != int(np.prod(self.input_shape)):
            raise InputError(
                f"expected one input of shape {list(self.input_shape)}, got shape "
                f"{list(tensor.shape)}; transform inputs one at a time"
            )
        return tensor.reshape(self.input_shape)


def make_transform(description: dict[str, Any], input_shape: tuple[int, ...]) -> Transform:
    """The transform a source's ``input_transform()`` describes, for inputs of ``input_shape``;
    an empty description gives :class:`NumericTransform`. Raises ``ValueError`` when the
    description is invalid or does not produce ``input_shape``."""
    if not description:
        return NumericTransform(tuple(input_shape))
    try:
        transform = ImageTransform.model_validate(description)
    except ValidationError as error:
        raise ValueError(format_validation_error(error, "input transform")) from None
    produced = (CHANNELS[transform.mode], *transform.size)
    if produced != tuple(input_shape):
        raise ValueError(
            f"the input transform makes tensors of shape {list(produced)}, but the learner "
            f"takes {list(input_shape)}"
        )
    return transform
