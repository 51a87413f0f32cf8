"""Per-Gaussian feature table (for a napari Points layer), and back to a model.

``feature_table(gv)`` gives one row per Gaussian with what a microscopist
filters and colours by, plus the raw parameters that make the table
invertible. ``model_metadata(gv)`` holds what is not per-Gaussian (shape,
spacing, intensity mapping, background field). ``gaussians_from_points``
rebuilds a ``GaussianVolume`` from a Points layer's data (centres, ZYX voxel
coordinates), features and metadata, so editing the layer (deleting points)
and saving it round-trips. Numpy only (no Qt, no napari).

Columns (all float32, one per Gaussian):

- ``amplitude``: peak in model units; ``amplitude_original``: peak height
  above the background in the original intensity units (``mapping.scale * amplitude``).
- ``scale_major`` >= ``scale_mid`` >= ``scale_minor``: standard deviations along
  the principal axes, voxels, sorted.
- ``anisotropy``: ``scale_major / scale_minor`` (1 = round).
- ``axis_z``, ``axis_y``, ``axis_x``: unit direction of the major axis (ZYX,
  voxel space), sign chosen so its first non-zero component is positive.
- ``elevation_deg``: angle between the major axis and the XY plane, degrees (0..90).
- ``volume``: effective volume ``(2 pi)^1.5 * s1 s2 s3 * prod(spacing)``
  (the integral of the unit-peak Gaussian) in physical units cubed.
- raw parameters, used to rebuild the model: ``quat_w``, ``quat_z``,
  ``quat_y``, ``quat_x`` (the rotation quaternion, vector part along Z, Y, X)
  and ``sigma_0``, ``sigma_1``, ``sigma_2`` (the unsorted standard deviations).
"""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .gaussians import GaussianVolume
from .intensity import IntensityMapping

#: Key under which the model metadata lives in a napari layer's ``metadata``.
METADATA_KEY = "volmicro"

RAW_COLUMNS = ("quat_w", "quat_z", "quat_y", "quat_x", "sigma_0", "sigma_1", "sigma_2", "amplitude")


def feature_table(gv: GaussianVolume) -> dict[str, np.ndarray]:
    """Per-Gaussian features (see the module docstring), as a dict of (N,) float32 arrays."""
    scales = gv.scales.astype(np.float64)
    order = np.argsort(-scales, axis=1, kind="stable")
    sorted_scales = np.take_along_axis(scales, order, axis=1)
    rot = gv.rotations()
    major = np.take_along_axis(rot, order[:, None, :1].repeat(3, axis=1), axis=2)[:, :, 0]
    first = np.argmax(np.abs(major) > 1e-9, axis=1)
    sign = np.sign(major[np.arange(len(major)), first])
    sign[sign == 0] = 1.0
    major = major * sign[:, None]
    elevation = np.degrees(np.arcsin(np.clip(np.abs(major[:, 0]), 0.0, 1.0)))
    amp = gv.amplitudes.astype(np.float64)
    volume = (2 * np.pi) ** 1.5 * np.prod(scales, axis=1) * float(np.prod(gv.spacing))
    q = gv.quaternions
    cols = {
        "amplitude": amp,
        "amplitude_original": amp * gv.mapping.scale,
        "scale_major": sorted_scales[:, 0],
        "scale_mid": sorted_scales[:, 1],
        "scale_minor": sorted_scales[:, 2],
        "anisotropy": sorted_scales[:, 0] / sorted_scales[:, 2] if len(scales) else np.zeros(0),
        "axis_z": major[:, 0],
        "axis_y": major[:, 1],
        "axis_x": major[:, 2],
        "elevation_deg": elevation,
        "volume": volume,
        "quat_w": q[:, 0],
        "quat_z": q[:, 1],
        "quat_y": q[:, 2],
        "quat_x": q[:, 3],
        "sigma_0": scales[:, 0],
        "sigma_1": scales[:, 1],
        "sigma_2": scales[:, 2],
    }
    return {k: np.asarray(v, np.float32) for k, v in cols.items()}


def model_metadata(gv: GaussianVolume) -> dict:
    """What a Points layer needs besides its rows to rebuild ``gv`` (plain Python + numpy)."""
    return {
        "shape": tuple(int(s) for s in gv.shape),
        "spacing": tuple(float(s) for s in gv.spacing),
        "offset": gv.mapping.offset,
        "scale": gv.mapping.scale,
        "dtype": gv.mapping.dtype.str,
        "background": gv.background,
    }


def gaussians_from_points(data, features, metadata) -> GaussianVolume:
    """Rebuild a ``GaussianVolume`` from a Points layer.

    data: (N, 3) centres, ZYX voxel coordinates (the layer's data coordinates;
    its ``scale`` carries the spacing). features: a mapping or DataFrame with at
    least the ``RAW_COLUMNS``. metadata: a layer's metadata dict holding
    ``model_metadata(...)`` under ``METADATA_KEY`` (or that dict itself).
    Raises ``InputError`` naming what is missing.
    """
    meta = metadata.get(METADATA_KEY, metadata) if metadata is not None else None
    if not meta or "shape" not in meta:
        raise InputError(
            "this Points layer does not carry a Gaussian model (no 'volmicro' metadata with the "
            "volume shape); only Points layers made by napari-volmicro can be saved as .vmg"
        )
    pts = np.asarray(data, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise InputError(f"Points layer data must be (N, 3) ZYX centres, got shape {pts.shape}")
    missing = [c for c in RAW_COLUMNS if features is None or c not in features]
    if missing:
        raise InputError(
            f"Points layer features lack the Gaussian parameters {', '.join(missing)}; "
            "only Points layers made by napari-volmicro can be saved as .vmg"
        )

    def col(name):
        arr = np.asarray(features[name], dtype=np.float64)
        if arr.shape != (len(pts),):
            raise InputError(f"feature {name!r} has {arr.shape[0] if arr.ndim else 0} rows, data has {len(pts)}")
        return arr

    quats = np.stack([col("quat_w"), col("quat_z"), col("quat_y"), col("quat_x")], axis=1)
    scales = np.stack([col("sigma_0"), col("sigma_1"), col("sigma_2")], axis=1)
    mapping = IntensityMapping(meta.get("offset", 0.0), meta.get("scale", 1.0), np.dtype(meta.get("dtype", "<f4")))
    return GaussianVolume(
        tuple(meta["shape"]),
        pts,
        scales,
        quats,
        col("amplitude"),
        spacing=tuple(meta.get("spacing", (1.0, 1.0, 1.0))),
        mapping=mapping,
        background=meta.get("background"),
    )
