"""Region decode of bricked files reads only the bricks it needs; OME-Zarr output; truncated files."""

import numpy as np
import pytest

from napari_volmicro.bricks import check_bricks, decode_region, decode_to_zarr, open_input
from napari_volmicro.container import VmgFile, save
from napari_volmicro.errors import FormatError, InputError
from napari_volmicro.intensity import IntensityMapping
from napari_volmicro.synthetic import random_volume


@pytest.fixture
def bricked(tmp_path):
    """400 random Gaussians over (40, 48, 56), uint16 mapping, background field, 16^3 bricks (36 bricks)."""
    rng = np.random.default_rng(7)
    gv = random_volume(shape=(40, 48, 56), n=400, seed=11, mapping=IntensityMapping(50.0, 800.0, np.uint16))
    gv = gv.replace(background=rng.uniform(0.0, 0.1, (3, 4, 4)).astype(np.float32), spacing=(2.0, 0.5, 0.5))
    path = save(gv, tmp_path / "b.vmg", brick_shape=(16, 16, 16))
    return path, VmgFile(path).load()


def test_region_across_brick_corners_equals_the_whole_decode(bricked):
    path, gv = bricked
    whole = gv.decode()
    region = (slice(9, 27), slice(10, 37), slice(28, 53))  # meets 8+ bricks around the corner (16, 32, 32)
    f = VmgFile(path)
    part = decode_region(path, region, vmg=f)
    assert np.array_equal(part, whole[region])
    used = f.bricks_for_region(region)
    assert 0 < len(used) < len(f.bricks)
    total_payload = sum(b.nbytes for b in f.bricks)
    header_and_tables = f.header.data_start + sum(s.length for s in f.sections)
    assert f.bytes_read == header_and_tables + sum(f.bricks[i].nbytes for i in used)
    assert f.bytes_read < header_and_tables + total_payload
    # a strided region too
    strided = (slice(0, 40, 3), slice(5, 48, 2), slice(1, 56, 5))
    assert np.array_equal(decode_region(path, strided), whole[strided])


def test_decode_to_ome_zarr_chunk_by_chunk(tmp_path, bricked):
    path, gv = bricked
    calls = []
    out = tmp_path / "out.zarr"
    info = decode_to_zarr(path, out, chunks=(16, 20, 24), progress=lambda d, t: calls.append((d, t)))
    assert info["n_chunks"] == 3 * 3 * 3 and calls[-1] == (27, 27)
    vol = open_input(out)  # read back as OME-Zarr: level 0, spacing from the metadata
    assert vol.spacing == (2.0, 0.5, 0.5) and vol.dtype == np.uint16 and vol.chunks == (16, 20, 24)
    assert np.array_equal(vol.read((slice(None),) * 3), gv.decode())
    # overwriting an existing output is atomic and leaves no temporary directories
    decode_to_zarr(path, out, chunks=64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.vmg", "out.zarr"]
    with pytest.raises(InputError, match=".zarr"):
        decode_to_zarr(path, tmp_path / "out.tif")


def test_truncated_bricked_file_opens_its_intact_bricks(tmp_path, bricked):
    path, gv = bricked
    f = VmgFile(path)
    cut = f.bricks[20].offset + 5  # inside brick 20's payload
    short = tmp_path / "short.vmg"
    short.write_bytes(path.read_bytes()[:cut])
    report = check_bricks(short)
    assert not report["complete"]
    assert report["intact"] == list(range(20))
    assert sorted(report["damaged"]) == list(range(20, len(f.bricks)))
    assert "truncated" in report["damaged"][20]
    # a region that needs only bricks before the cut decodes exactly
    g = VmgFile(short)
    region = (slice(0, 12), slice(0, 12), slice(0, 12))
    assert max(g.bricks_for_region(region)) < 20
    assert np.array_equal(decode_region(short, region), gv.decode(region))
    with pytest.raises(FormatError, match="truncated"):
        decode_region(short, None)
    # a flipped payload byte is reported as a checksum error for that brick only
    bad = bytearray(path.read_bytes())
    bad[f.bricks[3].offset + 2] ^= 0xFF
    (tmp_path / "bad.vmg").write_bytes(bytes(bad))
    report = check_bricks(tmp_path / "bad.vmg")
    assert list(report["damaged"]) == [3] and "checksum" in report["damaged"][3]


@pytest.fixture
def crowded_files(tmp_path):
    """400 Gaussians over (16, 20, 18) (up to ~47 reach a voxel), as a one-brick and an 8^3-brick file."""
    gv = random_volume((16, 20, 18), n=400, seed=3, mapping=IntensityMapping(10.0, 500.0, np.uint16))
    return gv, save(gv, tmp_path / "one.vmg"), save(gv, tmp_path / "many.vmg", brick_shape=(8, 8, 8))


@pytest.mark.parametrize("which", ["one", "many"])
def test_k_reaches_the_evaluator_in_every_region_decode_path(tmp_path, crowded_files, which, capsys):
    """``--k`` / ``k=`` reach the evaluator from the library, ``decode_region``, ``decode_to_zarr`` and the
    command line (.tif, --roi, .zarr), for one-brick and many-brick files."""
    from napari_volmicro import load
    from napari_volmicro.cli import main

    _, one, many = crowded_files
    path = one if which == "one" else many
    gv = VmgFile(path).load()  # the stored (quantised) model, read whole
    want = gv.decode(evaluator="knn", k=2)
    assert np.count_nonzero(want != gv.decode(evaluator="knn", k=32)) > 100  # K changes the result here
    region = (slice(3, 11), slice(2, 17), slice(5, 18))
    np.testing.assert_array_equal(load(path).decode(region, evaluator="knn", k=2), want[region])
    np.testing.assert_array_equal(decode_region(path, region, evaluator="knn", k=2), want[region])
    decode_to_zarr(path, tmp_path / "a.zarr", chunks=(8, 8, 8), evaluator="knn", k=2)
    np.testing.assert_array_equal(open_input(tmp_path / "a.zarr").read((slice(None),) * 3), want)
    for out, extra in (("c.tif", []), ("r.npy", ["--roi", "3:11,2:17,5:18"]), ("c.zarr", [])):
        assert main(["decode", str(path), "-o", str(tmp_path / out), "--evaluator", "knn", "--k", "2", *extra]) == 0
    capsys.readouterr()
    from napari_volmicro.volume_io import read_volume

    np.testing.assert_array_equal(read_volume(tmp_path / "c.tif")[0], want)
    np.testing.assert_array_equal(np.load(tmp_path / "r.npy"), want[region])
    np.testing.assert_array_equal(open_input(tmp_path / "c.zarr").read((slice(None),) * 3), want)
    # the paper's rule takes K the same way
    assert main(["decode", str(path), "-o", str(tmp_path / "p.tif"), "--evaluator", "knn-centres", "--k", "2"]) == 0
    paper = read_volume(tmp_path / "p.tif")[0]
    np.testing.assert_array_equal(paper, load(path).decode(evaluator="knn-centres", k=2))
    assert not np.array_equal(paper, load(path).decode(evaluator="knn-centres", k=32))
