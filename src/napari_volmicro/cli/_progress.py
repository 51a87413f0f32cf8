"""Progress on stderr: a live bar on a terminal, a few plain lines in a log file.

On a terminal, ``Progress`` is a tqdm bar that starts after the first unit of
work, so the first step (which compiles the kernels on a new machine) does
not make the rate and the time left absurd (it showed 6-8 hours). When stderr
is not a terminal (a log file, a pipe, a batch job), carriage-return updates
would fill the file (about 1,600 of them per run); instead one line is
written about every 10% of the work, with the time left.
"""

from __future__ import annotations

import sys
import time


def _eta(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """Counts ``total`` units (steps, bricks) on stderr.

    ``update(done, **postfix)``: ``done`` units finished so far, with extra fields to show;
    ``set_total(n)`` when the total becomes known late; ``close()`` at the end.
    """

    def __init__(self, total: int | None, desc: str, unit: str, *, enabled: bool = True, stream=None,
                 interactive: bool | None = None):
        self.stream = sys.stderr if stream is None else stream
        self.total = total
        self.desc = desc
        self.unit = unit
        self.enabled = enabled
        if interactive is None:
            isatty = getattr(self.stream, "isatty", None)
            interactive = bool(isatty and isatty())
        self.interactive = interactive
        self.bar = None
        self.done = 0
        self.first_at = None  # (time, done) when the first unit finished: rates count from there
        self.tenths = 0  # plain lines: the last tenth of the work reported
        self.t0 = time.perf_counter()

    def set_total(self, total: int) -> None:
        self.total = total
        if self.bar is not None:
            self.bar.total = total

    def update(self, done: int, **postfix) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.first_at is None:
            self.first_at = (now, done)
            if self.interactive:
                from tqdm import tqdm

                self.bar = tqdm(total=self.total, initial=done, unit=self.unit, file=self.stream,
                                dynamic_ncols=True, desc=self.desc)
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            if postfix:
                self.bar.set_postfix(refresh=False, **postfix)
        elif self.total:
            tenths = 10 * done // self.total
            if tenths > self.tenths:
                self.tenths = tenths
                self._line(done, now, postfix)
        self.done = done

    def _line(self, done: int, now: float, postfix: dict) -> None:
        t_first, n_first = self.first_at
        left = ""
        if done > n_first and done < self.total:
            rate = (done - n_first) / max(now - t_first, 1e-9)
            left = f", about {_eta((self.total - done) / rate)} left"
        extra = "".join(f", {k} {v}" for k, v in postfix.items())
        print(f"{self.desc}: {done}/{self.total} {self.unit}s ({100 * done / self.total:.0f}%), "
              f"{now - self.t0:.0f} s{left}{extra}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
