"""``GaussianParameters``: the trainable torch form of a ``GaussianVolume``.

Raw, unconstrained parameters with the paper's activations (Eq. 4), adapted to
voxel units (METHOD-NOTES 2):

- centre  = -0.5 + shape * sigmoid(raw_position)   (inside the volume extent)
- scale   = softplus(raw_scale)                    (voxels, > 0)
- quat    = raw_rotation / |raw_rotation|          (w, a, b, c)
- amplitude = sign * sigmoid(raw_amplitude)        (model units, in (-1, 1); ``sign`` is a
  +-1 buffer, +1 unless built from negative amplitudes: training moves magnitudes,
  the encoder's closed-form solve and relocation set signs)

Importing this module imports torch; the rest of the core library does not.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .gaussians import GaussianVolume

_EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def _softplus_inv(s: np.ndarray) -> np.ndarray:
    s = np.maximum(np.asarray(s, np.float64), 1e-6)
    # log(exp(s) - 1), stable for large s
    return s + np.log(-np.expm1(-s))


class GaussianParameters(nn.Module):
    """Trainable Gaussians for a volume of ``shape`` voxels (ZYX)."""

    def __init__(self, shape, centers, scales, quaternions, amplitudes, device=None):
        super().__init__()
        shape = tuple(int(s) for s in shape)
        self.shape = shape
        ext = np.asarray(shape, np.float64)
        self.register_buffer("extent", torch.tensor(ext, dtype=torch.float32, device=device))
        pos = (np.asarray(centers, np.float64) + 0.5) / ext
        q = np.asarray(quaternions, np.float64).reshape(-1, 4)
        self.raw_position = nn.Parameter(torch.tensor(_logit(pos), dtype=torch.float32, device=device))
        self.raw_scale = nn.Parameter(torch.tensor(_softplus_inv(scales), dtype=torch.float32, device=device))
        self.raw_rotation = nn.Parameter(torch.tensor(q, dtype=torch.float32, device=device))
        a = np.asarray(amplitudes, np.float64).reshape(-1)
        self.raw_amplitude = nn.Parameter(torch.tensor(_logit(np.abs(a)), dtype=torch.float32, device=device))
        self.register_buffer("sign", torch.tensor(np.where(a < 0, -1.0, 1.0), dtype=torch.float32, device=device))

    @classmethod
    def from_volume(cls, gv: GaussianVolume, device=None) -> GaussianParameters:
        return cls(gv.shape, gv.centers, gv.scales, gv.quaternions, gv.amplitudes, device=device)

    def __len__(self) -> int:
        return self.raw_position.shape[0]

    # -- activations (Eq. 4) -------------------------------------------------

    def centers(self) -> torch.Tensor:
        """(N, 3) centres in voxels, ZYX."""
        return torch.sigmoid(self.raw_position) * self.extent - 0.5

    def scales(self) -> torch.Tensor:
        """(N, 3) standard deviations in voxels."""
        return nn.functional.softplus(self.raw_scale)

    def quaternions(self) -> torch.Tensor:
        """(N, 4) unit quaternions (w, a, b, c)."""
        return self.raw_rotation / self.raw_rotation.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def amplitudes(self) -> torch.Tensor:
        """(N,) amplitudes in model units (signed)."""
        return self.sign * torch.sigmoid(self.raw_amplitude)

    def rotations(self) -> torch.Tensor:
        """(N, 3, 3) rotation matrices; columns are principal axes."""
        w, a, b, c = self.quaternions().unbind(1)
        return torch.stack(
            [
                1 - 2 * (b * b + c * c), 2 * (a * b - c * w), 2 * (a * c + b * w),
                2 * (a * b + c * w), 1 - 2 * (a * a + c * c), 2 * (b * c - a * w),
                2 * (a * c - b * w), 2 * (b * c + a * w), 1 - 2 * (a * a + b * b),
            ],
            dim=1,
        ).reshape(-1, 3, 3)

    def precisions(self) -> torch.Tensor:
        """(N, 3, 3) inverse covariances R S^-2 R^T (voxel^-2)."""
        r = self.rotations()
        inv = self.scales() ** -2
        return (r * inv[:, None, :]) @ r.transpose(1, 2)

    def covariances(self) -> torch.Tensor:
        r = self.rotations()
        return (r * (self.scales() ** 2)[:, None, :]) @ r.transpose(1, 2)

    # -- export ------------------------------------------------------------------

    @torch.no_grad()
    def to_volume(self, template: GaussianVolume | None = None, **fields) -> GaussianVolume:
        """A detached numpy ``GaussianVolume``; other fields come from ``template``/``fields``."""
        arrays = dict(
            centers=self.centers().detach().cpu().numpy(),
            scales=self.scales().detach().cpu().numpy(),
            quaternions=self.quaternions().detach().cpu().numpy(),
            amplitudes=self.amplitudes().detach().cpu().numpy(),
        )
        arrays["centers"] = np.clip(arrays["centers"], -0.5, np.asarray(self.shape) - 0.5)
        if template is not None:
            return template.replace(**arrays, **fields)
        return GaussianVolume(self.shape, **arrays, **fields)
