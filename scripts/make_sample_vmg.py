#!/usr/bin/env python
"""Make the plugin's sample model: the Purkinje stack compressed to Gaussians.

Writes src/napari_volmicro/_data/purkinje_sample.vmg (atomically) and prints
its size and quality. Usage:

    python scripts/make_sample_vmg.py [--bpp 0.073] [--steps N] [--seed 0]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "src" / "napari_volmicro" / "_data"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bpp", type=float, default=0.073)
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=DATA / "purkinje_sample.vmg")
    args = ap.parse_args(argv)

    from napari_volmicro.container import file_size, save
    from napari_volmicro.encode import compress
    from napari_volmicro.metrics import quality_report

    volume = tifffile.imread(DATA / "purkinje_flowdec.tif")
    t0 = time.monotonic()
    last = [0.0]

    def progress(snap):
        now = time.monotonic()
        if now - last[0] > 30 or snap.done:
            last[0] = now
            print(f"step {snap.step}/{snap.total_steps} PSNR~{snap.psnr:.2f} dB N={snap.n_gaussians}", flush=True)

    gv = compress(volume, bpp=args.bpp, steps=args.steps, seed=args.seed, progress=progress)
    seconds = time.monotonic() - t0
    path = save(gv, args.out)
    from napari_volmicro import load

    stored = load(path)
    recon = stored.decode(evaluator="dense")
    rep = quality_report(volume, recon, file_size(gv))
    print(
        f"{path.name}: {gv.n_gaussians} Gaussians, {rep['file_bytes']} bytes, {rep['bpp']:.4f} bpp, "
        f"ratio {rep['ratio']:.0f}:1, PSNR {rep['psnr_full']:.2f} dB (fg {rep['psnr_fg']:.2f}), "
        f"SSIM {rep['ssim3d']:.4f}, trained in {seconds:.0f} s"
    )
    assert np.isfinite(rep["psnr_full"])


if __name__ == "__main__":
    main()
