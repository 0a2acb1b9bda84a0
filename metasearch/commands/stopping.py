"""Stopping a run cleanly on Ctrl-C or SIGTERM (preemption, a cluster's scheduler)."""

from __future__ import annotations

import signal
from types import FrameType, TracebackType
from typing import Any

from rich.console import Console


class GracefulStop:
    """While active, the first SIGINT or SIGTERM asks the run to stop: the running trial saves a
    checkpoint and is queued again, and the study stays consistent. A second Ctrl-C interrupts at
    once. Call the object to ask whether a stop was requested."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, console: Console) -> None:
        self.console = console
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def __call__(self) -> bool:
        return self.received is not None

    @property
    def exit_code(self) -> int:
        """The shell's convention for death by the signal received: 128 + its number."""
        return 128 + int(self.received) if self.received is not None else 0

    def __enter__(self) -> GracefulStop:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if self.received is not None and number == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(number)
        self.console.print(
            f"[yellow]{self.received.name}[/]: stopping after the running trial's checkpoint"
            + (" (Ctrl-C again to abort at once)" if number == signal.SIGINT else "")
        )
