"""The ``.vmg`` container: a ``GaussianVolume`` on disk (specification: ``docs/format.md``).

- ``save(gv, path)``: write atomically (format version 3, entropy-coded, about 8
  bytes per Gaussian; ``version=2`` / ``version=1`` write the older formats);
  ``load(path)``: read any of them and check every byte.
- ``quantize(gv)``: exactly what ``save`` stores and ``load`` returns, without I/O.
- ``file_size(gv)``: exact bytes ``save`` writes (the encoder's size budget;
  it quantises and encodes the model); ``size_model``: the estimate before
  the Gaussians exist (the one place bytes per Gaussian are modelled).
- ``read_info(path)``: header fields without reading the Gaussians.
- ``write_bricks(path, ...)``: write a file from brick-table entries and a
  stream of payloads (one in memory at a time), atomically; ``lay_out`` is
  the one place the header, tables and offsets are decided.
- ``VmgFile(path)``: random access by brick; ``load_region`` reads only the
  bricks whose Gaussians can reach a region.
- ``open_model(path)``: ``LazyGaussianVolume`` for a many-brick file (reads
  bricks as regions need them), else ``load``.

Bad files raise ``FormatError`` (``ChecksumError`` for corrupt bytes,
``UnsupportedVersionError`` for newer files) with the file name in the message.
Safe on untrusted input: no pickle, every size is checked against the file
length before anything is allocated.
"""

from __future__ import annotations

from .layout import FORMAT_VERSION, MAGIC, BrickInfo
from .lazy import LazyGaussianVolume, open_model
from .reader import VmgFile, load, read_info
from .writer import FileLayout, brick_entry, file_size, lay_out, quantize, save, to_bytes, write_bricks

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "BrickInfo",
    "FileLayout",
    "LazyGaussianVolume",
    "VmgFile",
    "brick_entry",
    "file_size",
    "lay_out",
    "load",
    "open_model",
    "quantize",
    "read_info",
    "save",
    "to_bytes",
    "write_bricks",
]
