"""Words and numbers the command line prints, defined once: sizes, the ratio, what the metrics mean."""

from __future__ import annotations

from ..resources import format_bytes, short_bytes  # noqa: F401 (re-exported)

#: what the quality numbers are (the ``--help`` epilog of compress, evaluate and demo)
METRICS_HELP = """\
quality numbers:
  psnr_full  peak signal-to-noise ratio over all voxels, in dB:
             10 log10(peak^2 / mean squared error), peak = max - min of the original;
             higher is better, +6 dB halves the typical error
  psnr_fg    the same over the foreground only: voxels above median + 1% of
             (max - median) of the original, widened by 2 voxels (the structures,
             not the dark background)
  ssim3d     structural similarity over 7 x 7 x 7 windows; 1 = identical
  bpp        bits of the .vmg file per voxel
  ratio      original bytes / .vmg bytes, written N:1
  a model no better than a flat volume at the mean intensity is reported
  with a warning (noise, or too small a budget)"""


def ratio_text(ratio: float) -> str:
    """The compression ratio, one way everywhere: ``"456.8:1"``."""
    return f"{ratio:,.1f}:1"


def quality_guide(path) -> str:
    """The one-line reading guide printed after a compress."""
    return (f"(dB: higher is better, +6 dB halves the error; psnr_fg counts the structures only; "
            f"ssim3d 1 = identical. View it: napari {path})")


def dims_text(shape) -> str:
    return " x ".join(str(int(s)) for s in shape)
