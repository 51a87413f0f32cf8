"""``volmicro demo``: compress the bundled Purkinje-cell stack and report what it cost.

Compresses napari_volmicro/_data/purkinje_flowdec.tif (50 x 256 x 256
float32, see _data/NOTICE.md) at 0.073 bits per voxel with the default
preset, saves the .vmg file (-o; by default in a new temporary directory,
whose path is printed, so nothing is left in the current directory), reads
it back, decodes the whole volume and prints the size (bytes, bpp, ratio),
the quality (psnr_full, psnr_fg, ssim3d), the encode time and the decode
speed (millions of voxels per second, after a one-slice warm-up).
"""

from __future__ import annotations

import argparse
import time
from importlib import resources

SAMPLE = "purkinje_flowdec.tif"


def register(subparsers) -> None:
    from ._text import METRICS_HELP

    p = subparsers.add_parser(
        "demo",
        help="compress the bundled Purkinje sample and print size, quality and speed",
        description=__doc__.split("\n\n", 1)[1],
        epilog="example:\n  volmicro demo -o purkinje.vmg --steps 200\n\n" + METRICS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-o", "--output",
                   help="where to write the model (.vmg; default: purkinje.vmg in a new temporary directory)")
    p.add_argument("--steps", type=int, help="optimiser steps (default: the default preset's)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.set_defaults(func=run)


def sample_path():
    return resources.files("napari_volmicro") / "_data" / SAMPLE


def _default_output():
    import tempfile
    from pathlib import Path

    return Path(tempfile.mkdtemp(prefix="volmicro-demo-")) / "purkinje.vmg"


def run(args) -> int:
    from .. import load
    from . import warn
    from ._text import format_bytes, quality_guide, ratio_text
    from .compress import compress_file

    output = args.output or _default_output()
    with resources.as_file(sample_path()) as src:
        rep = compress_file(src, output, bpp=0.073, steps=args.steps, verbose=True)
    gv = load(rep["output"])
    gv.decode((slice(0, 1), slice(None), slice(None)))  # warm-up: compile the decoder
    t1 = time.perf_counter()
    gv.decode()
    decode_s = time.perf_counter() - t1
    n_vox = gv.shape[0] * gv.shape[1] * gv.shape[2]
    mvox = n_vox / 1e6 / decode_s if decode_s > 0 else float("inf")
    print(f"wrote {rep['output']}: {gv.n_gaussians:,} Gaussians, {format_bytes(rep['file_bytes'])}, "
          f"{rep['bpp']:.4f} bpp, ratio {ratio_text(rep['ratio'])}")
    print(f"quality: psnr_full {rep['psnr_full']:.2f} dB, psnr_fg {rep['psnr_fg']:.2f} dB, ssim3d {rep['ssim3d']:.4f}")
    print(f"encode {rep['encode_seconds']:.1f} s ({rep['steps']} steps), decode {decode_s:.3f} s ({mvox:.0f} MVox/s)")
    print(quality_guide(rep["output"]))
    for text in rep["warnings"]:
        warn("demo", text)
    if args.json:
        from . import print_json

        rep.update(n_gaussians=gv.n_gaussians, decode_seconds=decode_s, decode_mvox_per_s=mvox)
        print_json({k: v for k, v in rep.items() if k not in ("warnings", "psnr_flat")})
    return 0
