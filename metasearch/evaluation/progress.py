"""What a running candidate tells an observer about its progress, for a live display.

The evaluator knows how far a candidate is; only the command layer knows how to show it. An
observer is a plain callable, told a :class:`TrainingProgress` at most every
:data:`OBSERVE_SECONDS` (and at each new validation score), so that a display costs nothing
noticeable however fast the meta-iterations are.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

OBSERVE_SECONDS = 0.5
"""The least time between two reports to an observer, unless a new validation score came."""


@dataclass(frozen=True)
class TrainingProgress:
    """A running candidate's progress: ``iterations`` meta-iterations done (of ``total`` where
    the budget caps them), ``spent`` (the fraction of its budget spent, 0 to 1), the latest
    ``validation`` query loss, and ``seconds_left``: wall-clock seconds to the end of its
    budget at the pace of this run (scoring included), unknown until some was spent."""

    iterations: int
    total: int | None
    spent: float
    validation: float | None
    seconds_left: float | None


Observer = Callable[[TrainingProgress], None]


class ProgressWatch:
    """Tells ``observer`` a candidate's progress, throttled. The pace is measured from the
    watch's start, where ``spent`` of the budget was spent (a candidate resumed from a
    checkpoint estimates from the speed of this run, not from the time it was away)."""

    def __init__(
        self, observer: Observer, spent: float = 0.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.observer, self.clock = observer, clock
        self.started, self.first_spent = clock(), spent
        self.told_at = -math.inf
        self.validation: float | None = None

    def update(
        self, iterations: int, total: int | None, spent: float, validation: float | None
    ) -> None:
        """Reports the candidate's state where :data:`OBSERVE_SECONDS` passed since the last
        report or ``validation`` is new."""
        now = self.clock()
        if now - self.told_at < OBSERVE_SECONDS and validation == self.validation:
            return
        self.told_at, self.validation = now, validation
        pace = (spent - self.first_spent) / (now - self.started) if now > self.started else 0.0
        left = (1.0 - spent) / pace if pace > 0 else None
        self.observer(TrainingProgress(iterations, total, spent, validation, left))
