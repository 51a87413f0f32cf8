"""Reading, checking and writing 3D input volumes (TIFF and ``.npy``).

- ``read_volume(path)`` returns ``(array, spacing)``: the first image series of
  a TIFF (tifffile) or a ``.npy`` array, and the voxel size ``(z, y, x)``.
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
  hyperstack metadata, or OME-TIFF for dtypes ImageJ cannot hold) or ``.npy``
  atomically (temporary file in the same directory, then ``os.replace``).

Arrays are ZYX throughout.
"""

from __future__ import annotations

import errno
import logging
import math
import warnings
import xml.etree.ElementTree as ET
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


def _read_npy(path: Path) -> np.ndarray:
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
            array = tif.series[0].asarray()
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
    spacing = None
    if tif.is_ome and tif.ome_metadata:
        spacing = _ome_spacing(tif.ome_metadata)
    if spacing is None and tif.is_imagej:
        spacing = _imagej_spacing(tif)
    if spacing is None:
        spacing = _resolution_spacing(tif, None)
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
    return (out[0], out[1], out[2])


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


def check_volume(array, source: str = "volume") -> np.ndarray:
    """Validate one 3D (Z, Y, X) volume; return it ready for compression.

    The result is C-contiguous, in native byte order, with the input's dtype
    (integers, float32, float64 unchanged; float16 is widened to float32).
    Size-1 axes beyond three are dropped. Raises ``InputError`` (message
    starting with ``source``) for 2D images, 4D or higher stacks (naming the
    axis that looks like channels/time), RGB(A) images, NaN or Inf values,
    fewer than ``MIN_AXIS_VOXELS`` voxels on an axis, and bool, complex or
    non-numeric dtypes.
    """
    arr = np.asarray(array)
    shape = tuple(arr.shape)
    dt = arr.dtype
    if dt.kind == "b":
        raise InputError(
            f"{source}: boolean array (a mask?); expected intensities; convert with volume.astype(np.uint8) if intended"
        )
    if dt.kind == "c":
        raise InputError(f"{source}: complex dtype {dt}; pass the magnitude (np.abs) or the real part")
    if dt.kind not in "uif":
        raise InputError(f"{source}: dtype {dt} is not numeric; expected integer or floating-point intensities")

    if arr.ndim > 3 and 1 in shape:
        squeezed = tuple(s for s in shape if s != 1)
        if len(squeezed) >= 3:
            arr = arr.reshape(squeezed)
        else:  # keep enough axes to report a sensible shape below
            arr = arr.reshape(squeezed + (1,) * (3 - len(squeezed)))
    rgb = arr.ndim in (3, 4) and arr.shape[-1] in (3, 4) and dt == np.uint8
    if rgb:
        kind = "RGB" if arr.shape[-1] == 3 else "RGBA"
        raise InputError(
            f"{source}: shape {shape} looks like an {kind} image (last axis of {arr.shape[-1]} uint8 values); "
            f"expected one grey-level channel, e.g. volume[..., 0]"
        )
    if arr.ndim < 3:
        what = {0: "a scalar", 1: "a 1D array", 2: "a 2D image"}[arr.ndim]
        raise InputError(f"{source}: shape {shape} is {what}; expected a 3D volume (Z, Y, X)")
    if arr.ndim > 3:
        axis = _extra_axis(arr.shape)
        raise InputError(
            f"{source}: shape {shape}: {arr.ndim}D; axis {axis} (size {arr.shape[axis]}) looks like channels or "
            f"time points; pick one channel or time point, e.g. {_index_expr(arr.ndim, axis)}, "
            f"to get a 3D volume (Z, Y, X)"
        )
    small = [f"{name}={n}" for name, n in zip(_AXIS_NAMES, arr.shape) if n < MIN_AXIS_VOXELS]
    if small:
        raise InputError(
            f"{source}: shape {shape} has fewer than {MIN_AXIS_VOXELS} voxels along {', '.join(small)}; "
            f"expected a 3D volume (Z, Y, X) at least {MIN_AXIS_VOXELS} voxels on every axis"
        )
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
    micrometre), other dtypes as OME-TIFF with ``PhysicalSize{Z,Y,X}``.
    ``compression`` is passed to tifffile (e.g. ``"zlib"``). ``.npy``:
    ``np.save`` (no spacing; a warning is issued if a non-unit spacing is
    given). ``spacing`` is the voxel size (z, y, x) in micrometres.
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
    sz, sy, sx = _check_spacing(spacing)
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    arr = np.ascontiguousarray(arr)
    if suffix in NPY_SUFFIXES and spacing is not None and (sz, sy, sx) != (1.0, 1.0, 1.0):
        warnings.warn(f"{path}: .npy files cannot store the voxel size {(sz, sy, sx)}; it is dropped", stacklevel=2)

    from .atomic import atomic_path

    with atomic_path(path) as tmp_name:
        if suffix in NPY_SUFFIXES:
            with open(tmp_name, "wb") as fh:
                np.save(fh, arr, allow_pickle=False)
        else:
            _write_tiff(tmp_name, arr, (sz, sy, sx), compression)
    return path


def _write_tiff(target: str, arr: np.ndarray, spacing: tuple[float, float, float], compression) -> None:
    import tifffile

    sz, sy, sx = spacing
    if arr.dtype in _IMAGEJ_DTYPES:
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
