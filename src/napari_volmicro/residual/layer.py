"""``ResidualLayer``: the enhancement layer of a model, decoded block by block.

A layer adds, to the base decode in original units (``mapping.offset +
mapping.scale * model`` before rounding), a residual in the same units,
stored per block (``blob.py``) so a region decode reads and decodes only the
blocks it touches. It has up to two stages, added together:

- transform stage (``wavelet_coder``): the residual's 3D wavelet coefficients
  quantised with one step (a rate-distortion layer: quality rises with bits);
- correction stage (``correction``): what is left after the base and the
  transform stage, rounded voxel by voxel to a step ``D`` (directly, or its
  prediction errors: ``predictive``, ``linear``); with it, every
  voxel decodes within ``max_error`` of the original (``docs/format.md``:
  ``D`` is ``2 E + 1 - 2 delta`` for integer volumes, ``2 (E - delta)``
  for float ones, so a base that differs by less than ``delta`` from the
  encoder's still keeps the promise after rounding).

``open_layer(vmg)`` (what the container calls for a file with a residual
section) reads the header and block index and fetches blocks on demand
through ``vmg.read_section_range``. Decoded blocks stay in an LRU cache of at most ``CACHE_BYTES``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from ..errors import FormatError
from ..region import normalize_region
from . import blob, correction, entropy, linear, predictive, wavelet, wavelet_coder

#: decoded blocks kept, by their bytes (float64): a whole Z slab of blocks of a large volume, so that
#: browsing plane after plane decodes each block once (cellfinder, 26 x 1116 x 627: a plane in 18 ms
#: after the first, 0.9 s each with 8 blocks kept); the newest block is always kept
CACHE_BYTES = 256 << 20


class _BytesSource:
    """Layer bytes held in memory (a freshly encoded layer)."""

    def __init__(self, data: bytes, name: str = "enhancement layer"):
        self.data = bytes(data)
        self.name = name

    def size(self) -> int:
        return len(self.data)

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > len(self.data):
            raise FormatError(f"{self.name}: bytes {offset}..{offset + length} outside the layer's {len(self.data)}")
        return self.data[offset: offset + length]


class _SectionSource:
    """Layer bytes in a ``.vmg`` file's residual section (``VmgFile.read_section_range``)."""

    def __init__(self, vmg):
        self.vmg = vmg
        self.name = vmg.name
        self._size = vmg.section_range()[1]

    def size(self) -> int:
        return self._size

    def read(self, offset: int, length: int) -> bytes:
        return self.vmg.read_section_range(offset, length)


class ResidualLayer:
    """The enhancement layer (see the module docstring). ``header``: ``blob.LayerHeader``."""

    def __init__(self, source):
        self._source = source
        self.name = source.name
        total = source.size()
        hsize = blob.header_size(source.read, total, self.name)
        self.header = blob.parse_header(source.read(0, hsize), self.name)
        n = self.header.n_blocks
        index_bytes = n * blob.INDEX_ENTRY.size
        if hsize + index_bytes > total:
            raise FormatError(f"{self.name}: enhancement layer index needs {hsize + index_bytes} bytes, it has {total}")
        self._data_start = hsize + index_bytes
        self._offsets, self._lengths, self._crcs = blob.parse_index(
            source.read(hsize, index_bytes), n, total - self._data_start, self.name)
        self.nbytes = total
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cached_bytes = 0
        self._lock = threading.Lock()

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "enhancement layer") -> ResidualLayer:
        return cls(_BytesSource(data, name))

    def to_bytes(self) -> bytes:
        """The whole layer (what the container writes as the residual section)."""
        return self._source.read(0, self.nbytes)

    # -- what it promises -------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.header.shape

    @property
    def max_error(self) -> float | None:
        """The largest |decoded - original| the layer guarantees (original units), or None."""
        return self.header.max_error if self.header.has_correction else None

    def describe(self) -> dict:
        h = self.header
        return {
            "residual_bytes": self.nbytes,
            "residual_blocks": h.n_blocks,
            "residual_block_shape": list(h.block),
            "residual_stages": [s for s, on in (("transform", h.has_transform), ("correction", h.has_correction),
                                                ("predictive", h.predictive), ("linear", h.linear),
                                                ("planar", h.planar)) if on],
            "max_error": self.max_error,
            "max_error_delta": h.delta if self.max_error is not None else None,
            "noise_sigma": h.noise_sigma or None,
        }

    # -- decoding -------------------------------------------------------------------------------

    def block_values(self, index: int) -> np.ndarray:
        """float64 residual of block ``index`` (its voxels, original units)."""
        with self._lock:
            hit = self._cache.get(index)
            if hit is not None:
                self._cache.move_to_end(index)
                return hit
        values = self._decode_block(index)
        values.flags.writeable = False
        with self._lock:
            if index not in self._cache:
                self._cache[index] = values
                self._cached_bytes += values.nbytes
            while self._cached_bytes > CACHE_BYTES and len(self._cache) > 1:
                self._cached_bytes -= self._cache.popitem(last=False)[1].nbytes
        return values

    def _decode_block(self, index: int) -> np.ndarray:
        h = self.header
        shape = tuple(s.stop - s.start for s in h.block_slices(index))
        length = int(self._lengths[index])
        out = np.zeros(shape, np.float64)
        if length == 0:
            return out
        data = self._source.read(self._data_start + int(self._offsets[index]), length)
        blob.check_payload(data, int(self._crcs[index]), index, self.name)
        try:
            dec = entropy.new_decoder(data)
            stages = entropy.decode_bits(dec, 2)
            if h.has_transform and stages[0]:
                levels = wavelet.decomposition(h.levels, h.planar)
                q = wavelet_coder.decode_from(dec, shape, levels, h.entries)
                out += wavelet.inverse(wavelet_coder.dequantize(q, h.transform_step, levels, h.nu), levels)
            if h.has_correction and stages[1] and h.predictive:
                out += predictive.decode(dec, shape, h.correction_step, h.corr_entries)
            elif h.has_correction and stages[1] and h.linear:
                out += linear.rebuild(correction.decode(dec, shape, h.corr_entries), h.weights, h.correction_step)
            elif h.has_correction and stages[1]:
                out += correction.decode(dec, shape, h.corr_entries) * h.correction_step
        except (AssertionError, ValueError, OverflowError, RuntimeError) as exc:
            # constriction refuses bytes that no encoder could have written for these models
            raise FormatError(f"{self.name}: enhancement layer block {index} does not decode ({exc})") from None
        if not np.all(np.isfinite(out)):
            raise FormatError(f"{self.name}: enhancement layer block {index} decodes to non-finite values")
        return out

    def decode(self, region=None) -> np.ndarray:
        """float64 residual on ``region`` (three slices, ZYX, steps allowed; None = everything),
        reading and decoding only the blocks it touches."""
        grid = normalize_region(region, self.shape)
        out = np.empty(grid.shape, np.float64)
        for i in self.header.blocks_meeting(grid.start, tuple(last + 1 for last in grid.last)):
            sl = self.header.block_slices(i)
            src, dst = [], []
            for a, b, step, s in zip(grid.start, grid.stop, grid.step, sl):
                # the first voxel the region samples inside the block, and the end of both
                first = a if a >= s.start else a + -(-(s.start - a) // step) * step
                last = min(b, s.stop)
                if first >= last:
                    break
                src.append(slice(first - s.start, last - s.start, step))
                dst.append(slice((first - a) // step, (first - a) // step + len(range(first, last, step))))
            else:
                out[tuple(dst)] = self.block_values(i)[tuple(src)]
        return out

    def __repr__(self) -> str:
        h = self.header
        stages = "+".join(self.describe()["residual_stages"])
        bound = f", max_error={self.max_error:g}" if self.max_error is not None else ""
        return f"ResidualLayer({stages}, {self.nbytes} bytes, {h.n_blocks} blocks of {h.block}{bound})"


def open_layer(vmg) -> ResidualLayer | None:
    """The enhancement layer of the open ``.vmg`` file ``vmg`` (None without a residual section).
    Reads the layer's header and block index now (checked), its blocks when a decode needs them."""
    if vmg.section_range() is None:
        return None
    layer = ResidualLayer(_SectionSource(vmg))
    if layer.shape != tuple(vmg.shape):
        raise FormatError(f"{vmg.name}: enhancement layer is for shape {layer.shape}, the model has {tuple(vmg.shape)}")
    return layer
