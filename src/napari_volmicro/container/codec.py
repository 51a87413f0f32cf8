"""Gaussian parameters <-> brick payload bytes (by format version), reach boxes, the background section.

A brick's Gaussians are quantised to an ``(11, count)`` uint16 array of
**planes** (``quantize_brick``), which decode to float32 arrays
(``raw_arrays``) and serialise to the payload bytes (``payload_bytes``).
Version 1 (``payload_v1``): the planes are the payload, 22 bytes per
Gaussian. Version 2 (``payload_v2``): coarser codes, bit-packed plane by
plane, about 12 bytes per Gaussian. Version 3 (``payload_v3``, written by
default): canonical Gaussians in Morton order, entropy-coded, about 8 bytes
per Gaussian.

Quantisation and dequantisation are written so that dequantise(quantise(x)) is
a fixed point: saving a loaded model reproduces the file byte for byte.
"""

from __future__ import annotations

import numpy as np

from ..errors import FormatError, InputError
from ..gaussians import CUTOFF_SIGMA, GaussianVolume
from . import payload_v1, payload_v2, payload_v3
from .layout import BACKGROUND_HEADER, FORMAT_VERSION, SUPPORTED_VERSIONS

#: largest finite float16
F16_MAX = payload_v1.F16_MAX
#: smallest positive normal float16
F16_TINY = payload_v1.F16_TINY
#: writers widen reach boxes by this many voxels so float32 evaluators at the
#: boundary never need a brick the box excluded
REACH_MARGIN = 1e-3
#: background grid dtypes a file may hold (intensity.DTYPE_CODES numbering)
BACKGROUND_DTYPES = {7: np.dtype("<f4"), 9: np.dtype("<f2")}
#: the background dtype this writer uses (float32: float16 would shift the
#: background by up to 1/4000 of the range, which shows in integer outputs)
BACKGROUND_WRITE_CODE = 7

_PAYLOADS = {1: payload_v1, 2: payload_v2, 3: payload_v3}


def check_version(version) -> int:
    """``version`` as an int if this package can write it, else ``InputError``."""
    if isinstance(version, bool) or version not in SUPPORTED_VERSIONS:
        raise InputError(
            f"format version must be one of {', '.join(map(str, SUPPORTED_VERSIONS))}, got {version!r}"
        )
    return int(version)


def position_box(centers: np.ndarray, core_lo, core_hi) -> tuple[np.ndarray, np.ndarray]:
    """Quantisation box (float32 lo, hi per axis) for a brick's float32 ``centers``.

    The bounding box of the centres, so every centre is representable and both
    ends are exact; for an empty brick, the core's voxel extent ``[lo - 0.5, hi - 0.5]``.
    """
    if len(centers) == 0:
        return (np.asarray(core_lo, np.float32) - 0.5, np.asarray(core_hi, np.float32) - 0.5)
    return centers.min(axis=0).astype(np.float32), centers.max(axis=0).astype(np.float32)


def quantize_brick(gv: GaussianVolume, index: np.ndarray, lo, hi, version: int = FORMAT_VERSION) -> np.ndarray:
    """The (11, n) uint16 planes storing Gaussians ``index`` of ``gv`` (position box ``lo``..``hi``).
    Version 3 puts them in its canonical form and Morton order (``payload_v3``)."""
    return _PAYLOADS[version].quantize(gv, index, lo, hi)


def quantize_part(gv: GaussianVolume, index, core_lo, core_hi, version: int = FORMAT_VERSION):
    """One brick of Gaussians ``index`` of ``gv`` exactly as a file stores it: ``(planes, pos_lo,
    pos_hi, raw)`` with the position box of the table entry (float32 (3,)) and the decoded raw
    arrays (``raw_arrays``). Version 3 anchors its position grid to the core (``payload_v3
    .quantize_brick``); versions 1 and 2 quantise over the centres' bounding box."""
    index = np.asarray(index, np.int64)
    if version >= 3:
        planes, lo, hi = payload_v3.quantize_brick(gv, index, core_lo, core_hi)
    else:
        lo, hi = position_box(gv.centers[index], core_lo, core_hi)
        planes = quantize_brick(gv, index, lo, hi, version)
    return planes, lo, hi, raw_arrays(planes, lo, hi, version)


def raw_arrays(planes: np.ndarray, lo, hi, version: int = FORMAT_VERSION) -> dict[str, np.ndarray]:
    """The float32 arrays a brick's planes decode to (quaternions as stored, not yet normalised)."""
    return _PAYLOADS[version].decode(planes, lo, hi)


def payload_bytes(planes: np.ndarray, version: int = FORMAT_VERSION) -> bytes:
    """The brick payload storing ``planes``."""
    return _PAYLOADS[version].to_bytes(planes)


def payload_size(planes: np.ndarray, version: int = FORMAT_VERSION) -> int:
    """``len(payload_bytes(planes, version))`` without building the bytes."""
    return _PAYLOADS[version].size(planes)


def brick_payload_size(gv: GaussianVolume, core_lo, core_hi, version: int = FORMAT_VERSION) -> int:
    """Bytes of the payload storing all of ``gv``'s Gaussians as one brick with core
    ``core_lo``..``core_hi`` (what a bricked writer needs to fit a brick into a byte share)."""
    if version >= 3:
        planes = payload_v3.quantize_brick(gv, np.arange(gv.n_gaussians), core_lo, core_hi)[0]
    else:
        lo, hi = position_box(gv.centers, core_lo, core_hi)
        planes = quantize_brick(gv, np.arange(gv.n_gaussians), lo, hi, version)
    return payload_size(planes, version)


def dequantize_brick(buf: bytes, count: int, lo, hi, where: str, version: int = FORMAT_VERSION) -> dict[str, np.ndarray]:
    """Brick payload bytes -> dict of float32 ``centers``, ``scales``, ``quaternions``, ``amplitudes``.

    Raises ``FormatError`` (``where`` names the file and brick) for a wrong
    length, invalid codes, NaN/Inf, scales <= 0 or all-zero quaternions.
    """
    if version == 3:
        # every code is checked and decodes to finite values, scales > 0 and quaternions with real part 1
        return payload_v3.read_arrays(buf, count, lo, where)
    if version == 1:
        planes = payload_v1.from_bytes(buf, count, where)
    else:
        planes = _PAYLOADS[version].from_bytes(buf, count, lo, hi, where)
    arrays = raw_arrays(planes, lo, hi, version)
    scales, quats = arrays["scales"], arrays["quaternions"]
    for label in ("centers", "scales", "quaternions", "amplitudes"):
        bad = ~np.isfinite(arrays[label])
        if bad.any():
            i = int(np.argwhere(bad)[0][0])
            raise FormatError(f"{where}: Gaussian {i} has a NaN or infinite value in its {label}")
    bad = ~(scales > 0).all(axis=1)
    if bad.any():
        raise FormatError(f"{where}: Gaussian {int(np.argmax(bad))} has a scale <= 0")
    bad = ~(quats != 0).any(axis=1)
    if bad.any():
        raise FormatError(f"{where}: Gaussian {int(np.argmax(bad))} has an all-zero quaternion")
    return arrays


def build_model(parts: list[dict], shape, **fields) -> GaussianVolume:
    """One ``GaussianVolume`` from bricks' raw arrays, concatenated in order (the only place
    the stored quaternions are normalised, so ``load`` and ``quantize`` agree bit for bit)."""

    def cat(key, tail):
        arrs = [p[key] for p in parts]
        return np.concatenate(arrs) if arrs else np.zeros((0, *tail), np.float32)

    return GaussianVolume(
        shape,
        cat("centers", (3,)),
        cat("scales", (3,)),
        cat("quaternions", (4,)),
        cat("amplitudes", ()),
        **fields,
    )


def with_residual(model: GaussianVolume, layer) -> GaussianVolume:
    """``model`` carrying the enhancement ``layer`` (None: ``model`` itself). A no-op while
    ``GaussianVolume`` has no ``residual`` field."""
    if layer is None or "residual" not in GaussianVolume.__dataclass_fields__:
        return model
    return model.replace(residual=layer)


def reach_box(gv: GaussianVolume) -> tuple[np.ndarray, np.ndarray]:
    """float32 box containing every Gaussian's 3-sigma box, widened by ``REACH_MARGIN`` and rounded outward.

    For zero Gaussians: all zeros (the file's convention for an empty brick).
    """
    if gv.n_gaussians == 0:
        return np.zeros(3, np.float32), np.zeros(3, np.float32)
    lo64, hi64 = gaussian_bounds(gv)
    lo64, hi64 = lo64 - REACH_MARGIN, hi64 + REACH_MARGIN
    lo, hi = lo64.astype(np.float32), hi64.astype(np.float32)
    lo = np.where(lo > lo64, np.nextafter(lo, np.float32(-np.inf)), lo)
    hi = np.where(hi < hi64, np.nextafter(hi, np.float32(np.inf)), hi)
    return lo, hi


def gaussian_bounds(gv: GaussianVolume) -> tuple[np.ndarray, np.ndarray]:
    """float64 (3,) lo and hi of the union of the Gaussians' 3-sigma boxes (voxel coordinates)."""
    c = gv.centers.astype(np.float64)
    e = gv.extents(CUTOFF_SIGMA)
    return (c - e).min(axis=0), (c + e).max(axis=0)


def raw_bounds(part: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """float64 (3,) lo and hi of the 3-sigma boxes of a brick's raw arrays (``raw_arrays``).

    The reader's reach check: ``gaussian_bounds`` of the same Gaussians up to float rounding
    (well inside ``reader.REACH_TOLERANCE``), without building a model or full covariances:
    the half-width along axis a is ``3 sqrt(sum_j R[a, j]^2 s_j^2)``.
    """
    from ..evaluate._kernels import CZ, EZ, prepare
    from ._v3_kernels import box_bounds

    c = np.ascontiguousarray(part["centers"])
    if len(c) == 0:
        raise ValueError("raw_bounds of an empty brick")
    s, q = np.ascontiguousarray(part["scales"]), np.ascontiguousarray(part["quaternions"])
    g = prepare(c, s, q, np.zeros(len(c), np.float32))  # the dense decoder's own 3-sigma half-widths
    return box_bounds(g, CZ, EZ)


# -- background section ------------------------------------------------------------------


def background_payload(field: np.ndarray) -> bytes:
    dt = BACKGROUND_DTYPES[BACKGROUND_WRITE_CODE]
    head = BACKGROUND_HEADER.pack(BACKGROUND_WRITE_CODE, b"\x00\x00\x00", *field.shape)
    return head + np.ascontiguousarray(field, dtype=dt).tobytes()


def background_payload_size(field: np.ndarray) -> int:
    return BACKGROUND_HEADER.size + field.size * BACKGROUND_DTYPES[BACKGROUND_WRITE_CODE].itemsize


def parse_background(buf: bytes, where: str) -> np.ndarray:
    """Background section payload -> float32 (gz, gy, gx) grid; ``FormatError`` naming ``where``."""
    if len(buf) < BACKGROUND_HEADER.size:
        raise FormatError(
            f"{where}: {len(buf)} bytes, too short for its {BACKGROUND_HEADER.size}-byte header"
        )
    code, reserved, gz, gy, gx = BACKGROUND_HEADER.unpack_from(buf)
    if code not in BACKGROUND_DTYPES:
        raise FormatError(f"{where}: dtype code {code} is not float32 (7) or float16 (9)")
    if reserved != b"\x00\x00\x00":
        raise FormatError(f"{where}: reserved bytes 1-3 must be zero")
    if min(gz, gy, gx) < 1:
        raise FormatError(f"{where}: grid shape {(gz, gy, gx)} has an empty axis")
    dt = BACKGROUND_DTYPES[code]
    want = BACKGROUND_HEADER.size + gz * gy * gx * dt.itemsize
    if len(buf) != want:
        raise FormatError(f"{where}: {len(buf)} bytes, expected {want} for a {gz}x{gy}x{gx} {dt.name} grid")
    grid = np.frombuffer(buf, dtype=dt, offset=BACKGROUND_HEADER.size).astype(np.float32).reshape(gz, gy, gx)
    if not np.all(np.isfinite(grid)):
        raise FormatError(f"{where}: the grid contains NaN or infinite values")
    return grid
