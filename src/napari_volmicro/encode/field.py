"""The background field during training: a coarse trilinear grid (``background.py``)
as a torch parameter, interpolated onto a training lattice with three small
per-axis weight matrices.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import background as bgfield
from .budget import field_shape  # noqa: F401 (re-exported)
from .splat import Lattice


def axis_matrix(g: int, n: int, coords: np.ndarray) -> torch.Tensor:
    """(len(coords), g) linear-interpolation weights along one axis."""
    i0, w1 = bgfield.axis_weights(g, n, coords)
    m = np.zeros((len(coords), g), np.float32)
    rows = np.arange(len(coords))
    np.add.at(m, (rows, i0), 1.0 - w1)
    np.add.at(m, (rows, np.minimum(i0 + 1, g - 1)), w1)
    return torch.from_numpy(m)


def on_lattice(field: torch.Tensor, volume_shape, lattice: Lattice) -> torch.Tensor:
    """Field values on ``lattice`` (flattened, C order)."""
    gz, gy, gx = field.shape
    mats = [
        axis_matrix(g, n, o + s * np.arange(m, dtype=np.float64)).to(field.device)
        for g, n, o, s, m in zip(field.shape, volume_shape, lattice.offset, lattice.stride, lattice.shape)
    ]
    t = torch.einsum("zi,ijk->zjk", mats[0], field)
    t = torch.einsum("yj,zjk->zyk", mats[1], t)
    t = torch.einsum("xk,zyk->zyx", mats[2], t)
    return t.reshape(-1)
