"""``napari_volmicro.load`` of a many-brick file: a lazy model that reads only the bricks a region needs."""

import copy
import json
import pickle

import numpy as np
import pytest
from test_knn_centres import knn_oracle

import napari_volmicro
from napari_volmicro import container
from napari_volmicro.cli import main
from napari_volmicro.container import LazyGaussianVolume, VmgFile
from napari_volmicro.errors import ChecksumError, FormatError
from napari_volmicro.intensity import IntensityMapping
from napari_volmicro.region import normalize_region
from napari_volmicro.synthetic import random_volume

#: meets 8 or more bricks around the brick corner (16, 32, 32)
CORNER = (slice(9, 27), slice(10, 37), slice(28, 53))


@pytest.fixture
def bricked(tmp_path):
    """400 random Gaussians over (40, 48, 56), uint16 mapping, background field, 16^3 bricks (36 bricks);
    returns the path and the whole model read eagerly."""
    rng = np.random.default_rng(7)
    gv = random_volume(shape=(40, 48, 56), n=400, seed=11, mapping=IntensityMapping(50.0, 800.0, np.uint16))
    gv = gv.replace(background=rng.uniform(0.0, 0.1, (3, 4, 4)).astype(np.float32), spacing=(2.0, 0.5, 0.5))
    path = container.save(gv, tmp_path / "b.vmg", brick_shape=(16, 16, 16))
    return path, container.load(path)


@pytest.fixture
def brick_reads(monkeypatch):
    """Records every brick index ``VmgFile._load_brick`` reads from disk (in any thread)."""
    reads = []
    original = VmgFile._load_brick

    def counting(self, i, fh=None):
        reads.append(i)
        return original(self, i, fh)

    monkeypatch.setattr(VmgFile, "_load_brick", counting)
    return reads


def payload_bytes(vmg, indices):
    return sum(vmg.bricks[i].nbytes for i in indices)


def test_load_is_lazy_for_many_bricks_and_eager_for_one(tmp_path, bricked, brick_reads):
    path, whole = bricked
    gv = napari_volmicro.load(path)
    assert isinstance(gv, LazyGaussianVolume) and isinstance(gv, napari_volmicro.GaussianVolume)
    # what the header says costs no brick reads
    assert gv.shape == whole.shape and gv.spacing == whole.spacing and gv.mapping == whole.mapping
    assert gv.n_gaussians == len(gv) == whole.n_gaussians == 400
    np.testing.assert_array_equal(gv.background, whole.background)
    assert brick_reads == [] and not gv.loaded
    # the parameter arrays read every brick once, then stay
    for f in ("centers", "scales", "quaternions", "amplitudes"):
        np.testing.assert_array_equal(getattr(gv, f), getattr(whole, f))
    assert sorted(brick_reads) == list(range(len(gv.vmg.bricks))) and gv.loaded
    np.testing.assert_array_equal(gv.extents(), whole.extents())
    assert len(brick_reads) == len(gv.vmg.bricks)
    # copies share the file; a pickle reopens it
    assert copy.deepcopy(gv) is gv
    again = pickle.loads(pickle.dumps(gv))
    assert isinstance(again, LazyGaussianVolume) and not again.loaded
    # one brick: the whole model, as before
    single = container.save(whole, tmp_path / "one.vmg")
    eager = napari_volmicro.load(single)
    assert type(eager) is napari_volmicro.GaussianVolume
    np.testing.assert_array_equal(eager.centers, container.load(single).centers)


def test_region_decode_reads_only_the_bricks_that_reach_it(bricked, brick_reads):
    path, whole = bricked
    gv = napari_volmicro.load(path)
    vmg = gv.vmg
    opened = vmg.bytes_read  # header, tables, background section
    needed = vmg.bricks_for_region(CORNER)
    assert 8 <= len(needed) < len(vmg.bricks)
    for evaluator in ("dense", "reference"):
        np.testing.assert_array_equal(gv.decode(CORNER, evaluator), whole.decode(CORNER, evaluator))
    np.testing.assert_array_equal(gv.decode_model(CORNER), whole.decode_model(CORNER))
    assert sorted(brick_reads) == needed  # each needed brick read once, then cached
    assert vmg.bytes_read - opened == payload_bytes(vmg, needed)
    # panning back over the same bricks reads nothing; a strided region is exact too
    brick_reads.clear()
    np.testing.assert_array_equal(gv.decode(CORNER), whole.decode(CORNER))
    assert brick_reads == []
    strided = (slice(0, 40, 3), slice(5, 48, 2), slice(1, 56, 5))
    np.testing.assert_array_equal(gv.decode(strided), whole.decode(strided))
    np.testing.assert_array_equal(gv.decode(), whole.decode())
    assert not gv.loaded  # decoding never keeps the whole model


def test_points_read_only_the_bricks_reaching_their_bounding_box(bricked, brick_reads):
    path, whole = bricked
    gv = napari_volmicro.load(path)
    rng = np.random.default_rng(3)
    pts = rng.uniform((2.0, 3.0, 4.0), (12.0, 14.0, 15.0), size=(50, 3))
    np.testing.assert_array_equal(gv.evaluate(pts, "reference"), whole.evaluate(pts, "reference"))
    assert sorted(brick_reads) == gv.vmg.bricks_meeting(pts.min(axis=0), pts.max(axis=0))
    assert 0 < len(brick_reads) < len(gv.vmg.bricks)


def test_brick_cache_is_bounded(bricked, brick_reads):
    path, whole = bricked
    gv = container.open_model(path, cache_gaussians=40)
    vmg = gv.vmg
    a = (slice(0, 8), slice(0, 8), slice(0, 8))
    b = (slice(32, 40), slice(40, 48), slice(48, 56))
    for region in (a, b, a):
        np.testing.assert_array_equal(gv.decode(region), whole.decode(region))
        assert vmg._cached <= 40 and sum(m.n_gaussians for m in vmg._models.values()) <= 40
    need_a, need_b = vmg.bricks_for_region(a), vmg.bricks_for_region(b)
    assert not set(need_a) & set(need_b)
    count = [sum(vmg.bricks[i].count for i in need) for need in (need_a, need_b)]
    assert max(count) <= 40 < sum(count)  # each fits in the cache, both cannot stay
    assert sorted(brick_reads) == sorted(need_a + need_b + need_a)  # a was evicted, read again
    # without a cache every decode reads again; with the default one, nothing
    uncached = container.open_model(path, cache_gaussians=0)
    brick_reads.clear()
    uncached.decode(a)
    uncached.decode(a)
    assert len(brick_reads) == 2 * len(need_a)


def test_knn_centres_on_a_region_uses_the_k_nearest_among_the_bricks_read(tmp_path):
    """The docstring's claim for the paper's rule: whole-model KNN <= region KNN <= dense (positive amplitudes), and the
    region KNN is exactly the K-nearest sum over the Gaussians of the bricks read."""
    model = random_volume(shape=(32, 48, 48), n=300, seed=5, scale_range=(0.8, 5.0))
    assert model.amplitudes.min() > 0
    path = container.save(model, tmp_path / "k.vmg", brick_shape=(8, 16, 16))
    gv, whole = napari_volmicro.load(path), container.load(path)
    region = (slice(6, 12), slice(14, 26), slice(20, 34))
    grid = normalize_region(region, gv.shape)
    k = 16
    got = gv.decode_model(region, "knn-centres", k).astype(np.float64)
    sub = gv.vmg.load_region(grid)
    assert sub.n_gaussians < whole.n_gaussians
    want = knn_oracle(sub, grid.points(), k).reshape(grid.shape)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    whole_knn = knn_oracle(whole, grid.points(), k).reshape(grid.shape)
    np.testing.assert_allclose(whole.decode_model(region, "knn-centres", k), whole_knn, rtol=1e-5, atol=1e-6)
    dense = whole.decode_model(region, "dense").astype(np.float64)
    assert np.all(whole_knn <= got + 1e-5) and np.all(got <= dense + 1e-5)
    assert np.sum(got > whole_knn + 1e-4) > 0  # the region really keeps terms the whole model dropped
    # K at least the Gaussians read: the dense decode
    np.testing.assert_allclose(gv.decode_model(region, "knn-centres", sub.n_gaussians), dense, rtol=1e-5, atol=1e-6)


def test_knn_on_a_region_decodes_as_the_whole_model(tmp_path):
    """The default KNN rule depends only on the Gaussians that reach a voxel: a region of a many-brick
    file decodes exactly as the whole model does (crowded enough that K=4 drops terms)."""
    model = random_volume(shape=(32, 48, 48), n=300, seed=5, scale_range=(0.8, 5.0))
    path = container.save(model, tmp_path / "k.vmg", brick_shape=(8, 16, 16))
    gv, whole = napari_volmicro.load(path), container.load(path)
    region = (slice(6, 12), slice(14, 26), slice(20, 34))
    assert gv.vmg.load_region(normalize_region(region, gv.shape)).n_gaussians < whole.n_gaussians
    got, loss = gv.decode_measured(region, "knn", 4)
    assert loss.changed > 0  # K=4 really drops terms here
    np.testing.assert_allclose(
        gv.decode_model(region, "knn", 4), whole.decode_model(region, "knn", 4), rtol=1e-6, atol=1e-7
    )
    np.testing.assert_array_equal(got, whole.decode(region, "knn", 4))


def test_cli_decode_roi_on_a_bricked_file_reads_only_needed_bricks(tmp_path, bricked, brick_reads, capsys):
    path, whole = bricked
    out = tmp_path / "roi.npy"
    roi = "9:27,10:37,28:53"
    assert main(["decode", str(path), "-o", str(out), "--roi", roi, "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    vmg = VmgFile(path)
    needed = vmg.bricks_for_region(CORNER)
    assert sorted(brick_reads) == needed
    assert report["bytes_read"] == vmg.bytes_read + payload_bytes(vmg, needed)
    np.testing.assert_array_equal(np.load(out), whole.decode(CORNER))


def test_damaged_bricks_fail_only_the_regions_that_need_them(tmp_path, bricked):
    path, whole = bricked
    vmg = VmgFile(path)
    data = bytearray(path.read_bytes())
    data[vmg.bricks[0].offset + 3] ^= 0xFF
    bad = tmp_path / "bad.vmg"
    bad.write_bytes(bytes(data))
    gv = napari_volmicro.load(bad)
    far = (slice(32, 40), slice(40, 48), slice(48, 56))
    assert 0 not in vmg.bricks_for_region(far)
    np.testing.assert_array_equal(gv.decode(far), whole.decode(far))
    with pytest.raises(ChecksumError, match=r"bad\.vmg: brick 0: payload checksum mismatch"):
        gv.decode((slice(0, 4), slice(0, 4), slice(0, 4)))
    # a truncated many-brick file is refused when opened as a model
    short = tmp_path / "short.vmg"
    short.write_bytes(path.read_bytes()[: vmg.bricks[-1].offset + 1])
    with pytest.raises(FormatError, match=r"short\.vmg: truncated.*1 of 36 bricks cut off"):
        napari_volmicro.load(short)


def test_reach_check_runs_once_per_brick_and_checksums_every_read(tmp_path, bricked, monkeypatch):
    from napari_volmicro.container.codec import build_model, dequantize_brick, gaussian_bounds, raw_bounds

    path, whole = bricked
    checked = []
    original = VmgFile._check_reach

    def counting(self, i, part):
        checked.append(i)
        return original(self, i, part)

    monkeypatch.setattr(VmgFile, "_check_reach", counting)
    vmg = VmgFile(path)  # no cache: every load reads the bytes again
    vmg.load_bricks([0, 1])
    vmg.load_bricks([1, 2])
    assert checked == [0, 1, 2]  # a re-read brick is not re-checked for reach...
    data = bytearray(path.read_bytes())
    data[vmg.bricks[1].offset] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="brick 1"):  # ...but its checksum is
        vmg.load_bricks([1])
    # the reader's fast reach bounds agree with the writer's
    for i in (0, 5, 20):
        b = vmg.bricks[i]
        part = dequantize_brick(path.read_bytes()[b.offset : b.end], b.count, b.pos_lo, b.pos_hi, "x")
        for fast, slow in zip(raw_bounds(part), gaussian_bounds(build_model([part], whole.shape))):
            np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-5)


def test_decode_to_zarr_reads_each_brick_once(tmp_path, bricked, brick_reads):
    from napari_volmicro.bricks import decode_to_zarr, open_input

    path, whole = bricked
    info = decode_to_zarr(path, tmp_path / "o.zarr", chunks=(16, 20, 24))  # chunks straddle the 16^3 bricks
    assert info["n_chunks"] == 27 and sorted(brick_reads) == list(range(len(VmgFile(path).bricks)))
    assert info["bytes_read"] == path.stat().st_size
    np.testing.assert_array_equal(open_input(tmp_path / "o.zarr").read((slice(None),) * 3), whole.decode())
