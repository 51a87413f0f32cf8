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
from dataclasses import dataclass

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
    if not 1 <= n_bricks <= MAX_BRICKS:
        raise FormatError(f"{name}: header brick count {n_bricks} is invalid (expected 1..{MAX_BRICKS})")
    if n_sections > MAX_SECTIONS:
        raise FormatError(f"{name}: header section count {n_sections} is invalid (at most {MAX_SECTIONS})")
    return Header(
        version, flags, shape, dtype_code, n_bricks, spacing, offset, scale, n_gaussians, n_sections
    )


def table_crc(header_bytes: bytes, table_body: bytes) -> int:
    """The table CRC32: over the 88 header bytes and the brick and section tables, so a header
    and a table from different files never pass together."""
    return zlib.crc32(table_body, zlib.crc32(header_bytes)) & 0xFFFFFFFF


def parse_tables(
    header: Header, header_bytes: bytes, buf: bytes, name: str
) -> tuple[list[BrickInfo], list[SectionInfo]]:
    """Check and unpack the brick and section tables (``buf`` = exactly ``header.table_size`` bytes).

    Checks the table CRC (which also covers ``header_bytes``), every field, and that payloads are packed in table
    order from ``header.data_start`` (sections first, then bricks) without
    gaps or overlaps, and that the brick counts add up to the header's.
    """
    n_b, n_s = header.n_bricks, header.n_sections
    body = bytes(buf[:-TABLE_CRC_SIZE])
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
    bricks = []
    total = 0
    for i in range(n_b):
        f = entry.unpack_from(body, i * entry.size)
        core = f[0:6]
        b = BrickInfo(
            core_lo=(core[0], core[2], core[4]),
            core_hi=(core[1], core[3], core[5]),
            reach_lo=tuple(f[6:9]),
            reach_hi=tuple(f[9:12]),
            pos_lo=tuple(f[12:15]),
            pos_hi=tuple(f[15:18]),
            count=f[18],
            crc=f[19],
            nbytes=f[21] if header.version >= 2 else f[18] * V1_BYTES_PER_GAUSSIAN,
            offset=f[20],
        )
        _check_brick(b, i, header.shape, name)
        if header.version >= 2:
            _check_payload_length(b, i, name, header.version)
        if b.offset != pos:
            raise FormatError(f"{name}: brick {i} payload starts at byte {b.offset}, expected {pos}")
        pos = b.end
        total += b.count
        bricks.append(b)
    if total != header.n_gaussians:
        raise FormatError(
            f"{name}: inconsistent counts: the header says {header.n_gaussians} Gaussians, "
            f"the brick table holds {total}"
        )
    return bricks, sections


def payload_length_range(version: int, count: int) -> tuple[int, int]:
    """Smallest and largest payload length (bytes) of a brick of ``count > 0`` Gaussians in format
    ``version`` (2 or 3). Both bound ``count`` by the payload: at most 8 Gaussians per byte, so
    nothing a reader allocates for a brick outgrows its bytes by more than a fixed factor."""
    if version == 2:
        return max(payload_v2.HEADER_SIZE, (count + 7) // 8), payload_v2.max_size(count)
    return payload_v3.min_size(count), payload_v3.max_size(count)


def _check_payload_length(b: BrickInfo, i: int, name: str, version: int) -> None:
    if b.count == 0 and b.nbytes:
        raise FormatError(f"{name}: brick {i} is empty but its payload length is {b.nbytes}, not 0")
    if b.count > MAX_BRICK_GAUSSIANS:
        raise FormatError(
            f"{name}: brick {i} claims {b.count} Gaussians; a brick holds at most {MAX_BRICK_GAUSSIANS}"
        )
    lo, hi = payload_length_range(version, b.count)
    if b.count and not lo <= b.nbytes <= hi:
        raise FormatError(
            f"{name}: brick {i} payload length {b.nbytes} is impossible for {b.count} Gaussians "
            f"(expected {lo}..{hi}: at most 8 Gaussians per payload byte)"
        )


def _check_brick(b: BrickInfo, i: int, shape, name: str) -> None:
    for a, axis in enumerate("ZYX"):
        if not 0 <= b.core_lo[a] < b.core_hi[a] <= shape[a]:
            raise FormatError(
                f"{name}: brick {i} core bounds {b.core_lo[a]}:{b.core_hi[a]} on axis {axis} are not "
                f"a non-empty range inside 0:{shape[a]}"
            )
    floats = b.reach_lo + b.reach_hi + b.pos_lo + b.pos_hi
    if not all(math.isfinite(v) for v in floats):
        raise FormatError(f"{name}: brick {i} has a NaN or infinite reach or position box")
    if not all(lo <= hi for lo, hi in zip(b.pos_lo, b.pos_hi)):
        raise FormatError(f"{name}: brick {i} position box {b.pos_lo}..{b.pos_hi} has lo > hi")
    if b.count == 0:
        if any(floats[:6]):
            raise FormatError(f"{name}: brick {i} is empty but its reach box is not all zero")
    elif not all(lo <= hi for lo, hi in zip(b.reach_lo, b.reach_hi)):
        raise FormatError(f"{name}: brick {i} reach box {b.reach_lo}..{b.reach_hi} has lo > hi")
