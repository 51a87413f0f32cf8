"""A separable 3D CDF 9/7 wavelet (the lossy JPEG 2000 filter), in lifting form.

``forward(block, plan)`` turns a float block (ZYX) into coefficients of the
same shape, in the Mallat layout: after each level the low band of every split
axis occupies the first ``ceil(n / 2)`` entries of that axis. ``plan(shape,
levels)`` says which axes are split at each level: an axis is split only while
its current low band is at least ``MIN_SPLIT`` long, so a 26-slice block gets
fewer Z levels than X levels. ``inverse`` undoes ``forward`` (up to float
rounding). Boundaries use whole-sample symmetric extension, so any length
works and the transform is non-expansive.

The two output bands of a split are scaled so that their synthesis functions
have unit L2 norm away from the boundaries (``LOW_SCALE``, ``HIGH_SCALE``):
the transform is then close to orthonormal, and a quantisation error of e in
a coefficient costs about e^2 of squared error in the voxels, in every band.
Plain numpy, one axis at a time (vectorised over the other two), float64.
"""

from __future__ import annotations

import numpy as np

# Daubechies-Sweldens lifting factorisation of the CDF 9/7 pair
ALPHA = -1.586134342059924
BETA = -0.052980118572961
GAMMA = 0.882911075530934
DELTA = 0.443506852043971
#: scales of the low and high band after lifting: unit-norm synthesis functions (measured by
#: ``_synthesis_norms`` on a long signal; see the module docstring)
LOW_SCALE = 1.139764007654642
HIGH_SCALE = 0.8872770756359072
#: an axis is split at a level only while its current low band is at least this long
MIN_SPLIT = 4


def _next(a: np.ndarray, n: int) -> np.ndarray:
    """``a[i + 1]`` for ``i < n``, the last entry repeated past the end (symmetric extension)."""
    if n <= len(a) - 1:
        return a[1:n + 1]
    return np.concatenate([a[1:], a[-1:]], axis=0)[:n]


def _prev(a: np.ndarray, n: int) -> np.ndarray:
    """``a[i - 1]`` for ``i < n``, ``a[0]`` at ``i = 0`` (symmetric extension)."""
    return np.concatenate([a[:1], a[:n - 1]], axis=0)


def _here(a: np.ndarray, n: int) -> np.ndarray:
    """``a[i]`` for ``i < n``, the last entry repeated past the end."""
    if n <= len(a):
        return a[:n]
    return np.concatenate([a, a[-1:]], axis=0)


def split(x: np.ndarray) -> np.ndarray:
    """One analysis level along axis 0 (length n >= 2): [low (ceil n/2 rows); high (floor n/2)]."""
    s = x[0::2].astype(np.float64, copy=True)
    d = x[1::2].astype(np.float64, copy=True)
    ns, nd = len(s), len(d)
    d += ALPHA * (s[:nd] + _next(s, nd))
    s += BETA * (_prev(d, ns) + _here(d, ns))
    d += GAMMA * (s[:nd] + _next(s, nd))
    s += DELTA * (_prev(d, ns) + _here(d, ns))
    s *= LOW_SCALE
    d *= HIGH_SCALE
    return np.concatenate([s, d], axis=0)


def merge(c: np.ndarray) -> np.ndarray:
    """Inverse of ``split`` along axis 0."""
    n = len(c)
    ns = (n + 1) // 2
    nd = n - ns
    s = c[:ns] / LOW_SCALE
    d = c[ns:] / HIGH_SCALE
    s -= DELTA * (_prev(d, ns) + _here(d, ns))
    d -= GAMMA * (s[:nd] + _next(s, nd))
    s -= BETA * (_prev(d, ns) + _here(d, ns))
    d -= ALPHA * (s[:nd] + _next(s, nd))
    out = np.empty((n,) + c.shape[1:], np.float64)
    out[0::2] = s
    out[1::2] = d
    return out


def decomposition(levels: int, planar: bool = False):
    """What ``plan`` and the functions built on it take as ``levels``: ``levels`` for a 3D transform,
    ``(0, levels, levels)`` for a planar one (Y and X split, Z never: the Z planes transformed
    independently, for volumes whose planes are too far apart to correlate)."""
    return (0, int(levels), int(levels)) if planar else int(levels)


def plan(shape, levels) -> list[tuple[tuple[int, int, int], tuple[bool, bool, bool]]]:
    """The decomposition of a block of ``shape`` (ZYX): one entry per level, finest first, each
    ``(low-band shape before the level, which axes are split)``. ``levels``: an int (every axis), or
    the most levels per axis (Z, Y, X; see ``decomposition``). Stops early when no axis can split."""
    per_axis = tuple(int(v) for v in levels) if isinstance(levels, tuple) else (int(levels),) * 3
    cur = tuple(int(s) for s in shape)
    out = []
    for level in range(max(per_axis)):
        axes = tuple(n >= MIN_SPLIT and level < most for n, most in zip(cur, per_axis))
        if not any(axes):
            break
        out.append((cur, axes))
        cur = tuple((n + 1) // 2 if a else n for n, a in zip(cur, axes))
    return out


def forward(block: np.ndarray, levels) -> np.ndarray:
    """3D analysis of ``block`` (ZYX) over ``plan(block.shape, levels)``; float64, same shape."""
    c = np.array(block, dtype=np.float64, order="C")
    for box, axes in plan(c.shape, levels):
        for axis, on in enumerate(axes):
            if on:
                _lift(c, box, axis, False)
    return c


def inverse(coeffs: np.ndarray, levels) -> np.ndarray:
    """Inverse of ``forward`` (same ``levels``); float64."""
    c = np.array(coeffs, dtype=np.float64, order="C")
    for box, axes in reversed(plan(c.shape, levels)):
        for axis in (2, 1, 0):
            if axes[axis]:
                _lift(c, box, axis, True)
    return c


def _lift(c: np.ndarray, box, axis: int, inverse: bool) -> None:
    """One level along ``axis`` of ``c[:box]`` in place: the numba kernel (same arithmetic, same
    order as ``split`` / ``merge``, which stay as its reference)."""
    from . import _kernels

    _kernels.lift_axis(c, box[0], box[1], box[2], axis, inverse, ALPHA, BETA, GAMMA, DELTA, LOW_SCALE, HIGH_SCALE)


def forward_reference(block: np.ndarray, levels) -> np.ndarray:
    """``forward`` with the numpy ``split`` (the reference of the kernel)."""
    c = np.array(block, dtype=np.float64)
    for box, axes in plan(c.shape, levels):
        view = c[: box[0], : box[1], : box[2]]
        for axis, on in enumerate(axes):
            if on:
                view[...] = np.moveaxis(split(np.moveaxis(view, axis, 0)), 0, axis)
    return c


def inverse_reference(coeffs: np.ndarray, levels) -> np.ndarray:
    """``inverse`` with the numpy ``merge`` (the reference of the kernel)."""
    c = np.array(coeffs, dtype=np.float64)
    for box, axes in reversed(plan(c.shape, levels)):
        view = c[: box[0], : box[1], : box[2]]
        for axis in (2, 1, 0):
            if axes[axis]:
                view[...] = np.moveaxis(merge(np.moveaxis(view, axis, 0)), 0, axis)
    return c


def band_boxes(shape, levels) -> list[tuple[int, tuple[slice, slice, slice], int]]:
    """The subbands of ``forward``'s output as ``(level, slices, orientation)``, coarsest first.

    level: 0 for the final low band, else the decomposition level (``len(plan)`` = coarsest, 1 =
    finest). orientation: a 3-bit mask, bit 2 = high along Z, bit 1 = Y, bit 0 = X (0 = low band).
    """
    steps = plan(shape, levels)
    out = []
    if steps:
        last_box, last_axes = steps[-1]
        low = tuple((n + 1) // 2 if a else n for n, a in zip(last_box, last_axes))
    else:
        low = tuple(int(s) for s in shape)
    out.append((0, tuple(slice(0, n) for n in low), 0))
    for lev in range(len(steps), 0, -1):
        box, axes = steps[lev - 1]
        for orient in range(1, 8):
            bits = ((orient >> 2) & 1, (orient >> 1) & 1, orient & 1)
            if any(b and not a for b, a in zip(bits, axes)):
                continue
            sl = []
            for n, a, b in zip(box, axes, bits):
                half = (n + 1) // 2 if a else n
                sl.append(slice(half, n) if b else slice(0, half))
            if all(s.stop > s.start for s in sl):
                out.append((lev, tuple(sl), orient))
    return out


def _synthesis_norms(n: int = 256) -> tuple[float, float]:
    """L2 norms of a mid-signal low and high synthesis function at unit scales (for the constants)."""
    global LOW_SCALE, HIGH_SCALE
    saved = LOW_SCALE, HIGH_SCALE
    LOW_SCALE = HIGH_SCALE = 1.0
    try:
        e = np.zeros(n)
        e[n // 4] = 1.0
        low = np.linalg.norm(merge(e))
        e = np.zeros(n)
        e[n // 2 + n // 4] = 1.0
        high = np.linalg.norm(merge(e))
    finally:
        LOW_SCALE, HIGH_SCALE = saved
    return float(low), float(high)



def band_gains(shape, levels) -> list[float]:
    """For each band of ``band_boxes(shape, levels)``: the L2 norm of the synthesis function of a
    coefficient at the band's centre, i.e. how much a unit coefficient error weighs in the voxels.

    The 3D function is the outer product of three 1D ones, so its norm is the product of the 1D
    norms: along each axis, an impulse at the band's centre index goes through the merges of that
    axis from the band's level (the coarsest for the low band) down to the finest.
    """
    steps = plan(shape, levels)
    out = []
    for lev, slices, _ in band_boxes(shape, levels):
        start = lev if lev else len(steps)
        g = 1.0
        for axis, (n, sl) in enumerate(zip(shape, slices)):
            e = np.zeros(int(n))
            e[(sl.start + sl.stop) // 2] = 1.0
            for box, axes in reversed(steps[:start]):
                if axes[axis]:
                    e[: box[axis]] = merge(e[: box[axis]])
            g *= float(np.linalg.norm(e))
        out.append(g)
    return out
