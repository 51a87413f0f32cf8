"""``volmicro compress IN -o OUT.vmg --bricks 256``: bricked encoding of volumes larger than memory.

``add_bricked_arguments(parser)`` adds the options to the ``compress``
parser; ``run_bricked(args)`` runs when ``--bricks`` is given. The input is
read brick by brick (Zarr / OME-Zarr, TIFF, ``.npy``); each brick is a task on
dask.distributed: a LocalCluster of ``--workers`` processes with
``--memory-limit`` each, or the scheduler at ``--scheduler ADDRESS``. Every
finished brick is kept in ``OUT.vmg.parts``; after a crash or Ctrl-C,
``--resume`` continues from them. A bar on stderr counts bricks.
"""

from __future__ import annotations

import math
import sys

from ..errors import InputError


def _brick_size(text: str) -> tuple[int, int, int]:
    import argparse

    parts = str(text).split(",")
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or Z,Y,X voxels, got {text!r}") from None
    if len(vals) == 1:
        vals *= 3
    if len(vals) != 3 or min(vals) < 8:
        raise argparse.ArgumentTypeError(f"brick size must be N or Z,Y,X with each >= 8 voxels, got {text!r}")
    return tuple(vals)


def _seconds(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def add_bricked_arguments(parser) -> None:
    """The ``--bricks`` options of ``volmicro compress``."""
    g = parser.add_argument_group("volumes larger than memory (bricked encoding on dask.distributed)")
    g.add_argument("--bricks", type=_brick_size, metavar="N|Z,Y,X",
                   help="encode brick by brick with bricks of this many voxels (e.g. 256); input may be "
                        "Zarr/OME-Zarr (PATH or PATH::ARRAY), TIFF or .npy")
    g.add_argument("--halo", type=int, default=16, metavar="VOXELS",
                   help="context read around each brick (default 16)")
    where = g.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS", help="dask scheduler address (e.g. tcp://host:8786)")
    where.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    g.add_argument("--memory-limit", default="2GB", metavar="SIZE",
                   help="LocalCluster memory limit per worker (default 2GB)")
    g.add_argument("--scheduler-timeout", type=_seconds, default=10.0, metavar="SECONDS",
                   help="give up on a scheduler that does not answer within this time (default 10)")
    g.add_argument("--resume", action="store_true",
                   help="reuse the bricks already finished in OUT.vmg.parts (same input and settings)")


class _BrickBar:
    """Bricks done on stderr (``_progress.Progress``); the first finished brick is a signal point for tests."""

    def __init__(self, enabled: bool = True):
        from ._progress import Progress

        self.progress = Progress(None, "compress (bricks)", "brick", enabled=enabled)

    def __call__(self, p) -> None:
        from ._interrupt import signal_point

        if self.progress.total != p.total:
            self.progress.set_total(p.total)
        self.progress.update(p.done, last=f"{p.index}:{p.kind}", gaussians=p.n_gaussians)
        if p.done == 1:
            signal_point("bricks")

    def close(self) -> None:
        self.progress.close()


def _options(args) -> dict:
    opts = {}
    for flag, key in (("no_gate", "gate"), ("no_edge_weights", "edge_weights"), ("no_densify", "densify")):
        if getattr(args, flag, False):
            opts[key] = False
    return opts


def run_bricked(args) -> int:
    """Run ``volmicro compress ... --bricks N`` from parsed ``args``; prints a summary (and JSON)."""
    from ..bricks import compress_bricked, open_input
    from ..bricks.chunked_input import check_bricked_size
    from . import print_json
    from ._checks import check_output, check_volume_input
    from ._text import dims_text, format_bytes, ratio_text

    if args.halo < 0:
        raise InputError(f"--halo must be >= 0 voxels, got {args.halo}")
    out = check_output(args.output)
    check_volume_input(str(args.input).partition("::")[0], command="compress")
    vol = open_input(args.input)
    n_bricks = check_bricked_size(vol, args.bricks)
    _check_bricked_budget(args, vol)
    print(f"input: {args.input}: {dims_text(vol.shape)} voxels (ZYX), {vol.dtype}, {format_bytes(vol.nbytes)}, "
          f"{n_bricks:,} bricks of {dims_text(args.bricks)} (+{args.halo} voxels of context)", file=sys.stderr)
    bar = _BrickBar()
    try:
        report = compress_bricked(
            args.input, out, brick=args.bricks, halo=args.halo, bpp=getattr(args, "bpp", None),
            ratio=getattr(args, "ratio", None), gaussians=getattr(args, "gaussians", None),
            preset=getattr(args, "preset", "default"), steps=getattr(args, "steps", None),
            seed=getattr(args, "seed", 0), device=getattr(args, "device", "cpu") or "cpu",
            resume=args.resume, scheduler=args.scheduler, workers=args.workers, memory_limit=args.memory_limit,
            timeout=args.scheduler_timeout, progress=bar, **_options(args),
        )
    finally:
        bar.close()
    print(f"wrote {report['output']}: {report['bricks']} bricks ({report['encoded']} encoded, "
          f"{report['background']} background, {report['reused']} reused), {report['n_gaussians']:,} Gaussians, "
          f"{format_bytes(report['file_bytes'])}, {report['bpp']:.4f} bpp, ratio {ratio_text(report['ratio'])}, "
          f"{report['seconds']:.1f} s")
    peaks = report.get("worker_peak_bytes")
    if peaks:
        print("peak memory per worker: " + ", ".join(f"{v / 2**20:.0f} MiB" for v in peaks.values()))
    if getattr(args, "json", False):
        print_json({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in report.items()})
    return 0


def _check_bricked_budget(args, vol) -> None:
    """The budget-larger-than-the-input check of ``compress`` (``--force`` overrides it)."""
    from ..encode.budget import budget_bytes
    from .compress import check_budget

    n_vox = math.prod(vol.shape)
    gaussians = getattr(args, "gaussians", None)
    planned = budget_bytes(n_vox, vol.dtype.itemsize, bpp=getattr(args, "bpp", None),
                           ratio=getattr(args, "ratio", None), gaussians=gaussians)
    check_budget(planned, gaussians or 0, args.bricks, vol.nbytes, getattr(args, "force", False))
