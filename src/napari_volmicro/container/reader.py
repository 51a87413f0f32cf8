"""Reading ``.vmg`` files: ``VmgFile`` (random access by brick), ``load`` and ``read_info``.

Opening a file reads and checks the header, the tables and the sections
(all small), never the brick payloads. Every count and offset is checked
against the file's length before anything is allocated or read. A file cut
short inside its brick payloads still opens (``complete`` is False): the
bricks before the cut can be read, ``load`` and a brick past the cut raise
``FormatError``. Bytes after the last payload are refused.
"""

from __future__ import annotations

import os
import threading
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..errors import ChecksumError, FormatError, InputError, UnsupportedVersionError
from ..gaussians import GaussianVolume
from ..intensity import CODE_DTYPES, IntensityMapping
from ..metrics import bpp, ratio
from ..region import RegionGrid, normalize_region
from .codec import build_model, dequantize_brick, parse_background, raw_bounds, with_residual
from .layout import (
    HEADER_SIZE,
    SECTION_BACKGROUND,
    SECTION_RESIDUAL,
    BrickTable,
    Header,
    SectionInfo,
    check_decoded_range,
    crc32,
    parse_header,
    parse_tables,
)

#: largest magnitude of a background node (model units; the amplitudes' float16 range): larger
#: values are no background an encoder writes, and would overflow float32 decoding
BACKGROUND_MAX = 65504.0
#: how far (voxels) a Gaussian's recomputed 3-sigma box may stick out of its
#: brick's stored reach box (covers float rounding differences between machines)
REACH_TOLERANCE = 1e-4


class VmgFile:
    """A ``.vmg`` file opened for random access.

    Attributes: ``path``; ``header`` (``layout.Header``); ``bricks`` (tuple of
    ``BrickInfo``: core bounds, reach box, count, payload offset);
    ``sections``; ``background`` (float32 grid or None); ``mapping``;
    ``file_bytes`` (actual size) and ``expected_bytes`` (size the tables
    describe); ``complete``; ``bytes_read`` (running total of bytes read from
    disk, for tests and benchmarks).

    ``cache_gaussians``: keep the most recently used bricks' Gaussians in
    memory, up to this many Gaussians in all (least recently used dropped
    first; 0, the default, keeps nothing), and the last models
    ``load_bricks`` built, up to as many Gaussians again, so panning over the
    same bricks reads nothing again. Every brick is fully checked (checksum, values, reach box) the
    first time it is read; a later re-read checks its checksum again (the
    bytes are those already verified) and skips the reach-box check.
    Methods are safe to call from several threads.
    """

    #: at most this many models built by ``load_bricks`` are kept (only with a cache)
    MODEL_CACHE = 2

    def __init__(self, path, *, cache_gaussians: int = 0):
        self.path = Path(path)
        self.name = str(self.path)
        self.bytes_read = 0
        self.cache_gaussians = max(0, int(cache_gaussians))
        self._parts: OrderedDict[int, dict] = OrderedDict()  # brick index -> raw arrays (LRU)
        self._cached = 0  # Gaussians held in _parts
        self._models: OrderedDict[tuple[int, ...], GaussianVolume] = OrderedDict()
        self._reach_checked: set[int] = set()
        self._lock = threading.RLock()
        if self.path.is_dir():
            raise IsADirectoryError(21, "is a directory, expected a .vmg file", self.name)
        self.file_bytes = os.stat(self.path).st_size
        head = self._read(0, min(HEADER_SIZE, self.file_bytes))
        self.header: Header = parse_header(head, self.name, self.file_bytes)
        h = self.header
        if self.file_bytes < h.data_start:
            raise FormatError(
                f"{self.name}: truncated brick/section table: it needs bytes {HEADER_SIZE}-{h.data_start - 1} "
                f"({h.n_bricks} bricks, {h.n_sections} sections), the file has {self.file_bytes} bytes"
            )
        bricks, sections = parse_tables(h, head, self._read(HEADER_SIZE, h.table_size), self.name)
        self.bricks: BrickTable = bricks  # a sequence of BrickInfo, held as arrays
        self.sections: tuple[SectionInfo, ...] = tuple(sections)
        self.expected_bytes = int(bricks.end[-1])
        if self.file_bytes > self.expected_bytes:
            raise FormatError(
                f"{self.name}: {self.file_bytes - self.expected_bytes} unexpected bytes after the end of the "
                f"last brick (byte {self.expected_bytes}); the file is corrupt or was appended to"
            )
        sections_end = sections[-1].end if sections else h.data_start
        if self.file_bytes < sections_end:
            raise FormatError(
                f"{self.name}: truncated: the sections need bytes {h.data_start}-{sections_end - 1}, "
                f"the file has {self.file_bytes} bytes"
            )
        self.complete = self.file_bytes == self.expected_bytes
        self.mapping = IntensityMapping(h.offset, h.scale, CODE_DTYPES[h.dtype_code])
        self.background = self._read_sections()

    # -- low level ------------------------------------------------------------------

    def _read(self, offset: int, length: int, fh=None) -> bytes:
        if fh is None:
            with open(self.path, "rb") as own:
                return self._read(offset, length, own)
        fh.seek(offset)
        data = fh.read(length)
        self.bytes_read += len(data)
        if len(data) != length:
            raise FormatError(
                f"{self.name}: truncated: expected {length} bytes at byte {offset}, got {len(data)} "
                "(the file changed or was cut while being read)"
            )
        return data

    def _read_sections(self) -> np.ndarray | None:
        background = None
        self._residual_index = None
        for i, s in enumerate(self.sections):
            if s.type == SECTION_RESIDUAL:
                if self._residual_index is not None:
                    raise FormatError(f"{self.name}: more than one enhancement (residual) section")
                # not read on opening: the layer reads its blocks through read_section_range (the
                # blob carries its own per-block checksums); verify() checks the section's CRC
                self._residual_index = i
                continue
            data = self._read(s.offset, s.length)
            if crc32(data) != s.crc:
                raise ChecksumError(
                    f"{self.name}: section {i} (type {s.type}) checksum mismatch "
                    f"(bytes {s.offset}-{s.end - 1} are corrupt)"
                )
            if s.type == SECTION_BACKGROUND:
                if background is not None:
                    raise FormatError(f"{self.name}: more than one background section")
                where = f"{self.name}: background section {i}"
                background = parse_background(data, where)
                peak = float(np.abs(background).max())
                if peak > BACKGROUND_MAX:
                    raise FormatError(f"{where}: node values reach {peak:g} model units (at most {BACKGROUND_MAX:g})")
                check_decoded_range(float(background.min()), float(background.max()), self.header, where,
                                    "the background field")
            elif s.required:
                raise UnsupportedVersionError(
                    f"{self.name}: section {i} has type {s.type}, which this reader does not know and the "
                    "file marks as required; upgrade napari-volmicro"
                )
            # unknown optional sections are skipped (their checksum was still verified)
        return background

    # -- the enhancement (residual) section ------------------------------------------------

    def section_range(self, kind: int = SECTION_RESIDUAL) -> tuple[int, int] | None:
        """(absolute file offset, length in bytes) of the first section of type ``kind``
        (default: the enhancement layer, ``layout.SECTION_RESIDUAL``), or None if the file has none."""
        for s in self.sections:
            if s.type == kind:
                return s.offset, s.length
        return None

    def read_section_range(self, offset: int, length: int, kind: int = SECTION_RESIDUAL) -> bytes:
        """``length`` bytes starting ``offset`` bytes into the section of type ``kind`` (default: the
        enhancement layer). Offsets usually come from the file (the layer's own block index), so a
        range outside the section is a ``FormatError`` naming the file; the bytes are not checked
        (the layer checks its blocks' own checksums; ``verify`` checks the whole section's CRC)."""
        where = self.section_range(kind)
        if where is None:
            raise FormatError(f"{self.name}: has no section of type {kind}")
        start, size = where
        if isinstance(offset, bool) or isinstance(length, bool):
            raise FormatError(f"{self.name}: section {kind}: range {offset!r}+{length!r} is not two integers")
        try:
            offset, length = int(offset), int(length)
        except (TypeError, ValueError):
            raise FormatError(f"{self.name}: section {kind}: range {offset!r}+{length!r} is not two integers") from None
        if offset < 0 or length < 0 or offset + length > size:
            raise FormatError(
                f"{self.name}: section {kind}: bytes {offset}..{offset + length} lie outside its {size} bytes"
            )
        with self._lock:
            return self._read(start + offset, length)

    def residual_layer(self):
        """The enhancement layer of this file (``napari_volmicro.residual.open_layer(self)``, opened
        on first call and kept), or None when the file has no residual section or this package has
        no ``residual`` module."""
        if self._residual_index is None:
            return None
        with self._lock:
            if not hasattr(self, "_layer"):
                try:
                    from ..residual import open_layer
                except ImportError:
                    self._layer = None
                else:
                    self._layer = open_layer(self)
            return self._layer

    def residual_payload(self) -> bytes | None:
        """The whole enhancement-layer section (CRC checked), or None; for copying a file."""
        if self._residual_index is None:
            return None
        s = self.sections[self._residual_index]
        data = self._read(s.offset, s.length)
        if crc32(data) != s.crc:
            raise ChecksumError(
                f"{self.name}: section {self._residual_index} (type {s.type}) checksum mismatch "
                f"(bytes {s.offset}-{s.end - 1} are corrupt)"
            )
        return data

    def _check_section_crc(self, i: int) -> None:
        """Read section ``i`` in 16 MiB pieces and check its CRC (``ChecksumError``)."""
        s = self.sections[i]
        crc, pos = 0, s.offset
        with open(self.path, "rb") as fh:
            while pos < s.end:
                n = min(s.end - pos, 1 << 24)
                crc = zlib.crc32(self._read(pos, n, fh), crc)
                pos += n
        if crc & 0xFFFFFFFF != s.crc:
            raise ChecksumError(
                f"{self.name}: section {i} (type {s.type}) checksum mismatch (bytes {s.offset}-{s.end - 1} are corrupt)"
            )

    # -- metadata -----------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.header.shape

    @property
    def spacing(self) -> tuple[float, float, float]:
        return self.header.spacing

    @property
    def n_gaussians(self) -> int:
        return self.header.n_gaussians

    def brick_available(self, i: int) -> bool:
        """Whether brick ``i``'s payload lies inside the file (False after a truncation)."""
        return int(self.bricks.offset[i]) + int(self.bricks.nbytes[i]) <= self.file_bytes

    @property
    def info(self) -> dict:
        """Header fields and sizes as a JSON-friendly dict."""
        h = self.header
        n_vox = h.shape[0] * h.shape[1] * h.shape[2]
        dtype = self.mapping.dtype
        return {
            "path": self.name,
            "format_version": h.version,
            "shape": list(h.shape),
            "dtype": str(dtype),
            "spacing": list(h.spacing),
            "intensity_offset": h.offset,
            "intensity_scale": h.scale,
            "n_gaussians": h.n_gaussians,
            "n_bricks": h.n_bricks,
            "background_shape": None if self.background is None else list(self.background.shape),
            "residual_bytes": None if self._residual_index is None else self.sections[self._residual_index].length,
            "file_bytes": self.file_bytes,
            "expected_bytes": self.expected_bytes,
            "complete": self.complete,
            "bpp": bpp(self.file_bytes, n_vox),
            "ratio": ratio(self.file_bytes, n_vox, dtype.itemsize),
        }

    # -- Gaussians --------------------------------------------------------------------------

    def _model(self, parts: list[dict]) -> GaussianVolume:
        try:
            return build_model(
                parts, self.shape, spacing=self.spacing, mapping=self.mapping, background=self.background
            )
        except InputError as exc:  # defensive: every field was checked already
            raise FormatError(f"{self.name}: {exc}") from None

    def _load_brick(self, i: int, fh=None) -> dict:
        t = self.bricks  # read from its arrays: no BrickInfo per brick on this path
        offset, nbytes, count = int(t.offset[i]), int(t.nbytes[i]), int(t.count[i])
        end = offset + nbytes
        where = f"{self.name}: brick {i}"
        if end > self.file_bytes:
            raise FormatError(
                f"{where}: truncated: its payload needs bytes {offset}-{end - 1}, "
                f"the file has {self.file_bytes} bytes"
            )
        data = self._read(offset, nbytes, fh)
        if crc32(data) != int(t.crc[i]):
            raise ChecksumError(
                f"{where}: payload checksum mismatch (bytes {offset}-{end - 1} are corrupt)"
            )
        part = dequantize_brick(data, count, t.pos_lo[i], t.pos_hi[i], where, self.header.version)
        if count and i not in self._reach_checked:
            self._check_reach(i, part)
            self._reach_checked.add(i)
        return part

    def _part(self, i: int, fh, cache: bool = True) -> dict:
        """Brick ``i``'s raw arrays, from the cache or read (and cached if ``cache`` and there is room)."""
        part = self._parts.get(i)
        if part is not None:
            self._parts.move_to_end(i)
            return part
        part = self._load_brick(i, fh)
        count = int(self.bricks.count[i])
        if cache and 0 < count <= self.cache_gaussians:
            while self._parts and self._cached + count > self.cache_gaussians:
                _, old = self._parts.popitem(last=False)
                self._cached -= len(old["amplitudes"])
            self._parts[i] = part
            self._cached += count
        return part

    def _check_reach(self, i: int, part: dict) -> None:
        reach_lo, reach_hi = self.bricks.reach_lo[i].astype(np.float64), self.bricks.reach_hi[i].astype(np.float64)
        lo, hi = raw_bounds(part)
        if (lo < reach_lo - REACH_TOLERANCE).any() or (hi > reach_hi + REACH_TOLERANCE).any():
            raise FormatError(
                f"{self.name}: brick {i}: its Gaussians reach {_fmt(lo)}..{_fmt(hi)}, "
                f"outside the stored reach box {_fmt(reach_lo)}..{_fmt(reach_hi)}"
            )

    def _indices(self, indices) -> list[int]:
        try:
            idx = [int(i) for i in indices]
        except (TypeError, ValueError):
            raise InputError(f"brick indices must be integers, got {indices!r}") from None
        for i in idx:
            if not 0 <= i < len(self.bricks):
                raise InputError(f"brick index {i} is out of range (the file has {len(self.bricks)} bricks)")
        return sorted(set(idx))

    def load_bricks(self, indices, *, cache: bool = True) -> GaussianVolume:
        """A model holding only the Gaussians of bricks ``indices`` (in file order), with the
        full volume's shape, spacing, mapping and background.

        cache: keep the bricks read, and the model, in this file's cache (if it has one).
        """
        idx = self._indices(indices)
        key = tuple(idx)
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
                return model
            if all(i in self._parts for i in idx):
                parts = [self._part(i, None) for i in idx]
            else:
                with open(self.path, "rb") as fh:
                    parts = [self._part(i, fh, cache) for i in idx]
            model = self._model(parts)
            if cache and 0 < model.n_gaussians <= self.cache_gaussians:
                self._models[key] = model
                while len(self._models) > self.MODEL_CACHE or (
                    sum(m.n_gaussians for m in self._models.values()) > self.cache_gaussians
                ):
                    self._models.popitem(last=False)
            return model

    def bricks_for_region(self, region) -> list[int]:
        """Indices of the bricks whose reach box meets ``region`` (three slices, ZYX, or a ``RegionGrid``).

        Decoding the region from these bricks alone is exact.
        """
        grid = region if isinstance(region, RegionGrid) else normalize_region(region, self.shape)
        return self.bricks_meeting(grid.start, grid.last)

    def bricks_meeting(self, first, last) -> list[int]:
        """Indices of the non-empty bricks whose reach box meets the box ``[first, last]``
        (voxel coordinates, ZYX, inclusive)."""
        lo, hi, filled = self._reach_table()
        first = np.asarray(first, np.float64)
        last = np.asarray(last, np.float64)
        hit = filled & np.all(lo <= last, axis=1) & np.all(hi >= first, axis=1)
        return np.flatnonzero(hit).tolist()

    def _reach_table(self):
        """(B, 3) reach lo and hi (float64) and (B,) whether each brick has Gaussians, built once."""
        table = getattr(self, "_reach", None)
        if table is None:
            b = self.bricks
            table = self._reach = (b.reach_lo.astype(np.float64), b.reach_hi.astype(np.float64), b.count > 0)
        return table

    def load_region(self, region) -> GaussianVolume:
        """A model with only the Gaussians that can touch ``region``; reads only those bricks."""
        return self.load_bricks(self.bricks_for_region(region))

    def load(self) -> GaussianVolume:
        """The whole model (with its enhancement layer attached, when the file has one and this
        package reads it); ``FormatError`` if the file is truncated."""
        self.check_complete()
        model = self.load_bricks(range(len(self.bricks)), cache=False)
        return with_residual(model, self.residual_layer())

    def check_complete(self) -> None:
        """``FormatError`` if the file is cut short (some bricks' payloads are missing)."""
        if not self.complete:
            missing = int(np.count_nonzero(self.bricks.end > self.file_bytes))
            raise FormatError(
                f"{self.name}: truncated: the file has {self.file_bytes} bytes, its tables describe "
                f"{self.expected_bytes} ({missing} of {len(self.bricks)} bricks cut off)"
            )

    def verify(self) -> None:
        """Read and check every brick (checksums, values, reach boxes) and the CRC of every section not
        read on opening; raises ``FormatError``. Memory: one brick at a time."""
        self.check_complete()
        if self._residual_index is not None:
            self._check_section_crc(self._residual_index)
        with self._lock, open(self.path, "rb") as fh:
            for i in np.flatnonzero(self.bricks.count > 0):  # an empty brick has no bytes (its CRC is 0)
                self._load_brick(int(i), fh)


def _fmt(box) -> str:
    return "(" + ", ".join(f"{float(v):.3f}" for v in box) + ")"


def load(path) -> GaussianVolume:
    """Read a ``.vmg`` file into a ``GaussianVolume`` (every byte checked)."""
    return VmgFile(path).load()


def read_info(path) -> dict:
    """Header and table fields of a ``.vmg`` file, without reading the Gaussians (see ``VmgFile.info``)."""
    return VmgFile(path).info
