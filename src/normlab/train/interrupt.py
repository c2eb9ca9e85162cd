"""SIGTERM/SIGINT → finish the current step, write a checkpoint, stop (a second Ctrl-C aborts)."""

from __future__ import annotations

import contextlib
import os
import signal
from types import FrameType


class StopRequests:
    """Context manager that turns SIGTERM/SIGINT into a flag the loop checks between steps."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, simulate_at_step: int | None = None) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}
        self._simulate_at = simulate_at_step  # trainer.simulate_interrupt_at_step (tests of resume)

    def after_step(self, step: int) -> None:
        """At the step a test asked for, send ourselves SIGTERM: the real signal path."""
        if self._simulate_at is not None and step == int(self._simulate_at):
            os.kill(os.getpid(), signal.SIGTERM)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: the user really wants out now
        self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> StopRequests:
        for s in self.SIGNALS:
            # Outside the main thread (some launchers) signals cannot be caught: they stay default.
            with contextlib.suppress(ValueError):
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)  # type: ignore[arg-type]
