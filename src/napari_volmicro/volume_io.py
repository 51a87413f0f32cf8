"""Reading, checking and writing 3D input volumes (TIFF and ``.npy``).

- ``read_volume(path)`` returns ``(array, spacing)``: the first image series of
  a TIFF (tifffile) or a ``.npy`` array, and the voxel size ``(z, y, x)``.
  The header's shape is checked against the memory available before any
  voxel is read (``InputError`` naming the size; a file may claim any shape).
- ``volume_header(path)``: shape, dtype, spacing and where the spacing came
  from, without reading the voxels.
  Spacing comes from OME-TIFF ``PhysicalSize{Z,Y,X}``, or from ImageJ's
  ``spacing`` entry (Z) and ``XResolution``/``YResolution`` tags (Y, X), and
  is converted to micrometres when the file names a length unit; without
  metadata it is ``(1.0, 1.0, 1.0)`` (voxel units). The array is returned as
  stored: pass it through ``check_volume`` before compressing.
- ``check_volume(array, source=...)`` refuses what cannot be compressed as one
  3D volume (2D images, 4D/multichannel stacks, RGB, NaN/Inf, fewer than 8
  voxels on an axis, bool/complex/non-numeric dtypes) with an ``InputError``
  that names the source and says what to do.
- ``write_volume(path, array, spacing=None)`` writes a TIFF (ImageJ
  hyperstack metadata, or OME-TIFF for dtypes ImageJ cannot hold and voxel
  sizes a TIFF resolution tag cannot hold) or ``.npy`` atomically (temporary
  file in the same directory, then ``os.replace``). Without a spacing the
  TIFF claims no unit.

Arrays are ZYX throughout.
"""

from __future__ import annotations

import errno
import logging
import math
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError

#: Smallest number of voxels accepted on each axis.
MIN_AXIS_VOXELS = 8

TIFF_SUFFIXES = (".tif", ".tiff")
NPY_SUFFIXES = (".npy",)

_AXIS_NAMES = ("Z", "Y", "X")

#: length units -> micrometres per unit
_UNIT_TO_UM = {
    "um": 1.0, "µm": 1.0, "μm": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0,
    "micrometre": 1.0, "\\u00b5m": 1.0,
    "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3,
    "mm": 1e3, "millimeter": 1e3, "millimetre": 1e3,
    "cm": 1e4, "centimeter": 1e4, "centimetre": 1e4,
    "m": 1e6, "meter": 1e6, "metre": 1e6,
    "pm": 1e-6, "å": 1e-4, "angstrom": 1e-4,
}

#: dtypes an ImageJ hyperstack TIFF can hold; others are written as OME-TIFF
_IMAGEJ_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))


# -- reading -------------------------------------------------------------------


def _suffix(path: Path) -> str:
    return path.suffix.lower()


def _check_existing_file(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, "no such file", str(path))
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory, expected a file", str(path))


@dataclass(frozen=True)
class VolumeHeader:
    """What a volume file declares, read without its voxels.

    shape: as stored (any number of axes); dtype; spacing: the voxel size (z, y, x) as
    ``read_volume`` returns it; spacing_source: where it came from ("OME-TIFF metadata",
    "ImageJ metadata", "TIFF resolution tags"), or None when the file has none (voxel units).
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    spacing: tuple[float, float, float]
    spacing_source: str | None

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


#: what ``read_volume`` suggests for a volume larger than memory
TOO_BIG_HINT = "compress it brick by brick with --bricks 256 (reads one brick at a time)"


def volume_header(path) -> VolumeHeader:
    """Shape, dtype and spacing of a TIFF or ``.npy`` volume without reading its voxels.

    Raises like ``read_volume`` for missing, unsupported or unreadable files.
    """
    path = Path(path)
    _check_existing_file(path)
    suffix = _suffix(path)
    if suffix in TIFF_SUFFIXES:
        return _tiff_header(path)
    if suffix in NPY_SUFFIXES:
        shape, dtype = _npy_header(path)
        return VolumeHeader(shape, dtype, (1.0, 1.0, 1.0), None)
    raise InputError(
        f"{path}: unsupported file type {path.suffix!r}; expected a TIFF (.tif, .tiff) or NumPy (.npy) volume"
    )


def check_fits_memory(shape, dtype, source: str, bytes_per_voxel: float | None = None, hint: str = TOO_BIG_HINT):
    """``InputError`` if a ``shape`` x ``dtype`` volume (times ``bytes_per_voxel`` per voxel, default
    the dtype's size) does not fit the memory available."""
    from .resources import check_memory, format_bytes

    n = math.prod(int(s) for s in shape)
    itemsize = np.dtype(dtype).itemsize
    need = int(n * (itemsize if bytes_per_voxel is None else bytes_per_voxel))
    dims = " x ".join(str(int(s)) for s in shape)
    check_memory(need, f"{source}: {dims} {np.dtype(dtype)} = {format_bytes(n * itemsize)}", hint)


def read_volume(path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Read a volume and its voxel size from a TIFF or ``.npy`` file.

    Returns ``(array, spacing)``: ``array`` as stored in the file (first image
    series for TIFF; not validated, see ``check_volume``), ``spacing`` the
    voxel size ``(z, y, x)`` in micrometres when the file names a unit, in
    the file's own unit otherwise, ``(1.0, 1.0, 1.0)`` without metadata.

    Raises ``FileNotFoundError`` for a missing path and ``InputError`` naming
    the file for an unsupported extension or an unreadable/corrupt file.
    """
    path = Path(path)
    _check_existing_file(path)
    suffix = _suffix(path)
    if suffix in TIFF_SUFFIXES:
        return _read_tiff(path)
    if suffix in NPY_SUFFIXES:
        return _read_npy(path), (1.0, 1.0, 1.0)
    raise InputError(
        f"{path}: unsupported file type {path.suffix!r}; expected a TIFF (.tif, .tiff) or NumPy (.npy) volume"
    )


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a ``.npy`` header (``InputError`` for anything else)."""
    fmt = np.lib.format
    try:
        with open(path, "rb") as fh:
            version = fmt.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = fmt.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, _, dtype = fmt.read_array_header_2_0(fh)
            else:  # 3.0 (utf-8 field names) has no public reader
                shape, _, dtype = fmt._read_array_header(fh, version)
    except (ValueError, EOFError, SyntaxError, TypeError) as exc:
        raise InputError(f"{path}: not a readable .npy array ({exc})") from None
    return tuple(int(s) for s in shape), dtype


def _check_npy_data(path: Path, shape, dtype) -> None:
    """``InputError`` when the file is shorter than its header's array (truncated or crafted)."""
    need = math.prod(shape) * np.dtype(dtype).itemsize
    size = path.stat().st_size
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        hlen = int.from_bytes(fh.read(2 if version == (1, 0) else 4), "little")
        header_end = fh.tell() + hlen
    if header_end + need > size:
        dims = " x ".join(str(n) for n in shape)
        from .resources import format_bytes

        raise InputError(
            f"{path}: truncated .npy file: its header declares {dims} {np.dtype(dtype)} = {format_bytes(need)}, "
            f"the file has {format_bytes(max(0, size - header_end))} of data"
        )


def _read_npy(path: Path) -> np.ndarray:
    with open(path, "rb") as fh:
        is_npy = fh.read(6) == b"\x93NUMPY"
    if is_npy:  # (an .npz archive is refused below)
        shape, dtype = _npy_header(path)
        if not dtype.hasobject:  # (np.load refuses object arrays below)
            _check_npy_data(path, shape, dtype)
            check_fits_memory(shape, dtype, str(path))
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:  # bad magic, pickled objects, truncated data
        raise InputError(f"{path}: not a readable .npy array ({exc})") from None
    except (OSError, EOFError) as exc:
        if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
            raise
        raise InputError(f"{path}: not a readable .npy array ({exc})") from None
    if not isinstance(array, np.ndarray):  # np.load returns an open NpzFile for .npz content
        array.close()
        raise InputError(f"{path}: contains an .npz archive, expected a single .npy array")
    return array


def _read_tiff(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    import tifffile

    problems = _TiffProblems()
    logger = tifffile.logger()
    logger.addFilter(problems)
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise InputError(f"{path}: TIFF contains no images")
            series = tif.series[0]
            _check_tiff_data(series, path)  # before the pixels are allocated
            check_fits_memory(series.shape, series.dtype, str(path))
            array = series.asarray()
            spacing = _tiff_spacing(tif, path)
        if problems.messages:  # tifffile only logs these and returns partial data
            raise InputError(f"{path}: corrupt or truncated TIFF file ({problems.messages[0]})")
    except InputError:
        raise
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except MemoryError:
        raise
    except Exception as exc:  # tifffile raises TiffFileError, ValueError, OSError, struct.error, ...
        raise InputError(f"{path}: not a readable TIFF file ({type(exc).__name__}: {exc})") from None
    finally:
        logger.removeFilter(problems)
    return array, spacing


def _check_tiff_data(series, path: Path) -> None:
    """``InputError`` when uncompressed, contiguous pixel data would run past the end of the file
    (a header may claim any image size; such a file is truncated or crafted)."""
    offset = getattr(series, "dataoffset", None)
    if offset is None:
        return
    need = math.prod(int(n) for n in series.shape) * np.dtype(series.dtype).itemsize
    size = path.stat().st_size
    if offset + need > size:
        dims = " x ".join(str(int(n)) for n in series.shape)
        from .resources import format_bytes

        raise InputError(
            f"{path}: truncated or corrupt TIFF: it declares {dims} {np.dtype(series.dtype)} pixels "
            f"= {format_bytes(need)} from byte {offset}, but the file has {format_bytes(size)}"
        )


def _tiff_header(path: Path) -> VolumeHeader:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise InputError(f"{path}: TIFF contains no images")
            series = tif.series[0]
            _check_tiff_data(series, path)
            spacing, source = _tiff_spacing_and_source(tif, path)
            return VolumeHeader(tuple(int(n) for n in series.shape), np.dtype(series.dtype), spacing, source)
    except (InputError, FileNotFoundError, PermissionError, IsADirectoryError, MemoryError):
        raise
    except Exception as exc:  # tifffile raises TiffFileError, ValueError, OSError, struct.error, ...
        raise InputError(f"{path}: not a readable TIFF file ({type(exc).__name__}: {exc})") from None


class _TiffProblems(logging.Filter):
    """Collects (and silences) tifffile's log messages about corrupt files.

    tifffile logs a truncated file's missing pages or a failed reshape and then
    returns a partial array; a partial array must never pass as the volume.
    """

    _MARKERS = ("invalid page offset", "corrupt", "failed to reshape", "truncated", "failed to read")

    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.levelno >= logging.WARNING and any(m in message for m in self._MARKERS):
            self.messages.append(message.split("> ", 1)[-1])
            return False
        return True


def _unit_factor(unit) -> float | None:
    """Micrometres per ``unit``, or None if the unit is not a known length unit."""
    if unit is None:
        return None
    key = str(unit).strip().lower()
    return _UNIT_TO_UM.get(key)


def _positive_or_none(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def _tiff_spacing(tif, path: Path) -> tuple[float, float, float]:
    return _tiff_spacing_and_source(tif, path)[0]


def _tiff_spacing_and_source(tif, path: Path) -> tuple[tuple[float, float, float], str | None]:
    """The voxel size (z, y, x) and the metadata it came from (None: none found, voxel units)."""
    spacing, source = None, None
    if tif.is_ome and tif.ome_metadata:
        spacing = _ome_spacing(tif.ome_metadata)
        source = "OME-TIFF metadata" if "PhysicalSize" in tif.ome_metadata else None
    if spacing is None and tif.is_imagej:
        spacing = _imagej_spacing(tif)
        meta = tif.imagej_metadata or {}
        source = "ImageJ metadata" if ("spacing" in meta or meta.get("unit") not in (None, "", "pixel")) else None
    if spacing is None:
        spacing = _resolution_spacing(tif, None)
        source = "TIFF resolution tags" if spacing != (1.0, 1.0, 1.0) else None
    out = []
    for name, value in zip(_AXIS_NAMES, spacing):
        v = _positive_or_none(value)
        if v is None:
            warnings.warn(
                f"{path}: voxel size along {name} in the metadata is {value!r}, not a positive number; using 1.0",
                stacklevel=3,
            )
            v = 1.0
        out.append(v)
    return (out[0], out[1], out[2]), source


def _ome_spacing(xml: str) -> tuple[float, float, float] | None:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    pixels = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return None
    result = []
    for name in _AXIS_NAMES:
        raw = pixels.get(f"PhysicalSize{name}")
        if raw is None:
            result.append(1.0)
            continue
        factor = _unit_factor(pixels.get(f"PhysicalSize{name}Unit", "µm"))
        try:
            value = float(raw)
        except ValueError:
            result.append(raw)  # reported by the caller
            continue
        result.append(value * factor if factor is not None else value)
    return (result[0], result[1], result[2])


def _imagej_spacing(tif) -> tuple[float, float, float]:
    meta = tif.imagej_metadata or {}
    unit = meta.get("unit")
    factor = _unit_factor(unit) if unit not in (None, "", "pixel", "pixels") else None
    z = meta.get("spacing", 1.0)
    if factor is not None:
        z_v = _positive_or_none(z)
        z = z_v * factor if z_v is not None else z
    _, y, x = _resolution_spacing(tif, factor if factor is not None else 1.0)
    return (z, y, x)


def _resolution_spacing(tif, factor: float | None) -> tuple[float, float, float]:
    """Y and X voxel size from the first page's resolution tags.

    ``factor`` converts the tags' unit to micrometres (ImageJ files give it);
    for other TIFFs only centimetre resolution units are trusted (inch-based
    "dpi" values are screen metadata, not voxel sizes).
    """
    page = tif.pages[0]
    tags = page.tags
    if factor is None:
        unit_tag = tags.get("ResolutionUnit")
        if unit_tag is None or int(unit_tag.value) != 3:  # 3 = centimetre
            return (1.0, 1.0, 1.0)
        factor = 1e4

    def one(tag_name):
        tag = tags.get(tag_name)
        if tag is None:
            return 1.0
        value = tag.value
        try:
            num, den = value if isinstance(value, tuple) else (value, 1)
            pixels_per_unit = float(num) / float(den)
        except (TypeError, ValueError, ZeroDivisionError):
            return value
        if not (math.isfinite(pixels_per_unit) and pixels_per_unit > 0):
            return pixels_per_unit
        return factor / pixels_per_unit

    return (1.0, one("YResolution"), one("XResolution"))


# -- checking ------------------------------------------------------------------


def _index_expr(ndim: int, axis: int) -> str:
    parts = [":"] * ndim
    parts[axis] = "0"
    while parts and parts[-1] == ":":
        parts.pop()
    return f"volume[{', '.join(parts)}]"


def _extra_axis(shape: tuple[int, ...]) -> int:
    """The axis of a 4D shape that most likely holds channels or time points."""
    return int(np.argmin(shape))


def check_shape(shape, dtype, source: str = "volume") -> tuple[int, int, int]:
    """The shape and dtype checks of ``check_volume``, on a header alone (no voxels needed).

    Returns the 3D shape (size-1 axes beyond three dropped); raises the same ``InputError``s
    as ``check_volume`` for the dtype and the shape.
    """
    shape = tuple(int(s) for s in shape)
    dt = np.dtype(dtype)
    if dt.kind == "b":
        raise InputError(
            f"{source}: boolean array (a mask?); expected intensities; convert with volume.astype(np.uint8) if intended"
        )
    if dt.kind == "c":
        raise InputError(f"{source}: complex dtype {dt}; pass the magnitude (np.abs) or the real part")
    if dt.kind not in "uif":
        raise InputError(f"{source}: dtype {dt} is not numeric; expected integer or floating-point intensities")
    dims = shape
    if len(shape) > 3 and 1 in shape:
        squeezed = tuple(s for s in shape if s != 1)
        dims = squeezed if len(squeezed) >= 3 else squeezed + (1,) * (3 - len(squeezed))
    if len(dims) in (3, 4) and dims[-1] in (3, 4) and dt == np.uint8:
        kind = "RGB" if dims[-1] == 3 else "RGBA"
        raise InputError(
            f"{source}: shape {shape} looks like an {kind} image (last axis of {dims[-1]} uint8 values); "
            f"expected one grey-level channel, e.g. volume[..., 0]"
        )
    if len(dims) < 3:
        what = {0: "a scalar", 1: "a 1D array", 2: "a 2D image"}[len(dims)]
        raise InputError(f"{source}: shape {shape} is {what}; expected a 3D volume (Z, Y, X)")
    if len(dims) > 3:
        axis = _extra_axis(dims)
        raise InputError(
            f"{source}: shape {shape}: {len(dims)}D; axis {axis} (size {dims[axis]}) looks like channels or "
            f"time points; pick one channel or time point, e.g. {_index_expr(len(dims), axis)}, "
            f"to get a 3D volume (Z, Y, X)"
        )
    small = [f"{name}={n}" for name, n in zip(_AXIS_NAMES, dims) if n < MIN_AXIS_VOXELS]
    if small:
        raise InputError(
            f"{source}: shape {shape} has fewer than {MIN_AXIS_VOXELS} voxels along {', '.join(small)}; "
            f"expected a 3D volume (Z, Y, X) at least {MIN_AXIS_VOXELS} voxels on every axis"
        )
    return dims


def check_volume(array, source: str = "volume") -> np.ndarray:
    """Validate one 3D (Z, Y, X) volume; return it ready for compression.

    The result is C-contiguous, in native byte order, with the input's dtype
    (integers, float32, float64 unchanged; float16 is widened to float32).
    Size-1 axes beyond three are dropped. Raises ``InputError`` (message
    starting with ``source``) for 2D images, 4D or higher stacks (naming the
    axis that looks like channels/time), RGB(A) images, NaN or Inf values,
    fewer than ``MIN_AXIS_VOXELS`` voxels on an axis, and bool, complex or
    non-numeric dtypes (``check_shape`` makes the checks that need no voxels).
    """
    arr = np.asarray(array)
    dt = arr.dtype
    dims = check_shape(arr.shape, dt, source)
    if arr.shape != dims:
        arr = arr.reshape(dims)
    if dt.kind == "f" and not np.isfinite(arr).all():
        n_nan = int(np.count_nonzero(np.isnan(arr)))
        n_inf = int(np.count_nonzero(np.isinf(arr)))
        if n_nan or n_inf:
            raise InputError(
                f"{source}: contains {n_nan} NaN and {n_inf} Inf voxels out of {arr.size}; "
                f"replace them first (e.g. np.nan_to_num(volume))"
            )
    if dt == np.float16:
        arr = arr.astype(np.float32)
    if dt.kind in "iu" and dt.itemsize == 8:
        arr = _narrow_int64(arr, source)
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return np.ascontiguousarray(arr)


def _narrow_int64(arr: np.ndarray, source: str) -> np.ndarray:
    """64-bit integer volumes (not storable in a .vmg) -> the smallest integer dtype holding their values."""
    lo, hi = int(arr.min()), int(arr.max())
    for cand in (np.uint8, np.uint16, np.int16, np.uint32, np.int32):
        info = np.iinfo(cand)
        if info.min <= lo and hi <= info.max:
            return arr.astype(cand)
    raise InputError(
        f"{source}: {arr.dtype} values span {lo}..{hi}, beyond 32-bit integers; "
        f"convert the volume to float32 or float64 first"
    )


# -- writing -------------------------------------------------------------------


def _check_spacing(spacing) -> tuple[float, float, float]:
    if spacing is None:
        return (1.0, 1.0, 1.0)
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise InputError(f"spacing must be three positive numbers (Z, Y, X), got {spacing!r}") from None
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise InputError(f"spacing must be three positive numbers (Z, Y, X), got {spacing!r}")
    return values  # type: ignore[return-value]


def write_volume(path, array, spacing=None, *, compression: str | None = None) -> Path:
    """Write a 3D (Z, Y, X) array to ``path`` atomically; returns the path.

    ``.tif``/``.tiff``: tifffile; uint8, uint16 and float32 as an ImageJ
    hyperstack (Z spacing in ``spacing``, Y/X in the resolution tags, unit
    micrometre), other dtypes, and voxel sizes a TIFF resolution tag cannot
    hold (below about 1e-6 or above 1e6 um), as OME-TIFF with
    ``PhysicalSize{Z,Y,X}``. float16 is written as float32 (exact; few TIFF
    readers know float16). ``compression`` is passed to tifffile (e.g.
    ``"zlib"``). ``spacing`` is the voxel size (z, y, x) in micrometres;
    ``None`` writes no size and no unit (voxel units). ``.npy``: ``np.save``
    (no spacing; a warning is issued if a non-unit spacing is given).
    Other extensions raise ``InputError``.
    """
    path = Path(path)
    suffix = _suffix(path)
    if suffix not in TIFF_SUFFIXES + NPY_SUFFIXES:
        raise InputError(
            f"{path}: cannot write {path.suffix or 'files without an extension'!r}; use .tif, .tiff or .npy"
        )
    arr = np.asarray(array)
    if arr.ndim != 3:
        raise InputError(f"{path}: expected a 3D array (Z, Y, X) to write, got shape {arr.shape}")
    if arr.dtype.kind not in "uif":
        raise InputError(f"{path}: cannot write dtype {arr.dtype}; expected integer or floating-point values")
    size = None if spacing is None else _check_spacing(spacing)
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    arr = np.ascontiguousarray(arr)
    if suffix in NPY_SUFFIXES and size is not None and size != (1.0, 1.0, 1.0):
        warnings.warn(f"{path}: .npy files cannot store the voxel size {size}; it is dropped", stacklevel=2)

    from .atomic import atomic_path

    with atomic_path(path) as tmp_name:
        if suffix in NPY_SUFFIXES:
            with open(tmp_name, "wb") as fh:
                np.save(fh, arr, allow_pickle=False)
        else:
            _write_tiff(tmp_name, arr, size, compression)
    return path


def _tiff_rational_ok(pixels_per_unit: float) -> bool:
    """Whether a resolution tag (a ratio of two uint32) holds ``pixels_per_unit`` to 1e-6."""
    from fractions import Fraction

    if not (math.isfinite(pixels_per_unit) and pixels_per_unit > 0):
        return False
    try:
        f = Fraction(pixels_per_unit).limit_denominator(2**32 - 1)
    except (OverflowError, ValueError):
        return False
    return 0 < f.numerator < 2**32 and abs(float(f) - pixels_per_unit) <= 1e-6 * pixels_per_unit


def _write_tiff(target: str, arr: np.ndarray, spacing: tuple[float, float, float] | None, compression) -> None:
    import tifffile

    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    imagej = arr.dtype in _IMAGEJ_DTYPES
    if spacing is None:
        if imagej:
            tifffile.imwrite(target, arr, imagej=True, metadata={"axes": "ZYX"}, compression=compression)
        else:
            tifffile.imwrite(target, arr, ome=True, metadata={"axes": "ZYX"}, compression=compression)
        return
    sz, sy, sx = spacing
    if imagej and _tiff_rational_ok(1.0 / sx) and _tiff_rational_ok(1.0 / sy):
        tifffile.imwrite(
            target, arr, imagej=True, resolution=(1.0 / sx, 1.0 / sy),  # tifffile order: X, Y
            metadata={"spacing": sz, "unit": "micron", "axes": "ZYX"}, compression=compression,
        )
    else:
        tifffile.imwrite(
            target, arr, ome=True, compression=compression,
            metadata={
                "axes": "ZYX",
                "PhysicalSizeZ": sz, "PhysicalSizeZUnit": "µm",
                "PhysicalSizeY": sy, "PhysicalSizeYUnit": "µm",
                "PhysicalSizeX": sx, "PhysicalSizeXUnit": "µm",
            },
        )
