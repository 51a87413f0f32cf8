"""Byte layout of a ``.vmg`` file (versions 1 and 2): the fixed header and the tables.

This module only packs and unpacks bytes and checks each field on its own
(ranges, finiteness, reserved bytes); it does no I/O. The full specification,
with byte offsets, is ``docs/format.md``. All integers and floats are
little-endian.

File order::

    header (88 B) | brick table (n_bricks x 88 B) | section table (n_sections x 24 B)
    | table CRC32 (4 B) | section payloads, in table order | brick payloads, in table order

Sections come before brick payloads so that a file truncated at the end
loses only whole bricks, and the bricks before the cut can still be read.
Version 2 differs only in the brick payload coding (``payload_v2``) and in
the brick-table entry, which gains the payload length (u32, 92 bytes).
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ChecksumError, FormatError, UnsupportedVersionError
from ..intensity import CODE_DTYPES
from . import payload_v1, payload_v2, payload_v3

#: First 8 bytes of every .vmg file. The NUL, CR LF and Ctrl-Z bytes catch
#: text-mode transfers and C-string truncation, like PNG's signature.
MAGIC = b"VMG\x00\r\n\x1a\n"
#: The newest format version this reader understands (and the one it writes by default).
FORMAT_VERSION = 3
#: Versions this package reads and writes.
SUPPORTED_VERSIONS = (1, 2, 3)

#: magic, version, flags, shape (z, y, x), dtype code, 3 reserved bytes, n_bricks,
#: spacing (z, y, x), intensity offset, intensity scale, n_gaussians, n_sections
HEADER = struct.Struct("<8sHH3IB3sI3d2dQI")
#: the header proper plus its CRC32
HEADER_SIZE = HEADER.size + 4
#: version 1 brick entry: core bounds z0 z1 y0 y1 x0 x1 (u32), reach lo zyx, reach hi zyx (f32),
#: position box lo zyx, hi zyx (f32), count (u32), payload CRC32 (u32), payload offset (u64)
BRICK_V1 = struct.Struct("<6I3f3f3f3fIIQ")
#: version 2 and 3 brick entry: the version 1 fields, then the payload length in bytes (u32)
BRICK = struct.Struct("<6I3f3f3f3fIIQI")
#: type (u16), flags (u16), payload CRC32 (u32), payload offset (u64), payload length (u64)
SECTION = struct.Struct("<HHIQQ")
TABLE_CRC_SIZE = 4

#: bytes per stored Gaussian in version 1 (3 x u16 position, 3 x f16 scale, 4 x f16 quaternion, f16 amplitude)
V1_BYTES_PER_GAUSSIAN = payload_v1.BYTES_PER_GAUSSIAN
#: values per Gaussian; a brick is quantised to an (11, count) array of u16 planes (codes)
PLANES = 11

#: section type of the coarse background field (``background.py``)
SECTION_BACKGROUND = 1
#: section type of the enhancement (residual) layer: an opaque blob that carries its own per-block
#: index and checksums (``napari_volmicro.residual``); written optional, read lazily by block
SECTION_RESIDUAL = 2
#: section flag bit: a reader that does not know the section type must refuse the file
SECTION_REQUIRED = 0x0001
#: header of the background section payload: dtype code, 3 reserved bytes, grid shape (z, y, x)
BACKGROUND_HEADER = struct.Struct("<B3s3I")

#: sanity caps (every count is also checked against the file length before reading)
MAX_BRICKS = 1 << 24
MAX_SECTIONS = 1 << 10
MAX_AXIS = 2**31 - 1
#: most Gaussians one brick may hold (44 bytes each decoded: at most 740 MB for one brick)
MAX_BRICK_GAUSSIANS = 1 << 24


def brick_struct(version: int) -> struct.Struct:
    """The brick-table entry layout of format ``version``."""
    return BRICK_V1 if version == 1 else BRICK


def crc32(data) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


@dataclass(frozen=True)
class Header:
    """The fixed 88-byte header. ``shape`` and ``spacing`` are ZYX (voxels, physical units)."""

    version: int
    flags: int
    shape: tuple[int, int, int]
    dtype_code: int
    n_bricks: int
    spacing: tuple[float, float, float]
    offset: float
    scale: float
    n_gaussians: int
    n_sections: int

    def pack(self) -> bytes:
        body = HEADER.pack(
            MAGIC,
            self.version,
            self.flags,
            *self.shape,
            self.dtype_code,
            b"\x00\x00\x00",
            self.n_bricks,
            *self.spacing,
            self.offset,
            self.scale,
            self.n_gaussians,
            self.n_sections,
        )
        return body + struct.pack("<I", crc32(body))

    @property
    def table_size(self) -> int:
        """Bytes of brick table + section table + table CRC."""
        return self.n_bricks * brick_struct(self.version).size + self.n_sections * SECTION.size + TABLE_CRC_SIZE

    @property
    def data_start(self) -> int:
        """Offset of the first payload byte (first section, else first brick)."""
        return HEADER_SIZE + self.table_size


@dataclass(frozen=True)
class BrickInfo:
    """One brick-table entry.

    ``core_lo``/``core_hi``: the voxel-index box ``[lo, hi)`` per axis (ZYX) the
    brick is responsible for. ``reach_lo``/``reach_hi``: a box (voxel
    coordinates, inclusive) containing every 3-sigma box of its Gaussians; a
    region that does not meet it gets nothing from this brick. ``pos_lo``/
    ``pos_hi``: the box the positions are quantised over. ``count``
    Gaussians are stored in ``nbytes`` payload bytes (``22 * count`` in
    version 1) at ``offset`` (CRC32 ``crc``); a writer fills ``offset`` in
    when it lays the file out.
    """

    core_lo: tuple[int, int, int]
    core_hi: tuple[int, int, int]
    reach_lo: tuple[float, float, float]
    reach_hi: tuple[float, float, float]
    pos_lo: tuple[float, float, float]
    pos_hi: tuple[float, float, float]
    count: int
    crc: int
    nbytes: int
    offset: int = 0

    @property
    def end(self) -> int:
        return self.offset + self.nbytes

    def pack(self, version: int = FORMAT_VERSION) -> bytes:
        """The table entry of format ``version`` (version 1 has no length field)."""
        core = (
            self.core_lo[0],
            self.core_hi[0],
            self.core_lo[1],
            self.core_hi[1],
            self.core_lo[2],
            self.core_hi[2],
        )
        fields = (*core, *self.reach_lo, *self.reach_hi, *self.pos_lo, *self.pos_hi, self.count, self.crc, self.offset)
        if version == 1:
            return BRICK_V1.pack(*fields)
        return BRICK.pack(*fields, self.nbytes)

    def meets(self, first, last) -> bool:
        """Whether the reach box meets the box of voxel coordinates ``[first, last]`` (ZYX, inclusive)."""
        if self.count == 0:
            return False
        return all(self.reach_lo[a] <= last[a] and self.reach_hi[a] >= first[a] for a in range(3))


@dataclass(frozen=True)
class SectionInfo:
    """One section-table entry: ``length`` bytes at ``offset`` with CRC32 ``crc``."""

    type: int
    flags: int
    crc: int
    offset: int
    length: int

    @property
    def required(self) -> bool:
        return bool(self.flags & SECTION_REQUIRED)

    @property
    def end(self) -> int:
        return self.offset + self.length

    def pack(self) -> bytes:
        return SECTION.pack(self.type, self.flags, self.crc, self.offset, self.length)


def _entry_dtype(version: int) -> np.dtype:
    """The brick-table entry as a numpy structured dtype (same bytes as ``brick_struct``)."""
    fields = [("core", "<u4", 6), ("reach_lo", "<f4", 3), ("reach_hi", "<f4", 3), ("pos_lo", "<f4", 3),
              ("pos_hi", "<f4", 3), ("count", "<u4"), ("crc", "<u4"), ("offset", "<u8")]
    if version >= 2:
        fields.append(("length", "<u4"))
    dt = np.dtype(fields)
    assert dt.itemsize == brick_struct(version).size
    return dt


class BrickTable(Sequence):
    """The brick table as arrays (about 1.4 bytes of memory per table byte, whatever the brick count);
    ``table[i]`` is the ``BrickInfo`` of brick ``i``, made on demand. Arrays: ``core_lo``/``core_hi``
    (n, 3) int64, ``reach_lo``/``reach_hi``/``pos_lo``/``pos_hi`` (n, 3) float32, ``count``, ``crc``,
    ``offset``, ``nbytes`` (n,) int64."""

    def __init__(self, core_lo, core_hi, reach_lo, reach_hi, pos_lo, pos_hi, count, crc, offset, nbytes):
        self.core_lo, self.core_hi = core_lo, core_hi
        self.reach_lo, self.reach_hi, self.pos_lo, self.pos_hi = reach_lo, reach_hi, pos_lo, pos_hi
        self.count, self.crc, self.offset, self.nbytes = count, crc, offset, nbytes
        self._made: dict[int, BrickInfo] = {}  # entries made so far (at most MADE_MAX kept)

    #: most ``BrickInfo`` objects kept once made (a region reads the same bricks again and again)
    MADE_MAX = 1 << 14

    def __len__(self) -> int:
        return len(self.count)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = range(len(self))[i]  # negative indices, IndexError
        made = self._made.get(i)
        if made is not None:
            return made
        if len(self._made) >= self.MADE_MAX:
            self._made.clear()
        made = self._made[i] = BrickInfo(
            core_lo=tuple(int(v) for v in self.core_lo[i]),
            core_hi=tuple(int(v) for v in self.core_hi[i]),
            reach_lo=tuple(float(v) for v in self.reach_lo[i]),
            reach_hi=tuple(float(v) for v in self.reach_hi[i]),
            pos_lo=tuple(float(v) for v in self.pos_lo[i]),
            pos_hi=tuple(float(v) for v in self.pos_hi[i]),
            count=int(self.count[i]),
            crc=int(self.crc[i]),
            nbytes=int(self.nbytes[i]),
            offset=int(self.offset[i]),
        )
        return made

    @property
    def end(self) -> np.ndarray:
        return self.offset + self.nbytes

    def __eq__(self, other) -> bool:
        """Equal to any sequence of the same ``BrickInfo`` entries."""
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None

    @classmethod
    def parse(cls, body: bytes, header: Header, start: int, name: str) -> BrickTable:
        """Check and unpack ``header.n_bricks`` entries (``body``); the first brick's payload must start
        at ``start``. Every check is vectorised; the error names the first brick at fault (for one
        brick, the first rule in the order of docs/format.md)."""
        version, shape = header.version, np.asarray(header.shape, np.int64)
        arr = np.frombuffer(body, _entry_dtype(version), count=header.n_bricks)
        core = arr["core"].astype(np.int64)
        lo, hi = core[:, 0::2], core[:, 1::2]
        count = arr["count"].astype(np.int64)
        nbytes = arr["length"].astype(np.int64) if version >= 2 else count * V1_BYTES_PER_GAUSSIAN
        offset = arr["offset"].astype(np.uint64)
        boxes = {k: arr[k] for k in ("reach_lo", "reach_hi", "pos_lo", "pos_hi")}
        failures = []  # (first bad brick, rule order, message)

        def rule(order, bad, message):
            if bad.any():
                i = int(np.argmax(bad))
                failures.append((i, order, lambda: message(i)))

        bad_axis = ~((lo >= 0) & (lo < hi) & (hi <= shape))
        rule(0, bad_axis.any(axis=1), lambda i: (
            f"{name}: brick {i} core bounds {lo[i, a]}:{hi[i, a]} on axis {'ZYX'[a]} are not "
            f"a non-empty range inside 0:{shape[a]}" if (a := int(np.argmax(bad_axis[i]))) >= 0 else ""))
        floats = np.concatenate([boxes[k] for k in ("reach_lo", "reach_hi", "pos_lo", "pos_hi")], axis=1)
        with np.errstate(invalid="ignore"):
            rule(1, ~np.isfinite(floats).all(axis=1),
                 lambda i: f"{name}: brick {i} has a NaN or infinite reach or position box")
            rule(2, (boxes["pos_lo"] > boxes["pos_hi"]).any(axis=1), lambda i: (
                f"{name}: brick {i} position box {tuple(map(float, boxes['pos_lo'][i]))}.."
                f"{tuple(map(float, boxes['pos_hi'][i]))} has lo > hi"))
            rule(3, (count == 0) & (floats[:, :6] != 0).any(axis=1),
                 lambda i: f"{name}: brick {i} is empty but its reach box is not all zero")
            rule(3, (count > 0) & (boxes["reach_lo"] > boxes["reach_hi"]).any(axis=1), lambda i: (
                f"{name}: brick {i} reach box {tuple(map(float, boxes['reach_lo'][i]))}.."
                f"{tuple(map(float, boxes['reach_hi'][i]))} has lo > hi"))
        rule(4, count > MAX_BRICK_GAUSSIANS,
             lambda i: f"{name}: brick {i} claims {count[i]} Gaussians; a brick holds at most {MAX_BRICK_GAUSSIANS}")
        if version >= 2:
            rule(4, (count == 0) & (nbytes != 0),
                 lambda i: f"{name}: brick {i} is empty but its payload length is {nbytes[i]}, not 0")
            lo_len, hi_len = payload_length_range(version, count)
            rule(4, (count > 0) & ((nbytes < lo_len) | (nbytes > hi_len)), lambda i: (
                f"{name}: brick {i} payload length {nbytes[i]} is impossible for {count[i]} Gaussians "
                f"(expected {lo_len[i]}..{hi_len[i]}: at most 8 Gaussians per payload byte)"))
        rule(4, (count == 0) & (arr["crc"] != 0),
             lambda i: f"{name}: brick {i} is empty but its payload CRC32 is not that of no bytes (0)")
        want = start + np.concatenate([[0], np.cumsum(nbytes)[:-1]]) if len(nbytes) else nbytes
        got = offset.astype(np.float64)  # u64 offsets: compare exactly below, this only finds candidates
        rule(5, (offset != want.astype(np.uint64)) | (got > 2.0**62), lambda i: (
            f"{name}: brick {i} payload starts at byte {int(offset[i])}, expected {int(want[i])}"))
        if failures:
            raise FormatError(min(failures, key=lambda f: f[:2])[2]())
        total = int(count.sum())
        if total != header.n_gaussians:
            raise FormatError(
                f"{name}: inconsistent counts: the header says {header.n_gaussians} Gaussians, "
                f"the brick table holds {total}"
            )
        f32 = {k: np.ascontiguousarray(v, np.float32) for k, v in boxes.items()}
        return cls(lo, hi, f32["reach_lo"], f32["reach_hi"], f32["pos_lo"], f32["pos_hi"], count,
                   arr["crc"].astype(np.int64), offset.astype(np.int64), nbytes)


# -- parsing -------------------------------------------------------------------------


def parse_header(buf: bytes, name: str, file_bytes: int) -> Header:
    """Check and unpack the header from the first bytes of a file (``buf``, up to 88 bytes).

    Order of checks: magic, version (so a newer file is reported as newer even
    if its header is laid out differently), length, CRC, then each field.
    """
    if buf[: len(MAGIC)] != MAGIC[: len(buf)]:
        raise FormatError(
            f"{name}: not a .vmg file (the first bytes are {bytes(buf[:8])!r}, expected {MAGIC!r})"
        )
    if len(buf) < 10:
        raise FormatError(
            f"{name}: truncated header: the file has {file_bytes} bytes, a .vmg header needs {HEADER_SIZE}"
        )
    (version,) = struct.unpack_from("<H", buf, 8)
    if version > FORMAT_VERSION:
        raise UnsupportedVersionError(
            f"{name}: written by format version {version}; this reader supports up to "
            f"{FORMAT_VERSION}, upgrade napari-volmicro"
        )
    if version < 1:
        raise FormatError(f"{name}: invalid format version 0 in the header")
    if len(buf) < HEADER_SIZE:
        raise FormatError(
            f"{name}: truncated header: the file has {file_bytes} bytes, a .vmg header needs {HEADER_SIZE}"
        )
    body = bytes(buf[: HEADER.size])
    (stored,) = struct.unpack_from("<I", buf, HEADER.size)
    if crc32(body) != stored:
        raise ChecksumError(f"{name}: header checksum mismatch (bytes 0-{HEADER.size - 1} are corrupt)")
    f = HEADER.unpack(body)
    _, version, flags = f[0], f[1], f[2]
    shape = tuple(int(v) for v in f[3:6])
    dtype_code, reserved, n_bricks = f[6], f[7], f[8]
    spacing = tuple(float(v) for v in f[9:12])
    offset, scale, n_gaussians, n_sections = float(f[12]), float(f[13]), int(f[14]), int(f[15])
    if flags:
        raise UnsupportedVersionError(
            f"{name}: header flags 0x{flags:04x} name features this reader does not know; upgrade napari-volmicro"
        )
    if reserved != b"\x00\x00\x00":
        raise FormatError(f"{name}: header bytes 25-27 are reserved and must be zero")
    if min(shape) < 1 or max(shape) > MAX_AXIS:
        raise FormatError(f"{name}: header shape {shape} is invalid (each axis must be 1..{MAX_AXIS} voxels)")
    if dtype_code not in CODE_DTYPES:
        codes = ", ".join(f"{c}={d}" for c, d in sorted(CODE_DTYPES.items()))
        raise FormatError(f"{name}: header dtype code {dtype_code} is unknown (expected one of {codes})")
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise FormatError(f"{name}: header spacing {spacing} is invalid (three finite numbers > 0 expected)")
    if not math.isfinite(offset):
        raise FormatError(f"{name}: header intensity offset {offset} is not finite")
    if not (math.isfinite(scale) and scale > 0):
        raise FormatError(f"{name}: header intensity scale {scale} is invalid (finite and > 0 expected)")
    top = _output_max(dtype_code)
    if max(abs(offset), abs(offset + scale)) > top:
        raise FormatError(
            f"{name}: header intensity offset {offset:g} and scale {scale:g} decode model values 0..1 "
            f"beyond the largest finite {CODE_DTYPES[dtype_code]} ({top:g}); the file would decode to "
            "infinities"
        )
    if not 1 <= n_bricks <= MAX_BRICKS:
        raise FormatError(f"{name}: header brick count {n_bricks} is invalid (expected 1..{MAX_BRICKS})")
    if n_sections > MAX_SECTIONS:
        raise FormatError(f"{name}: header section count {n_sections} is invalid (at most {MAX_SECTIONS})")
    return Header(
        version, flags, shape, dtype_code, n_bricks, spacing, offset, scale, n_gaussians, n_sections
    )


def _output_max(dtype_code: int) -> float:
    """Largest finite value of a file's output dtype (float64's for integer dtypes, which clip)."""
    dt = CODE_DTYPES[dtype_code]
    return float(np.finfo(dt if dt.kind == "f" else np.float64).max)


def check_decoded_range(values_lo: float, values_hi: float, header: Header, name: str, what: str) -> None:
    """``FormatError`` unless model values ``values_lo..values_hi`` decode (``offset + scale * v``) to
    finite numbers of the file's dtype (integer dtypes clip, so only float64 overflow matters)."""
    top = _output_max(header.dtype_code)
    ends = [header.offset + header.scale * float(v) for v in (values_lo, values_hi)]
    if not all(math.isfinite(e) and abs(e) <= top for e in ends):
        raise FormatError(
            f"{name}: {what} spans model values {values_lo:g}..{values_hi:g}, which decode beyond the "
            f"largest finite {CODE_DTYPES[header.dtype_code]} ({top:g})"
        )


def table_crc(header_bytes: bytes, table_body: bytes) -> int:
    """The table CRC32: over the 88 header bytes and the brick and section tables, so a header
    and a table from different files never pass together."""
    return zlib.crc32(table_body, zlib.crc32(header_bytes)) & 0xFFFFFFFF


def parse_tables(
    header: Header, header_bytes: bytes, buf: bytes, name: str
) -> tuple[BrickTable, list[SectionInfo]]:
    """Check and unpack the brick and section tables (``buf`` = exactly ``header.table_size`` bytes).

    Checks the table CRC (which also covers ``header_bytes``), every field, and that payloads are packed in table
    order from ``header.data_start`` (sections first, then bricks) without
    gaps or overlaps, and that the brick counts add up to the header's.
    """
    n_b, n_s = header.n_bricks, header.n_sections
    body = memoryview(buf)[:-TABLE_CRC_SIZE]  # no copy: the table may be large
    (stored,) = struct.unpack_from("<I", buf, len(buf) - TABLE_CRC_SIZE)
    if table_crc(header_bytes, body) != stored:
        end = HEADER_SIZE + len(body) - 1
        raise ChecksumError(
            f"{name}: brick/section table checksum mismatch (bytes {HEADER_SIZE}-{end} are corrupt)"
        )
    pos = header.data_start
    entry = brick_struct(header.version)
    sections = []
    for i in range(n_s):
        s = SectionInfo(*SECTION.unpack_from(body, n_b * entry.size + i * SECTION.size))
        if s.flags & ~SECTION_REQUIRED:
            raise UnsupportedVersionError(
                f"{name}: section {i} has flags 0x{s.flags:04x} this reader does not know; upgrade napari-volmicro"
            )
        if s.offset != pos:
            raise FormatError(f"{name}: section {i} payload starts at byte {s.offset}, expected {pos}")
        pos = s.end
        sections.append(s)
    bricks = BrickTable.parse(body[: n_b * entry.size], header, pos, name)
    return bricks, sections


def payload_length_range(version: int, count):
    """Smallest and largest payload length (bytes) of a brick of ``count > 0`` Gaussians (an int or an
    int64 array) in format ``version`` (2 or 3). Both bound ``count`` by the payload: at most 8
    Gaussians per byte, so nothing a reader allocates for a brick outgrows its bytes by more than a
    fixed factor."""
    count = np.asarray(count, np.int64)
    eight = (count + 7) // 8
    if version == 2:
        return (np.maximum(payload_v2.HEADER_SIZE, eight),
                payload_v2.HEADER_SIZE + payload_v2.PLANES + count * payload_v2.MAX_BITS_PER_GAUSSIAN // 8)
    return np.maximum(payload_v3.HEADER_SIZE, eight), payload_v3.max_size_array(count)
