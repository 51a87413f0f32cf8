"""Bricked encoding on dask.distributed: the real encoder, resume after a crash, background bricks,
misaligned chunks, bad scheduler addresses. Tiny volumes, one in-process worker."""

import time
from pathlib import Path

import numpy as np
import pytest

from napari_volmicro import metrics
from napari_volmicro.bricks import BrickGrid, compress_bricked, make_client
from napari_volmicro.bricks.encode_bricks import _default_encoder, brick_seed
from napari_volmicro.container import VmgFile, load
from napari_volmicro.errors import InputError, VolmicroError
from napari_volmicro.gaussians import GaussianVolume
from napari_volmicro.intensity import IntensityMapping

DATA = Path(__file__).parent / "data"
FAST = {"steps": 12, "gate": False}  # real encoder, few steps: tests the pipeline, not the quality



@pytest.fixture(scope="module")
def nuclei_zarr(tmp_path_factory):
    import tifffile
    import zarr

    vol = tifffile.imread(DATA / "cellseg3d_nuclei.tif")[30:50, 20:52, 30:62]
    path = tmp_path_factory.mktemp("in") / "nuclei.zarr"
    z = zarr.create_array(str(path), shape=vol.shape, chunks=(10, 16, 16), dtype=vol.dtype)
    z[:] = vol
    return path, vol


class GridEncoder:
    """Stand-in encoder (driver mechanics only): isotropic Gaussians on a 3-voxel lattice at the
    brightest lattice points; records the seeds it was called with; can crash on one seed."""

    calls: list = []

    def __init__(self, crash_on_seed=None):
        self.crash_on_seed = crash_on_seed

    def __call__(self, data, spacing, *, gaussians, seed, place_box=None, **kwargs):
        GridEncoder.calls.append(seed)
        if seed == self.crash_on_seed:
            raise RuntimeError("simulated crash")
        data = np.asarray(data, np.float64)
        off = float(np.median(data))
        scale = float(data.max() - off) or 1.0
        pts = np.stack(np.meshgrid(*[np.arange(1, n, 3) for n in data.shape], indexing="ij"), -1).reshape(-1, 3)
        if place_box is not None:  # the protocol: ``gaussians`` centred in the brick's core
            pts = pts[np.all((pts >= place_box[0]) & (pts < place_box[1]), axis=1)]
        vals = (data[tuple(pts.T)] - off) / scale
        keep = np.argsort(-vals, kind="stable")[:gaussians]
        n = len(keep)
        return GaussianVolume(
            data.shape, pts[keep].astype(np.float32), np.full((n, 3), 1.3, np.float32),
            np.tile(np.float32([1, 0, 0, 0]), (n, 1)), vals[keep].astype(np.float32),
            mapping=IntensityMapping(off, scale, np.float32),
        )


class CrashingRealEncoder:
    """The real encoder, except that it fails on one brick (a simulated crash mid-run)."""

    def __init__(self, crash_on_seed):
        self.crash_on_seed = crash_on_seed

    def __call__(self, data, spacing, **kwargs):
        if kwargs["seed"] == self.crash_on_seed:
            raise RuntimeError("simulated crash")
        return _default_encoder(data, spacing, **kwargs)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, nuclei_zarr, client):
    """An uninterrupted bricked encode with the real encoder (the default)."""
    path, vol = nuclei_zarr
    out = tmp_path_factory.mktemp("ref") / "ref.vmg"
    report = compress_bricked(path, out, brick=(20, 16, 16), halo=4, bpp=0.5, client=client, **FAST)
    return out, report


def test_real_encoder_writes_a_bricked_file_within_budget(reference_run, nuclei_zarr):
    out, report = reference_run
    _, vol = nuclei_zarr
    assert report["bricks"] == 4 and report["encoded"] + report["background"] == 4
    budget = int(0.5 * vol.size / 8)
    assert report["file_bytes"] == out.stat().st_size <= budget
    f = VmgFile(out)
    assert len(f.bricks) == 4 and f.background is not None
    assert f.mapping.dtype == vol.dtype
    grid = BrickGrid(vol.shape, (20, 16, 16))
    for i, b in enumerate(f.bricks):  # every Gaussian sits in the core of its brick
        assert b.core_lo == grid[i].core_lo
        sub = f.load_bricks([i])
        assert np.all(grid.owner(sub.centers) == i)
    gv = f.load()
    assert gv.n_gaussians > 0.8 * (budget - 2000) / 22
    recon = gv.decode()
    # few training steps: a rough model; the bricks together must match the same encoder run on
    # the whole volume as one brick with as many Gaussians (seams; at this tiny budget the four
    # bricks' table entries would otherwise cost a third of the bytes), and beat the flat background
    from napari_volmicro.encode import compress

    one = compress(vol, gaussians=gv.n_gaussians, device="cpu", **FAST).decode()
    flat = np.full_like(vol, np.median(vol))
    psnr = metrics.psnr_full(vol, recon)
    assert psnr > metrics.psnr_full(vol, one) - 1.0
    assert psnr > metrics.psnr_full(vol, flat) + 1.0


def test_resume_after_a_crash_gives_the_same_bytes(tmp_path, reference_run, nuclei_zarr, client):
    ref, _ = reference_run
    path, _ = nuclei_zarr
    out = tmp_path / "ref.vmg"
    kwargs = dict(brick=(20, 16, 16), halo=4, bpp=0.5, client=client, **FAST)
    with pytest.raises(RuntimeError, match="simulated crash"):
        compress_bricked(path, out, encoder=CrashingRealEncoder(brick_seed(0, 3)), **kwargs)
    assert not out.exists()
    parts = sorted(p.name for p in (tmp_path / "ref.vmg.parts").glob("brick-*.npz"))
    assert parts and "brick-00000003.npz" not in parts
    report = compress_bricked(path, out, resume=True, **kwargs)
    assert report["reused"] == len(parts) and report["encoded"] == 4 - len(parts)
    assert out.read_bytes() == ref.read_bytes()
    assert not (tmp_path / "ref.vmg.parts").exists()


def test_resume_refuses_parts_of_another_encode(tmp_path, nuclei_zarr, client):
    path, _ = nuclei_zarr
    out = tmp_path / "m.vmg"
    kwargs = dict(brick=16, halo=2, gaussians=40, client=client)
    with pytest.raises(RuntimeError):
        compress_bricked(path, out, encoder=GridEncoder(crash_on_seed=brick_seed(0, 5)), **kwargs)
    with pytest.raises(VolmicroError, match="different encode"):
        compress_bricked(path, out, encoder=GridEncoder(), resume=True, seed=1, **{**kwargs, "client": client})
    # without --resume the old parts are discarded and the encode starts over
    compress_bricked(path, out, encoder=GridEncoder(), **kwargs)
    assert load(out).n_gaussians <= 40


def test_background_bricks_cost_an_entry_and_no_training(tmp_path, client):
    import dask.array as da

    vol = np.full((32, 32, 48), 100, np.uint16)
    zz, yy, xx = np.mgrid[:12, :12, :12]
    vol[2:14, 2:14, 2:14] += (2000 * np.exp(-((zz - 6) ** 2 + (yy - 6) ** 2 + (xx - 6) ** 2) / 8)).astype(np.uint16)
    GridEncoder.calls.clear()
    out = tmp_path / "bg.vmg"
    progress = []
    report = compress_bricked(da.from_array(vol, chunks=16), out, brick=16, halo=2, gaussians=30, client=client,
                              encoder=GridEncoder(), progress=progress.append)
    assert report["bricks"] == 12 and report["encoded"] == 1 and report["background"] == 11
    assert GridEncoder.calls == [brick_seed(0, 0)]
    assert [p.done for p in progress] == list(range(1, 13)) and progress[-1].total == 12
    f = VmgFile(out)
    assert len(f.bricks) == 12 and sum(b.count > 0 for b in f.bricks) == 1
    recon = f.load().decode()
    assert np.abs(recon[20:, 20:, 20:].astype(int) - 100).max() <= 1  # background level restored
    assert recon[8, 8, 8] > 1000


def test_misaligned_zarr_chunks_give_the_same_file(tmp_path, nuclei_zarr, client):
    import zarr

    path, vol = nuclei_zarr
    odd = tmp_path / "odd.zarr"
    z = zarr.create_array(str(odd), shape=vol.shape, chunks=(7, 13, 5), dtype=vol.dtype)
    z[:] = vol
    kwargs = dict(brick=16, halo=3, gaussians=60, client=client, encoder=GridEncoder())
    a = compress_bricked(path, tmp_path / "a.vmg", **kwargs)
    b = compress_bricked(odd, tmp_path / "b.vmg", **kwargs)
    assert a["n_gaussians"] == b["n_gaussians"] > 0
    assert (tmp_path / "a.vmg").read_bytes() == (tmp_path / "b.vmg").read_bytes()


def test_local_cluster_of_processes(tmp_path, nuclei_zarr):
    """Workers in their own processes reopen the Zarr by path (the data never travels)."""
    path, vol = nuclei_zarr
    report = compress_bricked(path, tmp_path / "p.vmg", brick=(20, 32, 16), halo=2, gaussians=50, workers=1,
                              memory_limit="1GB", encoder=GridEncoder())
    assert report["bricks"] == 2
    assert all(v > 0 for v in report["worker_peak_bytes"].values())
    assert load(tmp_path / "p.vmg").n_gaussians <= 50


def test_scheduler_that_does_not_answer():
    t0 = time.perf_counter()
    with pytest.raises(VolmicroError, match="did not answer within 2 s"):
        make_client("tcp://127.0.0.1:9", timeout=2)
    assert time.perf_counter() - t0 < 20


def test_bad_arguments(tmp_path, nuclei_zarr, client):
    path, _ = nuclei_zarr
    with pytest.raises(InputError, match=".vmg"):
        compress_bricked(path, tmp_path / "x.tif", client=client)
    with pytest.raises(InputError, match="at most one"):
        compress_bricked(path, tmp_path / "x.vmg", bpp=0.1, ratio=20, client=client)
    with pytest.raises(InputError, match="smaller than"):
        compress_bricked(path, tmp_path / "x.vmg", brick=8, bpp=0.01, client=client, encoder=GridEncoder())
    with pytest.raises(FileNotFoundError):
        compress_bricked(tmp_path / "missing.zarr", tmp_path / "x.vmg", client=client)
    with pytest.raises(VolmicroError, match="memory-limit"):
        make_client(workers=1, memory_limit="lots")
