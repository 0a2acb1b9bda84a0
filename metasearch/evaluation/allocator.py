"""Keep freed memory in the process while meta-training on the CPU.

glibc's ``malloc`` serves blocks above a threshold (which it adapts, up to 32 MiB) with fresh
``mmap`` calls and returns them to the system on ``free``. A CPU meta-step allocates and frees
the same large activation buffers again and again, so every step then pays a page fault for
each 4 KiB of them: about 15% of the step's time for the four-block conv learner. Serving
blocks up to 32 MiB from the heap and trimming it only past 1 GiB keeps those pages mapped.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import sys

import torch

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 * 2**20
"""Blocks up to this size come from the heap (glibc's largest allowed threshold)."""
TRIM_THRESHOLD = 2**30
"""Free memory at the top of the heap that stays mapped before it goes back to the system."""


def retain_freed_memory(device: torch.device) -> bool:
    """For meta-training on ``device``: on the CPU, sets glibc's allocator to reuse freed blocks
    instead of unmapping them (once per process; the environment's ``MALLOC_MMAP_THRESHOLD_``
    and ``MALLOC_TRIM_THRESHOLD_`` win where set). Returns whether it is set; on accelerators,
    other C libraries and other systems it does nothing."""
    return device.type == "cpu" and _set_glibc_thresholds()


@functools.cache
def _set_glibc_thresholds() -> bool:
    name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):  # not glibc, or no such function
        mallopt = None
    if mallopt is None:
        return False
    done = True
    for parameter, variable, value in (
        (_M_MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_", MMAP_THRESHOLD),
        (_M_TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_", TRIM_THRESHOLD),
    ):
        if variable not in os.environ:
            done = mallopt(parameter, value) == 1 and done
    log.debug("allocator keeps freed memory: %s", done)
    return done
