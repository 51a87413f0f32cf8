"""Volumes larger than memory: bricked encoding on dask.distributed and region decoding.

- ``open_input(source)``: Zarr / OME-Zarr (v2, v3), TIFF, ``.npy`` or a dask
  array, read by region, never whole (``chunked_input.py``).
- ``BrickGrid``: cores, halos and ownership (``layout.py``).
- ``compress_bricked(source, out.vmg, brick=256, ...)``: one dask task per
  brick, incremental parts and ``resume`` (``encode_bricks.py``, ``staging.py``).
- ``decode_region`` / ``decode_to_zarr``: read only the bricks a region needs
  (``decode.py``).

Importing this package imports neither dask nor zarr nor torch; they load on use.
"""

from __future__ import annotations

from .chunked_input import ChunkedVolume, open_input
from .decode import check_bricks, decode_region, decode_to_zarr
from .encode_bricks import BrickProgress, compress_bricked, make_client
from .layout import Brick, BrickGrid

__all__ = [
    "Brick",
    "BrickGrid",
    "BrickProgress",
    "ChunkedVolume",
    "check_bricks",
    "compress_bricked",
    "decode_region",
    "decode_to_zarr",
    "make_client",
    "open_input",
]
