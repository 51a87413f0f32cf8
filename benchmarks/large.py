"""Volumes larger than memory: bricked encode on a LocalCluster, region decode, seams.

    python benchmarks/large.py --scale small     # minutes on 2 shared cores
    python benchmarks/large.py --scale full      # >= 2 GB Zarr; hours on 2 cores

1. **Build** a uint16 Zarr by tiling crops of the real volumes (Purkinje,
   nuclei, bead, neuron) with jitter (random crop position, flips, gain and
   offset per tile, so bricks differ), written tile by tile (never whole in
   memory). ``full``: 640 x 1280 x 1280 voxels = 2.1 GB.
2. **Encode** it with ``compress_bricked`` on a LocalCluster of 2 worker
   processes with a 2 GB memory limit each; report each worker's peak
   resident memory (``ru_maxrss``), bricks, Gaussians, bpp and time.
3. **Region decode**: a 128^3 region across a brick corner (smaller volumes:
   the largest cube that fits), opened from the file, only the needed bricks
   read (``VmgFile.load_region``), decoded with the dense evaluator; report
   the time (median of 5, after a warm-up that compiles the kernels) and the
   bytes read, against the whole file.
4. **Seams**: a crop small enough to encode as one brick, encoded both ways
   at the same bpp and steps; report psnr_full of each and the difference.

Timings are wall-clock on a shared machine: noisy. Results go to
``benchmarks/out/large-<scale>.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import OUT_DIR, VOLUMES  # noqa: E402

SCALES = {
    #        volume shape        zarr chunks      brick           halo  steps  seams crop      seams brick
    "small": ((64, 384, 384), (32, 128, 128), (64, 128, 128), 8, 40, (32, 128, 128), (32, 64, 64)),
    "medium": ((128, 768, 768), (64, 128, 128), (128, 256, 256), 16, 300, (48, 128, 128), (48, 64, 64)),
    "full": ((640, 1280, 1280), (64, 256, 256), (128, 256, 256), 16, 600, (64, 192, 192), (64, 96, 96)),
}


def _sources() -> list[np.ndarray]:
    """The real volumes as float32 in [0, 1] above their background (percentile 1..99.99)."""
    import tifffile

    out = []
    for name in ("purkinje", "nuclei", "bead", "neuron"):
        v = tifffile.imread(VOLUMES[name]).astype(np.float32)
        lo, hi = np.percentile(v, [1, 99.99])
        out.append(np.clip((v - lo) / max(hi - lo, 1e-6), 0, 1.5))
    return out


def _tile(sources, shape, rng) -> np.ndarray:
    """One jittered tile of ``shape`` (uint16): a random crop of a random source, flipped, scaled, offset;
    sources smaller than the tile are mirrored to fill it."""
    src = sources[rng.integers(len(sources))]
    idx = []
    for s, n in zip(shape, src.shape):  # mirrored indices: no copy of the source is made
        i = (int(rng.integers(0, 2 * n)) + np.arange(s)) % (2 * n)
        idx.append(np.where(i >= n, 2 * n - 1 - i, i))
    t = src[np.ix_(*idx)]
    for a in range(3):
        if rng.random() < 0.5:
            t = np.flip(t, a)
    gain = rng.uniform(2000, 6000)
    offset = rng.uniform(90, 110)
    noise = rng.normal(0, 2.0, t.shape)
    return np.clip(offset + gain * t + noise, 0, 65535).astype(np.uint16)


def build_zarr(path: Path, shape, chunks, seed: int = 0) -> Path:
    """Write the tiled uint16 volume to a Zarr (v3), one tile (= one chunk row) at a time."""
    import zarr

    rng = np.random.default_rng(seed)
    sources = _sources()
    z = zarr.create_array(str(path), shape=shape, chunks=chunks, dtype="uint16", fill_value=0, overwrite=True)
    tile = tuple(min(c * 2, n) for c, n in zip(chunks, shape))
    for z0 in range(0, shape[0], tile[0]):
        for y0 in range(0, shape[1], tile[1]):
            for x0 in range(0, shape[2], tile[2]):
                sl = tuple(slice(a, min(a + t, n)) for a, t, n in zip((z0, y0, x0), tile, shape))
                z[sl] = _tile(sources, tuple(s.stop - s.start for s in sl), rng)
    return path


def region_decode(vmg_path: Path, brick, shape) -> dict:
    from napari_volmicro.container import VmgFile

    side = [min(128, n) for n in shape]
    f0 = VmgFile(vmg_path)
    # the region centred on the interior brick corner whose neighbourhood holds the most Gaussians
    axes = [[min(max(c, s // 2), n - s // 2) for c in (range(b, n, b) if n > b else [n // 2])]
            for b, s, n in zip(brick, side, shape)]
    best = None
    for corner in itertools.product(*axes):
        region = tuple(slice(c - s // 2, c - s // 2 + s) for c, s in zip(corner, side))
        used = f0.bricks_for_region(region)
        score = (len(used), sum(f0.bricks[i].count for i in used))
        if best is None or score > best[0]:
            best = (score, region)
    region = best[1]
    warm = VmgFile(vmg_path)
    warm.load_region(region).decode(region)  # compile the kernels
    times, decode_times = [], []
    for _ in range(5):
        t0 = time.perf_counter()
        f = VmgFile(vmg_path)
        gv = f.load_region(region)
        t1 = time.perf_counter()
        gv.decode(region)
        t2 = time.perf_counter()
        times.append(t2 - t0)
        decode_times.append(t2 - t1)
    used = f.bricks_for_region(region)
    return {
        "region": [[s.start, s.stop] for s in region], "voxels": int(np.prod(side)),
        "ms_total_median": 1000 * float(np.median(times)), "ms_decode_median": 1000 * float(np.median(decode_times)),
        "bytes_read": f.bytes_read, "file_bytes": f.file_bytes, "bricks_read": len(used),
        "bricks_total": len(f.bricks), "gaussians_read": gv.n_gaussians,
    }


def _busiest_origin(src, crop) -> tuple[int, int, int]:
    """Origin of the ``crop``-sized box with the highest mean intensity (from a strided read)."""
    from scipy.ndimage import uniform_filter

    s = max(1, int(math.ceil((np.prod(src.shape) / 4e6) ** (1 / 3))))
    small = src.read((slice(None, None, s),) * 3).astype(np.float32)
    size = [max(1, c // s) for c in crop]
    mean = uniform_filter(small, size=size, mode="constant")
    c = np.unravel_index(np.argmax(mean), mean.shape)
    return tuple(int(np.clip(ci * s - cr // 2, 0, n - cr)) for ci, cr, n in zip(c, crop, src.shape))


def seams(zarr_path: Path, crop, brick, halo, bpp, steps, client, tmp: Path) -> dict:
    from napari_volmicro import metrics
    from napari_volmicro.bricks import compress_bricked, open_input
    from napari_volmicro.container import file_size, load, save
    from napari_volmicro.encode import compress

    src = open_input(zarr_path)
    origin = _busiest_origin(src, crop)
    vol = src.read(tuple(slice(o, o + c) for o, c in zip(origin, crop)))
    np.save(tmp / "crop.npy", vol)
    t0 = time.perf_counter()
    one = compress(vol, bpp=bpp, steps=steps, device="cpu")
    t_one = time.perf_counter() - t0
    one_path = save(one, tmp / "one.vmg")
    t0 = time.perf_counter()
    rep = compress_bricked(tmp / "crop.npy", tmp / "bricked.vmg", brick=brick, halo=halo, bpp=bpp, steps=steps,
                           client=client)
    t_b = time.perf_counter() - t0
    r_one = load(one_path).decode()
    r_b = load(tmp / "bricked.vmg").decode()
    p_one, p_b = metrics.psnr_full(vol, r_one), metrics.psnr_full(vol, r_b)
    return {
        "crop": list(crop), "crop_origin": list(origin), "brick": list(brick), "halo": halo, "bpp_target": bpp, "steps": steps,
        "one_brick": {"psnr_full": p_one, "psnr_fg": metrics.psnr_fg(vol, r_one), "bytes": file_size(one),
                      "seconds": t_one},
        "bricked": {"psnr_full": p_b, "psnr_fg": metrics.psnr_fg(vol, r_b), "bytes": rep["file_bytes"],
                    "bricks": rep["bricks"], "seconds": t_b},
        "psnr_full_difference_db": p_one - p_b,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="small")
    parser.add_argument("--bpp", type=float, default=0.073)
    parser.add_argument("--steps", type=int, help="training steps per brick (default: per scale)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="2GB")
    parser.add_argument("--workdir", help="where to build the Zarr and write files (default: a temp dir)")
    parser.add_argument("--skip-seams", action="store_true")
    parser.add_argument("--seams-bpp", type=float, default=0.3, help="bpp of the seams comparison (default 0.3)")
    parser.add_argument("--seams-steps", type=int, default=300, help="steps of the seams comparison (default 300)")
    args = parser.parse_args(argv)

    from napari_volmicro.bricks import compress_bricked, make_client

    shape, chunks, brick, halo, steps, crop, seam_brick = SCALES[args.scale]
    steps = args.steps or steps
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="volmicro-large-"))
    work.mkdir(parents=True, exist_ok=True)
    result = {"scale": args.scale, "shape": list(shape), "bytes": int(np.prod(shape)) * 2, "chunks": list(chunks),
              "brick": list(brick), "halo": halo, "steps": steps, "bpp_target": args.bpp,
              "workers": args.workers, "memory_limit": args.memory_limit}
    zpath = work / "tiled.zarr"
    t0 = time.perf_counter()
    build_zarr(zpath, shape, chunks)
    result["build_seconds"] = time.perf_counter() - t0
    print(f"built {zpath}: {shape} uint16, {result['bytes'] / 2**30:.3f} GiB in {result['build_seconds']:.1f} s",
          flush=True)

    client = make_client(workers=args.workers, memory_limit=args.memory_limit)
    try:
        def show(p):
            print(f"  brick {p.done}/{p.total} (#{p.index} {p.kind}, {p.n_gaussians} Gaussians) "
                  f"{p.elapsed:.0f} s", flush=True)

        vmg = work / "tiled.vmg"
        rep = compress_bricked(zpath, vmg, brick=brick, halo=halo, bpp=args.bpp, steps=steps, client=client,
                               progress=show)
        from napari_volmicro.bricks.encode_bricks import worker_peak_memory

        rep["worker_peak_bytes"] = worker_peak_memory(client)
        result["encode"] = rep
        limit = client.run(lambda dask_worker: dask_worker.memory_manager.memory_limit)
        result["worker_memory_limit_bytes"] = {str(k): int(v) for k, v in limit.items()}
        print(f"encoded: {rep['bricks']} bricks ({rep['encoded']} trained, {rep['background']} background), "
              f"{rep['n_gaussians']} Gaussians, {rep['bpp']:.4f} bpp, {rep['seconds']:.0f} s; peak memory per "
              "worker: " + ", ".join(f"{v / 2**20:.0f} MiB" for v in rep["worker_peak_bytes"].values()), flush=True)
        result["region"] = region_decode(vmg, brick, shape)
        r = result["region"]
        print(f"region {r['region']}: {r['ms_total_median']:.1f} ms (open + read + decode; decode "
              f"{r['ms_decode_median']:.1f} ms), {r['bytes_read']} of {r['file_bytes']} bytes read, "
              f"{r['bricks_read']}/{r['bricks_total']} bricks", flush=True)
        if not args.skip_seams:
            result["seams"] = seams(zpath, crop, seam_brick, halo, args.seams_bpp, args.seams_steps, client, work)
            s = result["seams"]
            print(f"seams on {crop}: one brick {s['one_brick']['psnr_full']:.2f} dB, bricked "
                  f"{s['bricked']['psnr_full']:.2f} dB ({s['bricked']['bricks']} bricks), difference "
                  f"{s['psnr_full_difference_db']:+.2f} dB", flush=True)
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = OUT_DIR / f"large-{args.scale}.json"
    out.write_text(json.dumps(result, indent=1, sort_keys=True, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
