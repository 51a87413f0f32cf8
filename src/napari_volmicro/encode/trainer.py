"""``Trainer``: fits Gaussians to a volume, one optimiser step at a time.

The command line and the napari widget drive the same object::

    t = Trainer(volume, bpp=0.073)
    for snap in t.run():          # a Snapshot after every step
        ...                        # t.stop() / t.request_model() from any thread
    gv = t.result

Each step trains on one lattice of voxels (``offset + stride * i`` per axis,
random offset) and computes the model there exactly as the decoder does: every
Gaussian whose 3-sigma ellipsoid covers a voxel contributes (``splat.py``), plus
the background field. Loss, gate, densification and relocation are in their
own modules; ``config.py`` documents every setting.

Devices: ``device="cuda"`` runs the footprint kernels on the GPU
(``_cuda_footprint.py``, the same math as the CPU kernels) and keeps
parameters, optimiser state, lattice data and reductions there between steps;
``"auto"`` picks it only where the whole GPU path works (``gpu.py``).
Determinism: the same seed gives the same model on the CPU (kernels use a
fixed number of partial sums, independent of the thread count) and on a given
GPU (int64 fixed-point sums, no float atomics).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..gaussians import GaussianVolume
from ..intensity import IntensityMapping
from . import budget as budgets
from .config import TrainConfig, make_config


@dataclass(frozen=True)
class Snapshot:
    """Progress after one optimiser step.

    psnr: dB, estimate of ``psnr_full`` from this step's lattice (model before
    rounding). elapsed/eta: seconds. model: a detached ``GaussianVolume`` when
    requested with ``Trainer.request_model`` (always on the final snapshot).
    """

    step: int
    total_steps: int
    loss: float
    psnr: float
    n_gaussians: int
    elapsed: float
    eta: float | None
    done: bool
    stopped: bool
    model: GaussianVolume | None


def _check_volume(volume) -> np.ndarray:
    from ..volume_io import check_volume

    return check_volume(volume, source="volume")


def _check_spacing(spacing) -> tuple[float, float, float]:
    if spacing is None:
        return (1.0, 1.0, 1.0)
    try:
        sp = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise InputError(f"spacing must be three positive numbers (Z, Y, X), got {spacing!r}") from None
    if len(sp) != 3 or not all(math.isfinite(s) and s > 0 for s in sp):
        raise InputError(f"spacing must be three positive numbers (Z, Y, X), got {spacing!r}")
    return sp


#: the default preset trains this many steps on volumes up to AUTO_STEPS_VOXELS voxels ...
AUTO_STEPS_MAX = 3500
AUTO_STEPS_VOXELS = 4_000_000
#: ... and fewer (down to this) on larger ones, so 10 / 20 / 53 Mvoxel volumes fit the time targets
AUTO_STEPS_MIN = 800


def auto_steps(n_voxels: int) -> int:
    """Steps of the default preset for a volume of ``n_voxels`` (deterministic, size-based).

    Per-step cost grows about linearly with the volume (lattice size, and the
    Gaussians a bpp budget allows), so above 4 Mvoxel the count falls as
    ``(4 M / voxels)^1.6``: 3500 steps up to 4 Mvoxel, ~2440 at 5 M, 810 at 10 M, 800 from
    ~10 M on (measured at 10 Mvoxel: 1760 steps 224 s, 970 steps 163 s; target 150 s).
    On Purkinje (3.3 Mvoxel, 0.073 bpp) 3500 steps score 0.35 dB above 2000.
    """
    f = min(1.0, (AUTO_STEPS_VOXELS / max(1, n_voxels)) ** 1.6)
    return int(max(AUTO_STEPS_MIN, round(AUTO_STEPS_MAX * f / 10) * 10))


def resolve_device(device: str) -> str:
    """``"cpu"`` or ``"cuda"``; ``"auto"`` is the GPU only where the GPU training path works (``gpu.py``)."""
    from ..gpu import resolve

    return resolve(device, "training")


class Trainer:
    """Fits a ``GaussianVolume`` to ``volume`` (3D array, ZYX) under a size budget.

    Budget: at most one of ``bpp`` (bits per voxel of the whole file),
    ``ratio`` (original bytes / file bytes) or ``gaussians`` (count); default
    ``bpp=0.073``. ``preset`` is ``"default"`` or ``"paper"``; ``steps``
    overrides its step count; extra keyword ``options`` override any
    ``TrainConfig`` field (e.g. ``gate=False``, ``edge_weights=False``,
    ``densify=False``). Input is validated here (``InputError``).
    """

    def __init__(self, volume, spacing=None, *, bpp=None, ratio=None, gaussians=None, preset="default",
                 steps=None, seed=0, device="auto", **options):
        self._volume = _check_volume(volume)
        self.spacing = _check_spacing(spacing)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise InputError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)
        if steps is None and preset == "default":
            steps = auto_steps(self._volume.size)
        self.config: TrainConfig = make_config(preset, steps, **options)
        if device not in ("auto", "cpu", "cuda"):
            raise InputError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
        # "auto" is resolved on first use, so constructing a Trainer (e.g. on a GUI thread)
        # does not import torch; an explicit "cuda" is checked now.
        self._device = resolve_device(device) if device == "cuda" else (device if device == "cpu" else None)
        self.total_steps = self.config.steps
        shape = self._volume.shape
        n_vox = int(np.prod(shape))
        self.budget_bytes = budgets.budget_bytes(
            n_vox, self._volume.dtype.itemsize, bpp=bpp, ratio=ratio, gaussians=gaussians
        )
        self.field_shape = None
        template = GaussianVolume.empty(shape, mapping=IntensityMapping(dtype=self._volume.dtype), spacing=self.spacing)
        if self.config.background_field:
            nodes = (
                int(self.config.background_budget * self.budget_bytes / 4)
                if self.budget_bytes is not None
                else int(min(4096, max(64, n_vox // 20000)))
            )
            self.field_shape = budgets.field_shape(nodes, shape)
        if self.budget_bytes is not None:
            try:
                with_field = template.replace(background=np.zeros(self.field_shape, np.float32)) if self.field_shape else template
                self.n_budget = budgets.gaussians_for_bytes(with_field, self.budget_bytes)
            except InputError:
                if self.field_shape is None:
                    raise
                self.field_shape = None
                self.n_budget = budgets.gaussians_for_bytes(template, self.budget_bytes)
        else:
            self.n_budget = int(gaussians)
        self._stop = threading.Event()
        self._want_model = threading.Event()
        self.result: GaussianVolume | None = None
        self.history: list[dict] = []

    @property
    def device(self) -> str:
        """``"cpu"`` or ``"cuda"`` (``"auto"`` picks the GPU where its path works here)."""
        if self._device is None:
            self._device = resolve_device("auto")
        return self._device

    # -- control (thread-safe) ---------------------------------------------------

    def stop(self) -> None:
        """End training after the current step; the final prune still runs."""
        self._stop.set()

    def request_model(self) -> None:
        """Make the next snapshot carry a detached copy of the current model."""
        self._want_model.set()

    # -- training --------------------------------------------------------------------

    def run(self) -> Iterator[Snapshot]:
        from ._loop import TrainingLoop

        loop = TrainingLoop(self)
        yield from loop.run()
        self.result = loop.result


def compress(volume, spacing=None, *, bpp=None, ratio=None, gaussians=None, preset="default", steps=None,
             seed=0, device="auto", progress: Callable[[Snapshot], object] | None = None,
             **options) -> GaussianVolume:
    """Compress ``volume`` (3D array, ZYX) into a ``GaussianVolume`` (see ``Trainer``).

    ``progress`` is called with every ``Snapshot``.
    """
    t = Trainer(volume, spacing, bpp=bpp, ratio=ratio, gaussians=gaussians, preset=preset, steps=steps,
                seed=seed, device=device, **options)
    for snap in t.run():
        if progress is not None:
            progress(snap)
    return t.result


def warm_up() -> None:
    """Load what a first training run needs (torch, the compiled numba kernels, the
    dense decoder) by training a 16^3 synthetic blob for two steps (~1 s once loaded).

    A GUI calls this in a background thread when its widget opens, so the imports
    (torch's holds the GIL for a while) happen then rather than in the middle of a run.
    """
    z, y, x = np.mgrid[:16, :16, :16].astype(np.float32)
    blob = 10.0 + 100.0 * np.exp(-((z - 8) ** 2 + (y - 7) ** 2 + (x - 9) ** 2) / 8.0)
    trainer = Trainer(blob, gaussians=4, steps=2, device="cpu")
    for _ in trainer.run():
        pass
    trainer.result.decode()

