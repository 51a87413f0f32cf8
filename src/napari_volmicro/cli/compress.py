"""``volmicro compress IN -o OUT.vmg``: fit Gaussians to a volume and save them.

Reads a TIFF (OME-TIFF/ImageJ voxel size) or .npy volume, trains with the
chosen preset under a size budget (--bpp, --ratio or --gaussians; default
0.073 bits per voxel), shows its progress on stderr and writes the .vmg file
only when everything succeeded: an interrupted or failed run (Ctrl-C,
SIGTERM, an error) leaves an existing OUT.vmg as it was and no temporary
files. The output path, the input's header and the memory it needs are
checked before training starts. The new file is read back and decoded to
report its quality (psnr_full, psnr_fg, ssim3d) and size (bpp, ratio) before
it takes OUT.vmg's place; with --json the last line of stdout is one JSON
object with those figures.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

from ..errors import InputError
from ._interrupt import deferred_interrupt, signal_point

#: host memory the encoder needs per voxel, beyond the volume itself (measured: 35 B/voxel on a
#: 20-Mvoxel uint8 stack, 10 steps; small volumes cost more per voxel but fit anyway)
ENCODE_BYTES_PER_VOXEL = 40
#: a model is reported as degenerate below this margin over the flat-volume PSNR (dB)
DEGENERATE_MARGIN_DB = 1.0

EXAMPLES = """examples:
  volmicro compress stack.tif -o stack.vmg                 (0.073 bits per voxel)
  volmicro compress stack.tif -o stack.vmg --ratio 200     (file 200 times smaller)
  volmicro compress big.zarr -o big.vmg --bricks 256       (larger than memory)
"""


def register(subparsers) -> None:
    from ._text import METRICS_HELP

    p = subparsers.add_parser(
        "compress",
        help="compress a 3D volume (.tif/.npy) into a .vmg file of Gaussians",
        description=__doc__.split("\n\n", 1)[1],
        epilog=EXAMPLES + "\n" + METRICS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "input",
        help="input volume (.tif, .tiff or .npy), 3D ZYX; with --bricks also Zarr/OME-Zarr (PATH or PATH::ARRAY)",
    )
    p.add_argument("-o", "--output", required=True, help="output model file (.vmg)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--bpp", type=float, help="size budget in bits per voxel of the whole file (default 0.073)")
    budget.add_argument("--ratio", type=float,
                        help="size budget as compression ratio, original bytes / file bytes (e.g. 200)")
    budget.add_argument("--gaussians", type=int, help="size budget as a number of Gaussians")
    p.add_argument(
        "--max-error", metavar="E",
        help="error-bounded archive: every voxel decodes within E of the original, E in grey levels (e.g. 2) "
        "or in units of the estimated noise (e.g. 1.5sigma); --bpp/--ratio then set the Gaussians' budget",
    )
    p.add_argument(
        "--layers", choices=("all", "base"), default="all",
        help="all (default): Gaussians plus an enhancement layer for what they miss, splitting the budget; "
        "base: spend the whole budget on Gaussians",
    )
    p.add_argument("--force", action="store_true",
                   help="compress even when the budget allows a file larger than the input")
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


def run_with_progress(trainer, enabled: bool = True, interrupt=None):
    """Run ``trainer`` to the end with progress on stderr; returns (last snapshot, seconds).

    interrupt: an ``Interrupt`` checked after every step (Ctrl-C ends the run there).
    """
    from ._progress import Progress

    bar = Progress(trainer.total_steps, "compress", "step", enabled=enabled)
    t0 = time.perf_counter()
    snap = None
    try:
        for snap in trainer.run():
            bar.update(snap.step, loss=f"{snap.loss:.2e}", psnr=f"{snap.psnr:.2f}dB", gaussians=snap.n_gaussians)
            if snap.step == 1:
                signal_point("training")
            if interrupt is not None:
                interrupt.check()
    finally:
        bar.close()
    return snap, time.perf_counter() - t0


def check_budget(budget_bytes: int | None, n_gaussians: int, shape, raw_bytes: int, force: bool) -> None:
    """Refuse (unless ``force``) a budget that allows a file larger than the raw volume."""
    from ._text import short_bytes

    planned = budget_bytes if budget_bytes is not None else _bytes_for_gaussians(n_gaussians, shape)
    if planned > raw_bytes and not force:
        raise InputError(
            f"the size budget ({short_bytes(planned)}) is larger than the volume itself ({short_bytes(raw_bytes)}): "
            "the .vmg file would be bigger than its input; ask for a ratio above 1 (e.g. --ratio 100) "
            "or a smaller --bpp/--gaussians, or add --force"
        )


def _bytes_for_gaussians(n: int, shape) -> int:
    """About the payload bytes ``n`` Gaussians take (the inverse of the budget's one size model)."""
    from ..encode.budget import gaussians_for_payload

    lo, hi = 0, 64 * max(1, int(n))
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if gaussians_for_payload(mid, shape) >= n:
            hi = mid
        else:
            lo = mid
    return hi


def _describe_input(path, header, volume, trainer, device: str, how=None) -> str:
    from ._text import dims_text, format_bytes

    sz, sy, sx = header.spacing
    if header.spacing_source is None:
        spacing = "none in the file (voxel units, 1 x 1 x 1)"
    else:
        spacing = f"{sz:g} x {sy:g} x {sx:g} (ZYX, um, from the {header.spacing_source})"
    budget = (f"{format_bytes(trainer.budget_bytes)}, up to {trainer.n_budget:,} Gaussians"
              if trainer.budget_bytes is not None else f"{trainer.n_budget:,} Gaussians")
    if how is not None and how.total_bytes is not None:
        budget = f"{format_bytes(how.total_bytes)} in all; Gaussians: {budget}, the enhancement layer the rest"
    elif how is not None and how.max_error is not None:
        budget = f"Gaussians: {budget}, then an enhancement layer for a maximum error of {how.max_error:.4g}"
    return (f"input: {path}: {dims_text(volume.shape)} voxels (ZYX), {volume.dtype}, {format_bytes(volume.nbytes)}\n"
            f"voxel size: {spacing}\n"
            f"budget: {budget}; {trainer.total_steps} steps on {device} "
            "(the first step compiles the kernels: up to a minute on a new machine)")


def degenerate_warnings(report: dict, flat_db: float) -> list[str]:
    """Why a model is useless, if it is (empty list otherwise)."""
    out = []
    if report["n_gaussians"] == 0:
        out.append("the model holds no Gaussians (only a background level): nothing of the structures was kept")
    if math.isfinite(flat_db) and report["psnr_full"] < flat_db + DEGENERATE_MARGIN_DB:
        out.append(f"the model is no better than a flat volume at the mean intensity (psnr_full "
                   f"{report['psnr_full']:.2f} dB; the flat volume gives {flat_db:.2f} dB): the input may be "
                   "noise, or the budget too small (try a larger --bpp or a smaller --ratio)")
    return out


def compress_file(input_path, output_path, *, bpp=None, ratio=None, gaussians=None, preset="default",
                  steps=None, seed=0, device="auto", progress=True, force=False, verbose=False,
                  max_error=None, layers="all", **options) -> dict:
    """Compress ``input_path`` into ``output_path``; returns the report dict (see module doc).

    max_error / layers: see ``residual.hybrid.plan`` (the error-bounded mode; ``"base"``: Gaussians only).

    verbose: print what was found in the input and the budget (stderr) before training.
    The report's ``warnings`` lists why the model is degenerate, if it is.
    """
    from .. import load, metrics
    from ..atomic import atomic_path
    from ..container import save
    from ..encode import Trainer
    from ..residual import hybrid
    from ..volume_io import check_fits_memory, check_shape, check_volume, read_volume, volume_header
    from ._checks import check_output, check_volume_input

    if str(output_path).lower().endswith((".tif", ".tiff", ".npy")):
        raise InputError(f"output {output_path} looks like a volume file; the model is written as .vmg")
    out = check_output(output_path)
    check_volume_input(input_path, command="compress")
    header = volume_header(input_path)
    dims = check_shape(header.shape, header.dtype, source=str(input_path))
    check_fits_memory(dims, header.dtype, str(input_path),
                      bytes_per_voxel=header.dtype.itemsize + ENCODE_BYTES_PER_VOXEL)
    array, spacing = read_volume(input_path)
    volume = check_volume(array, source=str(input_path))
    del array
    with deferred_interrupt() as interrupt:  # Ctrl-C / SIGTERM end at a safe point, never inside compiled code
        how = hybrid.plan(volume, bpp=bpp, ratio=ratio, gaussians=gaussians, max_error=max_error,
                          enhance=layers != "base")
        trainer = Trainer(volume, spacing, **how.base, preset=preset, steps=steps, seed=seed, device=device,
                          **options)
        check_budget(how.total_bytes or trainer.budget_bytes, trainer.n_budget, volume.shape, volume.nbytes, force)
        if verbose:
            from ..encode.trainer import resolve_device

            used = resolve_device(device) if device == "auto" else device
            print(_describe_input(input_path, header, volume, trainer, used, how), file=sys.stderr, flush=True)
        signal_point("before-training")
        interrupt.check()
        snap, seconds = run_with_progress(trainer, enabled=progress, interrupt=interrupt)
        signal_point("after-training")
        interrupt.check()
        gv = trainer.result
        if how.layered:
            t_layer = time.perf_counter()
            gv = hybrid.complete(volume, gv, how)
            seconds += time.perf_counter() - t_layer
            interrupt.check()
        try:
            with atomic_path(out) as tmp:  # replaces OUT.vmg only when the block ends without an exception
                save(gv, tmp)
                signal_point("after-save")
                interrupt.check()
                stored = load(tmp)
                recon = stored.decode(evaluator="dense")
                interrupt.check()
                file_bytes = os.path.getsize(tmp)
                report = metrics.quality_report(volume, recon, file_bytes=file_bytes)
                del recon
                flat_db = metrics.flat_psnr(volume)
                interrupt.check()  # the last moment a signal stops the run; after it the file is in place
        except OSError as exc:  # (disk full, the directory removed meanwhile): name the user's path
            raise InputError(f"could not write {out}: {exc.strerror or exc}") from None
        signal_point("after-replace")
    if interrupt.requested:  # too late to stop: say so rather than exit 130 over a finished file
        print(f"the interrupt came after {out} was written; it is complete", file=sys.stderr)
    report.update(output=str(out), n_gaussians=int(stored.n_gaussians), encode_seconds=seconds,
                  steps=int(snap.step))
    layer = getattr(stored, "residual", None)
    report["residual_bytes"] = None if layer is None else int(layer.nbytes)
    report["max_error"] = None if layer is None else layer.max_error
    report["warnings"] = degenerate_warnings(report, flat_db)
    report["psnr_flat"] = flat_db
    return report


def run(args) -> int:
    from . import print_json, warn
    from ._text import format_bytes, quality_guide, ratio_text

    if getattr(args, "bricks", None):
        from .compress_bricked import run_bricked

        if args.max_error is not None:
            raise InputError("--max-error is not available with --bricks (bricked files hold Gaussians only)")

        return run_bricked(args)

    zarr_path = str(args.input).partition("::")[0]
    if "::" in str(args.input) or zarr_path.lower().rstrip("/\\").endswith(".zarr"):
        raise InputError(f"{args.input}: Zarr input is read brick by brick; add --bricks (e.g. --bricks 256)")
    report = compress_file(
        args.input, args.output, bpp=args.bpp, ratio=args.ratio, gaussians=args.gaussians, preset=args.preset,
        steps=args.steps, seed=args.seed, device=args.device, progress=True, force=args.force, verbose=True,
        max_error=args.max_error, layers=args.layers, **_options(args),
    )
    print(f"wrote {report['output']}: {report['n_gaussians']:,} Gaussians, {format_bytes(report['file_bytes'])}, "
          f"{report['bpp']:.4f} bpp, ratio {ratio_text(report['ratio'])}")
    print(f"psnr_full {report['psnr_full']:.2f} dB  psnr_fg {report['psnr_fg']:.2f} dB  "
          f"ssim3d {report['ssim3d']:.4f}  encode {report['encode_seconds']:.1f} s ({report['steps']} steps)")
    if report["residual_bytes"] is not None:
        bound = report["max_error"]
        print(f"enhancement layer: {format_bytes(report['residual_bytes'])}"
              + ("" if bound is None else "; lossless: every voxel decodes exactly" if bound == 0
                 else f"; every voxel within {bound:g} of the original"))
    print(quality_guide(report["output"]))
    for text in report["warnings"]:
        warn("compress", text)
    if args.json:
        keys = ("output", "n_gaussians", "file_bytes", "bpp", "ratio", "psnr_full", "psnr_fg", "ssim3d",
                "encode_seconds", "steps", "warnings", "residual_bytes", "max_error")
        print_json({k: (None if isinstance(report[k], float) and not math.isfinite(report[k]) else report[k])
                    for k in keys})
    return 0
