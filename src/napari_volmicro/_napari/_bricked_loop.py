"""What the "Compress large volume" widget's worker runs: ``compress_bricked`` as a generator (no Qt here).

``compress_bricked`` reports progress through a callback from the thread that
drives it; a napari generator worker needs ``yield``. ``bricked_updates``
runs ``compress_bricked`` in a helper thread, turns its ``BrickProgress``
callbacks into ``BrickUpdate`` tallies (bricks done of total, encoded vs
background vs reused, Gaussians so far, elapsed, ETA) and yields them at most
every ``throttle_s`` seconds (plus the first and the last). It returns the
report dict of ``compress_bricked`` (``stopped=True`` and no output when the
``stop`` event ended the run early), or None when ``cancel`` was set, and
re-raises what ``compress_bricked`` raised (e.g. a scheduler that does not
answer). Connecting to the cluster happens in the helper thread too.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

_END = object()


@dataclass(frozen=True)
class BrickUpdate:
    """Progress across bricks. ``phase``: "starting" (connecting, statistics pass) or "bricks".

    ``done`` of ``total`` bricks finished: ``encoded`` (trained), ``background`` (no training),
    ``reused`` (staged by an earlier, stopped run). ``n_gaussians``: Gaussians in the finished
    bricks. ``elapsed``, ``eta``: seconds (``eta`` None until an encoded brick gives a rate).
    """

    phase: str
    done: int = 0
    total: int = 0
    encoded: int = 0
    background: int = 0
    reused: int = 0
    n_gaussians: int = 0
    elapsed: float = 0.0
    eta: float | None = None


class BrickTally:
    """Folds ``BrickProgress`` records into ``BrickUpdate``s.

    The ETA assumes the bricks left are trained (the driver finishes reused and
    background bricks first) at the rate of the bricks trained since the last
    non-trained one.
    """

    def __init__(self):
        self.counts = {"encoded": 0, "background": 0, "reused": 0}
        self.n_gaussians = 0
        self.last = BrickUpdate("starting")
        self._rate_t0 = None  # elapsed when training started
        self._rate_n = 0  # bricks trained since then

    def add(self, p) -> BrickUpdate:
        self.counts[p.kind] = self.counts.get(p.kind, 0) + 1
        self.n_gaussians += int(p.n_gaussians)
        if p.kind == "encoded":
            self._rate_n += 1
        else:
            self._rate_t0, self._rate_n = p.elapsed, 0
        eta = None
        if self._rate_n and p.done < p.total:
            per_brick = (p.elapsed - (self._rate_t0 or 0.0)) / self._rate_n
            eta = per_brick * (p.total - p.done)
        elif p.done >= p.total:
            eta = 0.0
        self.last = BrickUpdate(
            "bricks", p.done, p.total, self.counts["encoded"], self.counts["background"], self.counts["reused"],
            self.n_gaussians, float(p.elapsed), eta,
        )
        return self.last


def bricked_updates(source, output, *, stop: threading.Event, cancel: threading.Event | None = None,
                    finished: threading.Event | None = None, throttle_s: float = 0.25, poll_s: float = 0.1,
                    compress=None, **kwargs):
    """Generator of ``BrickUpdate``s; returns ``compress_bricked``'s report (see module docstring).

    ``stop``: passed to ``compress_bricked`` (no new brick starts once set; bricks in flight are
    staged). ``cancel``: optional event; when set (set ``stop`` too), nothing more is yielded and
    None is returned once the helper thread ends. ``finished``: set when this generator ends for
    any reason, so a closing GUI can wait for it without an event loop. ``compress`` stands in for
    ``compress_bricked`` (tests); ``kwargs`` go to it.
    """
    try:
        return (yield from _updates(source, output, stop, cancel, throttle_s, poll_s, compress, kwargs))
    finally:
        if finished is not None:
            finished.set()


def _updates(source, output, stop, cancel, throttle_s, poll_s, compress, kwargs):
    if compress is None:
        from ..bricks import compress_bricked as compress
    events: queue.SimpleQueue = queue.SimpleQueue()
    outcome: dict = {}

    def run():
        try:
            outcome["report"] = compress(source, output, stop=stop, progress=events.put, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the generator, which re-raises it
            outcome["error"] = exc
        finally:
            events.put(_END)

    helper = threading.Thread(target=run, name="volmicro-bricked-encode", daemon=True)
    helper.start()
    tally = BrickTally()
    t0 = time.monotonic()
    try:
        yield tally.last
        last_yield = time.monotonic()
        pending = False  # an update not yet yielded
        while True:
            try:
                item = events.get(timeout=poll_s)
            except queue.Empty:
                item = None
            if item is _END:
                break
            if item is not None:
                upd = tally.add(item)
                pending = True
            if cancel is not None and cancel.is_set():
                continue  # let the run wind down (stop is set); show nothing more
            now = time.monotonic()
            if pending and (now - last_yield >= throttle_s or upd.done >= upd.total):
                yield upd
                pending, last_yield = False, now
            elif tally.last.phase == "starting" and now - last_yield >= 1.0:
                yield BrickUpdate("starting", elapsed=now - t0)
                last_yield = now
        helper.join()
        if pending and not (cancel is not None and cancel.is_set()):
            yield tally.last
    finally:
        if helper.is_alive():  # the consumer went away early: no new brick starts
            stop.set()
    if "error" in outcome:
        raise outcome["error"]
    if cancel is not None and cancel.is_set():
        return None
    return outcome["report"]
