"""Ctrl-C for long commands: the first press stops at the next safe point, a second one at once.

A KeyboardInterrupt raised wherever Python happens to be can land inside numba's
JIT compiler or its cache I/O (a first run on a new machine compiles for up to a
minute); measured: the process then hung or died with SIGABRT instead of exiting
with status 130. Inside ``deferred_interrupt()`` the first SIGINT is only recorded
and ``check()`` raises KeyboardInterrupt where the caller knows it is safe (between
training steps, before writing the output). A second SIGINT raises at once.
"""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager


class Interrupt:
    """Whether Ctrl-C was pressed inside ``deferred_interrupt()``; ``check()`` acts on it."""

    def __init__(self):
        self.requested = False

    def check(self) -> None:
        """Raise KeyboardInterrupt if Ctrl-C was pressed."""
        if self.requested:
            raise KeyboardInterrupt

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\ninterrupt: stopping at the next step (press Ctrl-C again to stop at once)", file=sys.stderr)


@contextmanager
def deferred_interrupt():
    """Yield an ``Interrupt``; SIGINT is deferred inside the block (main thread only, else a no-op)."""
    interrupt = Interrupt()
    if threading.current_thread() is not threading.main_thread():
        yield interrupt
        return
    previous = signal.signal(signal.SIGINT, interrupt._handler)
    try:
        yield interrupt
    finally:
        signal.signal(signal.SIGINT, previous)
