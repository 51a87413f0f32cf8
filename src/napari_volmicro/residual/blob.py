"""Byte layout of the enhancement layer (the payload of the ``.vmg`` residual section).

All integers and floats little-endian. Layout::

    header (HEADER.size B) | tables (tables_len B, zlib) | header CRC32 (4 B)
    | block index (n_blocks x 8 B: payload length u32, payload CRC32 u32)
    | block payloads, in index order (C order over the block grid: Z slowest)

Header fields (``HEADER``): magic ``b"VMRS"``, layout version (1), stages
(bit 0: transform stage, bit 1: error-bounded correction stage, bit 2: the
correction stage is predictive (``predictive.py``), bit 3: it is
linear-predictive (``linear.py``; not with bit 2), bit 4: the transform
stage is planar (Y and X split, Z never: ``wavelet.decomposition``; only
with bit 0)), 2 reserved
bytes (0), the volume shape (Z, Y, X), the nominal block shape (Z, Y, X),
the wavelet levels, 3 reserved bytes (0), the transform step, the correction
step, the maximum error promised (with a correction stage; 0: lossless), the margin delta, the noise
sigma estimate (information only), the block count and the length of the
zlib-compressed tables.

Blocks: axis ``a`` of length ``n`` is cut into ``k = ceil(n / block[a])``
near-equal runs, run ``i`` being ``[i * n // k, (i + 1) * n // k)`` (so all
runs are within one voxel of each other in length). ``n_blocks`` must equal
the product of the three ``k``.

Tables (after zlib): the transform stage's per-class bin offsets ``nu``
(``N_CLASSES`` x int8, units of 1/128 step) and codebook entries
(``N_CLASSES x N_CTX`` x u16), then the correction stage's entries
(``N_CORR_CTX`` x u16, or ``predictive.N_PRED_CTX`` when the stage is
predictive: stage bit 2), then, with stage bit 3, the linear predictor's
``linear.N_WEIGHTS`` weights (float64, each finite and at most
``linear.MAX_WEIGHT`` in magnitude); each part present only with its stage.

Parsing is bounded: every count is checked against fixed caps and the bytes
available before anything is allocated; any inconsistency is a
``FormatError`` (``ChecksumError`` for a CRC mismatch).
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from ..errors import ChecksumError, FormatError
from . import correction, linear, predictive, wavelet_coder
from .contexts import N_CTX

MAGIC = b"VMRS"
LAYOUT_VERSION = 1
STAGE_TRANSFORM = 1
STAGE_CORRECTION = 2
#: the correction stage predicts each voxel from decoded ones (``predictive.py``); only with STAGE_CORRECTION
STAGE_PREDICTIVE = 4
#: the correction stage predicts each voxel linearly from its decoded causal neighbours (``linear.py``)
STAGE_LINEAR = 8
#: the transform stage splits Y and X only, each Z plane on its own (``wavelet.decomposition``)
STAGE_PLANAR = 16
#: magic, version (u8), stages (u8), reserved (u16), shape (3 x u32), block (3 x u16), levels (u8),
#: reserved (3 B), transform step, correction step, max error, delta, noise sigma (f64),
#: n_blocks (u32), tables_len (u32)
HEADER = struct.Struct("<4sBBH3I3HB3s5dII")
INDEX_ENTRY = struct.Struct("<II")
#: caps: block edge in voxels, wavelet levels, blocks, compressed tables
MIN_BLOCK, MAX_BLOCK = 4, 128
MAX_LEVELS = 6
MAX_BLOCKS = 1 << 24
MAX_TABLES = 1 << 16


@dataclass(frozen=True)
class LayerHeader:
    """The parsed header and tables of a layer (see the module docstring)."""

    shape: tuple[int, int, int]
    block: tuple[int, int, int]
    stages: int
    levels: int
    transform_step: float
    correction_step: float
    max_error: float
    delta: float
    noise_sigma: float
    nu: np.ndarray | None  # (N_CLASSES,) float64, fractions of the step
    entries: np.ndarray | None  # (N_CLASSES, N_CTX) int64
    corr_entries: np.ndarray | None  # (N_CORR_CTX,) int64
    weights: np.ndarray | None = None  # (linear.N_WEIGHTS,) float64, with STAGE_LINEAR

    @property
    def has_transform(self) -> bool:
        return bool(self.stages & STAGE_TRANSFORM)

    @property
    def has_correction(self) -> bool:
        return bool(self.stages & STAGE_CORRECTION)

    @property
    def predictive(self) -> bool:
        return bool(self.stages & STAGE_PREDICTIVE)

    @property
    def linear(self) -> bool:
        return bool(self.stages & STAGE_LINEAR)

    @property
    def planar(self) -> bool:
        return bool(self.stages & STAGE_PLANAR)

    @property
    def grid(self) -> tuple[int, int, int]:
        """Blocks along Z, Y, X."""
        return tuple(math.ceil(n / b) for n, b in zip(self.shape, self.block))

    @property
    def n_blocks(self) -> int:
        gz, gy, gx = self.grid
        return gz * gy * gx

    def block_slices(self, index: int) -> tuple[slice, slice, slice]:
        """Voxel slices (ZYX) of block ``index`` (C order over the grid)."""
        gz, gy, gx = self.grid
        iz, rest = divmod(index, gy * gx)
        iy, ix = divmod(rest, gx)
        return tuple(slice(i * n // k, (i + 1) * n // k) for i, n, k in zip((iz, iy, ix), self.shape, (gz, gy, gx)))

    def blocks_meeting(self, start, stop) -> list[int]:
        """Indices of the blocks that meet the voxel box ``[start, stop)`` (ZYX)."""
        ranges = []
        for a, b, n, k in zip(start, stop, self.shape, self.grid):
            lo = max(0, (a * k) // n - 1)
            hi = min(k - 1, ((b - 1) * k) // n + 1)
            ranges.append([i for i in range(lo, hi + 1) if i * n // k < b and (i + 1) * n // k > a])
        gz, gy, gx = self.grid
        return [(iz * gy + iy) * gx + ix for iz in ranges[0] for iy in ranges[1] for ix in ranges[2]]


def pack(h: LayerHeader, payloads: list[bytes]) -> bytes:
    """The whole layer: header, tables, CRC, index and payloads."""
    if len(payloads) != h.n_blocks:
        raise ValueError(f"{len(payloads)} payloads for {h.n_blocks} blocks")
    tables = []
    if h.has_transform:
        tables.append(np.clip(np.rint(h.nu * 128), -128, 127).astype(np.int8).tobytes())
        tables.append(h.entries.astype("<u2").tobytes())
    if h.has_correction:
        tables.append(h.corr_entries.astype("<u2").tobytes())
    if h.linear:
        tables.append(np.asarray(h.weights, "<f8").tobytes())
    ztables = zlib.compress(b"".join(tables), 9)
    head = HEADER.pack(MAGIC, LAYOUT_VERSION, h.stages, 0, *h.shape, *h.block, h.levels, b"\0\0\0",
                       h.transform_step, h.correction_step, h.max_error, h.delta, h.noise_sigma,
                       h.n_blocks, len(ztables)) + ztables
    head += struct.pack("<I", zlib.crc32(head) & 0xFFFFFFFF)
    index = b"".join(INDEX_ENTRY.pack(len(p), zlib.crc32(p) & 0xFFFFFFFF) for p in payloads)
    return head + index + b"".join(payloads)


def header_size(read, total: int, name: str) -> int:
    """Bytes of header + tables + CRC, from the fixed header (``read(offset, n)`` gives bytes)."""
    if total < HEADER.size + 4:
        raise FormatError(f"{name}: enhancement layer of {total} bytes is shorter than its header")
    fields = HEADER.unpack(read(0, HEADER.size))
    tables_len = fields[-1]
    if tables_len > MAX_TABLES:
        raise FormatError(f"{name}: enhancement layer tables of {tables_len} bytes (at most {MAX_TABLES})")
    return HEADER.size + tables_len + 4


def parse_header(data: bytes, name: str, shape=None) -> LayerHeader:
    """Parse and check header + tables + CRC (``data`` = exactly those bytes)."""
    (magic, version, stages, reserved, z, y, x, bz, by, bx, levels, reserved3, t_step, c_step, max_err,
     delta, sigma, n_blocks, tables_len) = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise FormatError(f"{name}: enhancement layer has magic {magic!r}, expected {MAGIC!r}")
    if version != LAYOUT_VERSION:
        raise FormatError(f"{name}: enhancement layer version {version} is not supported (this reader: {LAYOUT_VERSION})")
    (crc,) = struct.unpack_from("<I", data, len(data) - 4)
    if zlib.crc32(data[:-4]) & 0xFFFFFFFF != crc:
        raise ChecksumError(f"{name}: enhancement layer header checksum mismatch")
    if (reserved or reserved3 != b"\0\0\0" or stages & ~31 or not stages & 3
            or (stages & (STAGE_PREDICTIVE | STAGE_LINEAR) and not stages & STAGE_CORRECTION)
            or (stages & STAGE_PREDICTIVE and stages & STAGE_LINEAR)
            or (stages & STAGE_PLANAR and not stages & STAGE_TRANSFORM)):
        raise FormatError(f"{name}: enhancement layer header has bad stage bits {stages} or reserved bytes")
    vol = (z, y, x)
    if shape is not None and vol != tuple(shape):
        raise FormatError(f"{name}: enhancement layer is for a volume of shape {vol}, the model has {tuple(shape)}")
    if min(vol) < 1:
        raise FormatError(f"{name}: enhancement layer shape {vol} is empty")
    block = (bz, by, bx)
    if not all(MIN_BLOCK <= b <= MAX_BLOCK for b in block):
        raise FormatError(f"{name}: enhancement layer block {block} outside {MIN_BLOCK}..{MAX_BLOCK} voxels")
    if levels > MAX_LEVELS:
        raise FormatError(f"{name}: enhancement layer has {levels} wavelet levels (at most {MAX_LEVELS})")
    for label, v, positive in (("transform step", t_step, bool(stages & STAGE_TRANSFORM)),
                               ("correction step", c_step, bool(stages & STAGE_CORRECTION)),
                               ("max error", max_err, False), ("delta", delta, False), ("noise sigma", sigma, False)):
        if not math.isfinite(v) or v < 0 or (positive and v <= 0):
            raise FormatError(f"{name}: enhancement layer {label} {v!r} is not a {'positive' if positive else 'non-negative'} number")
    grid = tuple(math.ceil(n / b) for n, b in zip(vol, block))
    expected = grid[0] * grid[1] * grid[2]
    if n_blocks != expected or n_blocks > MAX_BLOCKS:
        raise FormatError(f"{name}: enhancement layer has {n_blocks} blocks, its grid {grid} needs {expected}")
    want = 0
    if stages & STAGE_TRANSFORM:
        want += wavelet_coder.N_CLASSES + 2 * wavelet_coder.N_CLASSES * N_CTX
    n_corr = predictive.N_PRED_CTX if stages & STAGE_PREDICTIVE else correction.N_CORR_CTX
    if stages & STAGE_CORRECTION:
        want += 2 * n_corr
    if stages & STAGE_LINEAR:
        want += 8 * linear.N_WEIGHTS
    try:
        d = zlib.decompressobj()
        raw = d.decompress(data[HEADER.size: HEADER.size + tables_len], want + 1)
    except zlib.error as exc:
        raise FormatError(f"{name}: enhancement layer tables are not valid zlib data ({exc})") from None
    if len(raw) != want:
        raise FormatError(f"{name}: enhancement layer tables hold {len(raw)} bytes, expected {want}")
    nu = entries = corr = None
    pos = 0
    from .entropy import CODEBOOK_SIZE

    if stages & STAGE_TRANSFORM:
        nu = np.frombuffer(raw, np.int8, wavelet_coder.N_CLASSES, pos).astype(np.float64) / 128
        pos += wavelet_coder.N_CLASSES
        entries = np.frombuffer(raw, "<u2", wavelet_coder.N_CLASSES * N_CTX, pos).astype(np.int64)
        entries = entries.reshape(wavelet_coder.N_CLASSES, N_CTX)
        pos += 2 * entries.size
    if stages & STAGE_CORRECTION:
        corr = np.frombuffer(raw, "<u2", n_corr, pos).astype(np.int64)
        pos += 2 * n_corr
    weights = None
    if stages & STAGE_LINEAR:
        weights = np.frombuffer(raw, "<f8", linear.N_WEIGHTS, pos).astype(np.float64)
        if not np.all(np.isfinite(weights)) or np.abs(weights).max() > linear.MAX_WEIGHT:
            raise FormatError(f"{name}: enhancement layer predictor weights {weights.tolist()} are not finite "
                              f"numbers of magnitude at most {linear.MAX_WEIGHT:g}")
    for label, e in (("transform", entries), ("correction", corr)):
        if e is not None and e.size and e.max() >= CODEBOOK_SIZE:
            raise FormatError(f"{name}: enhancement layer {label} table entry {int(e.max())} >= {CODEBOOK_SIZE}")
    return LayerHeader(vol, block, stages, levels, t_step, c_step, max_err, delta, sigma, nu, entries, corr, weights)


def parse_index(data: bytes, n_blocks: int, available: int, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Block index -> (offsets relative to the first payload, lengths, CRCs), int64 arrays; the payloads
    must fill exactly ``available`` bytes."""
    if len(data) != n_blocks * INDEX_ENTRY.size:
        raise FormatError(f"{name}: enhancement layer block index is cut short")
    arr = np.frombuffer(data, "<u4").reshape(n_blocks, 2).astype(np.int64)
    lengths, crcs = arr[:, 0], arr[:, 1]
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if n_blocks else np.zeros(0, np.int64)
    total = int(lengths.sum())
    if total != available:
        raise FormatError(f"{name}: enhancement layer blocks hold {total} bytes, the section has {available} after its index")
    return offsets, lengths, crcs


def check_payload(payload: bytes, crc: int, index: int, name: str) -> None:
    if zlib.crc32(payload) & 0xFFFFFFFF != crc:
        raise ChecksumError(f"{name}: enhancement layer block {index} checksum mismatch (corrupt bytes)")
