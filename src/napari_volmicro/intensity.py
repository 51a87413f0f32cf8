"""Mapping between model values and the original intensity units and dtype.

The Gaussians live on a background-relative scale: ``model = 0`` is the
background level and ``model = 1`` is roughly the brightest voxel. Decoding maps
back with ``original = offset + scale * model``; integer dtypes are rounded to
nearest and clipped to the dtype's range, float dtypes are cast unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError

#: dtypes a volume may have and a file may store (code used in the .vmg header).
DTYPE_CODES = {
    np.dtype(np.uint8): 1,
    np.dtype(np.uint16): 2,
    np.dtype(np.uint32): 3,
    np.dtype(np.int8): 4,
    np.dtype(np.int16): 5,
    np.dtype(np.int32): 6,
    np.dtype(np.float32): 7,
    np.dtype(np.float64): 8,
    np.dtype(np.float16): 9,
}
CODE_DTYPES = {v: k for k, v in DTYPE_CODES.items()}


def check_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise InputError(f"unsupported dtype {dtype!r}") from None
    if dt.newbyteorder("=") in DTYPE_CODES:
        return dt.newbyteorder("=")
    names = ", ".join(str(d) for d in DTYPE_CODES)
    raise InputError(f"unsupported dtype {dt}; expected one of {names}")


@dataclass(frozen=True)
class IntensityMapping:
    """``original = offset + scale * model``, then rounded/clipped to ``dtype``.

    offset: the background level in original units.
    scale: original units per model unit (> 0).
    dtype: the original volume's dtype (what decoding returns).
    """

    offset: float = 0.0
    scale: float = 1.0
    dtype: np.dtype = np.dtype(np.float32)

    def __post_init__(self):
        object.__setattr__(self, "dtype", check_dtype(self.dtype))
        object.__setattr__(self, "offset", float(self.offset))
        object.__setattr__(self, "scale", float(self.scale))
        if not np.isfinite(self.offset):
            raise InputError(f"intensity offset must be finite, got {self.offset}")
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise InputError(f"intensity scale must be finite and > 0, got {self.scale}")

    @property
    def is_integer(self) -> bool:
        return self.dtype.kind in "iu"

    @property
    def clip_range(self) -> tuple[float, float]:
        """Range decoded values are clipped to: the dtype's range for integers, else +-inf."""
        if self.is_integer:
            info = np.iinfo(self.dtype)
            return float(info.min), float(info.max)
        return -np.inf, np.inf

    def to_original(self, model: np.ndarray) -> np.ndarray:
        """Model values (any float array) -> original units and dtype."""
        vals = np.array(model, dtype=np.float64)  # a copy, transformed in place below
        vals *= self.scale
        vals += self.offset
        if self.is_integer:
            lo, hi = self.clip_range
            np.rint(vals, out=vals)
            np.clip(vals, lo, hi, out=vals)
        return vals.astype(self.dtype, copy=False)[()]  # a scalar in, a scalar out

    def to_original_float(self, model: np.ndarray) -> np.ndarray:
        """Model values -> original units as float64, without rounding or clipping."""
        return self.offset + self.scale * np.asarray(model, dtype=np.float64)

    def to_model(self, original: np.ndarray) -> np.ndarray:
        """Original values -> model values (float32)."""
        return ((np.asarray(original, dtype=np.float64) - self.offset) / self.scale).astype(np.float32)
