"""Random Gaussian models for tests and benchmarks (not real data).

``random_volume`` mixes the shapes the decoders must get right: thin needles,
flat discs, round blobs, at random orientations, some centred near or beyond
the volume's faces so their footprints are cut by the edge.
"""

from __future__ import annotations

import numpy as np

from .gaussians import GaussianVolume
from .intensity import IntensityMapping


def random_quaternions(rng: np.random.Generator, n: int) -> np.ndarray:
    q = rng.normal(size=(n, 4))
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def random_volume(
    shape=(24, 40, 36),
    n: int = 50,
    seed: int = 0,
    scale_range=(0.6, 4.0),
    mapping: IntensityMapping | None = None,
    edge_fraction: float = 0.2,
) -> GaussianVolume:
    """``n`` Gaussians on a grid of ``shape``: a third thin, a third flat, a third round.

    Scales (voxels) are drawn log-uniformly from ``scale_range``; thin ones
    get one long and two short axes, flat ones two long and one short.
    ``edge_fraction`` of the centres are placed within 1.5 voxels of a face
    (or just outside it, still inside the extent [-0.5, n - 0.5]).
    """
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    ext = np.asarray(shape, np.float64)
    centers = rng.uniform(-0.5, ext - 0.5, size=(n, 3))
    n_edge = int(round(edge_fraction * n))
    for i in range(n_edge):
        axis = rng.integers(3)
        centers[i, axis] = rng.choice([rng.uniform(-0.5, 1.0), rng.uniform(ext[axis] - 2.0, ext[axis] - 0.5)])
    lo, hi = np.log(scale_range[0]), np.log(scale_range[1])
    big = np.exp(rng.uniform(lo + 0.5 * (hi - lo), hi, size=n))
    small = np.exp(rng.uniform(lo, lo + 0.5 * (hi - lo), size=n))
    scales = np.empty((n, 3))
    kind = np.arange(n) % 3
    scales[kind == 0] = np.stack([big, small, small], 1)[kind == 0]  # thin
    scales[kind == 1] = np.stack([big, big * 0.8, small], 1)[kind == 1]  # flat
    scales[kind == 2] = np.stack([big, big * 0.9, big * 1.1], 1)[kind == 2] * 0.7  # round
    amplitudes = rng.uniform(0.1, 1.0, size=n)
    return GaussianVolume(
        shape,
        centers,
        scales,
        random_quaternions(rng, n),
        amplitudes,
        mapping=mapping or IntensityMapping(),
    )


def benchmark_volume(shape=(100, 647, 813), n: int = 20_000, seed: int = 0, dtype=np.uint16) -> GaussianVolume:
    """The decode benchmark's model: ``n`` Gaussians with 1-5 voxel scales, random rotations."""
    rng = np.random.default_rng(seed)
    ext = np.asarray(shape, np.float64)
    centers = rng.uniform(-0.5, ext - 0.5, size=(n, 3))
    scales = rng.uniform(1.0, 5.0, size=(n, 3))
    amplitudes = rng.uniform(0.05, 0.5, size=n)
    mapping = IntensityMapping(offset=100.0, scale=4000.0, dtype=dtype)
    return GaussianVolume(shape, centers, scales, random_quaternions(rng, n), amplitudes, mapping=mapping)
