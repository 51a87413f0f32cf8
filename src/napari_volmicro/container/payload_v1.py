"""Brick payloads of format version 1: 11 planes of 16-bit values, 22 bytes per Gaussian.

Planes (an ``(11, count)`` array of little-endian ``u16``, C order): position
Z, Y, X (uint16 fixed point over the brick's position box), scale 0, 1, 2
(float16, voxels), quaternion w, a, b, c (float16, scaled so the
largest-magnitude component is exactly +1), amplitude (float16, model units).
Version-2 writers no longer produce it; readers still read it, and
``save(..., version=1)`` still writes it (docs/format.md keeps its description).
"""

from __future__ import annotations

import numpy as np

from ..errors import FormatError
from ..gaussians import GaussianVolume

#: bytes per stored Gaussian: 3 x u16 position, 3 x f16 scale, 4 x f16 quaternion, f16 amplitude
BYTES_PER_GAUSSIAN = 22
#: values per Gaussian (all 16 bit)
PLANES = 11
#: largest finite float16
F16_MAX = float(np.finfo(np.float16).max)
#: smallest positive normal float16 (scales are clamped into [F16_TINY, F16_MAX])
F16_TINY = float(np.finfo(np.float16).tiny)
#: uint16 positions run from 0 (box lo) to POS_STEPS (box hi)
POS_STEPS = 65535


def _quantize_positions(centers, lo, hi) -> np.ndarray:
    lo64, hi64 = np.float64(lo), np.float64(hi)
    span = hi64 - lo64
    t = np.divide(centers.astype(np.float64) - lo64, span, out=np.zeros(centers.shape), where=span > 0)
    return np.clip(np.rint(t * POS_STEPS), 0, POS_STEPS).astype(np.uint16)


def dequantize_positions(q: np.ndarray, lo, hi) -> np.ndarray:
    """uint16 (N, 3) -> float32 voxel coordinates: ``lo + (hi - lo) * (q / 65535)`` in float64."""
    lo64, hi64 = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    return (lo64 + (hi64 - lo64) * (q.astype(np.float64) / POS_STEPS)).astype(np.float32)


def _canonical_quaternions(q: np.ndarray) -> np.ndarray:
    """Quaternions scaled so the largest-magnitude component is exactly +1 (float16)."""
    q = q.astype(np.float64)
    idx = np.argmax(np.abs(q), axis=1)
    m = q[np.arange(len(q)), idx]
    return (q / m[:, None]).astype(np.float16)


def quantize(gv: GaussianVolume, index: np.ndarray, lo, hi) -> np.ndarray:
    """The (11, n) uint16 planes storing Gaussians ``index`` of ``gv`` (position box ``lo``..``hi``)."""
    n = len(index)
    planes = np.empty((PLANES, n), np.uint16)
    planes[0:3] = _quantize_positions(gv.centers[index], lo, hi).T
    floats = planes[3:].view(np.float16)
    floats[0:3] = np.clip(gv.scales[index], F16_TINY, F16_MAX).astype(np.float16).T
    floats[3:7] = _canonical_quaternions(gv.quaternions[index]).T
    floats[7] = np.clip(gv.amplitudes[index], -F16_MAX, F16_MAX).astype(np.float16)
    return planes


def decode(planes: np.ndarray, lo, hi) -> dict[str, np.ndarray]:
    """The float32 arrays the planes decode to (quaternions as stored, not yet normalised)."""
    floats = planes[3:].view("<f2").astype(np.float32)
    return {
        "centers": dequantize_positions(planes[0:3].T, lo, hi),
        "scales": np.ascontiguousarray(floats[0:3].T),
        "quaternions": np.ascontiguousarray(floats[3:7].T),
        "amplitudes": np.ascontiguousarray(floats[7]),
    }


def to_bytes(planes: np.ndarray) -> bytes:
    return np.ascontiguousarray(planes, dtype="<u2").tobytes()


def size(planes: np.ndarray) -> int:
    return BYTES_PER_GAUSSIAN * int(planes.shape[1])


def from_bytes(buf: bytes, count: int, where: str) -> np.ndarray:
    """Payload bytes -> (11, count) uint16 planes (``FormatError`` for a wrong length)."""
    if len(buf) != count * BYTES_PER_GAUSSIAN:
        raise FormatError(f"{where}: payload has {len(buf)} bytes, expected {count * BYTES_PER_GAUSSIAN}")
    return np.frombuffer(buf, dtype="<u2").reshape(PLANES, count)
