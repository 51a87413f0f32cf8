"""Format benchmark: bytes per Gaussian and quality of .vmg format 2 against format 3, on trained models.

Parts (all by default; pick with ``--parts``):

- ``bytes``: for each model the default preset trained from the volumes in ``../shared/data``
  (float models cached under ``benchmarks/out/format_models/<volume>_<bpp>.npz``; ``--train``
  trains missing ones, e.g. ``--train purkinje_flowdec:0.073``) and the bundled sample
  ``purkinje_sample.vmg`` (itself format-2 quantised): file bytes per Gaussian (header, table and
  background included) and payload bytes per Gaussian in formats 2 and 3, and ``psnr_full`` of the
  dense decode against the original volume for the float model and both formats (dB difference
  to the float model). **Equal bytes**: a budget of 2/3 of the model's format-2 file, each format
  keeping the most massive Gaussians that fit (``fit_budget``). Where a 0.3 bpp model of the same
  volume is cached, also that
  model pruned (``fit_budget``, most massive first) to the 0.073 model's format-2 file size in
  each format, and the psnr of each.
- ``region``: the container's share of a 128^3 region decode: ``VmgFile.load_region`` (read +
  checksum + entropy decode + checks + model) of a 128^3 region of the 100 x 647 x 813,
  20,000-Gaussian benchmark model (``synthetic.benchmark_volume``) saved as one brick and as
  64 x 128 x 128 bricks, formats 2 and 3 side by side (median of ``--repeats`` fresh opens), and
  the same for the trained models' files.
- ``bpp``: how close ``--bpp`` lands: ``compress`` (``--steps`` steps) and ``compress_bricked``
  (``--bricks``) at 0.073 and 0.3 bpp on the smaller shared volumes; written bpp / asked.

Timings are wall clock on a shared 2-core machine (noisy): compare the two formats within a run.

    python benchmarks/format.py                       # bytes + region on what is cached
    python benchmarks/format.py --parts bpp --steps 200
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT_DIR, ROOT  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
MODELS = OUT_DIR / "format_models"
SAMPLE = ROOT / "src" / "napari_volmicro" / "_data" / "purkinje_sample.vmg"
SAMPLE_VOLUME = ROOT / "src" / "napari_volmicro" / "_data" / "purkinje_flowdec.tif"


def read(path):
    from napari_volmicro.volume_io import check_volume, read_volume

    arr, spacing = read_volume(path)
    return check_volume(arr, source=str(path)), spacing


def save_float(gv, path: Path) -> None:
    m = gv.mapping
    np.savez(path, shape=gv.shape, spacing=gv.spacing, centers=gv.centers, scales=gv.scales,
             quaternions=gv.quaternions, amplitudes=gv.amplitudes,
             background=gv.background if gv.background is not None else np.zeros(0),
             mapping=np.array([m.offset, m.scale]), dtype=str(m.dtype))


def load_float(path: Path):
    from napari_volmicro.gaussians import GaussianVolume
    from napari_volmicro.intensity import IntensityMapping

    z = np.load(path)
    bg = z["background"] if z["background"].size else None
    return GaussianVolume(tuple(int(v) for v in z["shape"]), z["centers"], z["scales"], z["quaternions"],
                          z["amplitudes"], tuple(float(v) for v in z["spacing"]),
                          IntensityMapping(*z["mapping"], str(z["dtype"])), bg)


def train(spec: str) -> Path:
    """Train ``volume:bpp`` with the default preset (seed 0) unless cached; the float model's path."""
    from napari_volmicro.encode import compress

    name, bpp = spec.split(":")
    path = MODELS / f"{name}_{bpp}.npz"
    if not path.exists():
        MODELS.mkdir(parents=True, exist_ok=True)
        vol, spacing = read(DATA / f"{name}.tif")
        t0 = time.perf_counter()
        gv = compress(vol, spacing, bpp=float(bpp), seed=0, device="cpu")
        save_float(gv, path)
        print(f"trained {name} at {bpp} bpp: {gv.n_gaussians} Gaussians, {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def bytes_part(rows: list) -> None:
    from napari_volmicro import container, metrics
    from napari_volmicro.encode.budget import fit_budget

    cases = [(p.stem, p, DATA / f"{p.stem.rsplit('_', 1)[0]}.tif") for p in sorted(MODELS.glob("*.npz"))]
    cases.append(("purkinje_sample.vmg (v2-quantised)", SAMPLE, SAMPLE_VOLUME))
    print("\nbytes per Gaussian and quality, format 2 vs 3 (psnr_full of the dense decode vs the volume)")
    print(f"{'model':<38} {'N':>6} {'v2 file':>8} {'v3 file':>8} {'v2 pay':>7} {'v3 pay':>7} "
          f"{'float dB':>9} {'v2 dB':>7} {'v3 dB':>7} {'v3-v2':>6}")
    for name, path, vol_path in cases:
        gv = load_float(path) if path.suffix == ".npz" else container.load(path)
        vol, _ = read(vol_path)
        n = gv.n_gaussians
        ref = metrics.psnr_full(vol, gv.decode())
        r = {"model": name, "n": n, "float_db": ref}
        for v in (2, 3):
            data = container.to_bytes(gv, version=v)
            vmg_payload = sum(len(b) for b in _payloads(data))
            q = container.quantize(gv, version=v)
            r[f"v{v}_file_bpg"] = len(data) / n
            r[f"v{v}_payload_bpg"] = vmg_payload / n
            r[f"v{v}_db"] = metrics.psnr_full(vol, q.decode())
        print(f"{name:<38} {n:>6} {r['v2_file_bpg']:>8.2f} {r['v3_file_bpg']:>8.2f} {r['v2_payload_bpg']:>7.2f} "
              f"{r['v3_payload_bpg']:>7.2f} {ref:>9.3f} {r['v2_db'] - ref:>+7.3f} {r['v3_db'] - ref:>+7.3f} "
              f"{r['v3_db'] - r['v2_db']:>+6.3f}", flush=True)
        rows.append(r)
        # equal bytes from this model: a budget of 2/3 of its format-2 file; each format keeps the most
        # massive Gaussians that fit (format 3 keeps about 1.5 times as many)
        budget = 2 * len(container.to_bytes(gv, version=2)) // 3
        eq = {"model": f"{name} at 2/3 of its v2 size ({budget} B)"}
        for v in (2, 3):
            fitted = fit_budget(gv, budget, size=lambda m, v=v: container.file_size(m, version=v))
            eq[f"v{v}_n"] = fitted.n_gaussians
            eq[f"v{v}_db"] = metrics.psnr_full(vol, container.quantize(fitted, version=v).decode())
        print(f"  equal bytes {budget} B (2/3 of v2): v2 {eq['v2_n']} Gaussians {eq['v2_db']:.3f} dB, "
              f"v3 {eq['v3_n']} Gaussians {eq['v3_db']:.3f} dB ({eq['v3_db'] - eq['v2_db']:+.3f})", flush=True)
        rows.append(eq)
        big = path.with_name(path.stem.replace("_0.073", "_0.3") + ".npz") if "_0.073" in path.stem else None
        if big is not None and big.exists():
            budget = container.file_size(gv, version=2)
            model = load_float(big)
            eq = {"model": f"{name} equal bytes ({budget} B, pruned from the 0.3 model)"}
            for v in (2, 3):
                fitted = fit_budget(model, budget, size=lambda m, v=v: container.file_size(m, version=v))
                eq[f"v{v}_n"] = fitted.n_gaussians
                eq[f"v{v}_db"] = metrics.psnr_full(vol, container.quantize(fitted, version=v).decode())
            print(f"  equal bytes {budget} B: v2 {eq['v2_n']} Gaussians {eq['v2_db']:.3f} dB, "
                  f"v3 {eq['v3_n']} Gaussians {eq['v3_db']:.3f} dB ({eq['v3_db'] - eq['v2_db']:+.3f})", flush=True)
            rows.append(eq)


def _payloads(data: bytes):
    from napari_volmicro.container import layout

    h = layout.parse_header(data[: layout.HEADER_SIZE], "x", len(data))
    bricks, _ = layout.parse_tables(h, data[: layout.HEADER_SIZE], data[layout.HEADER_SIZE : h.data_start], "x")
    return [data[b.offset : b.end] for b in bricks]


def region_cases(only=None) -> list:
    """(name, float or loaded model) for the region part: the synthetic 20,000-Gaussian benchmark
    model, the trained float models of ``format_models/`` and the trained files ``_trained.py``
    cached (any encoder version; none is trained here)."""
    import _trained

    from napari_volmicro import container
    from napari_volmicro.synthetic import benchmark_volume

    cases = [("benchmark 20k (synthetic)", lambda: benchmark_volume(shape=(100, 647, 813), n=20_000))]
    for p in sorted(MODELS.glob("*.npz")):
        cases.append((f"{p.stem} (float)", lambda p=p: load_float(p)))
    for name, case in _trained.cases().items():
        path = _trained.find(case, stale_ok=True) if case.fixed is None else None
        if path is not None:
            cases.append((f"{name} (trained file)", lambda path=path: container.load(path)))
    return [(n, make) for n, make in cases if only is None or any(o in n for o in only)]


def regions_of(shape, k: int, seed: int = 0) -> list:
    """``k`` 128^3 regions (clipped to the volume): the centre one, then random ones (seeded)."""
    rng = np.random.default_rng(seed)
    out = [tuple(slice(max(0, n // 2 - 64), max(0, n // 2 - 64) + min(128, n)) for n in shape)]
    while len(out) < k:
        starts = [int(rng.integers(0, max(0, n - 128) + 1)) for n in shape]
        out.append(tuple(slice(a, a + min(128, n)) for a, n in zip(starts, shape)))
    return out


def _timed(fn, repeats: int) -> tuple[float, float]:
    """Median CPU and wall milliseconds of ``fn()`` over ``repeats`` runs (after one warm-up)."""
    fn()
    cpu, wall = [], []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return 1e3 * float(np.median(cpu)), 1e3 * float(np.median(wall))


def _reference_reader():
    """A context in which format-3 bricks are read by the reference path (constriction + numpy, the
    reader before the compiled one) instead of ``payload_v3.read_arrays``."""
    import contextlib

    from napari_volmicro.container import payload_v3

    @contextlib.contextmanager
    def ctx():
        fast = payload_v3.read_arrays

        def reference(buf, count, lo, where):
            return payload_v3.decode(payload_v3.from_bytes(buf, count, lo, None, where), lo, None)

        payload_v3.read_arrays = reference
        try:
            yield
        finally:
            payload_v3.read_arrays = fast

    return ctx()


def region_part(rows: list, repeats: int, n_regions: int = 5, only=None) -> None:
    """The container's share of a 128^3 region decode (``VmgFile.load_region`` on a fresh open: read,
    CRC, decode, checks, reach check, model) for each model and layout, and a whole load."""
    import contextlib

    from napari_volmicro import container
    from napari_volmicro.container import writer

    print("\ncontainer share of a 128^3 region decode: VmgFile.load_region on a fresh open (read, CRC, decode, "
          f"checks, model); CPU ms, median of {repeats} per region, mean and max over {n_regions} regions (the "
          "centre and random ones); whole: VmgFile.load. Layouts: 'one' = one brick over the volume (what save "
          f"wrote before), 'split' = save's default (bricks of <= {writer.SPLIT_GAUSSIANS} Gaussians), "
          "'64x128x128' = a grid. 'v3 ref' = format 3 read by the reference path (constriction + numpy)")
    print(f"{'model':<40} {'N':>6} {'layout':>10} {'fmt':>6} {'bricks':>6} {'B/G':>6} {'read mean':>9} "
          f"{'read max':>8} {'cpu mean':>8} {'cpu max':>8} {'wall mean':>9} {'whole cpu':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in region_cases(only):
            gv = make()
            regions = regions_of(gv.shape, n_regions)
            for layout, bricks in (("one", gv.shape), ("split", None), ("64x128x128", (64, 128, 128))):
                for fmt in ("v2", "v3 ref", "v3"):
                    if fmt == "v2" and layout == "split":
                        continue
                    version = 2 if fmt == "v2" else 3
                    path = container.save(gv, Path(tmp) / "m.vmg", brick_shape=bricks, version=version)
                    ctx = _reference_reader() if fmt == "v3 ref" else contextlib.nullcontext()
                    with ctx:
                        times = [_timed(lambda r=r, p=path: container.VmgFile(p).load_region(r), repeats) for r in regions]
                        whole = _timed(lambda p=path: container.VmgFile(p).load(), max(1, repeats // 2))
                    reads = [container.VmgFile(path).load_region(r).n_gaussians for r in regions]
                    line = {"model": name, "n": gv.n_gaussians, "layout": layout, "format": fmt,
                            "bricks": container.read_info(path)["n_bricks"],
                            "file_bpg": path.stat().st_size / max(1, gv.n_gaussians),
                            "read_mean": float(np.mean(reads)), "read_max": int(np.max(reads)),
                            "cpu_ms_mean": float(np.mean([t[0] for t in times])),
                            "cpu_ms_max": float(np.max([t[0] for t in times])),
                            "wall_ms_mean": float(np.mean([t[1] for t in times])), "whole_cpu_ms": whole[0]}
                    print(f"{name:<40} {gv.n_gaussians:>6} {layout:>10} {fmt:>6} {line['bricks']:>6} "
                          f"{line['file_bpg']:>6.2f} {line['read_mean']:>9.0f} {line['read_max']:>8} "
                          f"{line['cpu_ms_mean']:>8.2f} {line['cpu_ms_max']:>8.2f} {line['wall_ms_mean']:>9.2f} "
                          f"{line['whole_cpu_ms']:>9.2f}", flush=True)
                    rows.append(line)


def bpp_part(rows: list, steps: int, bricks: int, volumes: list) -> None:
    from napari_volmicro import container
    from napari_volmicro.bricks import compress_bricked
    from napari_volmicro.encode import compress

    print(f"\n--bpp accuracy ({steps} steps): written bpp / asked")
    with tempfile.TemporaryDirectory() as tmp:
        for name in volumes:
            vol, spacing = read(DATA / f"{name}.tif")
            for bpp in (0.073, 0.3):
                line = {"volume": name, "bpp": bpp}
                gv = compress(vol, spacing, bpp=bpp, steps=steps, seed=0, device="cpu")
                size = container.file_size(gv)
                line["single"] = 8 * size / vol.size / bpp
                out = Path(tmp) / "b.vmg"
                rep = compress_bricked(DATA / f"{name}.tif", out, brick=bricks, bpp=bpp, steps=steps, workers=1,
                                       processes=False)
                line["bricked"] = 8 * out.stat().st_size / vol.size / bpp
                line["bricked_gaussians"] = rep.get("n_gaussians")
                print(f"{name:<24} {bpp:>5}: single {line['single']:.4f} ({gv.n_gaussians} Gaussians), "
                      f"bricked {bricks} {line['bricked']:.4f}", flush=True)
                rows.append(line)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", nargs="+", default=["bytes", "region"], choices=["bytes", "region", "bpp"])
    ap.add_argument("--train", nargs="*", default=[], metavar="VOLUME:BPP", help="train (and cache) these first")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--regions", type=int, default=5, help="128^3 regions per model in the region part")
    ap.add_argument("--models", nargs="+", help="region part: only models whose name contains one of these")
    ap.add_argument("--steps", type=int, default=300, help="training steps of the bpp part")
    ap.add_argument("--bricks", type=int, default=128, help="brick size of the bpp part")
    ap.add_argument("--volumes", nargs="+", default=["purkinje_flowdec", "cellseg3d_nuclei", "bead_flowdec"])
    args = ap.parse_args(argv)
    for spec in args.train:
        train(spec)
    rows: list = []
    if "bytes" in args.parts:
        bytes_part(rows)
    if "region" in args.parts:
        region_part(rows, args.repeats, args.regions, args.models)
    if "bpp" in args.parts:
        bpp_part(rows, args.steps, args.bricks, args.volumes)
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
