"""volume_io: reading TIFF/.npy with spacing, refusing unusable volumes, atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_volmicro.errors import InputError, VolmicroError
from napari_volmicro.volume_io import check_volume, read_volume, write_volume

DATA = Path(__file__).parent / "data"
PURKINJE = Path(__file__).parent.parent / "src" / "napari_volmicro" / "_data" / "purkinje_flowdec.tif"


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# -- reading the real files ----------------------------------------------------


@pytest.mark.parametrize(
    ("path", "shape", "dtype"),
    [
        (DATA / "bead_flowdec.tif", (64, 64, 64), np.float32),
        (DATA / "cellseg3d_nuclei.tif", (124, 86, 94), np.float32),
        (DATA / "rivuletpy_neuron.tif", (119, 415, 409), np.uint8),
        (PURKINJE, (50, 256, 256), np.float32),
    ],
)
def test_read_real_volumes(path, shape, dtype):
    array, spacing = read_volume(path)
    assert array.shape == shape
    assert array.dtype == dtype
    assert spacing == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(array, tifffile.imread(path))
    checked = check_volume(array, source=str(path))
    assert checked.shape == shape and checked.dtype == dtype and checked.flags.c_contiguous


def test_real_volume_values():
    array, _ = read_volume(DATA / "cellseg3d_nuclei.tif")
    assert float(array.min()) == 222.0
    assert float(array.max()) == 2781.0


# -- spacing metadata ----------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64, np.int16, np.int32, np.uint32])
def test_tiff_round_trip_keeps_values_dtype_and_spacing(tmp_path, dtype):
    rng = np.random.default_rng(0)
    array = (rng.random((9, 10, 11)) * 200).astype(dtype)
    out = write_volume(tmp_path / "v.tif", array, spacing=(2.5, 0.1625, 0.3))
    assert out == tmp_path / "v.tif"
    back, spacing = read_volume(out)
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)
    np.testing.assert_allclose(spacing, (2.5, 0.1625, 0.3), rtol=1e-6)
    assert _leftovers(tmp_path) == []


def test_imagej_tiff_written_by_tifffile_directly(tmp_path):
    array = np.zeros((8, 9, 10), np.uint16)
    tifffile.imwrite(
        tmp_path / "ij.tif", array, imagej=True, resolution=(1 / 0.2, 1 / 0.4),
        metadata={"spacing": 1.5, "unit": "micron", "axes": "ZYX"},
    )
    _, spacing = read_volume(tmp_path / "ij.tif")
    np.testing.assert_allclose(spacing, (1.5, 0.4, 0.2), rtol=1e-6)  # resolution is (X, Y)


def test_imagej_nanometre_unit_converted_to_micrometres(tmp_path):
    tifffile.imwrite(
        tmp_path / "nm.tif", np.zeros((8, 8, 8), np.uint8), imagej=True, resolution=(1 / 100, 1 / 100),
        metadata={"spacing": 500, "unit": "nm", "axes": "ZYX"},
    )
    _, spacing = read_volume(tmp_path / "nm.tif")
    np.testing.assert_allclose(spacing, (0.5, 0.1, 0.1), rtol=1e-6)


def test_ome_tiff_physical_size_with_units(tmp_path):
    tifffile.imwrite(
        tmp_path / "v.ome.tif", np.ones((8, 9, 10), np.float32), ome=True,
        metadata={
            "axes": "ZYX", "PhysicalSizeZ": 500, "PhysicalSizeZUnit": "nm",
            "PhysicalSizeY": 0.25, "PhysicalSizeX": 0.125,
        },
    )
    array, spacing = read_volume(tmp_path / "v.ome.tif")
    assert array.shape == (8, 9, 10)
    np.testing.assert_allclose(spacing, (0.5, 0.25, 0.125))


def test_plain_tiff_inch_resolution_is_not_taken_as_spacing(tmp_path):
    tifffile.imwrite(tmp_path / "p.tif", np.zeros((8, 8, 8), np.uint8), resolution=(72, 72), resolutionunit="INCH")
    assert read_volume(tmp_path / "p.tif")[1] == (1.0, 1.0, 1.0)


def test_plain_tiff_centimetre_resolution_is_converted(tmp_path):
    # 40000 pixels per cm = 0.25 um per pixel
    tifffile.imwrite(
        tmp_path / "cm.tif", np.zeros((8, 8, 8), np.uint8), resolution=(40000, 20000), resolutionunit="CENTIMETER"
    )
    np.testing.assert_allclose(read_volume(tmp_path / "cm.tif")[1], (1.0, 0.5, 0.25))


def test_bad_spacing_metadata_warns_and_falls_back(tmp_path):
    tifffile.imwrite(
        tmp_path / "z0.tif", np.zeros((8, 8, 8), np.uint8), imagej=True, metadata={"spacing": 0, "axes": "ZYX"}
    )
    with pytest.warns(UserWarning, match="along Z"):
        _, spacing = read_volume(tmp_path / "z0.tif")
    assert spacing == (1.0, 1.0, 1.0)


# -- .npy ----------------------------------------------------------------------


def test_npy_round_trip(tmp_path):
    array = np.arange(8 * 9 * 10, dtype=np.int32).reshape(8, 9, 10)
    write_volume(tmp_path / "v.npy", array)
    back, spacing = read_volume(tmp_path / "v.npy")
    np.testing.assert_array_equal(back, array)
    assert back.dtype == np.int32 and spacing == (1.0, 1.0, 1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.npy"]


def test_npy_write_warns_that_spacing_is_dropped(tmp_path):
    with pytest.warns(UserWarning, match="cannot store the voxel size"):
        write_volume(tmp_path / "v.npy", np.zeros((8, 8, 8), np.uint8), spacing=(2, 1, 1))


def test_npy_with_pickled_objects_is_refused(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="o.npy"):
        read_volume(tmp_path / "o.npy")


def test_truncated_npy_is_refused(tmp_path):
    np.save(tmp_path / "full.npy", np.zeros((10, 10, 10)))
    data = (tmp_path / "full.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.npy"):
        read_volume(tmp_path / "cut.npy")


def test_npz_content_is_refused(tmp_path):
    np.savez(tmp_path / "archive.npz", a=np.zeros((8, 8, 8)))
    (tmp_path / "archive.npz").rename(tmp_path / "v.npy")
    with pytest.raises(InputError, match=r"v\.npy: contains an \.npz archive"):
        read_volume(tmp_path / "v.npy")


def test_corrupt_npy_names_the_file(tmp_path):
    (tmp_path / "bad.npy").write_bytes(b"not numpy at all")
    with pytest.raises(InputError, match="bad.npy"):
        read_volume(tmp_path / "bad.npy")


# -- read errors ---------------------------------------------------------------


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        read_volume(tmp_path / "nope.tif")
    assert info.value.filename == str(tmp_path / "nope.tif")


def test_directory_is_refused(tmp_path):
    (tmp_path / "d.tif").mkdir()
    with pytest.raises(IsADirectoryError):
        read_volume(tmp_path / "d.tif")


def test_not_a_tiff(tmp_path):
    (tmp_path / "fake.tif").write_bytes(b"hello world" * 50)
    with pytest.raises(InputError, match=r"fake\.tif.*not a readable TIFF"):
        read_volume(tmp_path / "fake.tif")


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_tiff_is_refused_not_read_partially(tmp_path, keep):
    data = (DATA / "cellseg3d_nuclei.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(InputError, match=r"cut\.tif"):
        read_volume(tmp_path / "cut.tif")


def test_truncated_uncompressed_imagej_tiff_is_refused(tmp_path):
    write_volume(tmp_path / "full.tif", np.ones((9, 10, 11), np.float32))
    data = (tmp_path / "full.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.tif.*corrupt or truncated"):
        read_volume(tmp_path / "cut.tif")


def test_unsupported_extension(tmp_path):
    (tmp_path / "v.png").write_bytes(b"\x89PNG")
    with pytest.raises(InputError, match=r"v\.png.*\.tif, \.tiff.*\.npy"):
        read_volume(tmp_path / "v.png")


def test_errors_are_volmicro_errors():
    assert issubclass(InputError, VolmicroError)


# -- check_volume ----------------------------------------------------------------


def test_check_2d_image():
    with pytest.raises(InputError, match=r"img\.tif: shape \(64, 64\) is a 2D image; expected a 3D volume"):
        check_volume(np.zeros((64, 64), np.uint16), source="img.tif")


def test_check_1d_and_scalar():
    with pytest.raises(InputError, match="1D array"):
        check_volume(np.zeros(100))
    with pytest.raises(InputError, match="scalar"):
        check_volume(np.float32(3))


def test_check_4d_names_the_channel_axis():
    with pytest.raises(InputError) as info:
        check_volume(np.zeros((2, 50, 64, 64), np.uint16), source="stack.tif")
    msg = str(info.value)
    assert msg.startswith("stack.tif: shape (2, 50, 64, 64): 4D")
    assert "axis 0 (size 2)" in msg and "volume[0]" in msg


def test_check_4d_channel_axis_in_the_middle():
    with pytest.raises(InputError, match=r"axis 1 \(size 3\).*volume\[:, 0\]"):
        check_volume(np.zeros((20, 3, 32, 32), np.float32))


def test_check_5d():
    with pytest.raises(InputError, match="5D"):
        check_volume(np.zeros((2, 3, 16, 16, 16), np.uint8))


def test_check_singleton_extra_axes_are_dropped():
    a = np.arange(8 * 9 * 10, dtype=np.uint16).reshape(1, 8, 1, 9, 10)
    out = check_volume(a)
    assert out.shape == (8, 9, 10)
    np.testing.assert_array_equal(out, a.reshape(8, 9, 10))


@pytest.mark.parametrize("shape", [(256, 256, 3), (256, 256, 4), (10, 64, 64, 3)])
def test_check_rgb(shape):
    with pytest.raises(InputError, match="RGB"):
        check_volume(np.zeros(shape, np.uint8), source="photo.tif")


def test_three_planes_of_float_is_not_rgb_but_too_thin():
    with pytest.raises(InputError, match=r"fewer than 8 voxels along X=3"):
        check_volume(np.zeros((64, 64, 3), np.float32))


def test_check_nan_and_inf_are_counted():
    a = np.zeros((8, 8, 8), np.float32)
    a[0, 0, :3] = np.nan
    a[1, 1, 1] = np.inf
    a[2, 2, 2] = -np.inf
    with pytest.raises(InputError, match=r"v\.npy: contains 3 NaN and 2 Inf voxels"):
        check_volume(a, source="v.npy")


def test_check_small_axis_is_named():
    with pytest.raises(InputError, match=r"fewer than 8 voxels along Z=4"):
        check_volume(np.zeros((4, 64, 64), np.uint16))


@pytest.mark.parametrize(
    ("dtype", "match"),
    [(bool, "boolean"), (np.complex64, "complex"), (object, "not numeric"), ("U3", "not numeric"),
     ("datetime64[s]", "not numeric")],
)
def test_check_bad_dtypes(dtype, match):
    with pytest.raises(InputError, match=match):
        check_volume(np.zeros((8, 8, 8), dtype=dtype))


def test_check_returns_native_contiguous_same_dtype():
    a = np.arange(16 * 16 * 16, dtype=">u2").reshape(16, 16, 16)[:, ::-1, :]
    out = check_volume(a)
    assert out.dtype == np.uint16 and out.dtype.isnative
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, a)
    f = np.ones((8, 8, 8), np.float64)
    assert check_volume(f) is f  # already fine: not copied
    assert check_volume(np.ones((8, 8, 8), np.float16)).dtype == np.float32


def test_check_accepts_lists():
    out = check_volume(np.zeros((8, 8, 8)).tolist())
    assert out.shape == (8, 8, 8) and out.dtype == np.float64


# -- write errors and atomicity -----------------------------------------------------


def test_write_unsupported_extension(tmp_path):
    with pytest.raises(InputError, match=r"v\.png.*use \.tif, \.tiff or \.npy"):
        write_volume(tmp_path / "v.png", np.zeros((8, 8, 8), np.uint8))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("spacing", [(1, 1), (0, 1, 1), (1, -1, 1), (1, 1, float("nan")), "abc"])
def test_write_bad_spacing(tmp_path, spacing):
    with pytest.raises(InputError, match="spacing"):
        write_volume(tmp_path / "v.tif", np.zeros((8, 8, 8), np.uint8), spacing=spacing)


def test_write_refuses_non_3d(tmp_path):
    with pytest.raises(InputError, match="3D"):
        write_volume(tmp_path / "v.tif", np.zeros((8, 8), np.uint8))


def test_write_replaces_existing_file_atomically(tmp_path):
    target = tmp_path / "v.tif"
    write_volume(target, np.zeros((8, 8, 8), np.uint8))
    write_volume(target, np.full((8, 8, 8), 7, np.uint8))
    np.testing.assert_array_equal(read_volume(target)[0], 7)
    assert _leftovers(tmp_path) == []


def test_failed_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "v.tif"
    write_volume(target, np.full((8, 8, 8), 3, np.uint8))
    before = target.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", boom)
    with pytest.raises(OSError, match="disk full"):
        write_volume(target, np.zeros((8, 8, 8), np.uint8))
    assert target.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_write_compressed_tiff(tmp_path):
    a = np.zeros((16, 64, 64), np.uint16)
    write_volume(tmp_path / "z.tif", a, compression="zlib")
    write_volume(tmp_path / "r.tif", a)
    assert os.path.getsize(tmp_path / "z.tif") < os.path.getsize(tmp_path / "r.tif") / 10
    np.testing.assert_array_equal(read_volume(tmp_path / "z.tif")[0], a)


def test_int64_volumes_are_narrowed_to_a_storable_dtype():
    vol = np.arange(8 * 8 * 8, dtype=np.int64).reshape(8, 8, 8)
    out = check_volume(vol)
    assert out.dtype == np.uint16 and np.array_equal(out, vol)
    with pytest.raises(InputError, match="beyond 32-bit"):
        check_volume(vol * 2**40)
