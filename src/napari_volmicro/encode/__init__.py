"""The encoder: fit anisotropic Gaussians to a volume under a size budget.

``compress(volume, ...) -> GaussianVolume`` is the one-call API; ``Trainer``
is the step-by-step object the command line and the napari widget drive;
``TrainConfig``/``PRESETS`` hold every setting. Importing this package does not
import torch or numba (the training loop loads them on ``run``).
"""

from __future__ import annotations

from .config import DEFAULT_BPP, PRESETS, TrainConfig, make_config
from .trainer import Snapshot, Trainer, compress, warm_up

__all__ = ["DEFAULT_BPP", "PRESETS", "Snapshot", "TrainConfig", "Trainer", "compress", "make_config", "warm_up"]
