"""How a training run stops early: ``TrainingDiverged`` (a non-finite loss or gradient norm,
recorded as a finished, diverged run) and ``TrainingInterrupted`` (SIGINT or SIGTERM, after a
checkpoint), and the signal handlers that turn a signal into a request the loop reads at the
end of its step, so that a run always stops between steps.
"""

from __future__ import annotations

import contextlib
import signal
import threading


class TrainingDiverged(RuntimeError):
    """The loss or gradient norm became non-finite; the run is recorded as diverged."""


class TrainingInterrupted(RuntimeError):
    """SIGINT or SIGTERM during training: a checkpoint was written; ``exit_code`` is 128 +
    the signal number (130, 143), as a shell reports it."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


@contextlib.contextmanager
def interrupt_requests():
    """A list that receives the number of the first SIGINT or SIGTERM while training (the
    handlers are installed only in the main thread, and put back on exit)."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum, frame):
        received.append(signum)
        signal.signal(signum, previous[signum])  # a second signal acts as usual

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
