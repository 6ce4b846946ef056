"""Clean stops of a worker: SIGTERM and SIGINT become :class:`Interrupted`, except inside short critical
sections (a trial's artifact upload, telling the storage a result), where the stop is only recorded and the
worker stops right after the trial has been stored.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType
from typing import Any

__all__ = ["Interrupted", "stop_signals", "deferred_interrupts", "stop_requested"]

_state: dict[str, Any] = {"requested": None, "defer": 0}


class Interrupted(BaseException):
    """A stop signal (SIGTERM/SIGINT) turned into an exception.

    A BaseException, like KeyboardInterrupt, so that no `except Exception` in training or upload code
    swallows it.
    """


def stop_requested() -> str | None:
    """The signal that asked this process to stop (e.g. "signal 15"), or None."""
    return _state["requested"]


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Within this block a stop signal is only recorded (see :func:`stop_requested`), never raised."""
    _state["defer"] += 1
    try:
        yield
    finally:
        _state["defer"] -= 1


def _handler(signum: int, frame: FrameType | None) -> None:
    _state["requested"] = f"signal {signum}"
    if _state["defer"] == 0:
        raise Interrupted(_state["requested"])


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """Install the handler for SIGTERM, and for SIGINT unless it is ignored (background jobs)."""
    _state["requested"] = None
    old: dict[signal.Signals, Any] = {}  # signal -> the handler it had (a function, SIG_DFL, SIG_IGN, None)
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            if sig == signal.SIGINT and signal.getsignal(sig) == signal.SIG_IGN:
                continue
            old[sig] = signal.signal(sig, _handler)
    except ValueError:  # not the main thread: signals stay as they are
        old = {}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
