"""Device names (``auto``, ``cpu``, ``cuda`` or ``cuda:N``), checked against this machine; apart
from the search so that using an exported learner needs no search layer."""

from __future__ import annotations

import re

import torch

from metasearch.errors import SpecError

DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` where CUDA is available, else ``cpu``; checks that CUDA exists."""
    if not DEVICE.fullmatch(device):
        raise SpecError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SpecError(f"device {device} asks for CUDA, which is not available; use auto or cpu")
    if device.startswith("cuda:") and int(device[5:]) >= (count := torch.cuda.device_count()):
        raise SpecError(f"there is no device {device}: this machine has cuda:0 to cuda:{count - 1}")
    return device
