"""Turning one raw input (a PIL image, or numbers) into the tensor an exported learner expects.

The image transform applies :func:`metasearch.tasks.images.image_pixels`, exactly as training
images were read, then divides by 255.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError
from torch import Tensor

from metasearch.spec import format_validation_error
from metasearch.tasks.images import MAX_IMAGE_SIZE, image_pixels

Transform = Callable[[Any], Tensor]
CHANNELS = {"L": 1, "RGB": 3}
Side = Annotated[int, Field(ge=1, le=MAX_IMAGE_SIZE)]


class ImageTransform(BaseModel):
    """A PIL image to a float tensor ``[C, H, W]`` in [0, 1]; ``size`` is ``[height, width]``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    size: tuple[Side, Side]
    mode: Literal["L", "RGB"]
    invert: StrictBool = False
    scale: Literal["divide by 255"] = "divide by 255"

    def __call__(self, image: Image.Image) -> Tensor:
        pixels = image_pixels(image, self.size, self.mode, self.invert)
        return torch.from_numpy(pixels.copy()).float().div_(255.0)


@dataclass(frozen=True)
class NumericTransform:
    """Numbers, arrays or tensors to a float tensor of ``input_shape``."""

    input_shape: tuple[int, ...]

    def __call__(self, value: Any) -> Tensor:
        tensor = torch.as_tensor(value, dtype=torch.float32)
        if tensor.numel() != int(np.prod(self.input_shape)):
            raise ValueError(
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
