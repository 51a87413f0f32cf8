"""Rate-distortion benchmark: our encoder (base only, and with the enhancement layer) against classical codecs.

For every volume (default: the five in ``../shared/data``: Purkinje, bead,
nuclei, neuron, cellfinder) and target rate (default 0.02 to 1 bpp) it runs:

- ``ours``: what ``volmicro compress --bpp R`` writes: Gaussians trained for
  part of the budget plus the enhancement layer for the rest
  (``napari_volmicro.residual.hybrid``), saved, loaded, decoded (dense, all layers);
- ``ours-base``: the Gaussians alone at the whole budget (``--layers base``);
- ``x265``, ``jpeg2k``, ``jpegxl``, ``sz3`` (and ``zfp``) at a matched bpp
  (``codec_baselines.py``); ``siren`` on request (``benchmarks/encode.py`` runs
  the paper's preset);

scores each with ``napari_volmicro.metrics`` (psnr_full, psnr_fg, ssim3d;
bpp counts every byte of the file or stream) and prints a table, the gaps of
``ours`` to each codec, the targets of issue 13, and a final JSON line. With
``--max-error-sigmas 1 2 4`` it also compares the error-bounded mode
(``--max-error Ksigma``) with SZ3 at the same bound (file sizes, measured
maximum errors).

Caching (``benchmarks/out/rd/``): every measured point is appended to
``results.jsonl`` under a fingerprint of the code that made it (our package's
encoder, container, evaluator and residual sources; for codecs the baseline
script, imagecodecs and ffmpeg versions); trained bases are kept as ``.vmg``
files under ``models/`` with their training time. A rerun measures only what
is missing or whose code changed, so after changing the encoder a rerun
retrains; ``--fresh`` ignores the cache.

Examples::

    python benchmarks/rate_distortion.py                                  # everything (hours)
    python benchmarks/rate_distortion.py --volumes nuclei --bpp 0.073 0.3
    python benchmarks/rate_distortion.py --methods x265 sz3 --volumes purkinje
    python benchmarks/rate_distortion.py --methods --max-error-sigmas 1 2 4   # error-bounded vs SZ3 only
    python benchmarks/rate_distortion.py --docs        # plots + tables into docs/ and README (cached points)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

codecs_bench = _common.load_sibling("codec_baselines")

OUR_METHODS = ("ours", "ours-base")
CODEC_METHODS = tuple(codecs_bench.CODECS)
METHODS = (*OUR_METHODS, *CODEC_METHODS, "siren")
DEFAULT_METHODS = ("ours", "ours-base", "x265", "jpeg2k", "jpegxl", "sz3")
DEFAULT_VOLUMES = ("purkinje", "bead", "nuclei", "neuron", "cellfinder")
DEFAULT_BPP = (0.02, 0.04, 0.073, 0.15, 0.3, 0.6, 1.0)
CACHE = _common.OUT_DIR / "rd"
PACKAGE = _common.ROOT / "src" / "napari_volmicro"
#: sources whose change makes a trained base (or our file) stale
ENCODER_SOURCES = ("encode", "container", "_footprint.py", "gaussians.py", "intensity.py", "background.py",
                   "gaussians_torch.py", "volume_io.py")
OURS_SOURCES = (*ENCODER_SOURCES, "residual", "evaluate", "metrics.py")


# -- fingerprints and the cache ------------------------------------------------------------------


def _hash_sources(names) -> str:
    h = hashlib.sha256()
    for name in names:
        path = PACKAGE / name
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for f in files:
            if f.exists():
                h.update(str(f.relative_to(PACKAGE)).encode())
                h.update(f.read_bytes())
    return h.hexdigest()[:12]


def _codec_fingerprint() -> str:
    import imagecodecs

    h = hashlib.sha256((_common.BENCH_DIR / "codec_baselines.py").read_bytes())
    h.update(imagecodecs.__version__.encode())
    if shutil.which("ffmpeg"):
        out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.splitlines()
        h.update((out[0] if out else "").encode())
    return h.hexdigest()[:12]


def fingerprint(method: str, args) -> str:
    if method in OUR_METHODS:
        return f"{_hash_sources(OURS_SOURCES)}-s{args.steps}-seed{args.seed}"
    if method in CODEC_METHODS:
        return f"{_codec_fingerprint()}-{args.x265_preset}-{args.x265_tune}"
    return _hash_sources(("encode",))


class Cache:
    """``results.jsonl``: one JSON object per measured point, the last matching one wins."""

    def __init__(self, root: Path, fresh: bool):
        self.root = root
        self.fresh = fresh
        self.path = root / "results.jsonl"
        self.points: dict[tuple, dict] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                if line.strip():
                    d = json.loads(line)
                    self.points[(d["volume"], d["method"], d["target"], d["fingerprint"])] = d

    def get(self, volume, method, target, fp):
        return None if self.fresh else self.points.get((volume, method, target, fp))

    def put(self, volume, method, target, fp, payload: dict) -> None:
        d = {"volume": volume, "method": method, "target": target, "fingerprint": fp, **payload,
             "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
        self.points[(volume, method, target, fp)] = d
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as fh:
            fh.write(json.dumps(d, sort_keys=True) + "\n")

    def latest(self, volume, method, target):
        """The newest point of (volume, method, target) whatever its fingerprint (for --docs)."""
        found = [d for (v, m, t, _), d in self.points.items() if (v, m, t) == (volume, method, target)]
        return max(found, key=lambda d: d["measured"]) if found else None


def result_of(d: dict) -> _common.Result:
    r = {k: d[k] for k in _common.Result.__dataclass_fields__ if k in d}
    r = {k: (math.inf if v is None and k.startswith(("psnr", "decode_mvox")) else v) for k, v in r.items()}
    return _common.Result(**r)


# -- our encoder --------------------------------------------------------------------------------


def trained_base(vname, volume, spacing, budget: dict, args, cache_root: Path, preset="default"):
    """A base trained by ``encode.Trainer`` for ``budget`` (bpp keywords), from the model cache or trained
    now and cached; returns (the model as stored, training seconds, steps)."""
    import napari_volmicro
    from napari_volmicro.encode import Trainer

    key = "-".join(f"{k}{v:.6g}" for k, v in sorted(budget.items()) if v is not None)
    tag = f"{vname}@{key}-{preset}-{_hash_sources(ENCODER_SOURCES)}-s{args.steps}-seed{args.seed}"
    path, meta = cache_root / "models" / f"{tag}.vmg", cache_root / "models" / f"{tag}.json"
    if path.exists() and meta.exists() and not args.fresh:
        info = json.loads(meta.read_text())
        return napari_volmicro.load(path), info["seconds"], info["steps"]
    t = Trainer(volume, spacing, **budget, preset=preset, steps=args.steps, seed=args.seed)
    start = time.perf_counter()
    last = None
    for snap in t.run():
        last = snap
        if args.verbose and (snap.step % 500 == 0 or snap.done):
            print(f"  {vname} {key} step {snap.step}/{snap.total_steps} psnr~{snap.psnr:.2f} "
                  f"{time.perf_counter() - start:.0f}s", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    t.result.save(path)
    meta.write_text(json.dumps({"seconds": seconds, "steps": int(last.step), "budget": budget}))
    return napari_volmicro.load(path), seconds, int(last.step)


def run_ours(vname, volume, spacing, target, method, args) -> _common.Result:
    """``ours`` (base + enhancement layer) or ``ours-base`` at ``target`` bpp: encode, save, load, decode, score."""
    import napari_volmicro
    from napari_volmicro.residual import hybrid

    how = hybrid.plan(volume, bpp=target, enhance=method == "ours")
    base, train_s, steps = trained_base(vname, volume, spacing, how.base, args, CACHE)
    t0 = time.perf_counter()
    gv = hybrid.complete(volume, base, how)
    layer_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        path = gv.save(Path(tmp) / "model.vmg")
        n_bytes = path.stat().st_size
        stored = napari_volmicro.load(path)
        stored.decode((slice(0, 1), slice(None), slice(None)))  # warm-up (JIT)
        t0 = time.perf_counter()
        decoded = stored.decode()
        decode_s = time.perf_counter() - t0
        layer = stored.residual
        extra = {"n_gaussians": int(stored.n_gaussians), "steps": steps, "train_s": train_s, "layer_s": layer_s,
                 "base_bpp": how.base.get("bpp"), "residual_bytes": None if layer is None else layer.nbytes}
    knob = f"{extra['n_gaussians']} Gaussians" + (f" + {layer.nbytes} B layer" if layer is not None else "")
    return _common.measure(vname, method, volume, decoded, n_bytes, target_bpp=target, encode_s=train_s + layer_s,
                           decode_s=decode_s, knob=knob, extra=extra)


def run_method(vname, volume, spacing, target, method, args) -> _common.Result:
    if method in ("ours", "ours-base"):
        return run_ours(vname, volume, spacing, target, method, args)
    if method == "siren":
        siren = _common.load_sibling("siren")
        return siren.run(vname, volume, target, args.siren_seconds, seed=args.seed, verbose=args.verbose)
    codec = codecs_bench.CODECS[method]
    why = codec.available()
    if why:
        raise RuntimeError(why)
    return codecs_bench.run_codec(codec, vname, volume, target)


# -- the error-bounded mode against SZ3 ------------------------------------------------------------


def run_bounded(vname, volume, spacing, k: float, args) -> dict:
    """``--max-error {k}sigma``: our file (base at the mode's default budget + bounded layer) and SZ3 at the same
    bound; both decoded and their maximum error measured."""
    import imagecodecs

    import napari_volmicro
    from napari_volmicro.residual import hybrid

    how = hybrid.plan(volume, max_error=f"{k}sigma")
    base, train_s, _ = trained_base(vname, volume, spacing, how.base, args, CACHE)
    t0 = time.perf_counter()
    gv = hybrid.complete(volume, base, how)
    layer_s = time.perf_counter() - t0
    x = volume.astype(np.float64)
    with tempfile.TemporaryDirectory() as tmp:
        path = gv.save(Path(tmp) / "b.vmg")
        ours_bytes = path.stat().st_size
        stored = napari_volmicro.load(path)
        t0 = time.perf_counter()
        dec = stored.decode()
        decode_s = time.perf_counter() - t0
    promise = stored.residual.max_error
    ours_err = float(np.abs(dec.astype(np.float64) - x).max())
    is_int = volume.dtype.kind in "iu"
    sz_abs = (math.floor(how.max_error) + 0.499) if is_int else how.max_error  # same guarantee after rounding
    t0 = time.perf_counter()
    stream = imagecodecs.sz3_encode(np.ascontiguousarray(volume, np.float32), mode="abs", abs=float(sz_abs))
    sz_s = time.perf_counter() - t0
    sz = imagecodecs.sz3_decode(stream, shape=volume.shape, dtype=np.float32).astype(np.float64)
    sz_err = float(np.abs((np.rint(sz) if is_int else sz) - x).max())
    return {"k": k, "sigma": how.sigma, "max_error": promise, "ours_bytes": ours_bytes, "ours_err": ours_err,
            "ours_bpp": 8 * ours_bytes / volume.size, "sz3_bytes": len(stream) + 32, "sz3_err": sz_err,
            "sz3_bpp": 8 * (len(stream) + 32) / volume.size, "ratio": ours_bytes / (len(stream) + 32),
            "encode_s": train_s + layer_s, "layer_s": layer_s, "decode_s": decode_s, "sz3_encode_s": sz_s,
            "stages": stored.residual.describe()["residual_stages"], "n_gaussians": int(stored.n_gaussians)}


# -- reports ---------------------------------------------------------------------------------------


def _interp(points, t):
    """PSNR (or SSIM) at ``t`` bpp, linear in log(bpp) between the two nearest measured points."""
    pts = sorted(p for p in points if math.isfinite(p[1]))
    for (b0, q0), (b1, q1) in zip(pts, pts[1:]):
        if b0 <= t <= b1:
            w = (math.log(t) - math.log(b0)) / (math.log(b1) - math.log(b0)) if b1 > b0 else 0.0
            return q0 + w * (q1 - q0)
    return math.nan


def target_lines(results: list[_common.Result]) -> list[str]:
    """Issue 13's targets, per volume: 0.073 and 0.3 bpp against JPEG 2000 and x265, and the slope."""
    lines = []
    by = {}
    for r in results:
        by.setdefault((r.volume, r.method), []).append(r)
    for vname in sorted({r.volume for r in results}):
        ours = {round(r.target_bpp, 4): r for r in by.get((vname, "ours"), [])}
        row = [f"{vname}:"]
        for t in (0.073, 0.3):
            o = ours.get(t)
            if o is None:
                continue
            for codec in ("jpeg2k", "x265"):
                pts = [(r.bpp, r.psnr_full) for r in by.get((vname, codec), [])]
                spts = [(r.bpp, r.ssim3d) for r in by.get((vname, codec), [])]
                c, cs = _interp(pts, o.bpp), _interp(spts, o.bpp)
                if math.isfinite(c):
                    row.append(f"@{t} vs {codec} {o.psnr_full - c:+.2f} dB, ssim {o.ssim3d - cs:+.4f};")
                else:
                    row.append(f"@{t} vs {codec}: codec does not reach {o.bpp:.3f} bpp;")
        lo, hi = ours.get(0.073), ours.get(0.6)
        if lo and hi:
            slope = (hi.psnr_full - lo.psnr_full) / math.log2(hi.bpp / lo.bpp)
            row.append(f"slope 0.073->0.6: {slope:+.2f} dB per doubling")
        lines.append(" ".join(row))
    return lines


def plot(results: list[_common.Result], paths: list[Path]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    volumes = [v for v in DEFAULT_VOLUMES if any(r.volume == v for r in results)]
    volumes += sorted({r.volume for r in results} - set(volumes))
    if not volumes:
        return
    fig, axes = plt.subplots(2, len(volumes), figsize=(4.4 * len(volumes), 7.4), squeeze=False)
    style = {"ours": ("o", 2.6), "ours-base": ("s", 1.6)}
    for col, vname in enumerate(volumes):
        for row, (metric, label) in enumerate((("psnr_full", "psnr_full (dB)"), ("ssim3d", "ssim3d"))):
            ax = axes[row][col]
            for method in METHODS:
                pts = sorted((r.bpp, getattr(r, metric)) for r in results
                             if r.volume == vname and r.method == method and math.isfinite(getattr(r, metric)))
                if pts:
                    xs, ys = zip(*pts)
                    marker, lw = style.get(method, ("^", 1.1))
                    ax.plot(xs, ys, marker=marker, label=method, linewidth=lw, markersize=4)
            ax.set_xscale("log")
            ax.set_xlabel("bits per voxel (whole file / stream)")
            ax.set_ylabel(label)
            if row == 0:
                ax.set_title(vname)
            ax.grid(True, which="both", alpha=0.3)
            if col == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(p, dpi=100)
        print(f"plot: {p}", flush=True)
    plt.close(fig)


def rd_markdown(results: list[_common.Result]) -> str:
    """psnr_full / ssim3d per volume and rate, one column per method (bpp in brackets when off target by > 2%)."""
    methods = [m for m in METHODS if any(r.method == m for r in results)]
    lines = ["| volume | target bpp | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for vname in [v for v in DEFAULT_VOLUMES if any(r.volume == v for r in results)]:
        for t in sorted({r.target_bpp for r in results if r.volume == vname}):
            cells = []
            for m in methods:
                r = next((r for r in results if (r.volume, r.method, r.target_bpp) == (vname, m, t)), None)
                if r is None:
                    cells.append("")
                    continue
                off = "" if abs(r.bpp / t - 1) <= 0.02 else f" ({r.bpp:.3f})"
                cells.append(f"{r.psnr_full:.2f} / {r.ssim3d:.3f}{off}")
            lines.append(f"| {vname} | {t:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_markdown(results: list[_common.Result], rates=(0.073, 0.3)) -> str:
    """The README's table: psnr_full / ssim3d of ours and the codecs at the headline rates."""
    methods = [m for m in ("ours", "ours-base", "x265", "jpeg2k", "jpegxl", "sz3") if any(r.method == m for r in results)]
    names = {"ours": "ours (Gaussians + layer)", "ours-base": "ours, Gaussians only", "x265": "x265",
             "jpeg2k": "JPEG 2000", "jpegxl": "JPEG XL", "sz3": "SZ3"}
    lines = ["| volume, bpp | " + " | ".join(names[m] for m in methods) + " |", "|---|" + "---|" * len(methods)]
    for vname in [v for v in DEFAULT_VOLUMES if any(r.volume == v for r in results)]:
        for t in rates:
            row = []
            for m in methods:
                r = next((r for r in results if (r.volume, r.method, r.target_bpp) == (vname, m, t)), None)
                if r is None:
                    row.append("")
                elif not math.isfinite(r.psnr_full) and r.bpp <= t * 1.02:
                    row.append(f"lossless at {r.bpp:.3f}")
                elif abs(r.bpp / t - 1) > 0.1:
                    row.append(f"not reachable ({r.bpp:.3f})")
                else:
                    row.append(f"{r.psnr_full:.2f} / {r.ssim3d:.3f}")
            lines.append(f"| {vname}, {t:g} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def bounded_markdown(rows: list[dict]) -> str:
    lines = ["| volume | bound | E (grey levels) | ours bytes (bpp) | SZ3 bytes (bpp) | ours / SZ3 | max error ours / SZ3 | "
             "stages |", "|---|---|---|---|---|---|---|---|"]
    for d in rows:
        lines.append(f"| {d['volume']} | {d['k']:g} sigma | {d['max_error']:.4g} | {d['ours_bytes']:,} ({d['ours_bpp']:.3f}) | "
                     f"{d['sz3_bytes']:,} ({d['sz3_bpp']:.3f}) | **{d['ratio']:.3f}** | {d['ours_err']:.4g} / "
                     f"{d['sz3_err']:.4g} | {' + '.join(d['stages'])} |")
    return "\n".join(lines)


def _replace_between(path: Path, tag: str, text: str) -> None:
    begin, end = f"<!-- {tag}:begin -->", f"<!-- {tag}:end -->"
    s = path.read_text()
    block = f"{begin}\n{text}\n{end}"
    if begin in s and end in s:
        s = s[: s.index(begin)] + block + s[s.index(end) + len(end):]
    else:
        s = s.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(s)
    print(f"wrote {tag} into {path}", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--volumes", nargs="+", default=list(DEFAULT_VOLUMES),
                        help=f"names ({', '.join(_common.VOLUMES)}) or paths")
    parser.add_argument("--bpp", nargs="+", type=float, default=list(DEFAULT_BPP))
    parser.add_argument("--methods", nargs="*", default=list(DEFAULT_METHODS), choices=list(METHODS),
                        help="methods to run (none: only the cached points, e.g. with --docs)")
    parser.add_argument("--max-error-sigmas", nargs="*", type=float, default=[],
                        help="also compare --max-error Ksigma with SZ3 at these K (e.g. 1 2 4)")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps for ours (default: the preset's)")
    parser.add_argument("--siren-seconds", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fresh", action="store_true", help="ignore cached points and models")
    parser.add_argument("--import-codecs", nargs="+", default=[], metavar="FILE",
                        help="add the codec results of codec_baselines.py --json runs (their last JSON line) to "
                        "the cache, under the current codec fingerprint")
    parser.add_argument("--docs", action="store_true",
                        help="write the plot and tables into docs/ and README.md (newest cached point of each)")
    parser.add_argument("--markdown", action="store_true", help="also print the tables as Markdown")
    parser.add_argument("--verbose", action="store_true")
    codecs_bench.add_x265_arguments(parser)
    args = parser.parse_args(argv)
    codecs_bench.configure_x265(args)
    cache = Cache(CACHE, args.fresh)
    for path in args.import_codecs:
        rows = [ln for ln in Path(path).read_text().splitlines() if ln.startswith("{")]
        for d in json.loads(rows[-1])["results"] if rows else []:
            cache.put(d["volume"], d["method"], d["target_bpp"], fingerprint(d["method"], args), d)
        print(f"imported {path}", flush=True)

    results: list[_common.Result] = []
    print(_common.TABLE_HEADER, flush=True)
    for vname in args.volumes:
        volume = spacing = None
        for target in args.bpp:
            for method in args.methods:
                fp = fingerprint(method, args)
                hit = cache.get(vname, method, target, fp)
                if hit is None:
                    if volume is None:
                        volume, spacing = _common.load_volume(vname)
                    try:
                        r = run_method(vname, volume, spacing, target, method, args)
                    except RuntimeError as exc:
                        print(f"{vname:<9} {method:<16} skipped: {exc}", flush=True)
                        continue
                    cache.put(vname, method, target, fp, r.as_json())
                    note = ""
                else:
                    r = result_of(hit)
                    note = "  (cached)"
                results.append(r)
                print(_common.table_row(r) + note, flush=True)
    bounded = []
    for vname in args.volumes:
        for k in args.max_error_sigmas:
            fp = fingerprint("ours", args)
            hit = cache.get(vname, "bounded", k, fp)
            if hit is None:
                volume, spacing = _common.load_volume(vname)
                hit = {"volume": vname, **run_bounded(vname, volume, spacing, k, args)}
                cache.put(vname, "bounded", k, fp, hit)
            bounded.append(hit)
            print(f"{vname:<10} max error {k:g} sigma = {hit['max_error']:.4g}: ours {hit['ours_bytes']:,} B "
                  f"(max err {hit['ours_err']:.4g}), SZ3 {hit['sz3_bytes']:,} B (max err {hit['sz3_err']:.4g}), "
                  f"ratio {hit['ratio']:.3f}", flush=True)

    if args.docs:  # every cached point (newest per volume, method and rate), not only this run's
        results = []
        for (v, m, t, _fp) in list(cache.points):
            if m == "bounded":
                continue
            d = cache.latest(v, m, t)
            if d is not None and all((r.volume, r.method, r.target_bpp) != (v, m, t) for r in results):
                results.append(result_of(d))
        bounded = []
        for (v, m, t, _fp) in list(cache.points):
            if m == "bounded" and all((b["volume"], b["k"]) != (v, t) for b in bounded):
                bounded.append(cache.latest(v, m, t))
        bounded.sort(key=lambda d: (DEFAULT_VOLUMES.index(d["volume"]) if d["volume"] in DEFAULT_VOLUMES else 99, d["k"]))
    lines = target_lines(results)
    for line in lines:
        print(line)
    if args.markdown or args.docs:
        print(rd_markdown(results))
        if bounded:
            print(bounded_markdown(bounded))
    paths = [_common.OUT_DIR / "rate_distortion.png"]
    if args.docs:
        paths.append(_common.DOCS_DIR / "rate_distortion.png")
        _replace_between(_common.DOCS_DIR / "benchmarks.md", "rate-distortion",
                         rd_markdown(results) + "\n\nTargets (issue 13):\n\n" + "\n".join(f"- {x}" for x in lines))
        if bounded:
            _replace_between(_common.DOCS_DIR / "benchmarks.md", "max-error", bounded_markdown(bounded))
        _replace_between(_common.ROOT / "README.md", "rd-summary", summary_markdown(results))
    plot(results, paths)
    _common.print_json_line({"results": [r.as_json() for r in results], "bounded": bounded})
    return 0


if __name__ == "__main__":
    sys.exit(main())
