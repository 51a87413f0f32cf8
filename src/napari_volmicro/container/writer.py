"""Writing ``.vmg`` files: ``save``, ``quantize`` and ``file_size``.

``save`` writes one brick covering the whole volume unless ``brick_shape``
(voxels, ZYX) is given; then each Gaussian goes to the brick whose core holds
its centre (centres outside the volume go to the nearest edge brick) and
empty bricks are left out. Gaussians keep their order within a brick; the
file lists bricks in C order (Z slowest), so a many-brick file reorders them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..gaussians import GaussianVolume
from ..intensity import DTYPE_CODES
from .codec import (
    background_payload,
    background_payload_size,
    build_model,
    payload_bytes,
    position_box,
    quantize_brick,
    raw_arrays,
    reach_box,
)
from .layout import (
    BRICK,
    BYTES_PER_GAUSSIAN,
    FORMAT_VERSION,
    HEADER_SIZE,
    SECTION,
    SECTION_BACKGROUND,
    SECTION_REQUIRED,
    TABLE_CRC_SIZE,
    BrickInfo,
    Header,
    SectionInfo,
    crc32,
    table_crc,
)


@dataclass
class _PlannedBrick:
    core_lo: tuple[int, int, int]
    core_hi: tuple[int, int, int]
    index: np.ndarray  # which Gaussians of the model, in order


def _check_model(gv) -> GaussianVolume:
    if not isinstance(gv, GaussianVolume):
        raise InputError(f"expected a GaussianVolume to save, got {type(gv).__name__}")
    return gv


def _plan(gv: GaussianVolume, brick_shape) -> list[_PlannedBrick]:
    shape = gv.shape
    if brick_shape is None:
        return [_PlannedBrick((0, 0, 0), shape, np.arange(gv.n_gaussians))]
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


def _quantized_parts(gv: GaussianVolume, brick_shape):
    """For each planned brick: (plan, position box lo, hi, payload planes, raw decoded arrays)."""
    parts = []
    for p in _plan(gv, brick_shape):
        lo, hi = position_box(gv.centers[p.index], p.core_lo, p.core_hi)
        planes = quantize_brick(gv, p.index, lo, hi)
        parts.append((p, lo, hi, planes, raw_arrays(planes, lo, hi)))
    return parts


def quantize(gv: GaussianVolume, *, brick_shape=None) -> GaussianVolume:
    """Exactly the model ``save`` would store and ``load`` return, without any file I/O."""
    gv = _check_model(gv)
    parts = [part[-1] for part in _quantized_parts(gv, brick_shape)]
    return build_model(parts, gv.shape, spacing=gv.spacing, mapping=gv.mapping, background=gv.background)


def file_size(gv: GaussianVolume, *, brick_shape=None) -> int:
    """Exact number of bytes ``save(gv, path, brick_shape=...)`` writes."""
    gv = _check_model(gv)
    n_bricks = 1 if brick_shape is None else len(_plan(gv, brick_shape))
    size = HEADER_SIZE + n_bricks * BRICK.size + TABLE_CRC_SIZE + gv.n_gaussians * BYTES_PER_GAUSSIAN
    if gv.background is not None:
        size += SECTION.size + background_payload_size(gv.background)
    return size


def to_bytes(gv: GaussianVolume, *, brick_shape=None) -> bytes:
    """The complete file contents ``save`` writes."""
    gv = _check_model(gv)
    parts = _quantized_parts(gv, brick_shape)
    section_payloads = []
    if gv.background is not None:
        section_payloads.append((SECTION_BACKGROUND, SECTION_REQUIRED, background_payload(gv.background)))
    header = Header(
        version=FORMAT_VERSION,
        flags=0,
        shape=gv.shape,
        dtype_code=DTYPE_CODES[gv.mapping.dtype],
        n_bricks=len(parts),
        spacing=gv.spacing,
        offset=gv.mapping.offset,
        scale=gv.mapping.scale,
        n_gaussians=gv.n_gaussians,
        n_sections=len(section_payloads),
    )
    pos = header.data_start
    sections = []
    for kind, flags, data in section_payloads:
        sections.append(SectionInfo(kind, flags, crc32(data), pos, len(data)))
        pos += len(data)
    bricks, payloads = [], []
    for p, lo, hi, planes, raw in parts:
        data = payload_bytes(planes)
        r_lo, r_hi = reach_box(build_model([raw], gv.shape))
        bricks.append(
            BrickInfo(
                core_lo=tuple(int(v) for v in p.core_lo),
                core_hi=tuple(int(v) for v in p.core_hi),
                reach_lo=tuple(float(v) for v in r_lo),
                reach_hi=tuple(float(v) for v in r_hi),
                pos_lo=tuple(float(v) for v in lo),
                pos_hi=tuple(float(v) for v in hi),
                count=len(p.index),
                crc=crc32(data),
                offset=pos,
            )
        )
        payloads.append(data)
        pos += len(data)
    table = b"".join(b.pack() for b in bricks) + b"".join(s.pack() for s in sections)
    head = header.pack()
    table += table_crc(head, table).to_bytes(4, "little")
    out = b"".join([head, table, *(d for _, _, d in section_payloads), *payloads])
    assert len(out) == pos
    return out


def save(gv: GaussianVolume, path, *, brick_shape=None) -> Path:
    """Write ``gv`` to ``path`` as a ``.vmg`` file, atomically; returns the path.

    The bytes go to a temporary file in the same directory, which is flushed,
    fsynced and renamed over ``path``; on any failure it is removed and
    ``path`` is untouched.
    """
    data = to_bytes(gv, brick_shape=brick_shape)
    path = Path(path)
    return write_atomic(path, data)


def write_atomic(path: Path, data: bytes) -> Path:
    from ..atomic import write_atomic as _write

    return _write(path, lambda fh: fh.write(data))
