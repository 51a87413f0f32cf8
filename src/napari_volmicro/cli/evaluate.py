"""``volmicro evaluate ORIGINAL MODEL.vmg``: quality, size and decode speed of a model.

Reads the original volume (TIFF or .npy) and the .vmg model, checks that
their shapes match, decodes the whole volume (timed, after a one-slice
warm-up so that compiling the kernels is not counted) and prints psnr_full,
psnr_fg, ssim3d, bpp and ratio (from the whole file's size), n_gaussians,
decode_seconds and decode_mvox_per_s (millions of voxels decoded per
second). With --json the last line of stdout is one JSON object with those
keys (an infinite PSNR, i.e. an exact reconstruction, is written as null).
"""

from __future__ import annotations

import argparse
import math
import os
import time

from ..errors import InputError
from ..evaluate import DEFAULT_K
from ._options import add_decode_options

EXAMPLES = """\
examples:
  volmicro evaluate stack.tif stack.vmg
  volmicro evaluate stack.tif stack.vmg --evaluator knn --json
"""

#: keys of the ``--json`` object, in the order the text output lists them
REPORT_KEYS = (
    "psnr_full", "psnr_fg", "ssim3d", "bpp", "ratio", "n_gaussians", "decode_seconds", "decode_mvox_per_s",
)


def register(subparsers) -> None:
    from ._text import METRICS_HELP

    parser = subparsers.add_parser(
        "evaluate",
        help="measure a .vmg model against its original volume (PSNR, SSIM, bpp, decode speed)",
        description=__doc__.split("\n\n", 1)[1],
        epilog=EXAMPLES + "\n" + METRICS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("original", help="original volume (.tif, .tiff or .npy), 3D ZYX")
    parser.add_argument("model", help="compressed model (.vmg)")
    add_decode_options(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.set_defaults(func=run)


def evaluate_files(original_path, model_path, evaluator: str = "dense", k: int = DEFAULT_K, layers: str | None = None) -> dict:
    """Decode ``model_path`` and compare it with ``original_path``; returns the report dict."""
    from .. import load, metrics
    from ..volume_io import check_volume, read_volume
    from ._checks import check_model_input, check_volume_input

    check_volume_input(original_path, command="evaluate")
    check_model_input(model_path, command="evaluate")
    original, _ = read_volume(original_path)
    original = check_volume(original, source=str(original_path))
    gv = load(model_path)
    if tuple(gv.shape) != tuple(original.shape):
        raise InputError(
            f"{model_path}: model shape {tuple(gv.shape)} (Z, Y, X) does not match the original "
            f"{original_path} of shape {tuple(original.shape)}; evaluate a model against the volume it was made from"
        )
    # warm-up on one slice: loads the evaluator and compiles its kernels outside the timing
    gv.decode((slice(0, 1), slice(None), slice(None)), evaluator=evaluator, k=k, layers=layers)
    start = time.perf_counter()
    recon = gv.decode(None, evaluator=evaluator, k=k, layers=layers)
    seconds = time.perf_counter() - start
    file_bytes = os.path.getsize(model_path)
    report = metrics.quality_report(original, recon, file_bytes=file_bytes)
    report.update(
        n_gaussians=int(gv.n_gaussians),
        decode_seconds=seconds,
        decode_mvox_per_s=original.size / 1e6 / seconds if seconds > 0 else math.inf,
        evaluator=evaluator,
        shape=list(original.shape),
    )
    return report


def _json_number(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _format(key: str, value) -> str:
    if key in ("psnr_full", "psnr_fg"):
        return f"{value:.2f} dB"
    if key == "ssim3d":
        return f"{value:.4f}"
    if key == "bpp":
        return f"{value:.4f}"
    if key == "ratio":
        from ._text import ratio_text

        return ratio_text(value)
    if key == "decode_seconds":
        return f"{value:.3f} s"
    if key == "decode_mvox_per_s":
        return f"{value:.1f}"
    return str(value)


def run(args) -> int:
    from . import print_json

    report = evaluate_files(args.original, args.model, evaluator=args.evaluator, k=args.k, layers=args.layers)
    width = max(len(k) for k in REPORT_KEYS)
    print(f"{args.model} vs {args.original} (shape {tuple(report['shape'])}, evaluator {args.evaluator})")
    for key in REPORT_KEYS:
        print(f"{key:<{width}}  {_format(key, report[key])}")
    if args.json:
        print_json({key: _json_number(report[key]) for key in (*REPORT_KEYS, "file_bytes", "evaluator", "shape")})
    return 0
