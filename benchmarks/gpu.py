"""GPU benchmark: the encoder and decoders on one CUDA GPU, beside the same operations on this machine's CPU.

Run from the repository root on a machine with one CUDA GPU (no network needed)::

    python benchmarks/gpu.py            # about 6-8 minutes
    python benchmarks/gpu.py --quick    # a smaller volume, for a first look (about 2 minutes)

Without a usable GPU it prints one line starting "no CUDA GPU" and exits 0.

The volume is 100 x 647 x 813 voxels mirror-tiled from the Purkinje stack, as
``benchmarks/encode.py`` builds it (real texture, not new data). Sections, each
timed on the GPU and, where it fits the time budget, on the CPU:

1. the GPU, the kernels' compile time (first use of each kernel, a warm-up);
2. equal steps: the default preset at 20,000 Gaussians for ``EQUAL_STEPS`` steps
   on the GPU and on the CPU, same seed: steps/s and psnr_full, and the
   GPU-vs-CPU quality difference (target: within 0.1 dB);
3. the default preset at 20,000 Gaussians, full schedule, on the GPU: time,
   steps/s, psnr_full, ssim3d, peak GPU memory, share of time in
   densification/relocation (target: <= 60 s);
4. decoding that model: dense full volume GVox/s, a 128^3 region (ms, dense and
   KNN K = 32), KNN K = 32 full volume (s), GPU and CPU; GPU determinism
   (two full decodes, identical bytes);
5. the paper preset, 10,000 steps at 20,000 Gaussians, on the GPU (target:
   <= 3 min); stopped early if the time budget runs out (then steps/s and the
   step reached are printed).

Every section catches its own failure, prints it and goes on; output is
flushed line by line. Figures are wall-clock seconds on this machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

#: the whole run stays under this many seconds (the paper run is cut to fit)
BUDGET_S = 460.0
EQUAL_STEPS = 60
N_GAUSSIANS = 20_000
SHAPE = (100, 647, 813)
QUICK_SHAPE = (50, 256, 256)
T0 = time.perf_counter()


def say(*parts) -> None:
    print(*parts, flush=True)


def left() -> float:
    return BUDGET_S - (time.perf_counter() - T0)


def section(title: str, fn, *args):
    say(f"\n== {title} ==")
    t = time.perf_counter()
    try:
        out = fn(*args)
        say(f"   ({time.perf_counter() - t:.1f} s)")
        return out
    except Exception as e:  # noqa: BLE001 - report and go on: one shot on a machine we cannot see
        say(f"   FAILED after {time.perf_counter() - t:.1f} s: {type(e).__name__}: {e}")
        say("   " + "".join(traceback.format_exc().splitlines(keepends=True)[-12:]).replace("\n", "\n   "))
        return None


def gpu_or_exit():
    from napari_volmicro import gpu

    ok, why = gpu.cuda_status()
    if not ok:
        print(f"no CUDA GPU usable here ({why}); nothing to measure", flush=True)
        sys.exit(0)
    return why


def volume(shape):
    import numpy as np
    import tifffile

    v = tifffile.imread(ROOT / "src/napari_volmicro/_data/purkinje_flowdec.tif")
    reps = [int(np.ceil(s / n)) for s, n in zip(shape, v.shape)]
    out = v
    for axis, r in enumerate(reps):
        out = np.concatenate([out if i % 2 == 0 else np.flip(out, axis) for i in range(r)], axis=axis)
    return np.ascontiguousarray(out[: shape[0], : shape[1], : shape[2]])


def sync():
    import torch

    torch.cuda.synchronize()


def train(vol, device, preset="default", steps=None, limit=None):
    """Train; returns (model, seconds, steps done, psnr_full, trainer, seconds in densify/relocate)."""
    from napari_volmicro import metrics
    from napari_volmicro.encode import Trainer, _loop

    tr = Trainer(vol, gaussians=N_GAUSSIANS, preset=preset, steps=steps, seed=0, device=device)
    maintain = [0.0]
    real = _loop.TrainingLoop._maintain

    def timed(self, *a):
        t = time.perf_counter()
        try:
            return real(self, *a)
        finally:
            if device == "cuda":
                sync()
            maintain[0] += time.perf_counter() - t

    _loop.TrainingLoop._maintain = timed
    t0 = time.perf_counter()
    done = 0
    try:
        for snap in tr.run():
            done = snap.step
            if limit is not None and time.perf_counter() - t0 > limit:
                tr.stop()
    finally:
        _loop.TrainingLoop._maintain = real
    secs = time.perf_counter() - t0
    gv = tr.result
    psnr = metrics.psnr_full(vol, gv.decode())
    return gv, secs, done, psnr, tr, maintain[0]


def ssim(vol, gv):
    try:
        from napari_volmicro import metrics

        return f"{metrics.ssim3d(vol, gv.decode()):.4f}"
    except ImportError as e:
        return f"n/a ({e})"


def peak_gpu_gib() -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30


def sec_device(name):
    import numba
    import torch

    say(f"GPU: {name}; torch {torch.__version__} (CUDA {torch.version.cuda}); numba {numba.__version__}; "
        f"CPU threads: {numba.config.NUMBA_NUM_THREADS}")


def sec_warmup():
    import numpy as np

    from napari_volmicro import gpu
    from napari_volmicro.encode import Trainer

    z, y, x = np.mgrid[:16, :24, :24].astype(np.float32)
    blob = 10.0 + 100.0 * np.exp(-((z - 8) ** 2 + (y - 11) ** 2 + (x - 13) ** 2) / 8.0)
    t = time.perf_counter()
    tr = Trainer(blob, gaussians=8, steps=3, device="cuda")
    for _ in tr.run():
        pass
    gpu.set_decode_device("cuda")
    tr.result.decode()
    tr.result.decode(evaluator="knn", k=2)
    gpu.set_decode_device(None)
    say(f"kernels compiled/loaded and run once: {time.perf_counter() - t:.1f} s")


def sec_equal_steps(vol):
    from napari_volmicro import gpu

    gpu.set_decode_device("cuda")
    rows = {}
    for device in ("cuda", "cpu"):
        gv, secs, done, psnr, _, _ = train(vol, device, steps=EQUAL_STEPS)
        rows[device] = psnr
        say(f"{device:4s}: {done} steps in {secs:6.1f} s (set-up included), {done / secs:6.2f} steps/s, "
            f"psnr_full {psnr:.3f} dB, N={gv.n_gaussians}")
    d = rows["cuda"] - rows["cpu"]
    say(f"GPU - CPU psnr_full at {EQUAL_STEPS} equal steps: {d:+.3f} dB "
        f"({'within' if abs(d) <= 0.1 else 'OUTSIDE'} the 0.1 dB target)")


def sec_default(vol, state):
    import torch

    from napari_volmicro import gpu

    gpu.set_decode_device("cuda")
    torch.cuda.reset_peak_memory_stats()
    gv, secs, done, psnr, tr, maint = train(vol, "cuda", limit=max(30.0, left() - 200.0))
    state["default"] = gv
    say(f"default preset, {N_GAUSSIANS} Gaussians: {done}/{tr.total_steps} steps in {secs:.1f} s "
        f"({done / secs:.2f} steps/s; target <= 60 s), psnr_full {psnr:.3f} dB, ssim3d {ssim(vol, gv)}, "
        f"peak GPU memory {peak_gpu_gib():.2f} GiB")
    say(f"densification + relocation: {maint:.2f} s = {100 * maint / secs:.1f}% of the training time "
        f"(target < 5% of a step)")


def _median_ms(fn, reps=7):
    import numpy as np

    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return 1e3 * float(np.median(ts))


def sec_decode(vol, state):
    import numpy as np

    from napari_volmicro import gpu

    gv = state.get("default")
    if gv is None:
        raise RuntimeError("no trained model (the default-preset section failed)")
    n = vol.size
    c = [s // 2 for s in vol.shape]
    region = tuple(slice(max(0, m - 64), max(0, m - 64) + 128) for m in c)
    full = {}
    for device in ("cuda", "cpu"):
        gpu.set_decode_device(device)
        reps = 3 if device == "cuda" else 1
        ms = _median_ms(lambda d=device: full.__setitem__(d, gv.decode()), reps)
        say(f"{device:4s} dense full volume: {ms / 1e3:.3f} s = {n / ms / 1e6:.2f} GVox/s (target >= 5 on the GPU)")
        ms_r = _median_ms(lambda: gv.decode(region), 7)
        ms_k = _median_ms(lambda: gv.decode(region, evaluator="knn", k=32), 5)
        say(f"{device:4s} 128^3 region: dense {ms_r:.2f} ms (target <= 2 on the GPU), KNN K=32 {ms_k:.2f} ms")
        ms_kf = _median_ms(lambda: gv.decode(evaluator="knn", k=32), reps)
        say(f"{device:4s} KNN K=32 full volume: {ms_kf / 1e3:.3f} s (target <= 0.3 on the GPU; the paper 1.03 s)")
    gpu.set_decode_device("cuda")
    again = gv.decode()
    d = np.abs(full["cuda"].astype(np.float64) - full["cpu"].astype(np.float64))
    say(f"GPU vs CPU dense decode: max |diff| {d.max():.3g} (original units), "
        f"{int((d > 0).sum())} voxels differ; two GPU decodes identical: {bool(np.array_equal(again, full['cuda']))}")
    say(f"peak GPU memory so far: {peak_gpu_gib():.2f} GiB (torch allocations; decode output slabs are extra)")


def sec_paper(vol):
    from napari_volmicro import gpu

    gpu.set_decode_device("cuda")
    limit = left() - 45.0
    if limit < 30:
        raise RuntimeError(f"not enough of the time budget left ({left():.0f} s)")
    gv, secs, done, psnr, tr, maint = train(vol, "cuda", preset="paper", limit=limit)
    say(f"paper preset, {N_GAUSSIANS} Gaussians: {done}/{tr.total_steps} steps in {secs:.1f} s "
        f"({done / secs:.2f} steps/s; target 10,000 steps <= 180 s"
        f"{'' if done == tr.total_steps else f', est. {tr.total_steps / done * secs:.0f} s for all'}), "
        f"psnr_full {psnr:.3f} dB, ssim3d {ssim(vol, gv)}, densify/relocate {100 * maint / secs:.1f}%")


def main():
    global BUDGET_S, EQUAL_STEPS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_SHAPE} voxels, fewer steps")
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    name = gpu_or_exit()
    shape = QUICK_SHAPE if args.quick else SHAPE
    if args.quick:
        BUDGET_S, EQUAL_STEPS = 150.0, 20
    section("device", sec_device, name)
    section("warm-up (kernel compilation)", sec_warmup)
    vol = section(f"volume {shape} (mirror-tiled Purkinje)", volume, shape)
    if vol is None:
        return
    say(f"{vol.size / 1e6:.1f} Mvoxel, {vol.dtype}")
    state = {}
    section(f"equal steps ({EQUAL_STEPS}), default preset, GPU and CPU", sec_equal_steps, vol)
    section("default preset on the GPU", sec_default, vol, state)
    section("decoding, GPU and CPU", sec_decode, vol, state)
    section("paper preset (10,000 steps) on the GPU", sec_paper, vol)
    say(f"\ntotal {time.perf_counter() - T0:.0f} s")


if __name__ == "__main__":
    main()
