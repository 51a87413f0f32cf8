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
    """Open a ``.vmg`` file as a ``GaussianVolume``.

    A one-brick file is read whole (every byte checked). A file with more than
    one brick gives a ``container.LazyGaussianVolume``: ``decode(region)`` reads
    only the bricks whose Gaussians reach the region (recent ones are cached),
    and the parameter arrays (``centers`` ...) read every brick on first use.
    ``container.load(path)`` always reads the whole file.
    """
    from .container import open_model

    return open_model(path)


def __getattr__(name):
    if name == "GaussianVolume":
        from .gaussians import GaussianVolume

        return GaussianVolume
    if name == "IntensityMapping":
        from .intensity import IntensityMapping

        return IntensityMapping
    raise AttributeError(f"module 'napari_volmicro' has no attribute {name!r}")


__all__ = ["GaussianVolume", "IntensityMapping", "__version__", "load"]
