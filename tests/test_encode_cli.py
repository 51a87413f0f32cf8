"""``volmicro compress``: JSON report, ablation flags, and Ctrl-C leaves no output."""

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

DATA = Path(__file__).parent / "data"
CMD = [sys.executable, "-c", "from napari_volmicro.cli import entry_point; entry_point()"]


def _crop(tmp_path):
    v = tifffile.imread(DATA / "cellseg3d_nuclei.tif")[40:64, 10:74, 20:84]
    path = tmp_path / "crop.npy"
    np.save(path, np.ascontiguousarray(v))
    return path, v


def test_compress_json(tmp_path):
    src, v = _crop(tmp_path)
    out = tmp_path / "crop.vmg"
    r = subprocess.run(CMD + ["compress", str(src), "-o", str(out), "--bpp", "0.3", "--steps", "30", "--json",
                              "--no-edge-weights", "--no-densify"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(rep) == {"output", "n_gaussians", "file_bytes", "bpp", "ratio", "psnr_full", "psnr_fg", "ssim3d",
                        "encode_seconds", "steps", "warnings", "residual_bytes", "max_error"}
    assert rep["warnings"] == []
    assert out.stat().st_size == rep["file_bytes"]
    assert rep["bpp"] <= 0.3 and rep["steps"] == 30
    assert rep["psnr_full"] > 25
    assert "compress: 30/30 steps (100%)" in r.stderr and "\r" not in r.stderr  # progress lines, not a bar, in a pipe


def test_bad_input_is_one_line_error(tmp_path):
    bad = tmp_path / "flat.npy"
    np.save(bad, np.zeros((32, 32), np.float32))
    r = subprocess.run(CMD + ["compress", str(bad), "-o", str(tmp_path / "x.vmg")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "error" in r.stderr
    assert not (tmp_path / "x.vmg").exists()


def test_ctrl_c_leaves_no_output(tmp_path):
    src, _ = _crop(tmp_path)
    out = tmp_path / "never.vmg"
    # A shell without job control starts background jobs with SIGINT ignored, and children
    # inherit that; restore the default so the child gets Ctrl-C as a terminal would send it.
    proc = subprocess.Popen(CMD + ["compress", str(src), "-o", str(out), "--steps", "100000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # wait until training is about to start (the input summary is printed just before)
    seen = bytearray()

    def reader():
        while True:
            b = proc.stderr.read(1)
            if not b:
                return
            seen.extend(b)

    threading.Thread(target=reader, daemon=True).start()
    deadline = time.time() + 240
    while time.time() < deadline and b"steps on" not in seen:
        time.sleep(0.5)
    assert b"steps on" in seen, seen.decode(errors="replace")
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    assert proc.returncode == 130
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["crop.npy"]  # no temp files left either


def test_first_ctrl_c_is_deferred_to_a_safe_point_and_a_second_one_is_not():
    """In the main thread the first SIGINT is only recorded (check() raises it); a second raises at once."""
    import os

    from napari_volmicro.cli._interrupt import deferred_interrupt

    before = signal.getsignal(signal.SIGINT)
    with deferred_interrupt() as interrupt:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler runs: nothing is raised here
        assert interrupt.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        with pytest.raises(KeyboardInterrupt):
            interrupt.check()
    assert signal.getsignal(signal.SIGINT) is before
