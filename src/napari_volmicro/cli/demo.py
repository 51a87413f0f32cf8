"""``volmicro demo``: compress the bundled Purkinje-cell stack and report what it cost.

Compresses ``napari_volmicro/_data/purkinje_flowdec.tif`` (50 x 256 x 256
float32, see ``_data/NOTICE.md``) at 0.073 bpp with the default preset, saves
the ``.vmg`` file (``-o``, default ``purkinje.vmg`` in the current directory),
reads it back, decodes the whole volume and prints the size (bytes, bpp,
ratio), the quality (``psnr_full``, ``psnr_fg``, ``ssim3d``), the encode time
and the decode speed (MVox/s, after a one-slice warm-up).
"""

from __future__ import annotations

import time
from importlib import resources

SAMPLE = "purkinje_flowdec.tif"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="compress the bundled Purkinje sample and print size, quality and speed",
        description=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("-o", "--output", default="purkinje.vmg", help="where to write the model (default purkinje.vmg)")
    p.add_argument("--steps", type=int, help="optimiser steps (default: the default preset's)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.set_defaults(func=run)


def sample_path():
    return resources.files("napari_volmicro") / "_data" / SAMPLE


def run(args) -> int:
    from .. import load, metrics
    from ..container import save
    from ..encode import Trainer
    from ..volume_io import check_volume, read_volume
    from ._interrupt import deferred_interrupt
    from .compress import run_with_progress

    with resources.as_file(sample_path()) as src:
        array, spacing = read_volume(src)
    volume = check_volume(array, source=SAMPLE)
    print(f"sample: {SAMPLE}, {volume.shape[0]} x {volume.shape[1]} x {volume.shape[2]} voxels (Z, Y, X), "
          f"{volume.dtype}, {volume.nbytes} bytes")
    with deferred_interrupt() as interrupt:  # Ctrl-C ends at a step, never inside the JIT compiler
        trainer = Trainer(volume, spacing, bpp=0.073, steps=args.steps)
        snap, encode_s = run_with_progress(trainer, interrupt=interrupt)
        interrupt.check()
    path = save(trainer.result, args.output)
    gv = load(path)
    gv.decode((slice(0, 1), slice(None), slice(None)))  # warm-up: compile the decoder
    t1 = time.perf_counter()
    recon = gv.decode()
    decode_s = time.perf_counter() - t1
    rep = metrics.quality_report(volume, recon, file_bytes=path.stat().st_size)
    mvox = volume.size / 1e6 / decode_s if decode_s > 0 else float("inf")
    print(f"wrote {path}: {gv.n_gaussians} Gaussians, {rep['file_bytes']} bytes, {rep['bpp']:.4f} bpp, "
          f"ratio {rep['ratio']:.0f}:1")
    print(f"quality: psnr_full {rep['psnr_full']:.2f} dB, psnr_fg {rep['psnr_fg']:.2f} dB, ssim3d {rep['ssim3d']:.4f}")
    print(f"encode {encode_s:.1f} s ({snap.step} steps), decode {decode_s:.3f} s ({mvox:.0f} MVox/s)")
    if args.json:
        from . import print_json

        rep.update(output=str(path), n_gaussians=gv.n_gaussians, encode_seconds=encode_s,
                   decode_seconds=decode_s, decode_mvox_per_s=mvox, steps=snap.step)
        print_json(rep)
    return 0
