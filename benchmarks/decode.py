"""Decode benchmark: dense and KNN evaluators on the 100 x 647 x 813, 20,000-Gaussian model.

Prints a table and, last, one JSON line. Measures:

- dense full-volume decode (uint16 output, conversion inside the kernel):
  MVox/s, best of ``--repeats`` after a warm-up;
- 128^3 region decode (cut to the grid's 100 Z planes: 100 x 128 x 128), dense
  and KNN (K=32): median ms over ``--regions`` random regions;
- one-plane slice decode (1 x 256 x 256, what the napari Browse widget asks for
  in a 1024 x 1024 view), dense and KNN (K=32): median ms over 3 x ``--regions``
  random slices;
- peak memory of the dense full decode relative to the output array (in a
  fresh subprocess: RSS high-water mark after the decode minus the resident
  size before it, so the output array and numba's allocations included);
- first-call latency in a fresh process: one subprocess fills the numba cache,
  a second one times ``import`` + the first small decode and checks that no
  kernel was compiled (numba dispatcher cache statistics);
- the KNN (K=32) error against the exact (dense) decode on the whole model:
  PSNR in model units (peak = max - min of the exact decode) and max error;
  and for K = 4, 8, 16, 32 on three of the regions.

The machine is shared: timings are noisy; ratios measured in the same run
are more telling than absolute numbers. ``--quick`` shrinks the model for a
smoke test.

    python benchmarks/decode.py [--threads N] [--repeats 3] [--regions 9] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

SHAPE = (100, 647, 813)
N_GAUSSIANS = 20_000
REGION = 128
SLICE = 256


def model(quick: bool):
    from napari_volmicro.synthetic import benchmark_volume

    if quick:
        return benchmark_volume(shape=(40, 160, 200), n=1200)
    return benchmark_volume(shape=SHAPE, n=N_GAUSSIANS)


def random_regions(shape, size, count, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        sl = []
        for n in shape:
            s = min(size, n)
            a = int(rng.integers(0, n - s + 1))
            sl.append(slice(a, a + s))
        out.append(tuple(sl))
    return out


def best_of(fn, repeats):
    """Best wall time and best CPU time (all threads of this process) over ``repeats`` calls, in s."""
    best, best_cpu = np.inf, np.inf
    for _ in range(repeats):
        c, t = time.process_time(), time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
        best_cpu = min(best_cpu, time.process_time() - c)
    return best, best_cpu


def median_ms(gv, regions, evaluator, k=32):
    """Median wall and CPU (all threads) milliseconds of decoding each region."""
    gv.decode(regions[0], evaluator=evaluator, k=k)  # warm-up
    times, cpu = [], []
    for region in regions:
        c, t = time.process_time(), time.perf_counter()
        gv.decode(region, evaluator=evaluator, k=k)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return 1e3 * float(np.median(times)), 1e3 * float(np.median(cpu))


def _child(code: str, env=None) -> dict:
    """Run ``code`` in a fresh interpreter; it must print one JSON line last."""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark subprocess failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


_PEAK_CODE = """
import json, sys
sys.path.insert(0, {here!r})
from decode import model
gv = model({quick})
gv.decode((slice(0, 8), slice(0, 8), slice(0, 8)))  # load kernels
def rss_kib(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
before = rss_kib("VmRSS")  # resident now (the high-water mark may be higher)
vol = gv.decode()
after = rss_kib("VmHWM")  # (ru_maxrss can carry the parent's peak across fork)
print(json.dumps({{"delta_kib": max(after - before, 0), "out_bytes": vol.nbytes}}))
"""

_FIRST_CALL_CODE = """
import json, time
t0 = time.perf_counter()
import numpy as np
import napari_volmicro
from napari_volmicro.synthetic import random_volume
t1 = time.perf_counter()
gv = random_volume((24, 40, 36), n=50, mapping=napari_volmicro.IntensityMapping(0, 1000, np.uint16))
gv.decode(evaluator="dense")
t2 = time.perf_counter()
gv.decode((slice(0, 16), slice(0, 16), slice(0, 16)), evaluator="knn", k=8)
gv.evaluate(np.zeros((3, 3)), evaluator="knn", k=8)
gv.evaluate(np.zeros((3, 3)), evaluator="dense")
t3 = time.perf_counter()
from numba.core.registry import CPUDispatcher
from napari_volmicro.evaluate import _kernels
misses = hits = 0
for name in dir(_kernels):
    f = getattr(_kernels, name)
    if isinstance(f, CPUDispatcher) and f.signatures:
        s = f.stats
        misses += sum(s.cache_misses.values())
        hits += sum(s.cache_hits.values())
print(json.dumps({"import_s": t1 - t0, "first_dense_s": t2 - t1, "first_knn_s": t3 - t2,
                  "cache_hits": hits, "cache_misses": misses}))
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=None, help="numba threads (default: all cores)")
    ap.add_argument("--repeats", type=int, default=3, help="full decodes timed (best is kept)")
    ap.add_argument("--regions", type=int, default=9, help="random regions timed (median is kept)")
    ap.add_argument("--quick", action="store_true", help="small model, for a smoke test")
    args = ap.parse_args(argv)

    import numba

    if args.threads:
        numba.set_num_threads(args.threads)
    here = os.path.dirname(os.path.abspath(__file__))
    gv = model(args.quick)
    nvox = gv.n_voxels
    res: dict = {
        "shape": list(gv.shape),
        "n_gaussians": gv.n_gaussians,
        "threads": numba.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_avg_1min": os.getloadavg()[0],
    }

    # Dense full volume (uint16, converted in the kernel).
    t = time.perf_counter()
    gv.decode()
    res["dense_full_first_s"] = time.perf_counter() - t
    t_full, cpu_full = best_of(gv.decode, args.repeats)
    res["dense_full_s"] = t_full
    res["dense_full_mvox_s"] = nvox / t_full / 1e6
    # CPU seconds over all threads: what the decode costs regardless of other load;
    # cpu / threads is the wall time it would take on an otherwise idle machine.
    res["dense_full_cpu_s"] = cpu_full
    res["dense_full_mvox_s_idle_estimate"] = nvox / (cpu_full / res["threads"]) / 1e6
    t_model, _ = best_of(gv.decode_model, args.repeats)
    res["dense_full_float32_mvox_s"] = nvox / t_model / 1e6

    # 128^3 regions.
    regions = random_regions(gv.shape, REGION, args.regions)
    res["region_shape"] = [s.stop - s.start for s in regions[0]]
    res["dense_region_ms"], res["dense_region_cpu_ms"] = median_ms(gv, regions, "dense")
    res["knn_region_ms"], res["knn_region_cpu_ms"] = median_ms(gv, regions, "knn", k=32)
    # One-plane slices, as the napari Browse widget decodes them.
    slices = [(slice(r[0].start, r[0].start + 1),) + r[1:] for r in random_regions(gv.shape, SLICE, 3 * args.regions, 1)]
    res["slice_shape"] = [s.stop - s.start for s in slices[0]]
    res["dense_slice_ms"], _ = median_ms(gv, slices, "dense")
    res["knn_slice_ms"], res["knn_slice_cpu_ms"] = median_ms(gv, slices, "knn", k=32)

    # Peak memory of the dense full decode (fresh process).
    peak = _child(_PEAK_CODE.format(here=here, quick=args.quick))
    # The growth includes the output array itself.
    res["dense_peak_bytes"] = peak["delta_kib"] * 1024
    res["dense_peak_over_output"] = peak["delta_kib"] * 1024 / peak["out_bytes"]

    # First-call latency (fresh processes; the first fills the cache if needed).
    _child(_FIRST_CALL_CODE)
    first = _child(_FIRST_CALL_CODE)
    res.update({f"fresh_{k}": v for k, v in first.items()})

    # KNN K=32 against the exact sum, whole model.
    exact = gv.decode_model(evaluator="dense").astype(np.float64)
    t = time.perf_counter()
    knn = gv.decode_model(evaluator="knn", k=32).astype(np.float64)
    res["knn_full_s"] = time.perf_counter() - t
    mse = float(np.mean((knn - exact) ** 2))
    peak_val = float(exact.max() - exact.min())
    res["knn32_vs_exact_psnr_db"] = None if mse == 0 else 10 * np.log10(peak_val**2 / mse)  # None: identical
    res["knn32_vs_exact_max_err"] = float(np.abs(knn - exact).max())
    res["knn32_vs_exact_voxels_differing"] = int(np.count_nonzero(np.abs(knn - exact) > 1e-6 * peak_val))
    # Smaller K on a few regions: where the K-nearest rule starts to drop Gaussians.
    sweep = {}
    for k in (4, 8, 16, 32):
        se = n = 0.0
        for region in regions[:3]:
            ex = gv.decode_model(region, evaluator="dense").astype(np.float64)
            kn = gv.decode_model(region, evaluator="knn", k=k).astype(np.float64)
            se += float(((kn - ex) ** 2).sum())
            n += ex.size
        sweep[k] = None if se == 0 else 10 * np.log10(peak_val**2 / (se / n))
    res["knn_vs_exact_psnr_db_by_k_regions"] = sweep
    res["load_avg_1min_end"] = os.getloadavg()[0]

    rows = [
        ("model", f"{gv.shape[0]} x {gv.shape[1]} x {gv.shape[2]}, {gv.n_gaussians} Gaussians", ""),
        ("dense full decode (uint16)", f"{res['dense_full_mvox_s']:.0f} MVox/s", f"{t_full:.3f} s, target >= 200 MVox/s"),
        ("  same, CPU time / threads", f"{res['dense_full_mvox_s_idle_estimate']:.0f} MVox/s", f"{cpu_full:.3f} CPU-s (idle-machine estimate)"),
        ("dense full decode (float32 model)", f"{res['dense_full_float32_mvox_s']:.0f} MVox/s", ""),
        ("dense region " + "x".join(map(str, res["region_shape"])), f"{res['dense_region_ms']:.1f} ms", f"median, target <= 15 ms; {res['dense_region_cpu_ms']:.1f} CPU-ms"),
        ("knn K=32 region " + "x".join(map(str, res["region_shape"])), f"{res['knn_region_ms']:.1f} ms", f"median, target <= 250 ms; {res['knn_region_cpu_ms']:.1f} CPU-ms"),
        ("dense slice " + "x".join(map(str, res["slice_shape"])), f"{res['dense_slice_ms']:.1f} ms", "median"),
        ("knn K=32 slice " + "x".join(map(str, res["slice_shape"])), f"{res['knn_slice_ms']:.1f} ms", f"median; {res['knn_slice_cpu_ms']:.1f} CPU-ms"),
        ("dense peak memory / output", f"{res['dense_peak_over_output']:.2f}x", "target <= 1.5x"),
        ("fresh process: import", f"{first['import_s']:.2f} s", ""),
        ("fresh process: first dense decode", f"{first['first_dense_s']:.2f} s", f"cache misses {first['cache_misses']}"),
        ("fresh process: first knn calls", f"{first['first_knn_s']:.2f} s", ""),
        ("knn K=32 vs exact", "identical" if mse == 0 else f"{res['knn32_vs_exact_psnr_db']:.1f} dB", f"max err {res['knn32_vs_exact_max_err']:.4f} (model units)"),
        ("knn K=32 full decode", f"{res['knn_full_s']:.2f} s", ""),
        ("knn vs exact by K (3 regions)", " ".join(f"{k}:{'=' if v is None else f'{v:.0f}'}" for k, v in sweep.items()), "K:dB ('=' identical)"),
        ("threads / load avg", f"{res['threads']} / {res['load_avg_1min']:.1f}", "machine is shared: timings are noisy"),
    ]
    w = max(len(r[0]) for r in rows)
    for name, val, note in rows:
        print(f"{name:<{w}}  {val:>14}  {note}")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
