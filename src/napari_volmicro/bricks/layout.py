"""The brick grid: cores, halos and which brick owns a point.

A volume of ``shape`` voxels (ZYX) is cut into bricks of ``brick_shape``
voxels, in C order (Z slowest), the same grid and order the container uses
(``container.save(gv, path, brick_shape=...)``). Brick ``i`` is responsible
for its **core**, the voxel-index box ``[core_lo, core_hi)``; the last brick
on an axis is shorter when the axis is not a multiple of the brick size.
Encoding reads the core plus a **halo** of ``halo`` voxels on each side
(clipped to the volume), so Gaussians near a face are fitted with their
context; only Gaussians whose centre the core owns are kept.

Ownership of a point ``c`` (voxel coordinates): brick ``floor((c + 0.5) / b)``
per axis, clipped to the grid, so the centre of voxel ``v`` belongs to the
brick holding voxel ``v`` and points outside the volume go to the nearest
edge brick (the container writer's rule).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError

#: a read box has at least this many voxels per axis (the encoder's minimum), when the volume does
MIN_READ = 8


def _triple(value, name: str, minimum: int) -> tuple[int, int, int]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value,) * 3
    try:
        out = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be an integer or three integers (Z, Y, X), got {value!r}") from None
    if len(out) != 3 or any(isinstance(v, bool) for v in value) or min(out) < minimum:
        raise InputError(f"{name} must be three integers >= {minimum} (Z, Y, X), got {value!r}")
    return out


@dataclass(frozen=True)
class Brick:
    """One brick: ``index`` in C order, ``cell`` (grid position ZYX), the core box and the read box
    (core plus halo, clipped to the volume). Boxes are voxel indices ``[lo, hi)``, ZYX."""

    index: int
    cell: tuple[int, int, int]
    core_lo: tuple[int, int, int]
    core_hi: tuple[int, int, int]
    read_lo: tuple[int, int, int]
    read_hi: tuple[int, int, int]

    @property
    def core_slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in zip(self.core_lo, self.core_hi))

    @property
    def read_slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in zip(self.read_lo, self.read_hi))

    @property
    def core_shape(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in zip(self.core_lo, self.core_hi))

    @property
    def read_shape(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in zip(self.read_lo, self.read_hi))

    @property
    def core_voxels(self) -> int:
        z, y, x = self.core_shape
        return z * y * x

    @property
    def core_in_read(self) -> tuple[slice, slice, slice]:
        """The core as slices of the read box (local indices)."""
        return tuple(slice(c0 - r0, c1 - r0) for c0, c1, r0 in zip(self.core_lo, self.core_hi, self.read_lo))


@dataclass(frozen=True)
class BrickGrid:
    """Bricks of ``brick_shape`` voxels with ``halo`` voxels of context over a ``shape`` volume (all ZYX)."""

    shape: tuple[int, int, int]
    brick_shape: tuple[int, int, int]
    halo: tuple[int, int, int] = (0, 0, 0)

    def __post_init__(self):
        object.__setattr__(self, "shape", _triple(self.shape, "volume shape", 1))
        object.__setattr__(self, "brick_shape", _triple(self.brick_shape, "brick size", 1))
        object.__setattr__(self, "halo", _triple(self.halo, "halo", 0))

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        """Bricks per axis (ZYX)."""
        return tuple(-(-n // b) for n, b in zip(self.shape, self.brick_shape))

    def __len__(self) -> int:
        gz, gy, gx = self.grid_shape
        return gz * gy * gx

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __getitem__(self, index: int) -> Brick:
        n = len(self)
        if not 0 <= index < n:
            raise IndexError(f"brick index {index} out of range (the grid has {n} bricks)")
        cell = tuple(int(c) for c in np.unravel_index(index, self.grid_shape))
        core_lo = tuple(c * b for c, b in zip(cell, self.brick_shape))
        core_hi = tuple(min(lo + b, n) for lo, b, n in zip(core_lo, self.brick_shape, self.shape))
        read_lo, read_hi = [], []
        for lo, hi, h, n in zip(core_lo, core_hi, self.halo, self.shape):
            a, b = max(0, lo - h), min(n, hi + h)
            want = min(MIN_READ, n)  # the encoder needs at least 8 voxels per axis
            if b - a < want:
                b = min(n, a + want)
                a = max(0, b - want)
            read_lo.append(a)
            read_hi.append(b)
        return Brick(int(index), cell, core_lo, core_hi, tuple(read_lo), tuple(read_hi))

    def owner(self, points) -> np.ndarray:
        """Index (int64) of the brick owning each of the (M, 3) voxel coordinates ``points`` (ZYX)."""
        pts = np.asarray(points, np.float64).reshape(-1, 3)
        cell = np.floor((pts + 0.5) / np.asarray(self.brick_shape, np.float64))
        cell = np.clip(cell, 0, np.asarray(self.grid_shape) - 1).astype(np.int64)
        if len(cell) == 0:
            return np.zeros(0, np.int64)
        return np.ravel_multi_index(tuple(cell.T), self.grid_shape).astype(np.int64)

    def bricks_meeting(self, region) -> list[int]:
        """Indices of the bricks whose core meets ``region`` (three slices with steps 1, ZYX)."""
        lo = [0 if s.start is None else s.start for s in region]
        hi = [n if s.stop is None else s.stop for s, n in zip(region, self.shape)]
        ranges = [
            range(a // b, -(-c // b)) for a, c, b in zip(lo, hi, self.brick_shape)
        ]
        cells = np.stack(np.meshgrid(*[np.arange(r.start, r.stop) for r in ranges], indexing="ij"), -1).reshape(-1, 3)
        return sorted(int(i) for i in np.ravel_multi_index(tuple(cells.T), self.grid_shape))


def background_nodes(shape, node_spacing: float) -> tuple[tuple[int, int, int], np.ndarray]:
    """The global background grid for a volume: ``(grid shape, (G, 3) node coordinates)``.

    Node ``k`` of an axis of ``n`` voxels with ``g`` nodes sits at ``k (n - 1) / (g - 1)``
    (``background.py``); ``g`` is chosen so nodes are at most ``node_spacing`` voxels apart
    (at least 2 nodes, at most ``n``; one node for a one-voxel axis).
    """
    grid = []
    for n in shape:
        if n <= 1:
            grid.append(1)
            continue
        g = int(np.ceil((n - 1) / float(node_spacing))) + 1
        grid.append(int(min(max(2, g), n)))
    axes = [
        np.zeros(1) if g == 1 else np.arange(g, dtype=np.float64) * ((n - 1) / (g - 1))
        for g, n in zip(grid, shape)
    ]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    return tuple(grid), pts
