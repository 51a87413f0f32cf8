"""Sample data: the Purkinje stack shipped in ``_data`` and its Gaussian model (``.vmg``).

See ``_data/NOTICE.md`` for the source and licence of the stack.
"""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "_data"
PURKINJE_TIF = DATA_DIR / "purkinje_flowdec.tif"
PURKINJE_VMG = DATA_DIR / "purkinje_sample.vmg"


def purkinje_volume():
    """The Purkinje neuron stack: 50 x 256 x 256 (ZYX), float32 grey levels 0-255."""
    import tifffile

    data = tifffile.imread(PURKINJE_TIF)
    return [(data, {"name": "purkinje", "colormap": "gray"}, "image")]


def purkinje_gaussians():
    """The Purkinje stack compressed to Gaussians (made by scripts/make_sample_vmg.py)."""
    from ._reader import read_vmg

    if not PURKINJE_VMG.exists():
        from napari.utils.notifications import show_error

        show_error(f"sample file {PURKINJE_VMG.name} is missing; run scripts/make_sample_vmg.py")
        return []
    return read_vmg(str(PURKINJE_VMG))
