"""Regions of the voxel grid: validation and the voxel coordinates they cover.

A region is a tuple of three ``slice`` objects in ZYX voxel indices, like a
numpy index. ``None`` start/stop mean the whole axis; steps must be positive.
Regions that leave the volume or select nothing are refused with a
``RegionError`` rather than clipped, so a caller never gets a silently smaller
array than it asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import RegionError

AXES = ("Z", "Y", "X")


@dataclass(frozen=True)
class RegionGrid:
    """A strided box of voxels: ``start[a] + step[a] * i`` for ``i < shape[a]``.

    All values are voxel indices in ZYX order.
    """

    start: tuple[int, int, int]
    stop: tuple[int, int, int]
    step: tuple[int, int, int]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(len(range(a, b, s)) for a, b, s in zip(self.start, self.stop, self.step))

    @property
    def size(self) -> int:
        z, y, x = self.shape
        return z * y * x

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b, s) for a, b, s in zip(self.start, self.stop, self.step))

    @property
    def last(self) -> tuple[int, int, int]:
        """Index of the last voxel sampled along each axis (inclusive)."""
        return tuple(a + s * (n - 1) for a, s, n in zip(self.start, self.step, self.shape))

    def axis_coords(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Voxel coordinates sampled along Z, Y and X (float64)."""
        return tuple(
            np.arange(a, b, s, dtype=np.float64) for a, b, s in zip(self.start, self.stop, self.step)
        )

    def points(self) -> np.ndarray:
        """All sampled voxel coordinates as an (M, 3) float64 array, C order (Z slowest)."""
        z, y, x = self.axis_coords()
        g = np.stack(np.meshgrid(z, y, x, indexing="ij"), axis=-1)
        return g.reshape(-1, 3)


def full_grid(shape) -> RegionGrid:
    return RegionGrid(start=(0, 0, 0), stop=tuple(int(s) for s in shape), step=(1, 1, 1))


def normalize_region(region, shape) -> RegionGrid:
    """Validate ``region`` (None or three slices, ZYX voxel indices) against ``shape``.

    Raises ``RegionError`` naming the axis for: not three slices, non-integer
    bounds, negative or zero step, a bound outside ``[0, size]``, or an empty
    selection.
    """
    shape = tuple(int(s) for s in shape)
    if region is None:
        return full_grid(shape)
    if isinstance(region, slice) or not hasattr(region, "__len__") or len(region) != 3:
        raise RegionError(
            f"region must be a tuple of three slices (Z, Y, X), got {region!r}"
        )
    start, stop, step = [], [], []
    for axis, sl, n in zip(AXES, region, shape):
        if not isinstance(sl, slice):
            raise RegionError(f"region axis {axis}: expected a slice, got {sl!r}")
        a = 0 if sl.start is None else sl.start
        b = n if sl.stop is None else sl.stop
        s = 1 if sl.step is None else sl.step
        for name, v in (("start", a), ("stop", b), ("step", s)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise RegionError(f"region axis {axis}: {name} must be an integer, got {v!r}")
        a, b, s = int(a), int(b), int(s)
        if s <= 0:
            raise RegionError(f"region axis {axis}: step must be positive, got {s}")
        if a < 0 or b > n or a > n or b < 0:
            raise RegionError(
                f"region axis {axis}: {a}:{b} is outside the volume (start and stop must be in 0..{n}: "
                f"voxels 0 to {n - 1}, stop excluded; no negative indices)"
            )
        if b <= a:
            raise RegionError(f"region axis {axis}: {a}:{b} is empty")
        start.append(a)
        stop.append(b)
        step.append(s)
    return RegionGrid(tuple(start), tuple(stop), tuple(step))


def parse_roi(text: str, shape) -> RegionGrid:
    """Parse a command-line ROI such as ``"0:50,100:228,100:228"`` (ZYX, optional ``:step``).

    An empty bound means the start or end of the axis (``":,0:64,:"``).
    """
    parts = text.split(",")
    if len(parts) != 3:
        raise RegionError(f"--roi must have three comma-separated ranges Z,Y,X; got {text!r}")
    slices = []
    for axis, part in zip(AXES, parts):
        fields = part.strip().split(":")
        if len(fields) not in (2, 3):
            raise RegionError(f"--roi axis {axis}: expected START:STOP[:STEP], got {part!r}")
        try:
            vals = [None if f.strip() == "" else int(f) for f in fields]
        except ValueError:
            raise RegionError(f"--roi axis {axis}: bounds must be integers, got {part!r}") from None
        slices.append(slice(*vals))
    return normalize_region(tuple(slices), shape)
