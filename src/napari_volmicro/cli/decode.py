"""``volmicro decode IN.vmg -o OUT.tif``: decode a whole volume or a region to TIFF or .npy.

With ``--roi`` only the bricks whose Gaussians can reach the region are read.
``-o OUT.zarr`` writes the whole volume as OME-Zarr, chunk by chunk.
The time printed is the decode alone (not reading or writing files).

Before any decoding: the output path is checked (an existing output is
replaced only with ``--overwrite``; a directory that is not a Zarr store
never), and the output's size against the memory (.tif, .npy: decoded whole)
and the free disk. Ctrl-C or SIGTERM leave no partial output and no
temporary files.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..errors import InputError, VolmicroError
from ._interrupt import deferred_interrupt, signal_point

#: memory a whole-region decode needs per voxel beyond the output array (float32 sums and background)
DECODE_BYTES_PER_VOXEL = 8

EXAMPLES = """\
examples:
  volmicro decode stack.vmg -o stack.tif
  volmicro decode stack.vmg -o roi.tif --roi 0:50,100:228,100:228
  volmicro decode stack.vmg -o every2nd.npy --roi=:,::2,::2
  volmicro decode big.vmg -o big.zarr                 (OME-Zarr, chunk by chunk)
"""


def register(subparsers) -> None:
    from ._options import add_decode_options

    p = subparsers.add_parser(
        "decode",
        help="decode a .vmg file (or a region of it) to a TIFF or .npy volume",
        description="Decode a .vmg file to a 3D array in the original units and dtype. An existing output is "
        "replaced only with --overwrite; the output's size is checked against memory and disk first.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", metavar="IN.vmg", help="compressed volume")
    p.add_argument(
        "-o", "--output", required=True, metavar="OUT.tif",
        help="output file (.tif, .tiff or .npy), or OUT.zarr (OME-Zarr, whole volume, written chunk by chunk)"
    )
    p.add_argument(
        "--roi",
        metavar="Z0:Z1,Y0:Y1,X0:X1",
        help="decode only this region: START:STOP[:STEP] per axis, ZYX, voxel indices from 0, STOP excluded "
        "(0:50 is voxels 0..49); an empty bound means the axis end",
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    add_decode_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.set_defaults(func=run)


def _region_text(grid) -> str:
    parts = []
    for a, b, s in zip(grid.start, grid.stop, grid.step):
        parts.append(f"{a}:{b}" + (f":{s}" if s != 1 else ""))
    return ",".join(parts)


def _nbytes(shape, dtype) -> int:
    import numpy as np

    n = 1
    for s in shape:
        n *= int(s)
    return n * np.dtype(dtype).itemsize


def _volume_text(shape, dtype) -> str:
    from ._text import dims_text, format_bytes

    return f"{dims_text(shape)} voxels of {dtype} = {format_bytes(_nbytes(shape, dtype))}"


def _spacing_text(spacing) -> str:
    return " x ".join(f"{float(v):g}" for v in spacing) + " (ZYX)"


def _layers(args, vmg) -> str:
    """``--layers``, or its default: "all" when the file has an enhancement layer and the evaluator is
    exact (a note on stderr when an approximate evaluator leaves the layer out), else "base"."""
    from ..gaussians import EXACT_EVALUATORS
    from . import warn

    has_layer = vmg.section_range() is not None
    if args.layers == "all" and has_layer and args.evaluator not in EXACT_EVALUATORS:
        raise InputError(f"--layers all adds the enhancement layer to the exact sum of the Gaussians; "
                         f"--evaluator {args.evaluator} is approximate: use --evaluator dense, or --layers base")
    if args.layers is not None:
        return args.layers
    if has_layer and args.evaluator not in EXACT_EVALUATORS:
        warn("decode", f"{args.input} has an enhancement layer, which needs --evaluator dense; decoding the "
                       "Gaussians alone (--layers base)")
        return "base"
    return "all" if has_layer else "base"


def _run_zarr(args, out: Path) -> int:
    """Whole volume to OME-Zarr, chunk by chunk (each chunk reads only the bricks that reach it)."""
    from ..bricks import decode_to_zarr
    from ..container import VmgFile
    from ..resources import check_disk
    from . import print_json
    from ._checks import check_output

    if args.roi is not None:
        raise InputError(f"-o {out}: --roi writes a .tif, .tiff or .npy; OME-Zarr output is for the whole volume")
    vmg = VmgFile(args.input)
    vmg.check_complete()
    check_output(out, suffixes=(".zarr",), directory=True, overwrite=args.overwrite)
    check_disk(_nbytes(vmg.shape, vmg.mapping.dtype), out, f"-o {out}: {_volume_text(vmg.shape, vmg.mapping.dtype)}",
               "decode a region with --roi to a .tif instead")
    t0 = time.perf_counter()
    with deferred_interrupt() as interrupt:  # stops between chunks; decode_to_zarr then removes its temporary store

        def between_chunks(done, total):
            if done == 1:
                signal_point("decode-chunk")
            interrupt.check()

        info = decode_to_zarr(args.input, out, evaluator=args.evaluator, k=args.k, progress=between_chunks,
                              layers=_layers(args, vmg))
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
    import numpy as np

    from ..container import VmgFile
    from ..region import full_grid, parse_roi
    from ..resources import check_disk, check_memory
    from ..volume_io import NPY_SUFFIXES, TIFF_SUFFIXES, write_volume
    from . import print_json, warn
    from ._checks import check_model_input, check_output

    if args.k <= 0:
        raise VolmicroError(f"--k must be a positive integer (neighbours per voxel), got {args.k}")
    check_model_input(args.input, command="decode")
    out = Path(args.output)
    if out.suffix.lower() == ".zarr":
        return _run_zarr(args, out)
    if out.suffix.lower() not in TIFF_SUFFIXES + NPY_SUFFIXES:
        raise InputError(
            f"-o {out}: unsupported extension {out.suffix or '(none)'!r}; use .tif, .tiff, .npy or .zarr"
        )
    vmg = VmgFile(args.input)
    grid = full_grid(vmg.shape) if args.roi is None else parse_roi(args.roi, vmg.shape)
    if args.roi is None:
        vmg.check_complete()
    check_output(out, suffixes=TIFF_SUFFIXES + NPY_SUFFIXES, overwrite=args.overwrite)
    dtype = vmg.mapping.dtype
    what = f"-o {out}: {_volume_text(grid.shape, dtype)}"
    hint = "decode a smaller region (--roi), or the whole volume chunk by chunk with -o OUT.zarr"
    check_memory(grid.size * (np.dtype(dtype).itemsize + DECODE_BYTES_PER_VOXEL), what, hint)
    check_disk(_nbytes(grid.shape, dtype), out, what, hint)
    layers = _layers(args, vmg)
    if args.roi is None:
        gv = vmg.load()
    else:
        gv = vmg.load_region(grid)
        if layers != "base" and vmg.residual_layer() is not None:
            gv = gv.replace(residual=vmg.residual_layer())  # the layer reads only the blocks the region touches
        if not vmg.complete:
            warn("decode", f"{args.input} is truncated; the region needs only bricks before the cut, so it is "
                           "decoded exactly")
    with deferred_interrupt() as interrupt:  # nothing half-written: the output appears whole or not at all
        t0 = time.perf_counter()
        array = gv.decode(grid.slices, evaluator=args.evaluator, k=args.k, layers=layers)
        seconds = time.perf_counter() - t0
        mvox = grid.size / 1e6 / seconds if seconds > 0 else float("inf")
        signal_point("after-decode")
        interrupt.check()
        spacing = None if tuple(vmg.spacing) == (1.0, 1.0, 1.0) else vmg.spacing  # no unit claimed
        if out.suffix.lower() in NPY_SUFFIXES and spacing is not None:
            warn("decode", f"{out}: .npy files cannot store the voxel size {_spacing_text(spacing)}; "
                           "it is dropped (write a .tif to keep it)")
            spacing = None
        write_volume(out, array, spacing)
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
                "layers": layers,
                "n_gaussians": gv.n_gaussians,
                "bytes_read": vmg.bytes_read,
                "seconds": seconds,
                "mvox_per_s": mvox,
            }
        )
    return 0
