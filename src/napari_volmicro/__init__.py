"""napari-volmicro: 3D microscopy volumes as sparse mixtures of anisotropic Gaussians.

The core library (this package outside ``_napari``) imports neither Qt nor
napari, and importing it does not import torch, faiss or numba.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

# numba's OpenMP workers spin while idle; on a busy 2-core machine that halves throughput.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .gaussians import GaussianVolume


def load(path) -> GaussianVolume:
    """Read a ``.vmg`` file into a ``GaussianVolume``."""
    from .container import load as _load

    return _load(path)


def __getattr__(name):
    if name == "GaussianVolume":
        from .gaussians import GaussianVolume

        return GaussianVolume
    if name == "IntensityMapping":
        from .intensity import IntensityMapping

        return IntensityMapping
    raise AttributeError(f"module 'napari_volmicro' has no attribute {name!r}")


__all__ = ["GaussianVolume", "IntensityMapping", "__version__", "load"]
