"""Occupancy gates: which voxels hold signal.

- ``occupancy_label``: the background-relative label of METHOD-NOTES 4,
  ``v > median + p * (max - median)`` (the paper's "1% of max" marks every
  voxel of a volume on an offset background as occupied).
- ``ThresholdGate``: that label itself, lightly dilated.
- ``OccupancyGate`` (TOPS-Gate, paper 3.2): an MLP ``[64, 64, 64, 1]`` (ReLU)
  on ``[x, sin(2^k pi x), cos(2^k pi x)]_{k<L}`` with ``x`` normalised to
  [0, 1] per axis and L = 4, pre-trained with binary cross-entropy against the
  label (Adam, lr 1e-3), then frozen; ``mask`` thresholds it at tau = 0.5.
  It is evaluated on a coarse grid and expanded to full resolution, so the
  cost does not grow with the volume.
"""

from __future__ import annotations

import numpy as np


def noise_sigma(volume: np.ndarray, max_samples: int = 2_000_000) -> float:
    """Standard deviation of voxel-scale noise (units of ``volume``), robustly.

    1.4826 x the median absolute second difference along X, divided by sqrt(6)
    (the second difference of white noise has variance 6 sigma^2), on a
    subsample of rows: smooth signal and edges cancel or are outvoted.
    Falls back to Y, then Z, on volumes thinner than 3 voxels along X.
    """
    v = np.asarray(volume)
    axis = next((a for a in (2, 1, 0) if v.shape[a] >= 3), None)
    if axis is None or v.size == 0:
        return 0.0
    v = np.moveaxis(v, axis, -1)
    rows = v.reshape(-1, v.shape[-1])
    step = max(1, rows.shape[0] * rows.shape[1] // max_samples)
    r = rows[::step].astype(np.float64)
    d = r[:, 2:] - 2.0 * r[:, 1:-1] + r[:, :-2]
    return float(1.4826 * np.median(np.abs(d)) / np.sqrt(6.0))


def occupancy_threshold(volume: np.ndarray, fraction: float) -> float:
    med = float(np.median(volume))
    return med + fraction * (float(np.max(volume)) - med)


def occupancy_label(volume: np.ndarray, fraction: float = 0.03) -> np.ndarray:
    """Boolean (Z, Y, X): voxels above median + ``fraction`` * (max - median)."""
    return np.asarray(volume) > occupancy_threshold(volume, fraction)


class ThresholdGate:
    """The occupancy label, dilated by ``dilation`` voxels (3x3x3 steps)."""

    name = "threshold"

    def __init__(self, fraction: float = 0.03, dilation: int = 1):
        self.fraction = fraction
        self.dilation = dilation

    def fit(self, volume: np.ndarray, seed: int = 0) -> ThresholdGate:
        from scipy import ndimage

        m = occupancy_label(volume, self.fraction)
        if self.dilation and m.any():
            m = ndimage.binary_dilation(m, np.ones((3, 3, 3), bool), iterations=self.dilation)
        self._mask = m
        return self

    def mask(self, shape=None) -> np.ndarray:
        return self._mask


def fourier_features(x, n_bands: int = 4):
    """[x, sin(2^k pi x), cos(2^k pi x)] for k < n_bands; x (M, 3) in [0, 1] (torch)."""
    import torch

    feats = [x]
    for k in range(n_bands):
        f = (2.0**k) * np.pi * x
        feats += [torch.sin(f), torch.cos(f)]
    return torch.cat(feats, dim=1)


class OccupancyGate:
    """TOPS-Gate: a frozen Fourier-feature MLP predicting occupancy from position."""

    name = "mlp"

    def __init__(self, fraction: float = 0.03, n_bands: int = 4, hidden=(64, 64, 64),
                 iterations: int = 1000, lr: float = 1e-3, batch: int = 4096, tau: float = 0.5,
                 coarse_voxels: int = 2_000_000):
        self.fraction = fraction
        self.n_bands = n_bands
        self.hidden = tuple(hidden)
        self.iterations = iterations
        self.lr = lr
        self.batch = batch
        self.tau = tau
        self.coarse_voxels = coarse_voxels
        self.net = None
        self.final_loss = None

    def _build(self):
        import torch
        from torch import nn

        layers, d = [], 3 + 6 * self.n_bands
        for h in self.hidden:
            layers += [nn.Linear(d, h), nn.ReLU()]
            d = h
        layers.append(nn.Linear(d, 1))
        return nn.Sequential(*layers).to(torch.float32)

    def fit(self, volume: np.ndarray, seed: int = 0) -> OccupancyGate:
        """Pre-train on random voxels of ``volume`` (BCE against ``occupancy_label``), then freeze."""
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # small matrices: one thread is faster than two contending
        try:
            return self._fit(volume, seed)
        finally:
            torch.set_num_threads(threads)

    def _fit(self, volume, seed):
        import torch

        self.shape = tuple(volume.shape)
        label = occupancy_label(volume, self.fraction)
        g = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = self._build()
        opt = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        ext = torch.tensor(self.shape, dtype=torch.float32)
        flat = torch.from_numpy(label.reshape(-1))
        n = flat.numel()
        bce = torch.nn.BCEWithLogitsLoss()
        for _ in range(self.iterations):
            idx = torch.randint(0, n, (self.batch,), generator=g)
            zyx = torch.stack(_unravel(idx, self.shape), dim=1).float()
            x = (zyx + 0.5) / ext
            y = flat[idx].float()[:, None]
            loss = bce(self.net(fourier_features(x, self.n_bands)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        self.final_loss = float(loss.detach())
        for p in self.net.parameters():
            p.requires_grad_(False)
        return self

    def probability(self, points: np.ndarray) -> np.ndarray:
        """Gate probability (M,) at (M, 3) voxel coordinates (ZYX)."""
        import torch

        x = (torch.as_tensor(points, dtype=torch.float32) + 0.5) / torch.tensor(self.shape, dtype=torch.float32)
        out = []
        with torch.no_grad():
            for s in range(0, len(x), 262_144):
                out.append(torch.sigmoid(self.net(fourier_features(x[s : s + 262_144], self.n_bands)))[:, 0])
        return torch.cat(out).numpy() if out else np.zeros(0, np.float32)

    def mask(self, shape=None) -> np.ndarray:
        """Boolean (Z, Y, X) occupied set ``g >= tau``, evaluated on a coarse grid and expanded."""
        shape = tuple(shape or self.shape)
        n = int(np.prod(shape))
        f = max(1.0, (n / self.coarse_voxels) ** (1 / 3))
        step = [max(1, int(round(f))) if s > 16 else 1 for s in shape]
        axes = [np.arange(0, s, st, dtype=np.float64) for s, st in zip(shape, step)]
        pts = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
        coarse = (self.probability(pts) >= self.tau).reshape([len(a) for a in axes])
        full = coarse
        for a, st in enumerate(step):
            if st > 1:
                full = np.repeat(full, st, axis=a)
        return np.ascontiguousarray(full[: shape[0], : shape[1], : shape[2]])


def _unravel(idx, shape):
    z = idx // (shape[1] * shape[2])
    rem = idx % (shape[1] * shape[2])
    return z, rem // shape[2], rem % shape[2]


def make_gate(kind: str, fraction: float, iterations: int = 1000, tau: float = 0.5):
    if kind == "threshold":
        return ThresholdGate(fraction)
    if kind == "mlp":
        return OccupancyGate(fraction, iterations=iterations, tau=tau)
    from ..errors import InputError

    raise InputError(f"unknown gate {kind!r}; expected 'mlp' or 'threshold'")
