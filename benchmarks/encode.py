"""Encoder benchmark: the paper's Table 5 (ablations) for our data, rate points, and scale.

Run from the repository root (takes a long time on a 2-core CPU; timings are
noisy when the machine is shared: compare ratios from one run)::

    python benchmarks/encode.py                 # everything
    python benchmarks/encode.py --part table5   # ablations on Purkinje and nuclei at 0.073 bpp
    python benchmarks/encode.py --part rate     # 0.073 and 0.3 bpp, default preset
    python benchmarks/encode.py --part scale    # 10 M, 20 M and 100 x 647 x 813 voxels (mirror-tiled)

Every case runs in its own subprocess so that its peak memory (ru_maxrss) is
its own. Quality is measured on the model as stored in the file
(``container.quantize``), decoded with the dense evaluator; bpp counts the
whole file (``container.file_size``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VOLUMES = {
    "purkinje": ROOT / "src/napari_volmicro/_data/purkinje_flowdec.tif",
    "nuclei": ROOT / "tests/data/cellseg3d_nuclei.tif",
    "neuron": ROOT / "tests/data/rivuletpy_neuron.tif",
}


def mirror_tile(v, shape):
    """``v`` mirrored and repeated to ``shape`` (ZYX): real texture at any size."""
    import numpy as np

    reps = [int(np.ceil(s / n)) for s, n in zip(shape, v.shape)]
    out = v
    for axis, r in enumerate(reps):
        parts = [out if i % 2 == 0 else np.flip(out, axis) for i in range(r)]
        out = np.concatenate(parts, axis=axis)
    return np.ascontiguousarray(out[: shape[0], : shape[1], : shape[2]])


def load(name, shape=None):
    import tifffile

    v = tifffile.imread(VOLUMES[name])
    return mirror_tile(v, shape) if shape else v


def run_case(spec: dict) -> dict:
    """One encode in this process: spec = volume, shape, bpp, preset, options, time_limit."""
    import resource
    import time

    from napari_volmicro import metrics
    from napari_volmicro.container import file_size, quantize
    from napari_volmicro.encode import Trainer

    v = load(spec["volume"], spec.get("shape"))
    tr = Trainer(v, bpp=spec.get("bpp", 0.073), preset=spec.get("preset", "default"), steps=spec.get("steps"),
                 seed=0, **spec.get("options", {}))
    t0 = time.perf_counter()
    limit = spec.get("time_limit")
    snap = None
    for snap in tr.run():  # noqa: B007 (the last snapshot is used below)
        if limit and time.perf_counter() - t0 > limit:
            tr.stop()
    enc = time.perf_counter() - t0
    gv = tr.result
    stored = quantize(gv)
    t1 = time.perf_counter()
    rec = stored.decode(evaluator="dense")
    dec = time.perf_counter() - t1
    out = dict(spec, shape=list(v.shape), voxels=int(v.size), n_gaussians=gv.n_gaussians,
               file_bytes=file_size(gv), steps_done=snap.step, encode_s=enc, decode_s=dec,
               peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    out["bpp_file"] = 8 * out["file_bytes"] / v.size
    if spec.get("quality", True):
        out.update(psnr_full=metrics.psnr_full(v, rec), ssim3d=metrics.ssim3d(v, rec))
    return out


def spawn(spec: dict) -> dict:
    r = subprocess.run([sys.executable, __file__, "--case", json.dumps(spec)], capture_output=True, text=True)
    if r.returncode != 0:
        return dict(spec, error=r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed")
    return json.loads(r.stdout.strip().splitlines()[-1])


def fmt(r: dict) -> str:
    if "error" in r:
        return f"ERROR {r['error']}"
    q = f"{r['psnr_full']:6.2f} dB  SSIM {r['ssim3d']:.4f}  " if "psnr_full" in r else ""
    return (f"{q}{r['bpp_file']:.4f} bpp  N={r['n_gaussians']:6d}  steps {r['steps_done']:5d}  "
            f"encode {r['encode_s']:7.1f} s  decode {r['decode_s']:.2f} s  peak {r['peak_mb']:.0f} MB")


def table5(steps=None, volumes=("purkinje", "nuclei")):
    print("== Table 5 (ablations), 0.073 bpp, psnr_full over all voxels ==")
    for vol in volumes:
        base = dict(volume=vol, bpp=0.073, steps=steps)
        full = spawn(base)
        print(f"{vol:9s} full model (default)     {fmt(full)}", flush=True)
        for label, opts in (("- gate", dict(gate=False)), ("- edge weights", dict(edge_weights=False)),
                            ("- densification", dict(densify=False)), ("MLP gate (TOPS)", dict(gate_kind="mlp")),
                            ("- relocation", dict(relocate=False))):
            print(f"{vol:9s} {label:24s} {fmt(spawn(dict(base, options=opts)))}", flush=True)
        if "encode_s" in full:
            paper = spawn(dict(volume=vol, bpp=0.073, preset="paper", time_limit=full["encode_s"]))
            print(f"{vol:9s} {'paper preset, same time':24s} {fmt(paper)}", flush=True)


def rate(steps=None, volumes=("purkinje", "nuclei")):
    print("== Rate points (default preset) ==")
    for vol in volumes:
        for bpp in (0.073, 0.3):
            print(f"{vol:9s} {bpp:5.3f} bpp  {fmt(spawn(dict(volume=vol, bpp=bpp, steps=steps)))}", flush=True)


SCALE_CASES = {"10M": ("10 Mvox", "purkinje", (50, 448, 448)), "20M": ("20 Mvox", "neuron", (119, 415, 409)),
               "52M": ("100x647x813", "purkinje", (100, 647, 813))}


def scale(steps=None, cases=tuple(SCALE_CASES)):
    print("== Scale: volumes built by mirror-tiling the real stacks (not new data) ==")
    for name, vol, shape in (SCALE_CASES[c] for c in cases):
        r = spawn(dict(volume=vol, shape=list(shape), bpp=0.073, steps=steps, quality=True))
        print(f"{name:12s} {vol:9s} {shape}  {fmt(r)}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("table5", "rate", "scale", "all"), default="all")
    ap.add_argument("--steps", type=int, help="override the preset's steps (quick look)")
    ap.add_argument("--volumes", nargs="+", choices=("purkinje", "nuclei"), default=["purkinje", "nuclei"])
    ap.add_argument("--scale-cases", nargs="+", choices=list(SCALE_CASES), default=list(SCALE_CASES),
                    help="which --part scale volumes to encode (default: all three)")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.case:
        print(json.dumps(run_case(json.loads(a.case))))
        return
    if a.part in ("table5", "all"):
        table5(a.steps, a.volumes)
    if a.part in ("rate", "all"):
        rate(a.steps, a.volumes)
    if a.part in ("scale", "all"):
        scale(a.steps, a.scale_cases)


if __name__ == "__main__":
    main()
