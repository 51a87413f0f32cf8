"""``volmicro compress IN -o OUT.vmg``: fit Gaussians to a volume and save them.

Reads a TIFF (OME-TIFF/ImageJ spacing) or ``.npy`` volume, trains with the
chosen preset under a size budget (``--bpp``, ``--ratio`` or ``--gaussians``;
default 0.073 bpp), shows a progress bar on stderr and writes the ``.vmg``
file atomically: an interrupted run (Ctrl-C) leaves no output file. After
saving, the file is read back and decoded to report its quality
(``psnr_full``, ``psnr_fg``, ``ssim3d``) and size (``bpp``, ``ratio``); with
``--json`` the last line of stdout is one JSON object with those figures.
"""

from __future__ import annotations

import math
import sys
import time

from ..errors import InputError
from ._interrupt import deferred_interrupt


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "compress",
        help="compress a 3D volume (.tif/.npy) into a .vmg file of Gaussians",
        description=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument(
        "input",
        help="input volume (.tif, .tiff or .npy), 3D ZYX; with --bricks also Zarr/OME-Zarr (PATH or PATH::ARRAY)",
    )
    p.add_argument("-o", "--output", required=True, help="output model file (.vmg)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--bpp", type=float, help="size budget in bits per voxel of the whole file (default 0.073)")
    budget.add_argument("--ratio", type=float, help="size budget as compression ratio (original bytes / file bytes)")
    budget.add_argument("--gaussians", type=int, help="size budget as a number of Gaussians")
    p.add_argument("--preset", default="default", choices=("default", "paper"), help="training preset (default: default)")
    p.add_argument("--steps", type=int, help="optimiser steps (default: the preset's)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed, same file on a CPU")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="training device (default auto)")
    p.add_argument("--no-gate", action="store_true", help="ablation: no occupancy gate")
    p.add_argument("--no-edge-weights", action="store_true", help="ablation: plain MSE instead of edge-aware weights")
    p.add_argument("--no-densify", action="store_true", help="ablation: no adaptive densification")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    from .compress_bricked import add_bricked_arguments

    add_bricked_arguments(p)
    p.set_defaults(func=run)


def _options(args) -> dict:
    opts = {}
    if args.no_gate:
        opts["gate"] = False
    if args.no_edge_weights:
        opts["edge_weights"] = False
    if args.no_densify:
        opts["densify"] = False
    return opts


class _Progress:
    """tqdm bar on stderr: step, loss, PSNR estimate, Gaussians, ETA."""

    def __init__(self, total: int, enabled: bool = True):
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="step", file=sys.stderr, disable=not enabled, dynamic_ncols=True,
                        desc="compress")
        self.last = 0

    def __call__(self, snap) -> None:
        self.bar.update(snap.step - self.last)
        self.last = snap.step
        self.bar.set_postfix(loss=f"{snap.loss:.2e}", psnr=f"{snap.psnr:.2f}dB", gaussians=snap.n_gaussians,
                             refresh=False)

    def close(self) -> None:
        self.bar.close()


def run_with_progress(trainer, enabled: bool = True, interrupt=None):
    """Run ``trainer`` to the end with a progress bar; returns (last snapshot, seconds).

    interrupt: an ``Interrupt`` checked after every step (Ctrl-C ends the run there).
    """
    bar = _Progress(trainer.total_steps, enabled=enabled)
    t0 = time.perf_counter()
    snap = None
    try:
        for snap in trainer.run():
            bar(snap)
            if interrupt is not None:
                interrupt.check()
    finally:
        bar.close()
    return snap, time.perf_counter() - t0


def compress_file(input_path, output_path, *, bpp=None, ratio=None, gaussians=None, preset="default",
                  steps=None, seed=0, device="auto", progress=True, **options) -> dict:
    """Compress ``input_path`` into ``output_path``; returns the report dict (see module doc)."""
    from .. import load, metrics
    from ..container import save
    from ..encode import Trainer
    from ..volume_io import check_volume, read_volume

    if str(output_path).lower().endswith((".tif", ".tiff", ".npy")):
        raise InputError(f"output {output_path} looks like a volume file; the model is written as .vmg")
    array, spacing = read_volume(input_path)
    volume = check_volume(array, source=str(input_path))
    with deferred_interrupt() as interrupt:  # Ctrl-C ends at a step, never inside the JIT compiler
        trainer = Trainer(volume, spacing, bpp=bpp, ratio=ratio, gaussians=gaussians, preset=preset,
                          steps=steps, seed=seed, device=device, **options)
        interrupt.check()
        snap, seconds = run_with_progress(trainer, enabled=progress, interrupt=interrupt)
        interrupt.check()
    gv = trainer.result
    path = save(gv, output_path)
    stored = load(path)
    recon = stored.decode(evaluator="dense")
    file_bytes = path.stat().st_size
    report = metrics.quality_report(volume, recon, file_bytes=file_bytes)
    report.update(output=str(path), n_gaussians=int(stored.n_gaussians), encode_seconds=seconds,
                  steps=int(snap.step))
    return report


def run(args) -> int:
    from . import print_json

    if getattr(args, "bricks", None):
        from .compress_bricked import run_bricked

        return run_bricked(args)

    report = compress_file(
        args.input, args.output, bpp=args.bpp, ratio=args.ratio, gaussians=args.gaussians, preset=args.preset,
        steps=args.steps, seed=args.seed, device=args.device, progress=True, **_options(args),
    )
    print(f"wrote {report['output']}: {report['n_gaussians']} Gaussians, {report['file_bytes']} bytes, "
          f"{report['bpp']:.4f} bpp, ratio {report['ratio']:.1f}")
    print(f"psnr_full {report['psnr_full']:.2f} dB  psnr_fg {report['psnr_fg']:.2f} dB  "
          f"ssim3d {report['ssim3d']:.4f}  encode {report['encode_seconds']:.1f} s ({report['steps']} steps)")
    if args.json:
        keys = ("output", "n_gaussians", "file_bytes", "bpp", "ratio", "psnr_full", "psnr_fg", "ssim3d",
                "encode_seconds", "steps")
        print_json({k: (None if isinstance(report[k], float) and not math.isfinite(report[k]) else report[k])
                    for k in keys})
    return 0
