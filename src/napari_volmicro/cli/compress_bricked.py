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
    g.add_argument("--scheduler-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="give up on a scheduler that does not answer within this time (default 10)")
    g.add_argument("--resume", action="store_true",
                   help="reuse the bricks already finished in OUT.vmg.parts (same input and settings)")


class _BrickBar:
    def __init__(self, enabled: bool = True):
        from tqdm import tqdm

        self.bar = tqdm(total=None, unit="brick", file=sys.stderr, disable=not enabled, dynamic_ncols=True,
                        desc="compress (bricks)")

    def __call__(self, p) -> None:
        if self.bar.total != p.total:
            self.bar.total = p.total
        self.bar.update(1)
        self.bar.set_postfix(last=f"{p.index}:{p.kind}", gaussians=p.n_gaussians, refresh=False)

    def close(self) -> None:
        self.bar.close()


def _options(args) -> dict:
    opts = {}
    for flag, key in (("no_gate", "gate"), ("no_edge_weights", "edge_weights"), ("no_densify", "densify")):
        if getattr(args, flag, False):
            opts[key] = False
    return opts


def run_bricked(args) -> int:
    """Run ``volmicro compress ... --bricks N`` from parsed ``args``; prints a summary (and JSON)."""
    from ..bricks import compress_bricked
    from . import print_json

    if args.halo < 0:
        raise InputError(f"--halo must be >= 0 voxels, got {args.halo}")
    bar = _BrickBar()
    try:
        report = compress_bricked(
            args.input, args.output, brick=args.bricks, halo=args.halo, bpp=getattr(args, "bpp", None),
            ratio=getattr(args, "ratio", None), gaussians=getattr(args, "gaussians", None),
            preset=getattr(args, "preset", "default"), steps=getattr(args, "steps", None),
            seed=getattr(args, "seed", 0), device=getattr(args, "device", "cpu") or "cpu",
            resume=args.resume, scheduler=args.scheduler, workers=args.workers, memory_limit=args.memory_limit,
            timeout=args.scheduler_timeout, progress=bar, **_options(args),
        )
    finally:
        bar.close()
    print(f"wrote {report['output']}: {report['bricks']} bricks ({report['encoded']} encoded, "
          f"{report['background']} background, {report['reused']} reused), {report['n_gaussians']} Gaussians, "
          f"{report['file_bytes']} bytes, {report['bpp']:.4f} bpp, ratio {report['ratio']:.1f}, "
          f"{report['seconds']:.1f} s")
    peaks = report.get("worker_peak_bytes")
    if peaks:
        print("peak memory per worker: " + ", ".join(f"{v / 2**20:.0f} MiB" for v in peaks.values()))
    if getattr(args, "json", False):
        print_json({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in report.items()})
    return 0
