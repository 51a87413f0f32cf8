"""The worker-side loop of the Compress widget (no Qt): throttling, snapshots, summary."""

import os
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest

from napari_volmicro._napari._training_loop import lower_thread_priority, preview_step, training_updates
from napari_volmicro.synthetic import random_volume


@dataclass(frozen=True)
class Snap:
    step: int
    total_steps: int
    loss: float
    psnr: float
    n_gaussians: int
    elapsed: float
    eta: float | None
    done: bool
    stopped: bool
    model: object


class StandInTrainer:
    """Yields ``total_steps`` snapshots, ``dt`` seconds apart; honours request_model/stop."""

    def __init__(self, gv, total_steps=40, dt=0.01):
        self.gv, self.total_steps, self.dt = gv, total_steps, dt
        self.result = None
        self._want = False
        self._stop = False
        self.requests = 0

    def request_model(self):
        self._want = True
        self.requests += 1

    def stop(self):
        self._stop = True

    def run(self):
        for i in range(1, self.total_steps + 1):
            time.sleep(self.dt)
            done = i == self.total_steps or self._stop
            model = self.gv if (self._want or done) else None
            self._want = False
            yield Snap(i, self.total_steps, 1.0 / i, 20 + i, self.gv.n_gaussians, i * self.dt, None, done, self._stop, model)
            if done:
                break
        self.result = self.gv


def test_updates_are_throttled_and_carry_snapshots():
    gv = random_volume(shape=(12, 16, 16), n=20)
    volume = gv.decode(evaluator="reference")
    tr = StandInTrainer(gv, total_steps=60, dt=0.01)
    gen = training_updates(tr, volume, throttle_s=0.1, snapshot_every_s=0.2, summary=False)
    updates = []
    try:
        while True:
            updates.append(next(gen))
    except StopIteration as stop:
        result = stop.value
    # every step's history arrives exactly once, in order
    steps = [h[0] for u in updates for h in u.history]
    assert steps == list(range(1, 61))
    # about one update per 0.1 s of 0.6 s training, not one per step
    assert 3 <= len(updates) <= 20
    assert updates[-1].done and result.model is gv and not result.stopped
    with_model = [u for u in updates if u.model is not None]
    assert tr.requests >= 1 and len(with_model) >= 1
    np.testing.assert_array_equal(with_model[0].recon, volume)


def test_stop_ends_early_and_summary_scores_the_stored_model():
    from napari_volmicro.container import file_size, quantize
    from napari_volmicro.metrics import psnr_full

    gv = random_volume(shape=(12, 16, 16), n=20)
    volume = gv.decode(evaluator="reference")
    tr = StandInTrainer(gv, total_steps=1000, dt=0.001)
    gen = training_updates(tr, volume, throttle_s=0.0, snapshot_every_s=10)
    next(gen)
    tr.stop()
    *_, = (u for u in iter(lambda: _next_or_none(gen), None))
    result = _RESULT.pop()
    assert result.stopped and result.summary["n_gaussians"] == 20
    assert result.summary["file_bytes"] == file_size(gv)
    expected = psnr_full(volume, quantize(gv).decode(evaluator="dense"))
    assert result.summary["psnr_full"] == pytest.approx(expected)
    assert 0 < result.summary["ssim3d"] <= 1


_RESULT = []


def _next_or_none(gen):
    try:
        return next(gen)
    except StopIteration as stop:
        _RESULT.append(stop.value)
        return None


def test_preview_step_keeps_under_budget():
    assert preview_step((50, 256, 256), 16_000_000) == (1, 1, 1)
    z, y, x = preview_step((100, 2048, 2048), 16_000_000)
    assert z == 1 and y == x
    assert 100 * -(-2048 // y) * -(-2048 // x) <= 16_000_000


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priorities are a Linux feature")
def test_training_thread_runs_below_the_gui_priority():
    """nice=10: the thread running the loop (and so the trainer) yields the CPU; the caller's is untouched."""
    gv = random_volume(shape=(12, 16, 16), n=20)
    volume = gv.decode(evaluator="reference")
    seen = {}

    class Recording(StandInTrainer):
        def run(self):
            seen["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
            yield from super().run()

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    def consume():
        for _ in training_updates(Recording(gv, total_steps=3), volume, summary=False, nice=10):
            pass

    t = threading.Thread(target=consume)
    t.start()
    t.join()
    assert seen["nice"] == max(10, before)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before
    # a thread already below that priority is left alone (never raised)
    after = []

    def lower_twice():
        lower_thread_priority(15)
        after.append(lower_thread_priority(10))
        after.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    t = threading.Thread(target=lower_twice)
    t.start()
    t.join()
    assert after == [True, max(15, before)]


def test_switch_interval_is_short_while_held_and_restored_after():
    from napari_volmicro._napari._training_loop import SwitchIntervalHold

    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)
        hold = SwitchIntervalHold(0.001)
        hold.acquire()
        hold.acquire()  # two trainings
        assert sys.getswitchinterval() == pytest.approx(0.001)
        hold.release()
        assert sys.getswitchinterval() == pytest.approx(0.001)  # one still runs
        hold.release()
        assert sys.getswitchinterval() == pytest.approx(0.005)
        hold.release()  # an extra release changes nothing
        assert sys.getswitchinterval() == pytest.approx(0.005) and hold.holders == 0
        # someone else changed it while held: theirs is kept
        hold.acquire()
        sys.setswitchinterval(0.002)
        hold.release()
        assert sys.getswitchinterval() == pytest.approx(0.002)
        # already shorter than the hold's: left alone
        sys.setswitchinterval(0.0005)
        hold.acquire()
        assert sys.getswitchinterval() == pytest.approx(0.0005)
        hold.release()
        assert sys.getswitchinterval() == pytest.approx(0.0005)
    finally:
        sys.setswitchinterval(before)
