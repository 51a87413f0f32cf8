"""Bricked encoding on dask.distributed: ``compress_bricked(source, out.vmg, ...)``.

Steps (all voxel units, ZYX):

1. **Statistics pass** (one task per brick, reads core + halo): exact core
   maximum, background level (mean of the voxels at or below
   ``median + p (max - median)``, p = 0.03, the encoder's occupancy rule) and
   a strided sample of the core and read box values.
2. **One global intensity mapping**: offset = the lowest brick background
   level, scale = global maximum - offset, dtype = the input's. A brick is
   *pure background* when its maximum is within ``BACKGROUND_SIGMAS`` (6)
   noise sigmas of its own level (``encode.gate.noise_sigma`` of its core):
   it gets a table entry and no training. The budget (``bpp``/``ratio``/
   ``gaussians`` for the whole file, minus the exact header, table and
   background-field bytes) is split over the bricks by reverse water-filling
   of their deviation histograms (``water_level``): the bits an ideal coder
   of that size would spend on each brick.
3. **Encode tasks** (one per non-background brick): the task reads its own
   brick with its halo from the source (the source travels as a path or a
   dask graph, never as data), runs ``encode.compress`` on core + halo with
   ``place_box`` = the core, the brick's Gaussian count (the size model's
   count for its byte share, plus ``BUDGET_MARGIN``) and a seed derived from
   ``(seed, brick index)``; the count is of Gaussians centred in the core
   (helpers trained around it fit the halo and are left out). It keeps the
   Gaussians whose centre the core owns, prunes them by mass to the brick's
   byte share exactly, moves them to global coordinates and rescales
   amplitudes to the global mapping (``a_global = a_local * scale_local /
   scale_global``). The brick's own background (offset + its coarse field) is
   sampled at the nodes of one global background field that the brick owns.
   The result is quantised exactly as the container stores it.
4. Each finished brick is written to ``OUT.vmg.parts`` (``staging.py``) as it
   arrives; when all are there the ``.vmg`` is assembled atomically, in brick
   order, and the parts are removed.

The cluster is a ``LocalCluster`` (``workers`` processes, one thread each,
``memory_limit`` per worker) unless ``scheduler`` (an address) or ``client``
is given.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, VolmicroError
from .chunked_input import ChunkedVolume, check_bricked_size, open_input
from .layout import Brick, BrickGrid, background_nodes
from .staging import BrickPart, Staging

#: occupancy fraction p of the rule ``median + p (max - median)`` (the encoder's default)
OCCUPANCY_FRACTION = 0.03
#: values per brick kept by the statistics pass for the foreground estimate
SAMPLE_VALUES = 1 << 16
#: fraction of the byte budget the global background field may use (as the encoder's default)
BACKGROUND_BUDGET = 0.04
#: a brick is pure background when its maximum is within this many noise sigmas of its level
BACKGROUND_SIGMAS = 6.0
#: bins per bit of the histograms of log2(deviation^2) that ``rate_shares`` works on
RATE_BINS_PER_BIT = 4
#: each brick trains this fraction more Gaussians than the size model says its bytes hold
BUDGET_MARGIN = 0.1
DEFAULT_BRICK = 256
DEFAULT_HALO = 16


@dataclass(frozen=True)
class BrickProgress:
    """Progress across bricks: ``done`` of ``total`` bricks finished (encoded, skipped or reused);
    ``index`` of the brick that just finished, its Gaussians, how it finished, seconds since start."""

    done: int
    total: int
    index: int
    n_gaussians: int
    kind: str  # "encoded", "background", "reused"
    elapsed: float


@dataclass(frozen=True)
class BrickStats:
    index: int
    core_max: float
    level: float
    core_sample: np.ndarray  # sorted float64
    read_sample: np.ndarray  # sorted float64
    noise: float = 0.0  # voxel-scale noise sigma of the core (``encode.gate.noise_sigma``), original units


# -- tasks (run on workers) ---------------------------------------------------------------


def _sample(arr: np.ndarray) -> np.ndarray:
    n = arr.size
    s = max(1, int(math.ceil((n / SAMPLE_VALUES) ** (1 / 3))))
    return np.sort(np.asarray(arr[::s, ::s, ::s], np.float64).ravel())


def brick_stats_task(volume: ChunkedVolume, brick: Brick) -> BrickStats:
    """Statistics of one brick (reads its read box once)."""
    data = volume.read(brick.read_slices)
    core = data[brick.core_in_read]
    core_max = float(core.max())
    cs = _sample(core)
    med = float(np.median(cs))
    thr = med + OCCUPANCY_FRACTION * (core_max - med)
    below = cs[cs <= thr]
    level = float(below.mean()) if below.size else float(cs.mean())
    from ..encode.gate import noise_sigma

    return BrickStats(brick.index, core_max, level, cs, _sample(data), noise_sigma(core))


def _set_threads(threads: int | None) -> None:
    if not threads:
        return
    try:
        import numba

        numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    except ImportError:  # pragma: no cover - numba is a dependency
        pass


def use_worker_gpu(device) -> None:
    """One GPU per dask worker: on a machine with several GPUs, the worker named ``k`` (a
    ``LocalCluster`` names its workers 0, 1, ...) trains on GPU ``k mod count``. A worker started
    with its own ``CUDA_VISIBLE_DEVICES`` (dask-cuda, or by hand) sees one GPU and keeps it."""
    if device not in ("cuda", "auto"):
        return
    try:
        from distributed import get_worker

        k = int(get_worker().name)
    except (ImportError, ValueError, TypeError):  # not on a worker, or a worker with a string name
        return
    import torch

    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        return
    gpu_index = k % torch.cuda.device_count()
    torch.cuda.set_device(gpu_index)
    from numba import cuda

    cuda.select_device(gpu_index)


def brick_seed(seed: int, index: int) -> int:
    """A seed for brick ``index`` derived from the run's ``seed`` (same pair, same seed)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0] & 0x7FFFFFFF)


def encode_brick_task(volume: ChunkedVolume, grid: BrickGrid, brick: Brick, job: dict) -> BrickPart:
    """Encode one brick; returns its quantised part in the global model (see module doc)."""
    from ..container.codec import brick_payload_size
    from ..encode.budget import fit_budget, prune_to_count
    from ..gaussians import GaussianVolume

    t0 = time.perf_counter()
    _set_threads(job.get("threads"))
    use_worker_gpu(job["encoder_kwargs"].get("device"))
    data = volume.read(brick.read_slices)
    # the encoder fits the read box (core + halo) and returns ``gaussians`` Gaussians centred in the
    # core (``place_box``, local voxels; helpers it trains around the core are dropped)
    core = (tuple(int(a - r) for a, r in zip(brick.core_lo, brick.read_lo)),
            tuple(int(a - r) for a, r in zip(brick.core_hi, brick.read_lo)))
    encoder = job["encoder"] or _default_encoder
    local = encoder(data, volume.spacing, gaussians=int(job["n_brick"]), seed=brick_seed(job["seed"], brick.index),
                    place_box=core, **job["encoder_kwargs"])
    if not isinstance(local, GaussianVolume):
        raise VolmicroError(f"brick {brick.index}: the encoder returned {type(local).__name__}, not a GaussianVolume")
    origin = np.asarray(brick.read_lo, np.float64)
    centers = local.centers.astype(np.float64) + origin
    keep = np.flatnonzero(grid.owner(centers) == brick.index)
    n_before = int(keep.size)
    offset_g, scale_g = job["offset"], job["scale"]
    ratio = local.mapping.scale / scale_g
    model = GaussianVolume(
        grid.shape, centers[keep].astype(np.float32), local.scales[keep], local.quaternions[keep],
        (local.amplitudes[keep].astype(np.float64) * ratio).astype(np.float32),
    )
    model = prune_to_count(model, int(job["n_brick"]))
    if job.get("brick_bytes") is not None:  # the brick's share of the byte budget, exactly
        model = fit_budget(model, int(job["brick_bytes"]),
                           size=lambda m: brick_payload_size(m, brick.core_lo, brick.core_hi))
    node_pts = np.asarray(job["node_points"], np.float64).reshape(-1, 3)
    values = np.full(len(node_pts), local.mapping.offset, np.float64)
    if local.background is not None and len(node_pts):
        from ..background import sample_points

        values += local.mapping.scale * sample_points(local.background, local.shape, node_pts - origin)
    values = (values - offset_g) / scale_g
    return quantize_part(model, brick, job["node_index"], values,
                         stats=[time.perf_counter() - t0, n_before, local.n_gaussians])


def _default_encoder(data, spacing, **kwargs):
    from ..encode import compress

    return compress(data, spacing, **kwargs)


def quantize_part(model, brick: Brick, node_index, node_values, stats=()) -> BrickPart:
    """A ``BrickPart`` storing ``model``'s Gaussians exactly as the container would (one brick)."""
    from ..container.codec import build_model, reach_box
    from ..container.codec import quantize_part as quantize_stored

    planes, lo, hi, raw = quantize_stored(model, np.arange(model.n_gaussians), brick.core_lo, brick.core_hi)
    r_lo, r_hi = reach_box(build_model([raw], model.shape))
    return BrickPart(
        brick.index, planes, np.asarray(lo, np.float32), np.asarray(hi, np.float32),
        np.asarray(r_lo, np.float32), np.asarray(r_hi, np.float32),
        np.asarray(node_index, np.int64), np.asarray(node_values, np.float64), np.asarray(stats, np.float64),
    )


# -- planning ------------------------------------------------------------------------------


def _log_deviation_histograms(stats: list[BrickStats], samples: str) -> tuple[np.ndarray, np.ndarray]:
    """Per brick, a histogram of ``log2((v - level)^2)`` over its core or read ``samples`` ("core_sample" or
    "read_sample"), each count standing for the voxels one sample value represents; and the bin centres
    (bits)."""
    lo, hi = -40, 72  # log2 of squared deviations: covers float32 data and every integer dtype
    edges = np.arange(lo, hi + 1e-9, 1.0 / RATE_BINS_PER_BIT)
    hist = np.zeros((len(stats), len(edges) - 1))
    for s in stats:
        v = getattr(s, samples)
        d2 = (np.asarray(v, np.float64) - s.level) ** 2
        d2 = d2[d2 > 0]
        if d2.size:
            hist[s.index] = np.histogram(np.log2(d2), bins=edges)[0] / max(1, getattr(s, samples).size)
    return hist, 0.5 * (edges[:-1] + edges[1:])


def water_level(hist: np.ndarray, centres: np.ndarray, voxels: np.ndarray, total_bits: float) -> float:
    """``log2 D`` at which an ideal coder spends ``total_bits`` on these bricks (reverse water-filling).

    A voxel deviating by ``d`` from its brick's level is worth ``max(0, log2(d^2 / D) / 2)`` bits at
    distortion ``D``; ``D`` is found by bisection on ``log2 D``. ``hist``: (bricks, bins) fractions
    of each brick's voxels per ``log2(d^2)`` bin (``centres``, bits); ``voxels``: voxels per brick.
    """
    per_bin = (hist * np.asarray(voxels, np.float64)[:, None]).sum(0)
    lo, hi = float(centres[0]) - 2.0 * total_bits / max(float(per_bin.sum()), 1.0) - 1.0, float(centres[-1])
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if float((per_bin * np.maximum(0.0, 0.5 * (centres - mid))).sum()) > total_bits:
            lo = mid
        else:
            hi = mid
    return hi


def bits_at(hist: np.ndarray, centres: np.ndarray, voxels: np.ndarray, log_d: float) -> np.ndarray:
    """Bits per brick at distortion ``2 ** log_d`` (see ``water_level``)."""
    per_voxel = (hist * np.maximum(0.0, 0.5 * (centres - log_d))[None, :]).sum(1)
    return per_voxel * np.asarray(voxels, np.float64)


def _budget_bytes(n_voxels: int, itemsize: int, bpp, ratio, gaussians) -> int | None:
    from ..encode.budget import budget_bytes

    return budget_bytes(n_voxels, itemsize, bpp=bpp, ratio=ratio, gaussians=gaussians)


def plan_field(shape, budget: int | None) -> tuple[tuple[int, int, int] | None, np.ndarray]:
    """Global background grid shape and node coordinates (None, empty when too small a budget)."""
    n_vox = int(np.prod(shape, dtype=np.int64))
    nodes = int(BACKGROUND_BUDGET * budget / 4) if budget is not None else int(min(4096, max(64, n_vox // 20000)))
    if nodes < 8:
        return None, np.zeros((0, 3))
    spacing = max(1.0, (n_vox / nodes) ** (1 / 3))
    while True:
        grid, pts = background_nodes(shape, spacing)
        if len(pts) <= nodes:
            return grid, pts
        spacing *= 1.1


def split_budget(total: int, weights: np.ndarray) -> np.ndarray:
    """Integers summing to ``total`` (or 0 if all weights are 0), proportional to ``weights``
    (largest remainder, ties to the lower index)."""
    w = np.asarray(weights, np.float64)
    if total <= 0 or w.sum() <= 0:
        return np.zeros(len(w), np.int64)
    exact = total * w / w.sum()
    out = np.floor(exact).astype(np.int64)
    rest = total - int(out.sum())
    order = np.argsort(-(exact - out), kind="stable")
    out[order[:rest]] += 1
    return out


@dataclass
class Plan:
    offset: float
    scale: float
    background: np.ndarray  # bool per brick: pure background
    levels: np.ndarray  # per-brick background level (original units)
    n_brick: np.ndarray  # Gaussians each brick may keep
    brick_bytes: np.ndarray | None  # payload bytes each brick may use (None: a Gaussian-count budget)
    field_shape: tuple[int, int, int] | None
    node_points: np.ndarray
    node_owner: np.ndarray
    budget_bytes: int | None


def make_plan(stats: list[BrickStats], grid: BrickGrid, itemsize: int, *, bpp, ratio, gaussians) -> Plan:
    from ..container.layout import BRICK, HEADER_SIZE, SECTION, TABLE_CRC_SIZE
    from ..encode.budget import gaussians_for_payload

    n_b = len(grid)
    levels = np.array([s.level for s in stats])
    maxes = np.array([s.core_max for s in stats])
    gmax = float(maxes.max())
    offset = float(levels.min())
    scale = gmax - offset if gmax - offset > 1e-12 * max(1.0, abs(gmax)) else 1.0
    noise = np.array([s.noise for s in stats])
    # pure background: nothing rises above the brick's own level by more than its noise could
    # (whatever the brightest voxel elsewhere; the occupancy rule relative to the global maximum
    # called textured tissue background when a few voxels elsewhere were bright)
    background = maxes <= levels + BACKGROUND_SIGMAS * noise
    n_vox = int(np.prod(grid.shape, dtype=np.int64))
    budget = _budget_bytes(n_vox, itemsize, bpp, ratio, gaussians)
    field_shape, node_points = plan_field(grid.shape, budget)
    # budget shares: the bits an ideal coder of the same budget would spend on each brick
    # (``water_level``): where the error would be, with diminishing returns, so a few hot voxels
    # are worth a few dozen bits (by energy they would take half the budget) and textured tissue
    # or sparse bright structure many. A Gaussian-count budget counts 64 bits a Gaussian.
    total_bits = 8.0 * budget if budget is not None else 64.0 * int(gaussians)
    core_vox = np.array([b.core_voxels for b in grid], np.float64)
    hist_core, centres = _log_deviation_histograms(stats, "core_sample")
    hist_core[background] = 0.0
    log_d = water_level(hist_core, centres, core_vox, total_bits)
    fg_core = bits_at(hist_core, centres, core_vox, log_d)
    if budget is None:
        n_brick = split_budget(int(gaussians), fg_core)
        brick_bytes = None
    else:
        fixed = HEADER_SIZE + n_b * BRICK.size + TABLE_CRC_SIZE
        if field_shape is not None:
            fixed += SECTION.size + 16 + 4 * int(np.prod(field_shape))
        if budget < fixed:
            raise InputError(
                f"size budget of {budget} bytes is smaller than the {fixed} bytes of headers, brick table "
                f"({n_b} bricks) and background field; use larger bricks or a larger --bpp/--ratio"
            )
        # each brick gets a share of the payload bytes (encode_brick_task prunes it to fit exactly)
        # and trains the size model's count for that share plus a margin
        brick_bytes = split_budget(budget - fixed, fg_core)
        n_brick = np.array([math.ceil(gaussians_for_payload(b, grid.brick_shape) * (1.0 + BUDGET_MARGIN))
                            for b in brick_bytes], np.int64)
    background = background | (n_brick == 0)
    node_owner = grid.owner(node_points) if len(node_points) else np.zeros(0, np.int64)
    return Plan(offset, scale, background, levels, n_brick, brick_bytes, field_shape, node_points,
                node_owner, budget)


# -- cluster -------------------------------------------------------------------------------


def make_client(scheduler: str | None = None, *, workers: int = 2, memory_limit="2GB", processes: bool = True,
                timeout: float = 10.0):
    """A dask ``Client``: to ``scheduler`` (an address) or to a new ``LocalCluster``.

    Raises ``VolmicroError`` when the scheduler does not answer within ``timeout`` seconds
    or the worker settings are invalid.
    """
    from dask.utils import parse_bytes
    from distributed import Client, LocalCluster

    if scheduler:
        from .scheduler import probe_scheduler

        probe_scheduler(scheduler, timeout)  # a silent or non-dask peer is refused here, not hung on
        try:
            return Client(scheduler, timeout=f"{timeout}s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise VolmicroError(
                f"dask scheduler {scheduler} did not answer within {timeout:g} s ({type(exc).__name__}: {exc}); "
                "check the address (e.g. tcp://host:8786) and that the scheduler is running"
            ) from None
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise VolmicroError(f"--workers must be a positive integer, got {workers!r}")
    try:
        limit = parse_bytes(memory_limit) if isinstance(memory_limit, str) else int(memory_limit)
    except (ValueError, TypeError):
        raise VolmicroError(f"--memory-limit must be a size such as 2GB or 512MiB, got {memory_limit!r}") from None
    if limit <= 0:
        raise VolmicroError(f"--memory-limit must be positive, got {memory_limit!r}")
    cluster = LocalCluster(n_workers=int(workers), threads_per_worker=1, memory_limit=limit, processes=processes,
                           dashboard_address=None)
    return Client(cluster)


def _worker_threads(client) -> int:
    """Worker threads of the cluster behind ``client`` (at least 1)."""
    workers = client.scheduler_info().get("workers", {}) or {}
    return max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))


def worker_peak_memory(client) -> dict[str, int]:
    """Peak resident memory (bytes) of each worker process: ``VmHWM`` from ``/proc/self/status``
    (reset by exec, unlike ``ru_maxrss``, which a spawned worker inherits from its parent)."""

    def peak():
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    return {str(k): int(v) for k, v in client.run(peak).items()}


# -- driver ----------------------------------------------------------------------------------


def _settings(vol: ChunkedVolume, grid: BrickGrid, **kw) -> dict:
    src = vol.spec
    source = {"kind": src.kind, "path": None if src.path is None else os.path.abspath(src.path), "key": src.key}
    if src.kind in ("zarr", "tiff", "npy") and src.path:
        st = os.stat(src.path)
        source["mtime"] = st.st_mtime_ns if src.kind != "zarr" else None
        source["size"] = st.st_size if src.kind != "zarr" else None
    return {"source": source, "shape": list(vol.shape), "dtype": str(vol.dtype), "spacing": list(vol.spacing),
            "brick": list(grid.brick_shape), "halo": list(grid.halo), **kw}


def compress_bricked(source, output, *, brick=DEFAULT_BRICK, halo=DEFAULT_HALO, spacing=None, bpp=None, ratio=None,
                     gaussians=None, preset="default", steps=None, seed=0, device="cpu", resume=False,
                     client=None, scheduler=None, workers=2, memory_limit="2GB", processes=True, timeout=10.0,
                     threads=None, progress: Callable[[BrickProgress], object] | None = None, encoder=None,
                     keep_parts=False, stop: threading.Event | None = None, **options) -> dict:
    """Compress a chunked volume brick by brick into ``output`` (.vmg); returns a report dict.

    ``source``: Zarr/OME-Zarr path, TIFF, .npy, or a dask array (``chunked_input``). ``brick``,
    ``halo``: voxels (one int or ZYX triple). Budget for the whole file: at most one of ``bpp``,
    ``ratio``, ``gaussians`` (default 0.073 bpp). ``preset``/``steps``/``options`` go to the
    encoder with ``device``. ``resume`` reuses the finished bricks in ``OUT.vmg.parts``.
    ``client`` (a dask Client) or ``scheduler`` (address) or a LocalCluster of ``workers``
    processes with ``memory_limit`` each. ``threads``: numba threads per task (default: CPUs /
    workers). ``encoder``: a stand-in for ``encode.compress`` (tests of the driver only).

    ``stop``: a ``threading.Event`` another thread may set (a GUI's Stop). Encode tasks are
    submitted at most one per worker thread at a time, so once it is set no new brick starts;
    the bricks in flight finish and are staged, no ``.vmg`` is written, the parts stay for
    ``resume``, and the report has ``stopped=True`` and ``output=None``.
    """
    from distributed import as_completed

    t0 = time.perf_counter()
    out = Path(output)
    if out.suffix.lower() != ".vmg":
        raise InputError(f"output {out}: a bricked encode writes a .vmg file")
    if not out.parent.exists():
        raise FileNotFoundError(2, "output directory does not exist", str(out.parent))
    vol = open_input(source, spacing)
    check_bricked_size(vol, brick)  # before the brick table of a volume it could never finish exists
    grid = BrickGrid(vol.shape, brick, halo)
    vol = vol.rechunked(grid.brick_shape)
    _budget_bytes(1, 1, bpp, ratio, gaussians)  # validate the budget before any work
    from ..encode.config import make_config

    make_config(preset, steps, **options)  # validate training options before any work
    settings = _settings(vol, grid, bpp=bpp, ratio=ratio, gaussians=gaussians, preset=preset, steps=steps,
                         seed=int(seed), options=options, device=device)
    staging = Staging(out, settings, resume=resume)
    own_client = client is None
    if own_client:
        try:
            client = make_client(scheduler, workers=workers, memory_limit=memory_limit, processes=processes,
                                 timeout=timeout)
        except BaseException:
            staging.discard_if_unused()  # a failed start leaves no parts directory behind
            raise
    try:
        n_workers = max(1, len(client.scheduler_info().get("workers", {})) or 1)
        if threads is None:
            threads = max(1, (os.cpu_count() or 1) // n_workers)
        stats = _run_stats(client, vol, grid, staging, stop)
        if stats is None or (stop is not None and stop.is_set()):
            return {"bricks": len(grid), "encoded": 0, "background": 0, "reused": 0, "stopped": True,
                    "output": None, "parts": str(staging.dir), "seconds": time.perf_counter() - t0}
        plan = make_plan(stats, grid, vol.dtype.itemsize, bpp=bpp, ratio=ratio, gaussians=gaussians)
        done = staging.finished(grid, plan.node_owner)  # each part checked as the reader would
        report = {"bricks": len(grid), "encoded": 0, "background": 0, "reused": 0}
        count = 0

        def tick(index, n, kind):
            nonlocal count
            count += 1
            report[kind] += 1
            if progress is not None:
                progress(BrickProgress(count, len(grid), index, n, kind, time.perf_counter() - t0))

        for i in sorted(done):
            tick(i, staging.read(i).count, "reused")
        todo = []
        vol_future = client.scatter(vol, broadcast=True, hash=False) if vol.spec.kind == "array" else vol
        for b in grid:
            if b.index in done:
                continue
            mine = np.flatnonzero(plan.node_owner == b.index)
            if plan.background[b.index]:
                values = np.full(len(mine), (plan.levels[b.index] - plan.offset) / plan.scale)
                from ..gaussians import GaussianVolume

                staging.write(quantize_part(GaussianVolume.empty(grid.shape), b, mine, values))
                tick(b.index, 0, "background")
                continue
            job = {
                "encoder": encoder, "seed": int(seed), "threads": threads, "offset": plan.offset, "scale": plan.scale,
                "n_brick": int(plan.n_brick[b.index]),
                "brick_bytes": None if plan.brick_bytes is None else int(plan.brick_bytes[b.index]),
                "node_index": mine, "node_points": plan.node_points[mine],
                "encoder_kwargs": {"preset": preset, "steps": steps, "device": device, **options},
            }
            todo.append((b, job))

        # A key unique to this run: a resumed run must not reuse the key of a task the
        # crashed run cancelled (the scheduler may apply that cancel to the new task).
        run = uuid.uuid4().hex[:8]

        def submit(b, job):
            return client.submit(encode_brick_task, vol_future, grid, b, job, pure=False,
                                 key=f"volmicro-brick-{b.index}-{staging.hash[:12]}-{run}")

        # no more bricks in flight than worker threads, so a stop lets only those finish
        window = len(todo) if stop is None else max(1, _worker_threads(client))
        queued = iter(todo)
        pending = [submit(*bj) for bj in itertools.islice(queued, window)]
        running = as_completed(pending)
        try:
            for fut in running:
                part = fut.result()
                pending.remove(fut)
                staging.write(part)
                tick(part.index, part.count, "encoded")
                if stop is None or not stop.is_set():
                    nxt = next(queued, None)
                    if nxt is not None:
                        pending.append(submit(*nxt))
                        running.add(pending[-1])
        except BaseException:
            for f in pending:
                f.cancel()
            raise
        stopped = report["encoded"] + report["background"] + report["reused"] < len(grid)
        if processes and own_client and scheduler is None:
            report["worker_peak_bytes"] = worker_peak_memory(client)
    finally:
        if own_client:
            cluster = getattr(client, "cluster", None)
            client.close()
            if cluster is not None and scheduler is None:
                cluster.close()
    if stopped:
        report.update(stopped=True, output=None, parts=str(staging.dir), seconds=time.perf_counter() - t0)
        return report
    file_bytes = staging.write_verified(out, lambda path: assemble(staging, grid, vol, plan, path))
    if not keep_parts:
        staging.remove()
    n_vox = int(np.prod(vol.shape, dtype=np.int64))
    from ..container import read_info

    info = read_info(out)
    report.update(stopped=False, output=str(out), n_gaussians=info["n_gaussians"], file_bytes=file_bytes,
                  bpp=8.0 * file_bytes / n_vox, ratio=n_vox * vol.dtype.itemsize / file_bytes,
                  seconds=time.perf_counter() - t0, shape=list(vol.shape), brick=list(grid.brick_shape),
                  halo=list(grid.halo), offset=plan.offset, scale=plan.scale,
                  background_shape=None if plan.field_shape is None else list(plan.field_shape))
    return report


def _run_stats(client, vol: ChunkedVolume, grid: BrickGrid, staging: Staging, stop=None) -> list[BrickStats] | None:
    """Per-brick statistics, cached in the staging directory so a resume does not read the volume twice.
    None when ``stop`` (a ``threading.Event``) was set before the pass finished."""
    path = staging.dir / "stats.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                n = len(grid)
                if len(z["core_max"]) == n:
                    return [BrickStats(i, float(z["core_max"][i]), float(z["level"][i]), z[f"c{i}"], z[f"r{i}"],
                                       float(z["noise"][i]))
                            for i in range(n)]
        except (OSError, ValueError, KeyError):
            pass
    src = client.scatter(vol, broadcast=True, hash=False) if vol.spec.kind == "array" else vol
    futures = [client.submit(brick_stats_task, src, b, pure=False) for b in grid]
    if stop is None:
        stats = client.gather(futures)
    else:  # a stop cancels the pass (nothing is cached; a resumed run reads the statistics again)
        from distributed import as_completed

        stats = []
        try:
            for fut in as_completed(futures):
                stats.append(fut.result())
                if stop.is_set():
                    return None
        finally:
            if len(stats) < len(futures):
                client.cancel(futures)
    stats = sorted(stats, key=lambda s: s.index)
    arrays = {key: np.array([getattr(s, key) for s in stats]) for key in ("core_max", "level", "noise")}
    for s in stats:
        arrays[f"c{s.index}"] = s.core_sample
        arrays[f"r{s.index}"] = s.read_sample
    from .staging import _write_atomic

    _write_atomic(path, lambda fh: np.savez(fh, **arrays))
    return stats


def assemble(staging: Staging, grid: BrickGrid, vol: ChunkedVolume, plan: Plan, output: Path) -> int:
    """Write the ``.vmg`` from the parts (every brick, in C order), atomically; returns its size in bytes.

    Two passes over the parts: the first builds the brick table (counts, boxes, CRCs) and the
    background field, the second streams the payloads through ``container.write_bricks``, which
    checks each against its table entry, so memory holds one part at a time.
    """
    from ..container import brick_entry, write_bricks
    from ..container.codec import payload_bytes
    from ..intensity import IntensityMapping

    entries = []
    field = None
    if plan.field_shape is not None:
        field = np.zeros(len(plan.node_points), np.float64)
        seen = np.zeros(len(plan.node_points), bool)
    for b in grid:
        part = staging.read(b.index)
        entries.append(brick_entry(b.core_lo, b.core_hi, part.planes, part.pos_lo, part.pos_hi,
                                   part.reach_lo, part.reach_hi)[0])
        if field is not None:
            field[part.node_index] = part.node_values
            seen[part.node_index] = True
    background = None
    if field is not None:
        if not seen.all():
            raise VolmicroError(f"{staging.dir}: background nodes missing from the parts; run again without --resume")
        background = field.reshape(plan.field_shape).astype(np.float32)

    def payloads():  # one brick at a time
        for b in grid:
            yield payload_bytes(staging.read(b.index).planes)

    return write_bricks(output, shape=grid.shape, spacing=vol.spacing,
                        mapping=IntensityMapping(plan.offset, plan.scale, vol.dtype), background=background,
                        bricks=entries, payloads=payloads())
