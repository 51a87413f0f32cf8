"""Rate-distortion benchmark: our Gaussian encoder against classical codecs and SIREN.

For each volume and target rate (default Purkinje and nuclei at 0.073 and
0.3 bpp) this runs:

- ``ours``: ``napari_volmicro.encode.Trainer`` with the default preset, saved
  to a ``.vmg`` file (its size is the byte count), loaded back and decoded
  with the dense evaluator (timed after a one-slice warm-up);
- ``ours-paper``: the ``paper`` preset given the same wall time as ``ours``
  (stopped through ``Trainer.stop()`` when the time is up);
- ``x265``, ``jpeg2k``, ``sz3``, ``zfp`` at a matched bpp (``codec_baselines.py``);
- ``siren``: a COIN-style SIREN with the same byte budget, trained for the
  same wall time as ``ours`` (or ``--siren-seconds``) (``siren.py``).

Every method is scored with ``napari_volmicro.metrics`` (psnr_full, psnr_fg,
ssim3d; bpp counts every byte). Prints a table, the gap between ``ours`` and
each baseline, and a final JSON line; saves a PSNR-vs-bpp plot to
``benchmarks/out/rate_distortion.png`` (and ``docs/`` with ``--docs``).
Results of earlier runs can be merged in with ``--merge FILE`` (a file whose
last line is this script's, ``codec_baselines.py``'s or ``siren.py``'s JSON line).

Examples::

    python benchmarks/rate_distortion.py                       # everything
    python benchmarks/rate_distortion.py --methods x265 sz3    # codecs only
    python benchmarks/rate_distortion.py --volumes nuclei --bpp 0.073 --methods ours siren
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

codecs_bench = _common.load_sibling("codec_baselines")
siren_bench = _common.load_sibling("siren")

OUR_METHODS = ("ours", "ours-paper")
METHODS = (*OUR_METHODS, *codecs_bench.CODECS, "siren")


def _encoder_or_reason():
    try:
        from napari_volmicro.encode import Trainer  # noqa: F401
    except ImportError as exc:
        return None, f"encoder not importable yet ({exc})"
    return Trainer, None


def run_ours(volume_name, volume, spacing, target_bpp, *, preset="default", seconds=None, steps=None,
             seed=0, verbose=False) -> _common.Result:
    """Train with ``Trainer`` (stopped after ``seconds`` if given), save, load, decode, score."""
    import napari_volmicro
    from napari_volmicro.encode import Trainer

    trainer = Trainer(volume, spacing, bpp=target_bpp, preset=preset, steps=steps, seed=seed)
    start = time.perf_counter()
    stopped = False
    last = None
    for snap in trainer.run():
        last = snap
        if seconds is not None and not stopped and time.perf_counter() - start >= seconds:
            trainer.stop()
            stopped = True
        if verbose and (snap.step % 200 == 0 or snap.done):
            print(f"  {preset} step {snap.step}/{snap.total_steps} psnr~{snap.psnr:.2f} n={snap.n_gaussians} "
                  f"{time.perf_counter() - start:.0f}s", file=sys.stderr, flush=True)
    encode_s = time.perf_counter() - start
    gv = trainer.result
    with tempfile.TemporaryDirectory() as tmp:
        path = gv.save(Path(tmp) / "model.vmg")
        n_bytes = path.stat().st_size
        stored = napari_volmicro.load(path)
    stored.decode((slice(0, 1), slice(None), slice(None)), evaluator="dense")  # warm-up (JIT)
    t0 = time.perf_counter()
    decoded = stored.decode(evaluator="dense")
    decode_s = time.perf_counter() - t0
    method = "ours" if preset == "default" else f"ours-{preset}"
    steps_done = last.step if last is not None else 0
    note = f"stopped at {seconds:.0f}s" if stopped else ""
    return _common.measure(
        volume_name, method, volume, decoded, n_bytes, target_bpp=target_bpp, encode_s=encode_s,
        decode_s=decode_s, knob=f"{stored.n_gaussians} gaussians, {steps_done} steps", note=note,
        extra={"n_gaussians": int(stored.n_gaussians), "steps": int(steps_done)},
    )


def load_results(path) -> list[_common.Result]:
    """Results from the last JSON line of ``path``."""
    lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip().startswith("{")]
    if not lines:
        raise SystemExit(f"{path}: no JSON line found")
    out = []
    for d in json.loads(lines[-1])["results"]:
        d = {k: (math.inf if v is None and k.startswith(("psnr", "decode_mvox")) else v) for k, v in d.items()}
        out.append(_common.Result(**d))
    return out


def plot(results: list[_common.Result], paths: list[Path]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    volumes = sorted({r.volume for r in results})
    if not volumes:
        return
    fig, axes = plt.subplots(1, len(volumes), figsize=(5.5 * len(volumes), 4.2), squeeze=False)
    markers = dict(zip(METHODS, "o*sD^vxP"))
    for ax, vname in zip(axes[0], volumes):
        for method in METHODS:
            pts = sorted((r.bpp, r.psnr_full) for r in results if r.volume == vname and r.method == method
                         and math.isfinite(r.psnr_full))
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker=markers.get(method, "o"), label=method,
                        linewidth=2.5 if method == "ours" else 1.2)
        ax.set_xscale("log")
        ax.set_xlabel("bits per voxel (whole stream)")
        ax.set_ylabel("psnr_full (dB)")
        ax.set_title(vname)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(p, dpi=110)
        print(f"plot: {p}", flush=True)
    plt.close(fig)


def gaps(results: list[_common.Result]) -> list[str]:
    """``ours`` minus each other method, per volume and target (psnr_full, dB)."""
    lines = []
    for r in results:
        if r.method != "ours":
            continue
        for o in results:
            if o.volume == r.volume and o.target_bpp == r.target_bpp and o.method != "ours":
                lines.append(f"{r.volume} @{r.target_bpp}: ours {r.psnr_full:.2f} dB ({r.bpp:.4f} bpp) vs "
                             f"{o.method} {o.psnr_full:.2f} dB ({o.bpp:.4f} bpp): {r.psnr_full - o.psnr_full:+.2f} dB")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--volumes", nargs="+", default=["purkinje", "nuclei"],
                        help=f"names ({', '.join(_common.VOLUMES)}) or paths")
    parser.add_argument("--bpp", nargs="+", type=float, default=[0.073, 0.3])
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS),
                        help="methods to run (none: only --merge earlier results)")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps for ours (default: the preset's)")
    parser.add_argument("--paper-seconds", type=float, default=None,
                        help="time budget of ours-paper (default: the time ours took)")
    parser.add_argument("--siren-seconds", type=float, default=None,
                        help="SIREN training time (default: the time ours took, else 300)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--merge", nargs="+", default=[], help="add results from earlier runs' JSON lines")
    parser.add_argument("--docs", action="store_true", help="also save the plot to docs/rate_distortion.png")
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    parser.add_argument("--verbose", action="store_true")
    codecs_bench.add_x265_arguments(parser)
    args = parser.parse_args(argv)
    codecs_bench.configure_x265(args)

    results: list[_common.Result] = []
    for path in args.merge:
        results.extend(load_results(path))
    print(_common.TABLE_HEADER, flush=True)
    for r in results:
        print(_common.table_row(r) + "  (merged)", flush=True)

    trainer_cls, reason = _encoder_or_reason()
    if reason and any(m in args.methods for m in OUR_METHODS):
        print(f"ours: skipped: {reason}", flush=True)

    for vname in args.volumes:
        volume, spacing = _common.load_volume(vname)
        for target in args.bpp:
            ours_seconds = None
            if trainer_cls is not None and "ours" in args.methods:
                r = run_ours(vname, volume, spacing, target, steps=args.steps, seed=args.seed, verbose=args.verbose)
                ours_seconds = r.encode_s
                results.append(r)
                print(_common.table_row(r), flush=True)
            if trainer_cls is not None and "ours-paper" in args.methods:
                budget = args.paper_seconds or ours_seconds
                r = run_ours(vname, volume, spacing, target, preset="paper", seconds=budget, steps=args.steps,
                             seed=args.seed, verbose=args.verbose)
                results.append(r)
                print(_common.table_row(r), flush=True)
            for name, codec in codecs_bench.CODECS.items():
                if name not in args.methods:
                    continue
                why = codec.available()
                if why:
                    print(f"{vname:<9} {name:<16} skipped: {why}", flush=True)
                    continue
                r = codecs_bench.run_codec(codec, vname, volume, target)
                results.append(r)
                print(_common.table_row(r), flush=True)
            if "siren" in args.methods:
                seconds = args.siren_seconds or ours_seconds or 300.0
                r = siren_bench.run(vname, volume, target, seconds, seed=args.seed, verbose=args.verbose)
                results.append(r)
                print(_common.table_row(r), flush=True)

    for line in gaps(results):
        print(line)
    if args.markdown:
        print(_common.markdown_table(results))
    paths = [_common.OUT_DIR / "rate_distortion.png"]
    if args.docs:
        paths.append(_common.DOCS_DIR / "rate_distortion.png")
    plot(results, paths)
    _common.print_json_line({"results": [r.as_json() for r in results]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
