"""Writing ``.vmg`` files: ``save``, ``quantize``, ``file_size`` and the streaming ``write_bricks``.

``lay_out`` is the one place a file's header, tables and payload offsets are
decided; ``write_bricks`` writes a laid-out file atomically, payload by
payload (the bricked encoder streams its parts through it), and ``save`` /
``to_bytes`` use it for an in-memory model.

``save`` writes one brick covering the whole volume unless ``brick_shape``
(voxels, ZYX) is given; then each Gaussian goes to the brick whose core holds
its centre (centres outside the volume go to the nearest edge brick) and
empty bricks are left out. Gaussians keep their order within a brick; the
file lists bricks in C order (Z slowest), so a many-brick file reorders them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import write_atomic
from ..errors import InputError, VolmicroError
from ..gaussians import GaussianVolume
from ..intensity import DTYPE_CODES, IntensityMapping
from . import payload_v3
from .codec import (
    background_payload,
    background_payload_size,
    build_model,
    check_version,
    payload_bytes,
    payload_size,
    position_box,
    quantize_brick,
    quantize_part,
    reach_box,
    with_residual,
)
from .layout import (
    FORMAT_VERSION,
    HEADER_SIZE,
    SECTION,
    SECTION_BACKGROUND,
    SECTION_REQUIRED,
    SECTION_RESIDUAL,
    TABLE_CRC_SIZE,
    BrickInfo,
    Header,
    SectionInfo,
    brick_struct,
    crc32,
    table_crc,
)


@dataclass
class _PlannedBrick:
    core_lo: tuple[int, int, int]
    core_hi: tuple[int, int, int]
    index: np.ndarray  # which Gaussians of the model, in order


def residual_payload(gv) -> bytes | None:
    """The enhancement-layer section payload of ``gv`` (``gv.residual.to_bytes()``), or None when the
    model has no such layer (``getattr``: works before ``GaussianVolume`` grows the field)."""
    layer = getattr(gv, "residual", None)
    if layer is None:
        return None
    data = layer.to_bytes()
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InputError(f"residual.to_bytes() must return bytes, got {type(data).__name__}")
    return bytes(data)


def _check_model(gv) -> GaussianVolume:
    if not isinstance(gv, GaussianVolume):
        raise InputError(f"expected a GaussianVolume to save, got {type(gv).__name__}")
    return gv


#: ``save`` without a ``brick_shape`` keeps a model of at most this many Gaussians in one brick and
#: splits a larger one (``split_bricks``)
SPLIT_GAUSSIANS = 4096
#: a brick is not split where its longest side would fall below this many voxels
SPLIT_MIN_SIDE = 32


def split_bricks(shape, voxels: np.ndarray, *, max_gaussians: int = SPLIT_GAUSSIANS,
                 min_side: int = SPLIT_MIN_SIDE) -> list[tuple[tuple, tuple, np.ndarray]]:
    """Cores ``[lo, hi)`` (voxel indices, ZYX) and member indices of the bricks of a volume of
    ``shape`` whose Gaussians lie in ``voxels`` ((N, 3) int64 voxel indices inside the volume):
    a box with more than ``max_gaussians`` is halved across its longest side (Z first on ties) at
    ``lo + side // 2``, unless the halves would be shorter than ``min_side``; empty boxes are left
    out. Depth first, lower half first (neighbouring bricks are neighbours in the file); members
    keep their order. A box's fate depends only on which voxels its Gaussians lie in, so a model
    whose decoded centres stay in their voxels' bricks splits the same way again."""
    out = []
    stack = [((0, 0, 0), tuple(int(v) for v in shape), np.arange(len(voxels)))]
    while stack:
        lo, hi, idx = stack.pop()
        if len(idx) == 0:
            continue
        side = [b - a for a, b in zip(lo, hi)]
        axis = int(np.argmax(side))
        if len(idx) <= max_gaussians or side[axis] < 2 * min_side:
            out.append((lo, hi, idx))
            continue
        mid = lo[axis] + side[axis] // 2
        below = voxels[idx, axis] < mid
        upper_lo = tuple(mid if a == axis else v for a, v in enumerate(lo))
        lower_hi = tuple(mid if a == axis else v for a, v in enumerate(hi))
        stack.append((upper_lo, hi, idx[~below]))
        stack.append((lo, lower_hi, idx[below]))
    return out


def _centre_voxels(gv: GaussianVolume) -> np.ndarray:
    """(N, 3) int64 voxel index of each centre, clamped to the volume (centre ``c`` lies in voxel
    ``floor(c + 0.5)``)."""
    v = np.floor(gv.centers.astype(np.float64) + 0.5)
    return np.clip(v, 0, np.asarray(gv.shape) - 1).astype(np.int64)


def _plan(gv: GaussianVolume, brick_shape) -> list[_PlannedBrick]:
    shape = gv.shape
    if brick_shape is None:
        if gv.n_gaussians <= SPLIT_GAUSSIANS:
            return [_PlannedBrick((0, 0, 0), shape, np.arange(gv.n_gaussians))]
        split = split_bricks(shape, _centre_voxels(gv), max_gaussians=SPLIT_GAUSSIANS, min_side=SPLIT_MIN_SIDE)
        return [_PlannedBrick(lo, hi, idx) for lo, hi, idx in split]
    try:
        bs = tuple(int(b) for b in brick_shape)
    except (TypeError, ValueError):
        raise InputError(
            f"brick_shape must be three positive integers (Z, Y, X), got {brick_shape!r}"
        ) from None
    if len(bs) != 3 or min(bs) < 1:
        raise InputError(f"brick_shape must be three positive integers (Z, Y, X), got {brick_shape!r}")
    nb = [-(-n // b) for n, b in zip(shape, bs)]
    # centre c lies in voxel round(c); voxel v lies in brick v // b; monotone, so
    # requantised centres (which stay inside the brick's centre box) keep their brick
    cell = np.floor((gv.centers.astype(np.float64) + 0.5) / np.asarray(bs, np.float64))
    cell = np.clip(cell, 0, np.asarray(nb) - 1).astype(np.int64)
    flat = np.ravel_multi_index(tuple(cell.T), nb) if gv.n_gaussians else np.zeros(0, np.int64)
    order = np.argsort(flat, kind="stable")
    ids, starts = np.unique(flat[order], return_index=True)
    bounds = list(starts) + [len(order)]
    planned = []
    for j, brick_id in enumerate(ids):
        bz, by, bx = np.unravel_index(brick_id, nb)
        lo = (int(bz) * bs[0], int(by) * bs[1], int(bx) * bs[2])
        hi = tuple(min(lo[a] + bs[a], shape[a]) for a in range(3))
        planned.append(_PlannedBrick(lo, hi, order[bounds[j] : bounds[j + 1]]))
    if not planned:  # no Gaussians: one empty brick over the whole volume
        planned.append(_PlannedBrick((0, 0, 0), shape, np.zeros(0, np.int64)))
    return planned


def _quantized_parts(gv: GaussianVolume, brick_shape, version: int, decode: bool = True):
    """For each planned brick: (plan, position box lo, hi, payload planes, raw decoded arrays or None)."""
    parts = []
    for p in _plan(gv, brick_shape):
        if decode:
            planes, lo, hi, raw = quantize_part(gv, p.index, p.core_lo, p.core_hi, version)
        elif version >= 3:
            (planes, lo, hi), raw = payload_v3.quantize_brick(gv, p.index, p.core_lo, p.core_hi), None
        else:
            lo, hi = position_box(gv.centers[p.index], p.core_lo, p.core_hi)
            planes, raw = quantize_brick(gv, p.index, lo, hi, version), None
        parts.append((p, lo, hi, planes, raw))
    return parts


def quantize(gv: GaussianVolume, *, brick_shape=None, version: int = FORMAT_VERSION) -> GaussianVolume:
    """Exactly the model ``save`` would store and ``load`` return, without any file I/O."""
    gv = _check_model(gv)
    parts = [part[-1] for part in _quantized_parts(gv, brick_shape, check_version(version))]
    model = build_model(parts, gv.shape, spacing=gv.spacing, mapping=gv.mapping, background=gv.background)
    return with_residual(model, getattr(gv, "residual", None))


def file_size(gv: GaussianVolume, *, brick_shape=None, version: int = FORMAT_VERSION) -> int:
    """Exact number of bytes ``save(gv, path, brick_shape=..., version=...)`` writes.

    Version 2 payload sizes depend on the quantised values (each brick's code ranges), so this
    quantises the model (no decoding, no packing).
    """
    gv = _check_model(gv)
    version = check_version(version)
    parts = _quantized_parts(gv, brick_shape, version, decode=False)
    size = HEADER_SIZE + len(parts) * brick_struct(version).size + TABLE_CRC_SIZE
    size += sum(payload_size(planes, version) for _, _, _, planes, _ in parts)
    if gv.background is not None:
        size += SECTION.size + background_payload_size(gv.background)
    residual = residual_payload(gv)
    if residual is not None:
        size += SECTION.size + len(residual)
    return size


def brick_entry(core_lo, core_hi, planes: np.ndarray, pos_lo, pos_hi, reach_lo, reach_hi,
                version: int = FORMAT_VERSION) -> tuple[BrickInfo, bytes]:
    """A brick-table entry (offset not yet laid out) and the payload bytes for ``planes``
    ((11, count) uint16, ``codec.quantize_brick`` of the same ``version``); boxes are
    float32-representable (3,) voxel coordinates."""
    data = payload_bytes(planes, version)
    if version == 2 and 8 * len(data) < planes.shape[1]:
        raise InputError(
            f"{planes.shape[1]} Gaussians quantise to identical codes; format 2 cannot store more than 8 per "
            "payload byte (write format 3)"
        )
    if len(data) > 0xFFFFFFFF:
        raise InputError(f"a brick payload of {len(data)} bytes does not fit the table (at most 4 GiB); use smaller bricks")
    info = BrickInfo(
        core_lo=tuple(int(v) for v in core_lo),
        core_hi=tuple(int(v) for v in core_hi),
        reach_lo=tuple(float(v) for v in reach_lo),
        reach_hi=tuple(float(v) for v in reach_hi),
        pos_lo=tuple(float(v) for v in pos_lo),
        pos_hi=tuple(float(v) for v in pos_hi),
        count=int(planes.shape[1]),
        crc=crc32(data),
        nbytes=len(data),
    )
    return info, data


@dataclass(frozen=True)
class FileLayout:
    """Where everything goes in a ``.vmg``: ``head`` is every byte before the first brick payload
    (header, brick and section tables, table CRC, section payloads); ``bricks`` the table entries
    with their payload offsets; ``size`` the whole file's length."""

    head: bytes
    bricks: tuple[BrickInfo, ...]
    size: int


def lay_out(*, shape, spacing, mapping: IntensityMapping, background, bricks,
            version: int = FORMAT_VERSION, residual: bytes | None = None) -> FileLayout:
    """Lay out a ``.vmg`` of format ``version`` holding ``bricks`` (``BrickInfo`` entries in file
    order, with payloads of that version; their offsets are ignored and assigned here, payloads
    packed in order after the sections). ``background``: the coarse field (float grid) or None.
    ``residual``: the enhancement layer's section payload (opaque bytes, an optional section after
    the background) or None. The one place the file's layout is decided."""
    version = check_version(version)
    section_payloads = []
    if background is not None:
        section_payloads.append((SECTION_BACKGROUND, SECTION_REQUIRED, background_payload(background)))
    if residual is not None:
        section_payloads.append((SECTION_RESIDUAL, 0, bytes(residual)))
    header = Header(
        version=version,
        flags=0,
        shape=tuple(int(v) for v in shape),
        dtype_code=DTYPE_CODES[mapping.dtype],
        n_bricks=len(bricks),
        spacing=tuple(float(v) for v in spacing),
        offset=mapping.offset,
        scale=mapping.scale,
        n_gaussians=sum(b.count for b in bricks),
        n_sections=len(section_payloads),
    )
    pos = header.data_start
    sections = []
    for kind, flags, data in section_payloads:
        sections.append(SectionInfo(kind, flags, crc32(data), pos, len(data)))
        pos += len(data)
    placed = []
    for b in bricks:
        placed.append(dataclasses.replace(b, offset=pos))
        pos += b.nbytes
    table = b"".join(b.pack(version) for b in placed) + b"".join(s.pack() for s in sections)
    head = header.pack()
    table += table_crc(head, table).to_bytes(4, "little")
    return FileLayout(b"".join([head, table, *(d for _, _, d in section_payloads)]), tuple(placed), pos)


def write_bricks(path, *, shape, spacing, mapping: IntensityMapping, background=None, bricks, payloads,
                 version: int = FORMAT_VERSION, residual: bytes | None = None) -> int:
    """Write a ``.vmg`` atomically, streaming the brick payloads one at a time; returns its size.

    bricks: ``BrickInfo`` entries in file order (e.g. from ``brick_entry``; offsets are assigned
    here). payloads: an iterable giving each brick's payload bytes in the same order, consumed
    while writing, so only one payload need be in memory. version: the format of the entries and
    payloads (a copy of a version-1 file stays version 1). Each payload is checked against its
    entry (length and CRC) as it is written; a mismatch raises ``VolmicroError`` before the
    rename, so a bad file never replaces a good one. residual: the enhancement-layer section
    payload (bytes) or None.
    """
    path = Path(path)
    layout = lay_out(shape=shape, spacing=spacing, mapping=mapping, background=background, bricks=bricks,
                     version=version, residual=residual)

    def write(fh):
        fh.write(layout.head)
        written = 0
        for i, data in enumerate(payloads):
            if i >= len(layout.bricks):
                raise VolmicroError(f"{path}: more payloads than the {len(layout.bricks)} bricks of the table")
            b = layout.bricks[i]
            if len(data) != b.nbytes or crc32(data) != b.crc:
                raise VolmicroError(
                    f"{path}: brick {i}: its payload ({len(data)} bytes) does not match its table entry "
                    f"({b.nbytes} bytes, CRC32 {b.crc:08x}); the source changed while writing"
                )
            fh.write(data)
            written += 1
        if written != len(layout.bricks) or fh.tell() != layout.size:
            raise VolmicroError(
                f"{path}: wrote {written} payloads ({fh.tell()} bytes), the tables describe "
                f"{len(layout.bricks)} bricks ({layout.size} bytes)"
            )

    write_atomic(path, write)
    return layout.size


def _entries(gv: GaussianVolume, brick_shape, version: int) -> tuple[list[BrickInfo], list[bytes]]:
    entries, payloads = [], []
    for p, lo, hi, planes, raw in _quantized_parts(gv, brick_shape, version):
        r_lo, r_hi = reach_box(build_model([raw], gv.shape))
        info, data = brick_entry(p.core_lo, p.core_hi, planes, lo, hi, r_lo, r_hi, version)
        entries.append(info)
        payloads.append(data)
    return entries, payloads


def to_bytes(gv: GaussianVolume, *, brick_shape=None, version: int = FORMAT_VERSION) -> bytes:
    """The complete file contents ``save`` writes."""
    gv = _check_model(gv)
    version = check_version(version)
    entries, payloads = _entries(gv, brick_shape, version)
    layout = lay_out(shape=gv.shape, spacing=gv.spacing, mapping=gv.mapping, background=gv.background,
                     bricks=entries, version=version, residual=residual_payload(gv))
    out = b"".join([layout.head, *payloads])
    assert len(out) == layout.size
    return out


def save(gv: GaussianVolume, path, *, brick_shape=None, version: int = FORMAT_VERSION) -> Path:
    """Write ``gv`` to ``path`` as a ``.vmg`` file, atomically; returns the path.

    version: the format version to write (2, the default, or 1, which older readers read;
    docs/format.md).

    The bytes go to a temporary file in the same directory, which is flushed,
    fsynced and renamed over ``path``; on any failure it is removed and
    ``path`` is untouched.
    """
    gv = _check_model(gv)
    version = check_version(version)
    entries, payloads = _entries(gv, brick_shape, version)
    write_bricks(path, shape=gv.shape, spacing=gv.spacing, mapping=gv.mapping, background=gv.background,
                 bricks=entries, payloads=payloads, version=version, residual=residual_payload(gv))
    return Path(path)
