"""How many CPU threads torch may use in the process that trains.

One process keeps torch's own default (its physical cores, as torch counts them). Worker
processes that share a machine divide its cores among themselves, so that together they do not
run more threads than there are cores: oversubscribed, every one of them slows down.
"""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity, where the system tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    """The share of this machine's cores each of ``workers`` processes gets (at least one)."""
    return max(1, available_cores() // workers)


def use_threads(threads: int | None) -> int:
    """Sets torch's CPU threads to ``threads`` (None: torch's default); returns the count in
    use, which is logged."""
    if threads is not None:
        torch.set_num_threads(threads)
    count = torch.get_num_threads()
    log.info("torch uses %d CPU threads", count)
    return count
