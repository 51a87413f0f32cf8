"""Writer: a Points layer made by napari-volmicro (centres + Gaussian features) -> ``.vmg``.

Deleting or editing points and saving gives a model with exactly those
Gaussians. The file is written atomically by the container module.
"""

from __future__ import annotations

from ..features import gaussians_from_points


def write_points(path: str, data, attributes: dict) -> list[str]:
    """npe2 single-layer writer: returns the written path. Raises ``InputError`` for foreign layers."""
    from ..container import save

    gv = gaussians_from_points(data, attributes.get("features"), attributes.get("metadata") or {})
    if not str(path).lower().endswith(".vmg"):
        path = f"{path}.vmg"
    return [str(save(gv, path))]
