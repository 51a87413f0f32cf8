"""KNN against the exact decode on trained models: does browsing show what the file holds?

For every model the default preset trains from the five volumes in
``/work/shared/data`` at 0.073 and 0.3 bpp (trained once and cached under
``benchmarks/out/models/`` by ``_trained.py``, keyed by the encoder's source),
psnr_full against the original of:

- ``exact``: the dense decode (every Gaussian within 3 sigma);
- ``knn``: the default rule (the K Gaussians contributing most at each voxel)
  at K = 8, 16, 32, 64;
- ``centres``: the paper's rule (the K nearest centres, evaluator
  ``knn-centres``) at the same K.

on four kinds of query: the whole volume, random 64^3 regions, single Z
planes, and scattered points (random voxel centres, through
``GaussianVolume.evaluate``). psnr_full's peak is always the whole original's
max - min, so the four are comparable. The bound checked: the default
``knn`` at the package's default K (``evaluate.DEFAULT_K``) within 0.1 dB of ``exact`` on every query.

The paper's rule is slow (faiss searches): above ``--centres-max-voxels`` its
whole-volume figure is taken on a central slab of 16 planes instead (marked
``slab``; ``exact`` is then also given on that slab).

    nice python benchmarks/knn_agreement.py                  # all ten models (trains what is missing)
    python benchmarks/knn_agreement.py --cases purkinje_flowdec@0.073 --no-train
    python benchmarks/knn_agreement.py --stale-ok            # reuse models of another encoder version

Prints the command, one table row per model and query, a summary and, last,
one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _trained  # noqa: E402

KS = (8, 16, 32, 64)
BOUND_DB = 0.1


def default_k() -> int:
    from napari_volmicro.evaluate import DEFAULT_K

    return DEFAULT_K


def knn_ks() -> tuple:
    """The K of the ``knn`` columns: ``KS`` and the package's default K (the paper's rule: ``KS`` only)."""
    return tuple(sorted(set(KS) | {default_k()}))


def psnr(original: np.ndarray, decoded: np.ndarray, peak: float) -> float:
    """psnr_full with a given peak (the whole original's max - min), float64 sums."""
    d = np.asarray(original, np.float64) - np.asarray(decoded, np.float64)
    mse = float(np.mean(d * d))
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)


def queries(shape, seed=0, n_regions=6, n_planes=6, n_points=200_000):
    """Random 64^3 regions (clipped to the volume), Z planes and voxel-centre points."""
    rng = np.random.default_rng(seed)
    regions = []
    for _ in range(n_regions):
        sl = []
        for n in shape:
            s = min(64, n)
            a = int(rng.integers(0, n - s + 1))
            sl.append(slice(a, a + s))
        regions.append(tuple(sl))
    zs = np.unique(rng.integers(0, shape[0], n_planes))
    planes = [(slice(int(z), int(z) + 1), slice(None), slice(None)) for z in zs]
    points = np.stack([rng.integers(0, n, n_points) for n in shape], axis=1)
    return regions, planes, points


def central_slab(shape, planes=16):
    z0 = max(0, shape[0] // 2 - planes // 2)
    return (slice(z0, min(shape[0], z0 + planes)), slice(None), slice(None))


def measure(case: _trained.Case, path: Path, centres_max_voxels: int) -> list[dict]:
    import napari_volmicro as nv

    original = case.original()
    gv = nv.load(path)
    peak = float(original.max()) - float(original.min())
    regions, planes, points = queries(gv.shape)
    rows = []

    def row(query, evaluator, k, decoded_pairs, seconds, note=""):
        orig = np.concatenate([o.ravel() for o, _ in decoded_pairs])
        dec = np.concatenate([d.ravel() for _, d in decoded_pairs])
        rows.append({"case": case.name, "query": query, "evaluator": evaluator, "k": k,
                     "psnr_full": psnr(orig, dec, peak), "seconds": seconds, "voxels": int(orig.size), "note": note})

    def run(evaluator, k, query, sets):
        t0 = time.perf_counter()
        pairs = [(original[s], gv.decode(s, evaluator=evaluator, k=k)) for s in sets]
        row(query, evaluator, k, pairs, time.perf_counter() - t0)

    def run_points(evaluator, k):
        t0 = time.perf_counter()
        vals = gv.evaluate(points.astype(np.float64), evaluator=evaluator, k=k)
        row("points", evaluator, k, [(original[tuple(points.T)], vals)], time.perf_counter() - t0)

    whole = [(slice(None),) * 3]
    slab = [central_slab(gv.shape)]
    big = gv.n_voxels > centres_max_voxels
    for query, sets in (("whole", whole), ("regions", regions), ("planes", planes)):
        run("dense", 32, query, sets)
        for k in knn_ks():
            run("knn", k, query, sets)
    run_points("dense", 32)
    for k in knn_ks():
        run_points("knn", k)
    # the paper's rule
    if big:
        run("dense", 32, "slab", slab)
    for k in KS:
        if big:
            run("knn-centres", k, "slab", slab)
        else:
            run("knn-centres", k, "whole", whole)
        run("knn-centres", k, "regions", regions)
        run("knn-centres", k, "planes", planes)
        run_points("knn-centres", k)
    meta = _trained.info(path)
    for r in rows:
        r.update(n_gaussians=gv.n_gaussians, shape=list(gv.shape), model=path.name,
                 encoder_key=meta.get("encoder_key", "?"))
    return rows


def table(rows: list[dict]) -> tuple[str, list[str]]:
    """Per model and query: exact, knn by K, centres by K (dB), and the bound check."""
    lines = []
    head = (f"{'model':30s} {'query':8s} {'N':>6s} {'exact':>7s}  "
            + " ".join(f"{'knn' + str(k):>7s}" for k in knn_ks()) + "  "
            + " ".join(f"{'ctr' + str(k):>7s}" for k in KS) + f"  knn{default_k()}-exact")
    lines.append(head)
    failures = []
    by = {}
    for r in rows:
        by.setdefault((r["case"], r["query"]), {})[(r["evaluator"], r["k"])] = r
    for (case, query), d in by.items():
        exact = d.get(("dense", 32))
        if exact is None:
            continue
        n = next(iter(d.values()))["n_gaussians"]

        def cell(ev, k, d=d):
            r = d.get((ev, k))
            return f"{r['psnr_full']:7.2f}" if r else f"{'-':>7s}"

        delta = ""
        r32 = d.get(("knn", default_k()))
        if r32 is not None:
            gap = r32["psnr_full"] - exact["psnr_full"]
            ok = gap >= -BOUND_DB or (math.isinf(exact["psnr_full"]) and math.isinf(r32["psnr_full"]))
            delta = f"{gap:+.4f} {'ok' if ok else 'OVER'}"
            if not ok:
                failures.append(f"{case} {query}: knn K={default_k()} {gap:+.3f} dB")
        lines.append(f"{case:30s} {query:8s} {n:6d} {exact['psnr_full']:7.2f}  "
                     + " ".join(cell("knn", k) for k in knn_ks()) + "  "
                     + " ".join(cell("knn-centres", k) for k in KS) + f"  {delta}")
    return "\n".join(lines), failures


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", help="cases (default: the ten volume@bpp models); see _trained.py --list")
    ap.add_argument("--no-train", action="store_true", help="skip models that are not cached instead of training")
    ap.add_argument("--stale-ok", action="store_true", help="use a cached model of another encoder version")
    ap.add_argument("--centres-max-voxels", type=int, default=4_000_000,
                    help="above this, the paper's rule is measured on a 16-plane slab, not the whole volume")
    a = ap.parse_args(argv)
    print("command: " + " ".join(shlex.quote(x) for x in [sys.executable, *sys.argv]), flush=True)
    all_cases = _trained.cases()
    names = a.cases or [n for n in all_cases if n not in ("tiled20k", "sample")]
    rows, skipped = [], []
    for name in names:
        case = all_cases[name]
        try:
            path = _trained.model_path(case, stale_ok=a.stale_ok, train=not a.no_train)
        except FileNotFoundError as exc:
            skipped.append(name)
            print(f"skip {name}: {exc}", file=sys.stderr, flush=True)
            continue
        t0 = time.perf_counter()
        got = measure(case, path, a.centres_max_voxels)
        rows += got
        print(f"{name}: {path.name}, {got[0]['n_gaussians']} Gaussians, measured in {time.perf_counter() - t0:.0f} s",
              file=sys.stderr, flush=True)
    text, failures = table(rows)
    print(text)
    print(f"psnr_full (dB) against the original; peak = the whole original's max - min. knn = the K Gaussians "
          f"contributing most; ctr = the paper's K nearest centres. Bound: knn K={default_k()} >= exact - {BOUND_DB} dB.")
    if skipped:
        print("not measured (no cached model): " + ", ".join(skipped))
    print("bound met on every model and query" if not failures and rows else
          "bound missed: " + "; ".join(failures) if failures else "nothing measured")
    print(json.dumps({"rows": rows, "failures": failures, "skipped": skipped}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
