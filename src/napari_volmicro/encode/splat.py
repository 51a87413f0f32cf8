"""Exact Gaussian splatting on a voxel lattice as a differentiable torch op.

``splat(amplitudes, centers, prec6, lattice)`` returns the Gaussian sum (no
background) at every voxel of ``lattice`` (flattened, C order), exactly as the
dense decoder computes it (3-sigma Mahalanobis cutoff). Forward and backward
run in numba (``_kernels.py``); torch chains the per-Gaussian gradients into
the raw parameters. ``prec6`` holds ``(Pzz, Pyy, Pxx, Pzy, Pzx, Pyx)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import _kernels

_SYM = torch.tensor([1.0, 1.0, 1.0, 2.0, 2.0, 2.0], dtype=torch.float64)


@dataclass(frozen=True)
class Lattice:
    """Voxels ``offset[a] + stride[a] * i`` for ``i < shape[a]`` (ZYX voxel indices)."""

    offset: tuple[int, int, int]
    stride: tuple[int, int, int]
    shape: tuple[int, int, int]

    @classmethod
    def make(cls, volume_shape, offset=(0, 0, 0), stride=(1, 1, 1)) -> Lattice:
        shape = tuple(len(range(o, n, s)) for o, n, s in zip(offset, volume_shape, stride))
        return cls(tuple(int(o) for o in offset), tuple(int(s) for s in stride), shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(o, None, s) for o, s in zip(self.offset, self.stride))

    def arrays(self):
        return (
            np.asarray(self.offset, np.float64),
            np.asarray(self.stride, np.float64),
            np.asarray(self.shape, np.int64),
        )


def prec6_from_matrices(p: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) precision matrices -> (N, 6) (Pzz, Pyy, Pxx, Pzy, Pzx, Pyx)."""
    return torch.stack([p[:, 0, 0], p[:, 1, 1], p[:, 2, 2], p[:, 0, 1], p[:, 0, 2], p[:, 1, 2]], dim=1)


def half_widths(cov_diag: np.ndarray) -> np.ndarray:
    """(N, 3) half-widths of the 3-sigma box from covariance diagonals (voxel^2)."""
    return 3.0 * np.sqrt(np.maximum(cov_diag, 0.0))


def n_threads() -> int:
    """Number of partial sums (fixed, so results are identical for any thread count)."""
    return _kernels.N_CHUNKS


def splat_numpy(centers, prec6, amps, half, lattice: Lattice) -> np.ndarray:
    """Forward only, numpy in/out: float32 array of ``lattice.shape``."""
    off, stride, shape = lattice.arrays()
    out = _kernels.splat_forward(
        np.ascontiguousarray(centers, np.float64),
        np.ascontiguousarray(prec6, np.float64),
        np.ascontiguousarray(amps, np.float64),
        np.ascontiguousarray(half, np.float64),
        off, stride, shape, n_threads(),
    )
    return out.reshape(lattice.shape)


def _host(x) -> np.ndarray:
    """float64 numpy copy of a tensor or array."""
    if isinstance(x, torch.Tensor):
        return x.detach().double().cpu().numpy()
    return np.ascontiguousarray(x, np.float64)


def _gpu():
    from .. import _cuda_footprint

    return _cuda_footprint


def _gpu_table(amps, centers, prec6, half):
    """The GPU kernels' Gaussian table and fixed-point scale for these tensors."""
    from .._footprint import fixed_point_scale

    cf = _gpu()
    h = half if isinstance(half, torch.Tensor) else torch.as_tensor(np.asarray(half, np.float64))
    tab = cf.gaussian_table(centers, prec6, amps, h.to(amps.device))
    scale = fixed_point_scale(float(amps.detach().double().abs().sum())) if len(amps) else 1.0
    return tab, scale


class _Splat(torch.autograd.Function):
    @staticmethod
    def forward(ctx, amps, centers, prec6, half, lattice, kernels):
        ctx.kernels = kernels
        if kernels == "cuda":
            cf = _gpu()
            tab, scale = _gpu_table(amps, centers, prec6, half)
            geom = cf.geometry(lattice)
            out, rows = cf.splat_lattice(tab, geom, scale)
            ctx.saved = (tab, geom, rows)
            return out
        c = centers.detach().double().cpu().numpy()
        p = prec6.detach().double().cpu().numpy()
        a = amps.detach().double().cpu().numpy()
        h = _host(half)
        off, stride, shape = lattice.arrays()
        out = _kernels.splat_forward(c, p, a, h, off, stride, shape, n_threads())
        ctx.saved = (c, p, a, h, off, stride, shape)
        return torch.from_numpy(out).to(amps.device)

    @staticmethod
    def backward(ctx, grad_out):
        if ctx.kernels == "cuda":
            tab, geom, rows = ctx.saved
            acc = _gpu().splat_grad(tab, geom, grad_out.detach().float().contiguous(), rows)
            g_amp, g_c, g_p = _gaussian_grads(acc, tab[:, 9], _prec6_of(tab))
            return g_amp.float(), g_c.float(), g_p.float(), None, None, None
        c, p, a, h, off, stride, shape = ctx.saved
        r = np.ascontiguousarray(grad_out.detach().cpu().numpy(), np.float32)
        acc = torch.from_numpy(_kernels.splat_backward(c, p, a, h, off, stride, shape, r))
        g_amp, g_c, g_p = _gaussian_grads(acc, a, p)
        dev = grad_out.device
        return g_amp.float().to(dev), g_c.float().to(dev), g_p.float().to(dev), None, None, None


def _prec6_of(tab):
    """The (N, 6) precision columns of a GPU Gaussian table."""
    cf = _gpu()
    return tab[:, cf.PZZ : cf.PYX + 1]


def splat(amps: torch.Tensor, centers: torch.Tensor, prec6: torch.Tensor, half, lattice: Lattice,
          kernels: str = "cpu"):
    """Differentiable Gaussian sum on ``lattice`` (flattened float32 tensor of ``lattice.size``).

    ``half``: (N, 3) box half-widths (numpy or tensor). ``kernels``: ``"cpu"`` or ``"cuda"``.
    """
    return _Splat.apply(amps, centers, prec6, half, lattice, kernels)


class _SplatLoss(torch.autograd.Function):
    """Weighted squared error of (Gaussian sum + background) against a target, on a lattice.

    Returns the scalar ``sum(weight * (pred + bg - target)^2)``; the per-voxel
    residual stays in numpy (``ctx`` of the caller via ``info``).
    """

    @staticmethod
    def forward(ctx, amps, centers, prec6, bg, half, lattice, target, weight, info, kernels):
        ctx.kernels = kernels
        if kernels == "cuda":
            return _gpu_loss_forward(ctx, amps, centers, prec6, bg, half, lattice, target, weight, info)
        c = centers.detach().double().cpu().numpy()
        p = prec6.detach().double().cpu().numpy()
        a = amps.detach().double().cpu().numpy()
        h = _host(half)
        off, stride, shape = lattice.arrays()
        nt = n_threads()
        pred = _kernels.splat_forward(c, p, a, h, off, stride, shape, nt)
        bgn = bg.detach().cpu().numpy()
        lw, l2, r, d = _kernels.weighted_residual(pred, bgn, target, weight, nt)
        info["mse"] = l2 / max(1, len(pred))
        info["diff"] = d
        ctx.saved = (c, p, a, h, off, stride, shape, r)
        return torch.tensor(lw, dtype=torch.float32, device=amps.device)

    @staticmethod
    def backward(ctx, grad_out):
        if ctx.kernels == "cuda":
            return _gpu_loss_backward(ctx, grad_out)
        c, p, a, h, off, stride, shape, r = ctx.saved
        g = float(grad_out)
        rg = r * np.float32(g) if g != 1.0 else r
        dev = grad_out.device
        if len(a):
            acc = torch.from_numpy(_kernels.splat_backward(c, p, a, h, off, stride, shape, rg))
            g_amp, g_c, g_p = _gaussian_grads(acc, a, p)
            g_amp, g_c, g_p = g_amp.float().to(dev), g_c.float().to(dev), g_p.float().to(dev)
        else:
            g_amp = g_c = g_p = None
        g_bg = torch.from_numpy(rg).to(dev) if ctx.needs_input_grad[3] else None
        return g_amp, g_c, g_p, g_bg, None, None, None, None, None, None


def _gpu_loss_forward(ctx, amps, centers, prec6, bg, half, lattice, target, weight, info):
    """``_SplatLoss.forward`` on the GPU kernels: everything stays on the tensors' device.

    ``target``/``weight``: flat float32 tensors there. ``info["diff"]`` is a tensor.
    """
    cf = _gpu()
    geom = cf.geometry(lattice)
    if len(amps):
        tab, scale = _gpu_table(amps, centers, prec6, half)
        pred, rows = cf.splat_lattice(tab, geom, scale)
    else:
        tab, rows = None, None
        pred = torch.zeros(lattice.size, dtype=torch.float32, device=target.device)
    d = pred.add_(bg.detach()).sub_(target)
    dd = d * d
    l2 = dd.sum(dtype=torch.float64)
    lw = (dd.mul_(weight)).sum(dtype=torch.float64)
    r = d * weight
    r.mul_(2.0)
    info["mse"] = float(l2) / max(1, lattice.size)
    info["diff"] = d
    ctx.saved = (tab, geom, rows, r)
    return lw.float()


def _gpu_loss_backward(ctx, grad_out):
    tab, geom, rows, r = ctx.saved
    rg = r * grad_out.detach().float()
    g_amp = g_c = g_p = None
    if tab is not None:
        acc = _gpu().splat_grad(tab, geom, rg, rows)
        g_amp, g_c, g_p = _gaussian_grads(acc, tab[:, 9], _prec6_of(tab))
        g_amp, g_c, g_p = g_amp.float(), g_c.float(), g_p.float()
    g_bg = rg if ctx.needs_input_grad[3] else None
    return g_amp, g_c, g_p, g_bg, None, None, None, None, None, None


def _gaussian_grads(acc, a, p):
    w = torch.as_tensor(a)
    pm = torch.as_tensor(p)
    s = acc[:, 1:4]
    g_c = torch.stack(
        [
            pm[:, 0] * s[:, 0] + pm[:, 3] * s[:, 1] + pm[:, 4] * s[:, 2],
            pm[:, 3] * s[:, 0] + pm[:, 1] * s[:, 1] + pm[:, 5] * s[:, 2],
            pm[:, 4] * s[:, 0] + pm[:, 5] * s[:, 1] + pm[:, 2] * s[:, 2],
        ],
        dim=1,
    ) * w[:, None]
    g_p = -0.5 * w[:, None] * acc[:, 4:10] * _SYM.to(acc.device)
    return acc[:, 0], g_c, g_p


def splat_loss(amps, centers, prec6, bg, half, lattice: Lattice, target, weight, info: dict,
               kernels: str = "cpu") -> torch.Tensor:
    """``sum(weight * (splat + bg - target)^2)`` on ``lattice``.

    ``kernels="cpu"``: target/weight are flat float32 numpy arrays and ``half`` numpy;
    ``"cuda"``: flat float32 tensors on the parameters' device and ``half`` a tensor there.
    ``bg`` is a flat tensor of the lattice's size (the background field there, or zeros).
    Fills ``info["mse"]`` (unweighted mean squared error) and ``info["diff"]`` (model - target;
    numpy on the CPU kernels, a tensor on the GPU ones).
    """
    return _SplatLoss.apply(amps, centers, prec6, bg, half, lattice, target, weight, info, kernels)
