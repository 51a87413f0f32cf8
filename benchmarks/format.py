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


def region_part(rows: list, repeats: int) -> None:
    from napari_volmicro import container
    from napari_volmicro.synthetic import benchmark_volume

    print("\ncontainer share of a 128^3 region decode: VmgFile.load_region (read, CRC, decode, checks, model), "
          f"median of {repeats} fresh opens, ms")
    cases = [("benchmark 20k", benchmark_volume(shape=(100, 647, 813), n=20_000))]
    for p in sorted(MODELS.glob("*.npz")):
        cases.append((p.stem, load_float(p)))
    with tempfile.TemporaryDirectory() as tmp:
        for name, gv in cases:
            for bricks in (None, (64, 128, 128)):
                line = {"model": name, "bricks": "one" if bricks is None else "x".join(map(str, bricks))}
                region = tuple(slice(max(0, n // 2 - 64), max(0, n // 2 - 64) + min(128, n)) for n in gv.shape)
                for v in (2, 3):
                    path = container.save(gv, Path(tmp) / f"m{v}.vmg", brick_shape=bricks, version=v)
                    times, read_g = [], 0
                    for _ in range(repeats + 1):
                        vmg = container.VmgFile(path)
                        t0 = time.perf_counter()
                        m = vmg.load_region(region)
                        times.append(time.perf_counter() - t0)
                        read_g = m.n_gaussians
                    line[f"v{v}_ms"] = 1e3 * float(np.median(times[1:]))
                    line["gaussians_read"] = read_g
                print(f"{name:<28} {line['bricks']:>10}: {line['gaussians_read']:>6} Gaussians read, "
                      f"v2 {line['v2_ms']:.2f} ms, v3 {line['v3_ms']:.2f} ms", flush=True)
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
        region_part(rows, args.repeats)
    if "bpp" in args.parts:
        bpp_part(rows, args.steps, args.bricks, args.volumes)
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
