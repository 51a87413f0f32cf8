"""``GaussianVolume``: a 3D volume represented as N anisotropic Gaussians.

Conventions (used everywhere in the package):

- Coordinates are **voxel units in ZYX order**; voxel ``(z, y, x)`` has its
  centre at coordinate ``(z, y, x)``. The volume covers ``[-0.5, n - 0.5]`` on
  each axis. Physical voxel size (``spacing``, ZYX, e.g. micrometres) is kept for
  display and analysis; it does not enter the decoders.
- Gaussian ``i`` has centre ``centers[i]``, standard deviations ``scales[i]``
  (voxels) along its principal axes, rotation ``quaternions[i] = (w, a, b, c)``
  (normalised on construction) whose vector part ``(a, b, c)`` is along
  axes (Z, Y, X), and amplitude ``amplitudes[i]`` in model units.
- The value at ``x`` is ``background(x) + sum_i w_i exp(-d_i^2 / 2)`` over the
  Gaussians whose Mahalanobis distance ``d_i`` is at most ``CUTOFF_SIGMA`` (3);
  ``background(x)`` is 0 or a coarse trilinear field (``background.py``).
  ``IntensityMapping`` turns model values into the original units and dtype.

This module imports only numpy; the torch module for training lives in
``gaussians_torch.py`` and the decoders in ``evaluate/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError, VolmicroError
from .evaluate import DEFAULT_K
from .intensity import IntensityMapping
from .region import RegionGrid, normalize_region

#: Gaussians contribute only within this many standard deviations (Mahalanobis).
CUTOFF_SIGMA = 3.0
CUTOFF_D2 = CUTOFF_SIGMA**2


def quaternions_to_matrices(q: np.ndarray) -> np.ndarray:
    """(N, 4) quaternions (w, a, b, c) -> (N, 3, 3) rotation matrices (float64).

    The quaternions are normalised first. Column ``j`` of ``R[i]`` is the
    direction (in ZYX) of principal axis ``j`` of Gaussian ``i``.
    """
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    w, a, b, c = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    r = np.empty((len(q), 3, 3), np.float64)
    r[:, 0, 0] = 1 - 2 * (b * b + c * c)
    r[:, 0, 1] = 2 * (a * b - c * w)
    r[:, 0, 2] = 2 * (a * c + b * w)
    r[:, 1, 0] = 2 * (a * b + c * w)
    r[:, 1, 1] = 1 - 2 * (a * a + c * c)
    r[:, 1, 2] = 2 * (b * c - a * w)
    r[:, 2, 0] = 2 * (a * c - b * w)
    r[:, 2, 1] = 2 * (b * c + a * w)
    r[:, 2, 2] = 1 - 2 * (a * a + b * b)
    return r


def matrices_to_quaternions(r: np.ndarray) -> np.ndarray:
    """(N, 3, 3) rotation matrices -> (N, 4) unit quaternions (w, a, b, c), w >= 0."""
    r = np.asarray(r, dtype=np.float64)
    n = len(r)
    q = np.empty((n, 4), np.float64)
    tr = np.trace(r, axis1=1, axis2=2)
    for i in range(n):
        m = r[i]
        if tr[i] > 0:
            s = np.sqrt(tr[i] + 1.0) * 2
            q[i] = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
        elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
            s = np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
            q[i] = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
        elif m[1, 1] > m[2, 2]:
            s = np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
            q[i] = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
        else:
            s = np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
            q[i] = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    q *= np.where(q[:, :1] < 0, -1.0, 1.0)
    return q


def _as_array(name, value, shape_tail, n=None) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a numeric array") from None
    if arr.ndim != 1 + len(shape_tail) or tuple(arr.shape[1:]) != shape_tail:
        want = "(N" + "".join(f", {s}" for s in shape_tail) + ")"
        raise InputError(f"{name} must have shape {want}, got {arr.shape}")
    if n is not None and len(arr) != n:
        raise InputError(f"{name} has {len(arr)} rows but centers has {n}")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} contains NaN or Inf")
    return np.ascontiguousarray(arr)


@dataclass(frozen=True)
class GaussianVolume:
    """N anisotropic 3D Gaussians describing a volume of ``shape`` voxels (ZYX).

    Arrays (float32, C-contiguous, validated on construction):
      centers (N, 3) voxel coordinates ZYX; scales (N, 3) standard deviations in
      voxels (> 0); quaternions (N, 4) unit (w, a, b, c); amplitudes (N,) model units.
    shape: (Z, Y, X) voxels. spacing: physical voxel size ZYX (> 0).
    mapping: model values -> original units and dtype.
    background: optional coarse field (gz, gy, gx) of model values, see ``background.py``.
    residual: optional enhancement layer (``napari_volmicro.residual.ResidualLayer``): what the
      Gaussians do not hold, in original units, added by ``decode(..., layers="all")``. It belongs
      to these Gaussians as decoded by the dense evaluator: ``subset`` drops it.
    """

    shape: tuple[int, int, int]
    centers: np.ndarray
    scales: np.ndarray
    quaternions: np.ndarray
    amplitudes: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    mapping: IntensityMapping = IntensityMapping()
    background: np.ndarray | None = None
    residual: object = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        try:
            shape = tuple(int(s) for s in self.shape)
        except (TypeError, ValueError):
            raise InputError(f"shape must be three positive integers (Z, Y, X), got {self.shape!r}") from None
        if len(shape) != 3 or min(shape) < 1:
            raise InputError(f"shape must be three positive integers (Z, Y, X), got {self.shape!r}")
        if max(shape) > 2**31 - 1:
            raise InputError(f"shape {shape} is too large")
        try:
            spacing = tuple(float(s) for s in self.spacing)
        except (TypeError, ValueError):
            raise InputError(f"spacing must be three positive numbers (Z, Y, X), got {self.spacing!r}") from None
        if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
            raise InputError(f"spacing must be three positive numbers (Z, Y, X), got {self.spacing!r}")
        centers = _as_array("centers", self.centers, (3,))
        n = len(centers)
        scales = _as_array("scales", self.scales, (3,), n)
        quats = _as_array("quaternions", self.quaternions, (4,), n)
        amps = _as_array("amplitudes", self.amplitudes, (), n)
        if n and not np.all(scales > 0):
            raise InputError("scales must all be > 0 (standard deviations in voxels)")
        norms = np.linalg.norm(quats.astype(np.float64), axis=1)
        if n and not np.all(norms > 1e-12):
            raise InputError("quaternions must be non-zero")
        if n and np.any(np.abs(norms - 1.0) > 1e-6):
            # leave unit quaternions untouched so subset/replace are bit-exact
            quats = (quats / norms[:, None]).astype(np.float32)
        bg = self.background
        if bg is not None:
            bg = np.asarray(bg, dtype=np.float32)
            if bg.ndim != 3 or min(bg.shape) < 1:
                raise InputError(f"background field must be a 3D grid, got shape {bg.shape}")
            if not np.all(np.isfinite(bg)):
                raise InputError("background field contains NaN or Inf")
            bg = np.ascontiguousarray(bg)
        if not isinstance(self.mapping, IntensityMapping):
            raise InputError("mapping must be an IntensityMapping")
        if self.residual is not None and tuple(getattr(self.residual, "shape", ())) != shape:
            raise InputError(f"residual layer is for shape {getattr(self.residual, 'shape', None)}, the model has {shape}")
        for name, val in (
            ("shape", shape), ("spacing", spacing), ("centers", centers), ("scales", scales),
            ("quaternions", quats), ("amplitudes", amps), ("background", bg),
        ):
            object.__setattr__(self, name, val)
        for arr in (centers, scales, quats, amps, bg):
            if arr is not None:
                arr.flags.writeable = False

    # -- construction -------------------------------------------------------

    @classmethod
    def empty(cls, shape, **kwargs) -> GaussianVolume:
        """A model with no Gaussians (decodes to the background)."""
        z = np.zeros((0, 3), np.float32)
        return cls(shape, z, z.copy(), np.zeros((0, 4), np.float32), np.zeros(0, np.float32), **kwargs)

    def replace(self, **changes) -> GaussianVolume:
        """A copy with some fields replaced (arrays are shared, they are read-only)."""
        fields = {f: getattr(self, f) for f in self.__dataclass_fields__}
        fields.update(changes)
        return GaussianVolume(**fields)

    def subset(self, index) -> GaussianVolume:
        """A model with only the Gaussians selected by ``index`` (mask or integer indices), without
        the enhancement layer (it was the residual of all the Gaussians)."""
        return self.replace(
            residual=None,
            centers=self.centers[index],
            scales=self.scales[index],
            quaternions=self.quaternions[index],
            amplitudes=self.amplitudes[index],
        )

    # -- geometry -------------------------------------------------------------

    @property
    def n_gaussians(self) -> int:
        return len(self.centers)

    def __len__(self) -> int:
        return self.n_gaussians

    @property
    def n_voxels(self) -> int:
        z, y, x = self.shape
        return z * y * x

    def rotations(self) -> np.ndarray:
        """(N, 3, 3) rotation matrices, float64; columns are principal axes (ZYX)."""
        return quaternions_to_matrices(self.quaternions)

    def covariances(self) -> np.ndarray:
        """(N, 3, 3) covariance matrices R S^2 R^T in voxel^2, float64."""
        r = self.rotations()
        s2 = self.scales.astype(np.float64) ** 2
        return np.einsum("nij,nj,nkj->nik", r, s2, r)

    def precisions(self) -> np.ndarray:
        """(N, 3, 3) inverse covariances R S^-2 R^T in voxel^-2, float64."""
        r = self.rotations()
        inv = self.scales.astype(np.float64) ** -2
        return np.einsum("nij,nj,nkj->nik", r, inv, r)

    def extents(self, sigma: float = CUTOFF_SIGMA) -> np.ndarray:
        """(N, 3) half-widths (voxels, ZYX) of each Gaussian's axis-aligned box at ``sigma``."""
        cov = self.covariances()
        return sigma * np.sqrt(np.einsum("nii->ni", cov))

    # -- decoding ---------------------------------------------------------------

    def region_model(self, region=None) -> GaussianVolume:
        """The model that decodes ``region`` (three slices, ZYX): this one. A lazily read file
        (``container.LazyGaussianVolume``) returns only the Gaussians of the bricks that reach it."""
        return self

    def decode(self, region=None, evaluator: str = "dense", k: int = DEFAULT_K, layers: str | None = None) -> np.ndarray:
        """Decode ``region`` (three slices, ZYX voxel indices; None = whole volume).

        Returns an array of the region's shape in the original units and dtype.
        ``evaluator`` is ``"dense"`` (the exact sum, fastest for blocks),
        ``"knn"`` (at each voxel the K Gaussians contributing most: exact where at
        most K reach it), ``"knn-centres"`` (the paper's K nearest centres) or
        ``"reference"`` (brute force, slow; the oracle in tests); see
        ``napari_volmicro.evaluate``. ``k`` is used by the KNN evaluators.
        ``layers``: ``"base"`` (the Gaussians alone), ``"all"`` (plus the enhancement layer
        ``residual``, read only for the blocks the region touches; needs an exact evaluator,
        ``"dense"`` or ``"reference"``) or None (default): ``"all"`` when the model has an
        enhancement layer and the evaluator is exact, else ``"base"``.
        """
        return self.decode_measured(region, evaluator, k, measure=False, layers=layers)[0]

    def decode_measured(self, region=None, evaluator: str = "dense", k: int = DEFAULT_K, *, measure: bool = True,
                        layers: str | None = None):
        """Like ``decode``, and how the result differs from the exact decode of the region
        (``evaluate.DecodeLoss``; None when ``measure`` is False). The one region-decode path."""
        from .evaluate import get_evaluator

        grid = normalize_region(region, self.shape)
        ev = get_evaluator(evaluator)
        k = _check_k(k)
        layer = _enhancement(self, layers, evaluator)
        model = self.region_model(grid.slices)
        if layer is not None:
            from .residual import decode_with_layer

            return decode_with_layer(model, layer, ev, grid, k, measure)
        return ev.decode_measured(model, grid, k) if measure else (ev.decode(model, grid, k), None)

    def decode_model(self, region=None, evaluator: str = "dense", k: int = DEFAULT_K) -> np.ndarray:
        """Like ``decode`` but returns float32 model values (no intensity mapping)."""
        from .evaluate import get_evaluator

        grid = normalize_region(region, self.shape)
        ev = get_evaluator(evaluator)
        k = _check_k(k)
        return ev.decode_model(self.region_model(grid.slices), grid, k)

    def evaluate(self, points, evaluator: str = "knn", k: int = DEFAULT_K) -> np.ndarray:
        """Values at arbitrary (M, 3) voxel coordinates (ZYX), in original units.

        ``evaluator`` and ``k`` as for ``decode``. Returns float64 ``offset + scale * model``
        without rounding or clipping, so sub-integer differences stay visible.
        """
        from .evaluate import get_evaluator

        pts = check_points(points)
        ev = get_evaluator(evaluator)
        return self.mapping.to_original_float(ev.evaluate_model(self, pts, _check_k(k)))

    # -- files --------------------------------------------------------------------

    def save(self, path) -> Path:
        """Write a ``.vmg`` file atomically; returns the path."""
        from .container import save

        return save(self, path)

    @property
    def region_grid(self) -> RegionGrid:
        return normalize_region(None, self.shape)


def check_points(points) -> np.ndarray:
    """Validate an (M, 3) array of voxel coordinates; returns float64 C-contiguous."""
    try:
        pts = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("points must be a numeric (M, 3) array of voxel coordinates (ZYX)") from None
    if pts.ndim == 1 and pts.shape == (3,):
        pts = pts[None]
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise InputError(f"points must have shape (M, 3) (ZYX voxel coordinates), got {pts.shape}")
    if not np.all(np.isfinite(pts)):
        raise InputError("points contain NaN or Inf")
    return np.ascontiguousarray(pts)


#: evaluators whose decode is the exact Gaussian sum (the base an enhancement layer is added to)
EXACT_EVALUATORS = ("dense", "reference")


def _enhancement(gv: GaussianVolume, layers, evaluator: str):
    """The enhancement layer ``decode`` adds for ``layers`` (see ``GaussianVolume.decode``), or None."""
    if layers not in (None, "all", "base"):
        raise VolmicroError(f"layers must be 'all', 'base' or None, got {layers!r}")
    layer = getattr(gv, "residual", None)
    if layers == "base" or layer is None:
        return None
    if evaluator not in EXACT_EVALUATORS:
        if layers == "all":
            raise VolmicroError(
                f"layers='all' adds the enhancement layer to the exact sum of the Gaussians; evaluator "
                f"{evaluator!r} is approximate: use evaluator 'dense' (or 'reference'), or layers='base'"
            )
        return None
    return layer


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise VolmicroError(f"k (number of nearest Gaussians) must be a positive integer, got {k!r}")
    return int(k)
