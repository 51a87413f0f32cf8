"""Base-layer quality per volume and rate: what the Gaussians alone reach, and whether the budget is spent.

For every volume in ``../shared/data`` (or the ones named) and every target rate
(default 0.073, 0.15, 0.3 and 0.6 bpp) this trains the default preset, saves
the ``.vmg`` file, loads it back, decodes it densely (base layer only) and
prints ``psnr_full``, ``ssim3d``, the bytes written against the budget, the
number of Gaussians and the encode time. Each case runs in its own subprocess
(its own peak memory; a crash does not stop the others).

Run from the repository root (hours for everything on a 2-core CPU; the
18-Mvoxel two-photon volume dominates)::

    python benchmarks/base_quality.py                                   # all volumes, all rates
    python benchmarks/base_quality.py --volumes purkinje nuclei --bpp 0.073 0.3
    python benchmarks/base_quality.py --volumes cellfinder --crop 0:26,300:556,100:356 --steps 400
    python benchmarks/base_quality.py --volumes cellfinder@0:26,450:642,250:442 nuclei --steps 800
    python benchmarks/base_quality.py --volumes nuclei --options '{"spend_everywhere": false}'

``--json`` adds one JSON line per case (for logs). Timings are wall-clock and
noisy on a shared machine: compare cases from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: the shared volumes (``VOLMICRO_DATA`` overrides)
SHARED = Path(os.environ.get("VOLMICRO_DATA", ROOT.parent / "shared" / "data"))
#: short names for the shared volumes (the repository's own copies where it has one)
VOLUMES = {
    "cellfinder": SHARED / "cellfinder_stp_signal.tif",
    "purkinje": SHARED / "purkinje_flowdec.tif",
    "nuclei": SHARED / "cellseg3d_nuclei.tif",
    "neuron": SHARED / "rivuletpy_neuron.tif",
    "bead": SHARED / "bead_flowdec.tif",
}
RATES = (0.073, 0.15, 0.3, 0.6)


def _path(name: str) -> Path:
    return VOLUMES.get(name, Path(name))


def _short(name: str) -> str:
    return name.split("@", 1)[0] + ("*" if "@" in name else "")


def parse_crop(text: str | None):
    """``"z0:z1,y0:y1,x0:x1"`` -> three slices (None: whole volume)."""
    if not text:
        return None
    out = []
    for part in text.split(","):
        a, b = part.split(":")
        out.append(slice(int(a) if a else None, int(b) if b else None))
    if len(out) != 3:
        raise SystemExit(f"--crop needs three ranges z0:z1,y0:y1,x0:x1, got {text!r}")
    return tuple(out)


def run_case(spec: dict) -> dict:
    """One encode in this process (spec: volume, bpp, crop, steps, seed, options)."""
    import resource
    import tempfile
    import time

    import numpy as np

    import napari_volmicro
    from napari_volmicro import metrics
    from napari_volmicro.encode import Trainer
    from napari_volmicro.volume_io import read_volume

    name, _, own_crop = spec["volume"].partition("@")
    v, spacing = read_volume(_path(name))
    crop = parse_crop(own_crop or spec.get("crop"))
    if crop is not None:
        v = np.ascontiguousarray(v[crop])
    tr = Trainer(v, spacing, bpp=spec["bpp"], steps=spec.get("steps"), seed=spec.get("seed", 0),
                 device="cpu", **spec.get("options", {}))
    t0 = time.perf_counter()
    for _ in tr.run():
        pass
    encode_s = time.perf_counter() - t0
    gv = tr.result
    with tempfile.TemporaryDirectory() as tmp:
        path = gv.save(Path(spec["save"]) / _file_name(spec) if spec.get("save") else Path(tmp) / "model.vmg")
        n_bytes = path.stat().st_size
        stored = napari_volmicro.load(path)
        rec = stored.decode(evaluator="dense")
    out = dict(spec, shape=list(v.shape), n_gaussians=int(stored.n_gaussians), file_bytes=int(n_bytes),
               budget_bytes=tr.budget_bytes, n_budget=int(tr.n_budget), steps_done=int(tr.config.steps),
               encode_s=encode_s, psnr_full=metrics.psnr_full(v, rec), ssim3d=metrics.ssim3d(v, rec),
               peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    out["bpp_file"] = 8.0 * n_bytes / v.size
    out["budget_hit"] = n_bytes / tr.budget_bytes if tr.budget_bytes else float("nan")
    return out


def _file_name(spec: dict) -> str:
    name = Path(spec["volume"].split("@", 1)[0]).stem
    return f"{name}{'-crop' if '@' in spec['volume'] or spec.get('crop') else ''}-{spec['bpp']:g}.vmg"


def spawn(spec: dict) -> dict:
    r = subprocess.run([sys.executable, __file__, "--case", json.dumps(spec)], capture_output=True, text=True)
    if r.returncode != 0:
        tail = r.stderr.strip().splitlines()
        return dict(spec, error=tail[-1] if tail else f"exit {r.returncode}")
    return json.loads(r.stdout.strip().splitlines()[-1])


HEADER = (f"{'volume':<11} {'target':>6} {'bpp':>7} {'bytes/budget':>12} {'psnr_full':>9} {'ssim3d':>7} "
          f"{'N':>7} {'steps':>5} {'encode s':>8}  options")


def row(r: dict) -> str:
    name = _short(r["volume"]) + ("*" if r.get("crop") else "")
    if "error" in r:
        return f"{name:<11} {r['bpp']:6.3f}  ERROR {r['error']}"
    opts = json.dumps(r.get("options", {})) if r.get("options") else ""
    return (f"{name:<11} {r['bpp']:6.3f} {r['bpp_file']:7.4f} {r['budget_hit']:12.4f} {r['psnr_full']:9.2f} "
            f"{r['ssim3d']:7.4f} {r['n_gaussians']:7d} {r['steps_done']:5d} {r['encode_s']:8.1f}  {opts}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--volumes", nargs="+", default=list(VOLUMES),
                    help=f"short names ({', '.join(VOLUMES)}) or TIFF paths, each optionally NAME@z0:z1,y0:y1,x0:x1 "
                         "(a crop; default: all, whole)")
    ap.add_argument("--bpp", nargs="+", type=float, default=list(RATES))
    ap.add_argument("--crop", help="z0:z1,y0:y1,x0:x1 (voxels) to train on a crop (screening)")
    ap.add_argument("--steps", type=int, help="override the preset's step count (screening)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--options", default="{}", help="JSON dict of TrainConfig overrides")
    ap.add_argument("--json", action="store_true", help="also print each case as a JSON line")
    ap.add_argument("--save", help="keep each model as DIR/<volume>-<bpp>.vmg")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.case:
        print(json.dumps(run_case(json.loads(a.case))))
        return 0
    options = json.loads(a.options)
    print(HEADER, flush=True)
    for vol in a.volumes:
        for bpp in a.bpp:
            spec = dict(volume=vol, bpp=bpp, crop=a.crop, steps=a.steps, seed=a.seed, options=options,
                        save=str(Path(a.save).resolve()) if a.save else None)
            r = spawn(spec)
            print(row(r), flush=True)
            if a.json:
                print(json.dumps(r), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
