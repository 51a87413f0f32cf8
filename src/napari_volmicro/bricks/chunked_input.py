"""Chunked input volumes that are never loaded whole.

``open_input(source)`` accepts:

- a Zarr array or group path (zarr v2 or v3; ``.zarr`` directories or any
  store path zarr opens). For a group, the OME-Zarr ``multiscales`` metadata
  (NGFF 0.4 attributes or 0.5 ``ome`` attributes) names the full-resolution
  array and its voxel size; otherwise the group must hold exactly one array
  with three non-singleton axes. ``PATH::KEY`` picks an array inside a group.
- a TIFF file (read page by page through tifffile's zarr store);
- a ``.npy`` file (memory-mapped);
- a dask array (or any array with ``shape``, ``dtype`` and slicing, e.g. a zarr array).

Leading axes of length 1 (OME-Zarr ``t`` and ``c``) are dropped; any other
extra axis is refused with an ``InputError`` naming it. The result is a
``ChunkedVolume``: ``shape``/``dtype``/``spacing`` (ZYX), ``chunks`` and
``read(slices)``, which reads only the chunks the slices touch. It pickles as
its *spec* (path and key, or the dask graph), so a dask task can reopen it in
its own process and read its own brick.
"""

from __future__ import annotations

import errno
import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..intensity import check_dtype

TIFF_SUFFIXES = (".tif", ".tiff")

_AXIS_NAMES = ("Z", "Y", "X")


@dataclass(frozen=True)
class InputSpec:
    """How to reopen an input in another process: ``kind`` is "zarr", "tiff", "npy" or "array"."""

    kind: str
    path: str | None = None
    key: str | None = None
    array: object = None  # dask or other in-memory array (kind "array")


class ChunkedVolume:
    """A 3D volume (ZYX) read by region. ``lead`` = indices of dropped leading singleton axes."""

    def __init__(self, spec: InputSpec, array, spacing, lead: tuple[int, ...], name: str):
        self.spec = spec
        self._array = array
        self.spacing = tuple(float(s) for s in spacing)
        self._lead = lead
        self.name = name
        self.shape = tuple(int(s) for s in array.shape[len(lead):])
        self.dtype = np.dtype(array.dtype)
        chunks = getattr(array, "chunksize", None) or getattr(array, "chunks", None)
        if chunks is not None and len(chunks) == array.ndim and all(isinstance(c, (int, np.integer)) for c in chunks):
            self.chunks = tuple(int(c) for c in chunks[len(lead):])
        else:
            self.chunks = self.shape

    def __reduce__(self):
        return (_reopen, (self.spec, self.spacing))

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def read(self, slices) -> np.ndarray:
        """The voxels in ``slices`` (three slices, ZYX) as a numpy array (reads only those chunks)."""
        out = self._array[self._lead + tuple(slices)]
        if hasattr(out, "compute"):
            out = out.compute(scheduler="synchronous")
        return np.asarray(out)

    def aligned(self, brick_shape) -> bool:
        """Whether every brick boundary falls on a chunk boundary (bricks a multiple of chunks)."""
        return all(b % c == 0 or c >= n for b, c, n in zip(brick_shape, self.chunks, self.shape))

    def rechunked(self, brick_shape) -> ChunkedVolume:
        """For a dask input whose chunks do not fit the bricks: the same data rechunked so each
        brick covers whole chunks (lazy, nothing is read). Stored inputs are returned unchanged:
        a brick read then touches the chunks it overlaps, which is correct, only less tidy."""
        if self.spec.kind != "array" or self.aligned(brick_shape) or not hasattr(self._array, "rechunk"):
            return self
        lead_chunks = (1,) * len(self._lead)
        new = self._array.rechunk(lead_chunks + tuple(min(b, n) for b, n in zip(brick_shape, self.shape)))
        return ChunkedVolume(InputSpec("array", array=new), new, self.spacing, self._lead, self.name)


#: bricks a ``.vmg`` brick table can index (a uint32 count)
MAX_BRICKS = 2**32 - 1
#: driver memory per brick (bytes): the statistics pass keeps two samples of up to 65,536 float64
#: values and a table entry; plus per-brick bookkeeping (futures, layout)
_DRIVER_BYTES_PER_SAMPLE = 16
_DRIVER_BYTES_PER_BRICK = 4096


def check_bricked_size(vol: ChunkedVolume, brick) -> int:
    """Refuse (``InputError``) a volume a bricked encode could never finish; returns the brick count.

    The count of bricks must fit the file's brick table and the driver's per-brick statistics
    must fit in memory; the message gives the volume's size and what to change.
    """
    from ..resources import available_memory, format_bytes, short_bytes

    b = (int(brick),) * 3 if isinstance(brick, (int, np.integer)) else tuple(int(v) for v in brick)
    if len(b) != 3 or min(b) < 1:
        return 0  # BrickGrid explains what is wrong with the brick size
    counts = [-(-n // min(k, n)) for n, k in zip(vol.shape, b)]
    n_bricks = math.prod(counts)
    dims = " x ".join(str(n) for n in vol.shape)
    what = (f"{vol.name}: {dims} voxels = {format_bytes(math.prod(vol.shape) * vol.dtype.itemsize)}, "
            f"in {n_bricks:,} bricks of {' x '.join(map(str, b))}")
    if n_bricks > MAX_BRICKS:
        raise InputError(f"{what}: a .vmg holds at most {MAX_BRICKS:,} bricks; use larger --bricks")
    per_brick = _DRIVER_BYTES_PER_BRICK + 2 * _DRIVER_BYTES_PER_SAMPLE * min(math.prod(b), 1 << 16)
    need = n_bricks * per_brick
    room = int(0.8 * available_memory())
    if need > room:
        raise InputError(f"{what}: the brick statistics need about {short_bytes(need)} of memory, "
                         f"{short_bytes(room)} is available; use larger --bricks")
    return n_bricks


def _reopen(spec: InputSpec, spacing) -> ChunkedVolume:
    vol = _open_spec(spec)
    vol.spacing = tuple(spacing)
    return vol


def open_input(source, spacing=None) -> ChunkedVolume:
    """Open ``source`` (path, ``PATH::KEY``, dask/zarr array) as a ``ChunkedVolume``.

    ``spacing`` (ZYX, physical units) overrides the file's. Raises
    ``InputError`` / ``FileNotFoundError`` naming the source.
    """
    if isinstance(source, ChunkedVolume):
        vol = source
    elif isinstance(source, (str, Path)):
        text = str(source)
        path, _, key = text.partition("::")
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(errno.ENOENT, "no such file or directory", path)
        if p.is_dir() or p.suffix.lower() in (".zarr", ".zr3"):
            spec = InputSpec("zarr", str(p), key or None)
        elif p.suffix.lower() in TIFF_SUFFIXES:
            spec = InputSpec("tiff", str(p))
        elif p.suffix.lower() == ".npy":
            spec = InputSpec("npy", str(p))
        else:
            raise InputError(
                f"{path}: unsupported input {p.suffix or '(no extension)'!r}; expected a Zarr/OME-Zarr "
                "directory, a TIFF or a .npy file"
            )
        vol = _open_spec(spec)
    elif hasattr(source, "shape") and hasattr(source, "dtype") and hasattr(source, "__getitem__"):
        if isinstance(source, np.ndarray):
            source = np.asarray(source)
        vol = _open_spec(InputSpec("array", array=source))
    else:
        raise InputError(f"cannot read a volume from {type(source).__name__}; give a path or a dask/zarr array")
    if spacing is not None:
        sp = tuple(float(s) for s in spacing)
        if len(sp) != 3 or not all(math.isfinite(s) and s > 0 for s in sp):
            raise InputError(f"spacing must be three positive numbers (Z, Y, X), got {spacing!r}")
        vol.spacing = sp
    return vol


@functools.lru_cache(maxsize=8)
def _cached_store(kind: str, path: str, key: str | None):
    """Opened zarr/tiff/npy arrays, cached per process so a worker reopens each input once."""
    if kind == "zarr":
        return _open_zarr(path, key)
    if kind == "tiff":
        return _open_tiff(path)
    if kind == "npy":
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:
            raise InputError(f"{path}: not a readable .npy array ({exc})") from None
        return arr, (1.0, 1.0, 1.0)
    raise InputError(f"unknown input kind {kind!r}")


def _open_spec(spec: InputSpec) -> ChunkedVolume:
    if spec.kind == "array":
        arr, spacing, name = spec.array, (1.0, 1.0, 1.0), f"{type(spec.array).__name__} input"
    else:
        arr, spacing = _cached_store(spec.kind, spec.path, spec.key)
        name = spec.path + (f"::{spec.key}" if spec.key else "")
    lead = _leading_axes(arr.shape, name)
    try:
        check_dtype(arr.dtype)
    except InputError:
        raise InputError(
            f"{name}: dtype {arr.dtype} cannot be compressed (expected an integer or float dtype)"
        ) from None
    vol = ChunkedVolume(spec, arr, spacing, lead, name)
    small = [(a, n) for a, n in zip(_AXIS_NAMES, vol.shape) if n < 8]
    if small:
        raise InputError(f"{name}: axis {small[0][0]} has {small[0][1]} voxels; at least 8 are needed per axis")
    return vol


def _leading_axes(shape, name) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) < 3:
        raise InputError(f"{name}: the array has {len(shape)} dimension(s) {shape}; a 3D (Z, Y, X) volume is needed")
    extra = shape[:-3]
    for i, n in enumerate(extra):
        if n != 1:
            raise InputError(
                f"{name}: the array has shape {shape}; axis {i} (of {len(shape)}, before Z, Y, X) has {n} entries. "
                "Pick one channel/time point first (e.g. a dask array arr[0, ...] or PATH::KEY)"
            )
    return (0,) * len(extra)


def _open_zarr(path: str, key: str | None):
    import zarr

    try:
        node = zarr.open(path, mode="r")
    except Exception as exc:  # zarr raises several types for "not a zarr store"
        raise InputError(f"{path}: not a Zarr array or group ({type(exc).__name__}: {exc})") from None
    spacing = (1.0, 1.0, 1.0)
    if key:
        parts = key.strip("/").split("/")
        if key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise InputError(f"{path}::{key}: the key must name an array inside the group (names separated "
                             "by '/', no '..')")
        if not isinstance(node, zarr.Group):
            raise InputError(f"{path} is a Zarr array, not a group; '::{key}' picks an array inside a group "
                             f"(use {path} alone)")
        try:
            node = node[key]
        except (KeyError, TypeError, IndexError, ValueError):
            names = ", ".join(sorted(k for k, _ in node.members())) or "none"
            raise InputError(f"{path}: no array {key!r} in the Zarr group (it holds: {names})") from None
    if isinstance(node, zarr.Group):
        node, spacing = _pick_group_array(node, path)
    return node, spacing


def _multiscales(attrs) -> list | None:
    attrs = dict(attrs)
    if "ome" in attrs and isinstance(attrs["ome"], dict):
        attrs = attrs["ome"]
    ms = attrs.get("multiscales")
    return ms if isinstance(ms, list) and ms else None


def _pick_group_array(group, path: str):
    ms = _multiscales(group.attrs)
    if ms is not None:
        try:
            ds = ms[0]["datasets"][0]
            arr = group[ds["path"]]
        except (KeyError, IndexError, TypeError):
            raise InputError(f"{path}: OME-Zarr multiscales metadata does not name a readable dataset") from None
        spacing = (1.0, 1.0, 1.0)
        for t in ds.get("coordinateTransformations", []) or []:
            if isinstance(t, dict) and t.get("type") == "scale" and len(t.get("scale", [])) >= 3:
                vals = [float(v) for v in t["scale"][-3:]]
                if all(math.isfinite(v) and v > 0 for v in vals):
                    spacing = tuple(vals)
        return arr, spacing
    arrays = []
    for name, child in group.arrays():
        if sum(int(s) > 1 for s in child.shape) >= 3:
            arrays.append((name, child))
    if len(arrays) == 1:
        return arrays[0][1], (1.0, 1.0, 1.0)
    if not arrays:
        found = ", ".join(f"{n} {tuple(a.shape)}" for n, a in group.arrays()) or "no arrays"
        raise InputError(f"{path}: the Zarr group holds no 3D array ({found})")
    names = ", ".join(n for n, _ in arrays)
    raise InputError(f"{path}: the Zarr group holds several 3D arrays ({names}); pick one with {path}::NAME")


def _open_tiff(path: str):
    import tifffile
    import zarr

    try:
        with tifffile.TiffFile(path) as tif:
            spacing = _tiff_spacing(tif, path)
        store = tifffile.imread(path, aszarr=True)
        arr = zarr.open(store, mode="r")
    except (tifffile.TiffFileError, ValueError) as exc:
        raise InputError(f"{path}: not a readable TIFF ({exc})") from None
    if isinstance(arr, zarr.Group):  # pyramidal TIFF: level 0
        arr = arr["0"]
    return arr, spacing


def _tiff_spacing(tif, path: str):
    from .. import volume_io

    try:
        return volume_io._tiff_spacing(tif, Path(path))
    except Exception:  # metadata problems never stop a read; voxel units instead
        return (1.0, 1.0, 1.0)
