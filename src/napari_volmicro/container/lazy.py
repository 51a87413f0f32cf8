"""``LazyGaussianVolume``: a many-brick ``.vmg`` file used as a model without reading it whole.

``open_model(path)`` (what ``napari_volmicro.load`` calls) returns one for a
file with more than one brick, and the fully loaded ``GaussianVolume`` for a
one-brick file.

The lazy model is a ``GaussianVolume`` with the same public interface:

- ``shape``, ``spacing``, ``mapping``, ``background`` and ``n_gaussians``
  come from the file's header and sections (read when it is opened).
- ``decode(region)``, ``decode_measured(region)``, ``decode_model(region)``
  (``GaussianVolume``'s, through ``region_model``) and ``evaluate(points)`` read,
  through ``VmgFile.load_region``, only the bricks whose reach box (core plus
  the 3-sigma footprint of their Gaussians) meets the region (for points: the
  points' bounding box). Recently used bricks stay in a bounded LRU cache
  (``cache_gaussians``), so panning over the same bricks reads nothing again.
- ``centers``, ``scales``, ``quaternions`` and ``amplitudes`` (and whatever
  uses them: ``rotations``, ``extents``, ``subset``, ``replace``, feature
  tables) read every brick on first access and keep the whole model.
- ``save(path)`` copies the file brick by brick (same bytes, bounded memory).

Decoded values. The ``"dense"``, ``"knn"`` and ``"reference"`` evaluators
use, at each voxel, only Gaussians whose 3-sigma ellipsoid covers it; all of
them lie in the bricks read, so a region decodes bit for bit as the whole
model decodes it. The ``"knn-centres"`` evaluator (the paper's rule) keeps, at
each voxel, the covering Gaussians whose centres are among the K nearest
**among the Gaussians of the bricks read** (ties by file order, as for the
whole model). A Gaussian's rank among a subset is never worse than its rank
among all Gaussians, so every term the whole-model rule keeps is kept here,
plus possibly covering Gaussians that the whole model's K nearest pushed out:
the region's sum lies between the whole model's and the exact (dense) sum,
term by term. Which extra terms are kept depends on the brick layout; with K
at least the number of Gaussians read it equals the dense decode.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ..evaluate import DEFAULT_K
from ..gaussians import GaussianVolume, check_points
from ..region import normalize_region
from .reader import VmgFile
from .writer import write_bricks

#: Default bound of the brick cache, in Gaussians (44 bytes each in memory: about 90 MB).
CACHE_GAUSSIANS = 2_000_000


def _of_whole(name: str) -> property:
    """A read-only property giving the whole model's ``name`` array (every brick read on first use)."""

    def get(self):
        return getattr(self.whole(), name)

    get.__doc__ = f"``{name}`` of the whole model (reads every brick on first use)."
    return property(get)


class LazyGaussianVolume(GaussianVolume):
    """A ``GaussianVolume`` backed by a many-brick ``.vmg`` file, read brick by brick on demand.

    See the module docstring. ``vmg``: the open ``VmgFile`` (its ``bytes_read``
    counts what was read). ``loaded``: whether the whole model was read.
    Immutable like ``GaussianVolume``; copies share the file and its cache.
    """

    def __init__(self, vmg: VmgFile):
        object.__setattr__(self, "vmg", vmg)
        object.__setattr__(self, "_whole", None)
        object.__setattr__(self, "_whole_lock", threading.Lock())
        object.__setattr__(self, "shape", vmg.shape)
        object.__setattr__(self, "spacing", vmg.spacing)
        object.__setattr__(self, "mapping", vmg.mapping)
        object.__setattr__(self, "background", vmg.background)

    # -- the whole model, on first use ---------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._whole is not None

    def whole(self) -> GaussianVolume:
        """Every brick, read once and kept (a plain ``GaussianVolume``)."""
        if self._whole is None:
            with self._whole_lock:
                if self._whole is None:
                    object.__setattr__(self, "_whole", self.vmg.load())
        return self._whole

    centers = _of_whole("centers")
    scales = _of_whole("scales")
    quaternions = _of_whole("quaternions")
    amplitudes = _of_whole("amplitudes")

    @property
    def n_gaussians(self) -> int:
        return self.vmg.n_gaussians

    @property
    def residual(self):
        """The file's enhancement layer (``VmgFile.residual_layer``: opened on first use), or None."""
        return self.vmg.residual_layer()

    # -- regions ------------------------------------------------------------------------

    def region_model(self, region=None) -> GaussianVolume:
        """The Gaussians of the bricks that reach ``region`` (three slices or a ``RegionGrid``, ZYX)."""
        grid = normalize_region(region, self.shape)
        return self.vmg.load_region(grid)

    def evaluate(self, points, evaluator: str = "knn", k: int = DEFAULT_K) -> np.ndarray:
        """Values at (M, 3) voxel coordinates (ZYX), reading the bricks that reach the points'
        bounding box (see ``GaussianVolume.evaluate``)."""
        pts = check_points(points)
        if len(pts) == 0:
            return np.zeros(0, np.float64)
        model = self.vmg.load_bricks(self.vmg.bricks_meeting(pts.min(axis=0), pts.max(axis=0)))
        return model.evaluate(pts, evaluator=evaluator, k=k)

    # -- files -----------------------------------------------------------------------------

    def save(self, path) -> Path:
        """Write the model to ``path`` atomically, brick by brick: the source file's bricks and
        payload bytes (each checksum checked), one brick in memory at a time, in the source's format
        version. A file this version wrote is reproduced byte for byte."""
        vmg = self.vmg

        def payloads():
            with open(vmg.path, "rb") as fh:
                for b in vmg.bricks:
                    yield vmg._read(b.offset, b.nbytes, fh)

        residual = vmg.residual_payload()  # CRC checked, so a corrupt layer is never re-signed
        write_bricks(path, shape=self.shape, spacing=self.spacing, mapping=self.mapping,
                     background=self.background, bricks=vmg.bricks, payloads=payloads(),
                     version=vmg.header.version, residual=residual)
        return Path(path)

    # -- identity -------------------------------------------------------------------------

    def __repr__(self) -> str:
        return (
            f"LazyGaussianVolume({self.vmg.name!r}, shape={self.shape}, n_gaussians={self.n_gaussians}, "
            f"bricks={len(self.vmg.bricks)}, loaded={self.loaded})"
        )

    def __eq__(self, other) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        return (open_model, (str(self.vmg.path), self.vmg.cache_gaussians))


def open_model(path, cache_gaussians: int = CACHE_GAUSSIANS) -> GaussianVolume:
    """A model for the ``.vmg`` at ``path``: lazy (``LazyGaussianVolume``) if the file has more
    than one brick, else the whole model read and checked (``container.load``).

    A lazy model checks each brick (checksum, values, reach box) when it first
    reads it, so a damaged brick raises ``FormatError`` when a region needs it.
    A truncated file raises ``FormatError`` here (``VmgFile`` and
    ``bricks.check_bricks`` read the intact bricks of one).
    """
    vmg = VmgFile(path)
    if len(vmg.bricks) == 1:
        return vmg.load()
    vmg.check_complete()
    vmg.cache_gaussians = max(0, int(cache_gaussians))
    return LazyGaussianVolume(vmg)
