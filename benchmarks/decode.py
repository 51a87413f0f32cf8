"""Decode benchmark on trained models: dense and KNN speed, and KNN against the exact decode.

Models (``--models``):

- ``random``: 20,000 random Gaussians on 100 x 647 x 813 (``synthetic.benchmark_volume``),
  the synthetic case;
- ``sample``: the model shipped as napari sample data (2,364 Gaussians, 50 x 256 x 256);
- ``cellfinder``: the default preset's model of ``cellfinder_stp_signal.tif`` at 0.073 bpp
  (26 x 1116 x 627);
- ``tiled20k``: the default preset's 20,000-Gaussian model of the Purkinje stack
  mirror-tiled to 100 x 647 x 813.

Trained models come from ``_trained.py`` (cached under ``benchmarks/out/models/``;
``--train`` trains the missing ones, ``--stale-ok`` reuses models of another
encoder version). Per model, in a fresh process:

- dense whole-volume decode (output dtype, conversion in the kernel): best of
  ``--repeats``, MVox/s (target >= 200);
- 128^3 regions (cut to the volume), dense and KNN (the default K): median ms over
  ``--regions`` random regions (targets 15 and 100 ms);
- one-plane slices of 1 x 1024 x 1024 (cut to the volume; what Browse decodes
  in a 1024 x 1024 view), dense and KNN: median ms (KNN target 50 ms);
- KNN (the default K) against the exact decode: on the regions and planes,
  and (current code) on the whole volume: PSNR in model units (peak = the
  exact decode's max - min; "=" identical) and the share of voxels that
  differ; and the paper's rule (``knn-centres``, K = 32) on the same parts.

``--old SRC`` times the same in a second package (``PYTHONPATH=SRC``, e.g. an
export of an earlier commit's ``src/``), alternating old and new processes
``--rounds`` times and printing medians side by side with the ratio: the
machine is shared and noisy, so only ratios measured in one run are telling.
In code before the ``knn``/``knn-centres`` split, ``knn`` is the paper's rule (default K 32).
``--extras`` adds, for the current code, peak memory of a dense whole decode
and the first-call latency of a fresh process (numba cache checked).

    python benchmarks/decode.py                                   # every model that is cached
    python benchmarks/decode.py --old /tmp/old/src --rounds 3     # before / after
    python benchmarks/decode.py --models sample random --quick    # smoke test

Prints the command, a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _trained  # noqa: E402

MODELS = ("random", "sample", "cellfinder", "tiled20k")
TRAINED = {"cellfinder": "cellfinder_stp_signal@0.073", "tiled20k": "tiled20k", "sample": "sample"}
REGION = 128
PLANE = 1024


def default_k() -> int:
    """The package's default K (``evaluate.DEFAULT_K``; 32 in code before it existed)."""
    try:
        from napari_volmicro.evaluate import DEFAULT_K
    except ImportError:
        return 32
    return DEFAULT_K


# -- measurements (run in a child process, with whichever package it imports) --------------------


def load_model(spec: dict):
    import napari_volmicro as nv

    if spec["model"] == "random":
        from napari_volmicro.synthetic import benchmark_volume

        return benchmark_volume(shape=(40, 160, 200), n=1200) if spec.get("quick") else benchmark_volume()
    return nv.load(spec["path"])


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


def random_planes(shape, size, count, seed=1):
    return [(slice(r[0].start, r[0].start + 1),) + r[1:] for r in random_regions(shape, size, count, seed)]


def _median_ms(gv, regions, evaluator, k=None):
    """Median wall and CPU (all threads) ms of decoding each region (``k``: the default K)."""
    k = default_k() if k is None else k
    gv.decode(regions[0], evaluator=evaluator, k=k)  # warm-up
    times, cpu = [], []
    for region in regions:
        c, t = time.process_time(), time.perf_counter()
        gv.decode(region, evaluator=evaluator, k=k)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return 1e3 * float(np.median(times)), 1e3 * float(np.median(cpu))


def agreement(exact: list[np.ndarray], approx: list[np.ndarray]) -> dict:
    """PSNR (model units; peak = the exact values' max - min) and share of differing voxels."""
    e = np.concatenate([a.ravel() for a in exact]).astype(np.float64)
    a = np.concatenate([b.ravel() for b in approx]).astype(np.float64)
    d = np.abs(a - e)
    peak = float(e.max() - e.min())
    mse = float(np.mean(d * d))
    return {"psnr_db": math.inf if mse == 0 else 10 * math.log10(peak * peak / mse),
            "differing": float(np.mean(d > 1e-6 * max(peak, 1e-30))), "max_err": float(d.max())}


def child(spec: dict) -> dict:
    import numba

    from napari_volmicro.evaluate import EVALUATORS

    if spec.get("threads"):
        numba.set_num_threads(spec["threads"])
    gv = load_model(spec)
    K = default_k()
    res = {"n_gaussians": gv.n_gaussians, "shape": list(gv.shape), "threads": numba.get_num_threads(),
           "has_knn_centres": "knn-centres" in EVALUATORS, "k": K}
    gv.decode((slice(0, 8),) * 3, evaluator="dense")  # kernels loaded
    best = best_cpu = math.inf
    for _ in range(spec["repeats"]):
        c, t = time.process_time(), time.perf_counter()
        gv.decode(evaluator="dense")
        best = min(best, time.perf_counter() - t)
        best_cpu = min(best_cpu, time.process_time() - c)
    res["dense_full_ms"] = 1e3 * best
    res["dense_full_cpu_ms"] = 1e3 * best_cpu
    res["dense_full_mvox_s"] = gv.n_voxels / best / 1e6
    regions = random_regions(gv.shape, REGION, spec["regions"])
    planes = random_planes(gv.shape, PLANE, spec["regions"])
    res["region_shape"] = [s.stop - s.start for s in regions[0]]
    res["plane_shape"] = [s.stop - s.start for s in planes[0]]
    for name, sets in (("region", regions), ("plane", planes)):
        res[f"dense_{name}_ms"], res[f"dense_{name}_cpu_ms"] = _median_ms(gv, sets, "dense")
        res[f"knn_{name}_ms"], res[f"knn_{name}_cpu_ms"] = _median_ms(gv, sets, "knn")
    sets = regions[:3] + planes[:3]
    exact = [gv.decode_model(s, evaluator="dense") for s in sets]
    res["knn_vs_exact_parts"] = agreement(exact, [gv.decode_model(s, evaluator="knn", k=K) for s in sets])
    if res["has_knn_centres"]:
        res["centres_vs_exact_parts"] = agreement(
            exact, [gv.decode_model(s, evaluator="knn-centres", k=32) for s in sets])
    if spec.get("whole_agreement"):
        t = time.perf_counter()
        knn = gv.decode_model(evaluator="knn", k=K)
        res["knn_full_ms"] = 1e3 * (time.perf_counter() - t)
        res["knn_vs_exact_whole"] = agreement([gv.decode_model(evaluator="dense")], [knn])
    return res


# -- the parent: models, alternating processes, table ---------------------------------------------


def run_child(spec: dict, src: str | None) -> dict:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                          env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child failed ({spec['model']}, {src or 'current'}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def model_specs(names, train: bool, stale_ok: bool, quick: bool) -> list[dict]:
    specs = []
    for name in names:
        spec = {"model": name, "quick": quick}
        if name in TRAINED:
            try:
                spec["path"] = str(_trained.model_path(TRAINED[name], stale_ok=stale_ok, train=train))
            except FileNotFoundError as exc:
                print(f"skip {name}: {exc}", file=sys.stderr)
                continue
        specs.append(spec)
    return specs


def median_of(runs: list[dict], key: str):
    vals = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
    return float(np.median(vals)) if vals else None


_PEAK_CODE = """
import json
import numpy as np
from napari_volmicro.synthetic import benchmark_volume
gv = benchmark_volume(shape={shape})
gv.decode((slice(0, 8), slice(0, 8), slice(0, 8)))
def rss_kib(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
before = rss_kib("VmRSS")
vol = gv.decode()
print(json.dumps({{"delta_kib": max(rss_kib("VmHWM") - before, 0), "out_bytes": vol.nbytes}}))
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


def _python(code: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fmt(v, unit=""):
    if v is None:
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "="
    return f"{v:.1f}{unit}" if v < 1000 else f"{v:.0f}{unit}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    ap.add_argument("--old", metavar="SRC", help="also time the package found at SRC (PYTHONPATH), alternating")
    ap.add_argument("--rounds", type=int, default=3, help="processes per model and side (medians are kept)")
    ap.add_argument("--repeats", type=int, default=3, help="whole decodes per process (best is kept)")
    ap.add_argument("--regions", type=int, default=9, help="random regions and planes timed (median is kept)")
    ap.add_argument("--threads", type=int, help="numba threads in the timed processes (default: all cores)")
    ap.add_argument("--train", action="store_true", help="train missing models (minutes each)")
    ap.add_argument("--stale-ok", action="store_true", help="use cached models of another encoder version")
    ap.add_argument("--extras", action="store_true", help="peak memory and fresh-process latency (current code)")
    ap.add_argument("--quick", action="store_true", help="small random model, one round")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(json.loads(a.child))))
        return 0
    print("command: " + " ".join(shlex.quote(x) for x in [sys.executable, *sys.argv]), flush=True)
    rounds = 1 if a.quick else a.rounds
    sides = [("new", None)] + ([("old", a.old)] if a.old else [])
    results = {}
    for spec in model_specs(a.models, a.train, a.stale_ok, a.quick):
        spec.update(repeats=a.repeats, regions=a.regions, threads=a.threads)
        runs = {side: [] for side, _ in sides}
        for r in range(rounds):
            for side, src in sides:
                s = dict(spec, whole_agreement=(side == "new" and r == 0))
                runs[side].append(run_child(s, src))
                print(f"  {spec['model']} {side} round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
        results[spec["model"]] = runs

    load = os.getloadavg()[0]
    w = 44
    print(f"{'model / figure':{w}s} {'old':>9s} {'new':>9s} {'speed-up':>8s}  target / note")
    for model, runs in results.items():
        new = runs["new"][0]
        shape = " x ".join(map(str, new["shape"]))
        print(f"{model} ({shape}, {new['n_gaussians']} Gaussians)")
        rs = " x ".join(map(str, new["region_shape"]))
        ps = " x ".join(map(str, new["plane_shape"]))
        rows = [
            ("dense whole volume MVox/s", "dense_full_mvox_s", ">= 200", False),
            ("dense whole volume ms", "dense_full_ms", "", True),
            ("  CPU ms (all threads)", "dense_full_cpu_ms", "", True),
            (f"dense region {rs} ms", "dense_region_ms", "<= 15 (128^3)", True),
            ("  CPU ms", "dense_region_cpu_ms", "", True),
            (f"knn region {rs} ms", "knn_region_ms", "<= 100 (128^3)", True),
            ("  CPU ms", "knn_region_cpu_ms", "", True),
            (f"dense plane {ps} ms", "dense_plane_ms", "", True),
            ("  CPU ms", "dense_plane_cpu_ms", "", True),
            (f"knn plane {ps} ms", "knn_plane_ms", "<= 50 (1 x 1024 x 1024)", True),
            ("  CPU ms", "knn_plane_cpu_ms", "", True),
        ]
        for label, key, note, lower in rows:
            nv = median_of(runs["new"], key)
            ov = median_of(runs["old"], key) if "old" in runs else None
            ratio = f"{ov / nv:.2f}" if (ov and nv) else "-"
            if not lower and ov and nv:
                ratio = f"{nv / ov:.2f}"  # throughput: new/old, so > 1 is faster either way
            print(f"  {label:{w - 2}s} {_fmt(ov):>9s} {_fmt(nv):>9s} {ratio:>8s}  {note}")
        for side in runs:
            res = runs[side][0]
            kk = res.get("k", 32)
            name = f"knn K={kk}" if res["has_knn_centres"] else f"knn K={kk} (the paper's rule)"
            agr = res["knn_vs_exact_parts"]
            print(f"  {side}: {name} vs exact, 3 regions + 3 planes: {_fmt(agr['psnr_db'])} dB, "
                  f"{100 * agr['differing']:.3g}% of voxels differ")
            if "centres_vs_exact_parts" in res:
                c = res["centres_vs_exact_parts"]
                print(f"  {side}: knn-centres K=32 (the paper's rule) vs exact, same parts: {_fmt(c['psnr_db'])} dB, "
                      f"{100 * c['differing']:.3g}% of voxels differ")
            if "knn_vs_exact_whole" in res:
                c = res["knn_vs_exact_whole"]
                print(f"  {side}: knn K={kk} vs exact, whole volume: {_fmt(c['psnr_db'])} dB, "
                      f"{100 * c['differing']:.3g}% of voxels differ, max error {c['max_err']:.3g} (model units); "
                      f"{res['knn_full_ms']:.0f} ms")
    extras = {}
    if a.extras:
        shape = (40, 160, 200) if a.quick else (100, 647, 813)
        peak = _python(_PEAK_CODE.format(shape=shape))
        _python(_FIRST_CALL_CODE)
        first = _python(_FIRST_CALL_CODE)
        extras = {"dense_peak_over_output": peak["delta_kib"] * 1024 / peak["out_bytes"], **first}
        print(f"dense peak memory / output (random model): {extras['dense_peak_over_output']:.2f}x (target <= 1.5x)")
        print(f"fresh process: import {first['import_s']:.2f} s, first dense {first['first_dense_s']:.2f} s, first knn "
              f"calls {first['first_knn_s']:.2f} s, numba cache misses {first['cache_misses']}")
    print(f"threads {new['threads'] if results else '-'}, load average {load:.1f} (shared machine: compare ratios)")
    print(json.dumps({"results": results, "extras": extras, "load_avg_1min": load}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
