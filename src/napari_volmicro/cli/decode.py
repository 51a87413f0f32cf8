"""``volmicro decode IN.vmg -o OUT.tif``: decode a whole volume or a region to TIFF or .npy.

With ``--roi`` only the bricks whose Gaussians can reach the region are read.
``-o OUT.zarr`` writes the whole volume as OME-Zarr, chunk by chunk.
The time printed is the decode alone (not reading or writing files).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..errors import InputError, VolmicroError


def register(subparsers) -> None:
    from ..evaluate import EVALUATORS

    p = subparsers.add_parser(
        "decode",
        help="decode a .vmg file (or a region of it) to a TIFF or .npy volume",
        description="Decode a .vmg file to a 3D array in the original units and dtype.",
    )
    p.add_argument("input", metavar="IN.vmg", help="compressed volume")
    p.add_argument(
        "-o", "--output", required=True, metavar="OUT.tif",
        help="output file (.tif, .tiff or .npy), or OUT.zarr (OME-Zarr, whole volume, written chunk by chunk)"
    )
    p.add_argument(
        "--roi",
        metavar="Z0:Z1,Y0:Y1,X0:X1",
        help="decode only this region (voxel indices, ZYX, stop exclusive, optional :STEP; "
        "an empty bound means the axis end)",
    )
    p.add_argument(
        "--evaluator",
        choices=sorted(EVALUATORS),
        default="dense",
        help="dense: exact 3-sigma footprints, fastest (default); knn: the K Gaussians contributing most at "
        "each voxel (exact where at most K reach it); knn-centres: the paper's K nearest centres (loses dB on "
        "trained models); reference: brute force, slow",
    )
    p.add_argument("--k", type=int, default=32,
                   help="Gaussians per voxel for --evaluator knn or knn-centres (default 32)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.set_defaults(func=run)


def _region_text(grid) -> str:
    parts = []
    for a, b, s in zip(grid.start, grid.stop, grid.step):
        parts.append(f"{a}:{b}" + (f":{s}" if s != 1 else ""))
    return ",".join(parts)


def _run_zarr(args, out: Path) -> int:
    """Whole volume to OME-Zarr, chunk by chunk (each chunk reads only the bricks that reach it)."""
    from ..bricks import decode_to_zarr
    from . import print_json

    if args.roi is not None:
        raise InputError(f"-o {out}: --roi writes a .tif, .tiff or .npy; OME-Zarr output is for the whole volume")
    t0 = time.perf_counter()
    info = decode_to_zarr(args.input, out, evaluator=args.evaluator, k=args.k)
    seconds = time.perf_counter() - t0
    shape_text = " x ".join(str(s) for s in info["shape"])
    print(f"decoded {shape_text} {info['dtype']} from {args.input} in {info['n_chunks']} chunks "
          f"with the {args.evaluator} evaluator in {seconds:.3f} s -> {out} (OME-Zarr)")
    if args.json:
        print_json({"input": str(args.input), "path": str(out), "shape": info["shape"], "dtype": info["dtype"],
                    "chunks": info["chunks"], "evaluator": args.evaluator, "k": args.k,
                    "bytes_read": info["bytes_read"],
                    "seconds": seconds})
    return 0


def run(args) -> int:
    from ..container import VmgFile
    from ..region import full_grid, parse_roi
    from ..volume_io import NPY_SUFFIXES, TIFF_SUFFIXES, write_volume
    from . import print_json

    if args.k <= 0:
        raise VolmicroError(f"--k must be a positive integer (neighbours per voxel), got {args.k}")
    out = Path(args.output)
    if out.suffix.lower() == ".zarr":
        return _run_zarr(args, out)
    if out.suffix.lower() not in TIFF_SUFFIXES + NPY_SUFFIXES:
        raise InputError(
            f"-o {out}: unsupported extension {out.suffix or '(none)'!r}; use .tif, .tiff, .npy or .zarr"
        )
    vmg = VmgFile(args.input)
    if args.roi is None:
        grid = full_grid(vmg.shape)
        gv = vmg.load()
    else:
        grid = parse_roi(args.roi, vmg.shape)
        gv = vmg.load_region(grid)
        if not vmg.complete:
            print(
                f"volmicro decode: warning: {args.input} is truncated; the region needs only bricks "
                "before the cut, so it is decoded exactly",
                file=sys.stderr,
            )
    t0 = time.perf_counter()
    array = gv.decode(grid.slices, evaluator=args.evaluator, k=args.k)
    seconds = time.perf_counter() - t0
    mvox = grid.size / 1e6 / seconds if seconds > 0 else float("inf")
    write_volume(out, array, vmg.spacing)
    shape_text = " x ".join(str(s) for s in array.shape)
    region = _region_text(grid)
    print(
        f"decoded {shape_text} {array.dtype} (region {region}) from {args.input} "
        f"with the {args.evaluator} evaluator in {seconds:.3f} s ({mvox:.3g} MVox/s) -> {out}"
    )
    if args.json:
        print_json(
            {
                "input": str(args.input),
                "path": str(out),
                "shape": list(array.shape),
                "dtype": str(array.dtype),
                "region": region,
                "evaluator": args.evaluator,
                "k": args.k,
                "n_gaussians": gv.n_gaussians,
                "bytes_read": vmg.bytes_read,
                "seconds": seconds,
                "mvox_per_s": mvox,
            }
        )
    return 0
