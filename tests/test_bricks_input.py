"""Chunked inputs: Zarr v2/v3, OME-Zarr, TIFF, .npy and dask arrays, read by region; bad inputs."""

from pathlib import Path

import numpy as np
import pytest

from napari_volmicro.bricks import open_input
from napari_volmicro.errors import InputError

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def nuclei():
    import tifffile

    return tifffile.imread(DATA / "cellseg3d_nuclei.tif")[:40, :48, :56]


REGION = (slice(3, 29), slice(10, 47), slice(0, 56))


@pytest.mark.parametrize("fmt", [2, 3])
def test_zarr_array_reads_regions(tmp_path, nuclei, fmt):
    import zarr

    z = zarr.create_array(str(tmp_path / "v.zarr"), shape=nuclei.shape, chunks=(8, 16, 16), dtype=nuclei.dtype,
                          zarr_format=fmt)
    z[:] = nuclei
    vol = open_input(tmp_path / "v.zarr")
    assert vol.shape == nuclei.shape and vol.dtype == nuclei.dtype and vol.chunks == (8, 16, 16)
    assert np.array_equal(vol.read(REGION), nuclei[REGION])


@pytest.mark.parametrize("fmt", [2, 3])
def test_ome_zarr_group_gives_level_zero_and_spacing(tmp_path, nuclei, fmt):
    import zarr

    g = zarr.open_group(str(tmp_path / "o.zarr"), mode="w", zarr_format=fmt)
    a = g.create_array("s0", shape=(1, 1) + nuclei.shape, chunks=(1, 1, 16, 16, 16), dtype=nuclei.dtype)
    a[:] = nuclei[None, None]
    g.create_array("s1", shape=(1, 1, 20, 24, 28), chunks=(1, 1, 8, 8, 8), dtype=nuclei.dtype)
    ms = [{"version": "0.4", "axes": [{"name": n} for n in "tczyx"],
           "datasets": [{"path": "s0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 2.0, 0.5, 0.5]}]},
                        {"path": "s1", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 4, 1, 1]}]}]}]
    if fmt == 3:
        g.attrs["ome"] = {"version": "0.5", "multiscales": ms}
    else:
        g.attrs["multiscales"] = ms
    vol = open_input(tmp_path / "o.zarr")
    assert vol.shape == nuclei.shape
    assert vol.spacing == (2.0, 0.5, 0.5)
    assert np.array_equal(vol.read(REGION), nuclei[REGION])


def test_tiff_npy_and_dask_inputs(tmp_path, nuclei):
    import dask.array as da
    import tifffile

    tifffile.imwrite(tmp_path / "v.tif", nuclei, imagej=True, resolution=(1 / 0.25, 1 / 0.25),
                     metadata={"spacing": 3.0, "unit": "um", "axes": "ZYX"})
    vol = open_input(tmp_path / "v.tif")
    assert vol.shape == nuclei.shape
    assert vol.spacing == pytest.approx((3.0, 0.25, 0.25))
    assert np.array_equal(vol.read(REGION), nuclei[REGION])
    np.save(tmp_path / "v.npy", nuclei)
    assert np.array_equal(open_input(tmp_path / "v.npy").read(REGION), nuclei[REGION])
    d = da.from_array(nuclei, chunks=(5, 7, 9))
    dv = open_input(d, spacing=(2, 1, 1))
    assert dv.spacing == (2.0, 1.0, 1.0)
    assert np.array_equal(dv.read(REGION), nuclei[REGION])


def test_pickles_as_its_spec(tmp_path, nuclei):
    import pickle

    import zarr

    z = zarr.create_array(str(tmp_path / "v.zarr"), shape=nuclei.shape, chunks=(8, 16, 16), dtype=nuclei.dtype)
    z[:] = nuclei
    vol = open_input(tmp_path / "v.zarr", spacing=(2, 1, 1))
    blob = pickle.dumps(vol)
    assert len(blob) < 2000  # the path, not the data
    back = pickle.loads(blob)
    assert back.spacing == (2.0, 1.0, 1.0)
    assert np.array_equal(back.read(REGION), nuclei[REGION])


def test_misaligned_dask_chunks_are_rechunked(nuclei):
    import dask.array as da

    vol = open_input(da.from_array(nuclei, chunks=(7, 13, 5)))
    assert not vol.aligned((16, 16, 16))
    re = vol.rechunked((16, 16, 16))
    assert re.aligned((16, 16, 16)) and re.chunks == (16, 16, 16)
    assert np.array_equal(re.read(REGION), nuclei[REGION])


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        open_input(tmp_path / "nothing.zarr")


def test_zarr_group_without_a_3d_array(tmp_path):
    import zarr

    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    g.create_array("plane", shape=(64, 64), chunks=(32, 32), dtype="u2")
    with pytest.raises(InputError, match="no 3D array"):
        open_input(tmp_path / "g.zarr")
    g.create_array("a", shape=(16, 16, 16), chunks=(8, 8, 8), dtype="u2")
    g.create_array("b", shape=(16, 16, 16), chunks=(8, 8, 8), dtype="u2")
    with pytest.raises(InputError, match="several 3D arrays"):
        open_input(tmp_path / "g.zarr")
    assert open_input(f"{tmp_path / 'g.zarr'}::b").shape == (16, 16, 16)
    with pytest.raises(InputError, match="no array 'c'"):
        open_input(f"{tmp_path / 'g.zarr'}::c")


def test_not_a_zarr_and_multichannel(tmp_path):
    import dask.array as da

    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(InputError, match="not a Zarr"):
        open_input(tmp_path / "empty.zarr")
    with pytest.raises(InputError, match="axis 0 .* has 3 entries"):
        open_input(da.zeros((3, 16, 16, 16), chunks=8))
    with pytest.raises(InputError, match="2 dimension"):
        open_input(da.zeros((16, 16), chunks=8))
    with pytest.raises(InputError, match="at least 8"):
        open_input(da.zeros((4, 16, 16), chunks=8))
    with pytest.raises(InputError, match="unsupported input"):
        open_input(Path(__file__))
