"""Ctrl-C and SIGTERM for long commands: the first one stops at the next safe point, a second one at once.

A KeyboardInterrupt raised wherever Python happens to be can land inside numba's
JIT compiler or its cache I/O (a first run on a new machine compiles for up to a
minute) or inside a compiled kernel; measured: the process then hung, died with
SIGABRT, or ended in ``SystemError: CPUDispatcher(...) returned a result with an
exception set`` instead of exiting with status 130. Inside
``deferred_interrupt()`` the first SIGINT or SIGTERM is only recorded and
``check()`` raises where the caller knows it is safe (between training steps,
between decoded chunks, before an output replaces an older file). A second
signal raises at once.

Outside such a block, ``terminate_cleanly()`` (installed by ``volmicro``'s
``main``) turns SIGTERM into a ``Terminated`` exception, so the ``finally``
blocks that remove temporary files run; the default action would kill the
process and leave them behind.

Tests signal the process at a named moment instead of after a guessed delay:
with ``VOLMICRO_TEST_SIGNAL_AT=NAME`` (or ``NAME:TERM``) in the environment,
``signal_point(NAME)`` sends SIGINT (or SIGTERM) to this process. The named
moments are listed in ``SIGNAL_POINTS``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager

#: environment variable naming the moment at which ``signal_point`` signals this process (tests)
TEST_SIGNAL_ENV = "VOLMICRO_TEST_SIGNAL_AT"
#: the moments ``signal_point`` is called at
SIGNAL_POINTS = (
    "before-training",  # compress: the trainer is built, no step has run
    "training",  # compress: after the first training step
    "after-training",  # compress: the last step has run, nothing is written yet
    "after-save",  # compress: the new file is written beside the output, not yet in its place
    "after-replace",  # compress: the output is in place, the report not yet printed
    "bricks",  # compress --bricks: after the first brick finished
    "after-decode",  # decode: decoded, not yet written
    "decode-chunk",  # decode -o .zarr: after the first chunk is written
)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where a Ctrl-C would be (exit status 143 instead of 130)."""


class Interrupt:
    """Whether Ctrl-C or SIGTERM arrived inside ``deferred_interrupt()``; ``check()`` acts on it."""

    def __init__(self):
        self.requested = False
        self.signum = None

    def check(self) -> None:
        """Raise KeyboardInterrupt (``Terminated`` for SIGTERM) if a signal arrived."""
        if self.requested:
            raise _exception(self.signum)

    def _handler(self, signum, frame):
        if self.requested:
            raise _exception(signum)
        self.requested = True
        self.signum = signum
        what = "terminate request" if signum == signal.SIGTERM else "interrupt"
        print(f"\n{what}: stopping at the next safe point (press Ctrl-C again to stop at once)", file=sys.stderr,
              flush=True)


def _exception(signum) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def deferred_interrupt():
    """Yield an ``Interrupt``; SIGINT and SIGTERM are deferred inside the block (main thread only, else a no-op)."""
    interrupt = Interrupt()
    if not _main_thread():
        yield interrupt
        return
    previous = {s: signal.signal(s, interrupt._handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield interrupt
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _raise_terminated(signum, frame):
    raise Terminated


@contextmanager
def terminate_cleanly():
    """SIGTERM raises ``Terminated`` inside the block (main thread only), so cleanups run."""
    if not _main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def signal_point(name: str) -> None:
    """Tests only: signal this process if ``VOLMICRO_TEST_SIGNAL_AT`` names ``name`` (see the module doc)."""
    wanted = os.environ.get(TEST_SIGNAL_ENV)
    if not wanted:
        return
    point, _, sig = wanted.partition(":")
    if point != name:
        return
    os.kill(os.getpid(), signal.SIGTERM if sig.upper() in ("TERM", "SIGTERM") else signal.SIGINT)
