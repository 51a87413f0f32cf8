"""Building an enhancement layer from a residual (original volume minus the decoded base).

- ``encode_layer``: a layer with a transform stage of a given step and/or a
  correction stage of a given step.
- ``fit_bytes``: the transform stage whose layer fits a byte budget (the
  step searched on the encoder's exact size estimate, then the layer encoded
  and, if it came out over, the step raised until it fits).
- ``fit_max_error``: the error-bounded layer for a maximum error, choosing the
  transform stage's step (or none) that makes the layer smallest.

All take the residual in original units (float64, ZYX) and return a
``ResidualLayer`` holding its bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import blob, correction, entropy, linear, predictive, wavelet, wavelet_coder
from .contexts import N_CTX
from .layer import ResidualLayer

#: nominal block edge (voxels) and wavelet levels (64^3 blocks, 4 levels: measured best of
#: 32/64/128 and 3-5 levels on the shared volumes, see docs/benchmarks.md)
BLOCK = 64
LEVELS = 4
#: the same for a planar transform (``wavelet.decomposition``): wider blocks and one more level, since
#: nothing is spent along Z (cellfinder layer at 0.073 bpp: 53.67 dB at 64^3 / 4 levels, 53.80 at
#: 64 x 128 x 128 / 5)
PLANAR_BLOCK = (64, 128, 128)
PLANAR_LEVELS = 5
#: transform steps tried by ``fit_max_error``, in units of the maximum error (0: no transform stage),
#: before the plain correction stage, the predictive one and the linear-predictive one
BOUNDED_TRANSFORM_FACTORS = (0.0, 2.0, 3.0, 4.0, 6.0)
BOUNDED_PREDICTIVE_FACTORS = (0.0,)
BOUNDED_LINEAR_FACTORS = (0.0,)
#: the correction stage's forms: indices of the residual itself, of its hierarchical-interpolation
#: prediction errors (``predictive.py``), of its linear prediction errors (``linear.py``)
FORMS = ("plain", "predictive", "linear")


def _header(shape, block, **fields) -> blob.LayerHeader:
    base = dict(shape=tuple(int(s) for s in shape), block=tuple(int(b) for b in block), stages=0, levels=LEVELS,
                transform_step=0.0, correction_step=0.0, max_error=0.0, delta=0.0, noise_sigma=0.0, nu=None,
                entries=None, corr_entries=None, weights=None)
    base.update(fields)
    return blob.LayerHeader(**base)


def block_grid(shape, block=BLOCK) -> blob.LayerHeader:
    """A header that only describes the block partition of ``shape``."""
    b = (block,) * 3 if isinstance(block, int) else tuple(block)
    return _header(shape, tuple(min(x, max(blob.MIN_BLOCK, n)) for x, n in zip(b, shape)), stages=1)


@dataclass
class TransformState:
    """One step's quantised transform stage: indices per block, bin offsets, tables and size estimate."""

    step: float
    q: list
    nu: np.ndarray
    entries: np.ndarray
    bits: float  # symbols + flags + signs + escapes (estimate, excluding tables and index)


class Transformed:
    """A residual cut into blocks and wavelet-transformed once, for trying several steps.
    ``planar``: transform each Z plane on its own (``wavelet.decomposition``)."""

    def __init__(self, residual: np.ndarray, block=BLOCK, levels: int = LEVELS, planar: bool = False):
        self.residual = np.asarray(residual, np.float64)
        self.grid = block_grid(self.residual.shape, block)
        self.levels = levels
        self.planar = bool(planar)
        self.decomposition = wavelet.decomposition(levels, planar)
        self.slices = [self.grid.block_slices(i) for i in range(self.grid.n_blocks)]
        self.coeffs = [wavelet.forward(self.residual[s], self.decomposition) for s in self.slices]

    def quantize(self, step: float) -> TransformState:
        q = [wavelet_coder.quantize(c, step, self.decomposition) for c in self.coeffs]
        sums = None
        for c, qb in zip(self.coeffs, q):
            sums = wavelet_coder.bin_offsets(c, qb, step, self.decomposition, sums)
        nu = sums[:, 0] / np.maximum(sums[:, 1], 1)
        nu = np.clip(np.rint(nu * 128), -128, 127) / 128  # exactly what the header stores
        counts, extra = None, 0.0
        for qb in q:
            if np.any(qb):
                counts, e = wavelet_coder.count_fast(qb, self.decomposition, counts)
                extra += e + 2
        entries = np.zeros((wavelet_coder.N_CLASSES, N_CTX), np.int64)
        bits = extra
        if counts is not None:
            for k in range(wavelet_coder.N_CLASSES):
                entries[k], b = entropy.choose(counts[k])
                bits += b
        return TransformState(step, q, nu, entries, bits)

    def reconstruct(self, state: TransformState, index: int) -> np.ndarray:
        """The transform stage's decoded residual of block ``index`` (as a decoder computes it)."""
        return wavelet.inverse(wavelet_coder.dequantize(state.q[index], state.step, self.decomposition, state.nu),
                               self.decomposition)

    def estimate_bytes(self, state: TransformState) -> int:
        """Estimated layer size with this transform stage alone."""
        overhead = blob.HEADER.size + 4 + 120 + blob.INDEX_ENTRY.size * len(self.slices) + 4 * len(self.slices)
        return int(state.bits / 8) + overhead


def _check_range(q: np.ndarray) -> None:
    if q.size and int(np.abs(q).max()) >= 1 << entropy.MAX_EXCESS_BITS:
        from ..errors import InputError

        raise InputError("the error bound is too small for this volume's range of values (more than 2^40 steps)")


def _correction_blocks(residual, slices, tr, transform, step: float, form: str):
    """Per block, what the correction stage (of ``form``, see ``FORMS``) codes of ``residual`` after
    ``transform``: index arrays (plain, linear) or the predictive stage's pass items, None for an
    all-zero block; (counts, extra bits) over all blocks; the linear form's weights (else None)."""
    table = predictive.N_PRED_CTX if form == "predictive" else correction.N_CORR_CTX
    counts = np.zeros((table, entropy.ALPHABET), np.int64)
    extra = 0.0

    def left(i, s):
        r = residual[s]
        return r - tr.reconstruct(transform, i) if transform is not None else r

    weights = None
    if form == "linear":
        weights, indices = linear.quantize([left(i, s) for i, s in enumerate(slices)], step)
    out = []
    for i, s in enumerate(slices):
        if form == "predictive":
            items, _ = predictive.quantize(left(i, s), step)
            if predictive.max_index(items) >= 1 << entropy.MAX_EXCESS_BITS:
                _check_range(np.array([1 << entropy.MAX_EXCESS_BITS]))
            nonzero = any(bool(np.any(sym)) for sym, _, _, _ in items)
            if nonzero:
                _, e = predictive.count(items, counts)
                extra += e
            out.append(items if nonzero else None)
        else:
            qc = indices[i] if form == "linear" else correction.quantize(left(i, s), step)
            _check_range(qc)
            if np.any(qc):
                _, e = correction.count_fast(qc, counts)
                extra += e
                out.append(qc)
            else:
                out.append(None)
    return out, counts, extra, weights


def encode_layer(transformed: Transformed | None, residual: np.ndarray, *, transform: TransformState | None = None,
                 correction_step: float | None = None, form: str = "plain", max_error: float = 0.0,
                 delta: float = 0.0, noise_sigma: float = 0.0, block=BLOCK, prepared=None) -> ResidualLayer:
    """Encode the layer: the given transform stage (or none) and, with ``correction_step``, the
    correction stage (of ``form``, see ``FORMS``) of what remains of ``residual`` after it
    (``prepared``: what ``_correction_blocks`` returned for exactly these arguments, if at hand)."""
    if form not in FORMS:
        raise ValueError(f"correction form {form!r} is not one of {FORMS}")
    grid = transformed.grid if transformed is not None else block_grid(np.shape(residual), block)
    slices = [grid.block_slices(i) for i in range(grid.n_blocks)]
    stages = (blob.STAGE_TRANSFORM if transform is not None else 0)
    if transform is not None and transformed.planar:
        stages |= blob.STAGE_PLANAR
    corr = None
    corr_entries = None
    weights = None
    if correction_step is not None:
        stages |= blob.STAGE_CORRECTION | {"plain": 0, "predictive": blob.STAGE_PREDICTIVE,
                                           "linear": blob.STAGE_LINEAR}[form]
        corr, counts, _, weights = prepared or _correction_blocks(np.asarray(residual, np.float64), slices,
                                                                  transformed, transform, correction_step, form)
        corr_entries, _ = entropy.choose(counts)
    if not stages:
        raise ValueError("an enhancement layer needs a transform stage or a correction step")
    header = _header(grid.shape, grid.block, stages=stages, levels=transformed.levels if transformed else LEVELS,
                     transform_step=transform.step if transform else 0.0,
                     correction_step=correction_step or 0.0, max_error=max_error, delta=delta,
                     noise_sigma=noise_sigma, nu=transform.nu if transform else None,
                     entries=transform.entries if transform else None, corr_entries=corr_entries, weights=weights)
    payloads = []
    for i in range(len(slices)):
        tq = transform.q[i] if transform is not None else None
        cq = corr[i] if corr is not None else None
        t_on = tq is not None and bool(np.any(tq))
        c_on = cq is not None
        if not (t_on or c_on):
            payloads.append(b"")
            continue
        enc = entropy.new_encoder()
        entropy.encode_bits(enc, np.array([t_on, c_on], np.int64))
        if t_on:
            wavelet_coder.encode_into(enc, tq, transformed.decomposition, transform.entries)
        if c_on and form == "predictive":
            predictive.encode(enc, cq, corr_entries)
        elif c_on:
            correction.encode(enc, cq, corr_entries)
        payloads.append(entropy.finish(enc))
    return ResidualLayer.from_bytes(blob.pack(header, payloads))


def _search(size, target: float, lo: float, hi: float, tol: float = 0.005):
    """The step in ``[lo, hi]`` whose ``size(step)`` (falling with the step) is at most ``target`` and
    within ``tol`` of it, by secant steps in log-log space inside a bracket; returns (state, size) of
    the best under the target, or None when even ``hi`` is over."""
    s_hi, b_hi = size(hi)
    if b_hi > target:
        return None
    s_lo, b_lo = size(lo)
    if b_lo <= target:
        return s_lo, b_lo
    best = (s_hi, b_hi)
    for _ in range(30):
        t = math.log(target / b_lo) / math.log(b_hi / b_lo) if b_hi != b_lo else 0.5
        t = min(0.95, max(0.05, t))
        mid = math.exp(math.log(lo) + t * (math.log(hi) - math.log(lo)))
        s_mid, b_mid = size(mid)
        if b_mid > target:
            lo, b_lo = mid, b_mid
        else:
            hi, b_hi = mid, b_mid
            if b_mid > best[1]:
                best = (s_mid, b_mid)
            if b_mid >= (1 - tol) * target:
                break
        if hi / lo < 1.0005:
            break
    return best


def search_bytes(tr: Transformed, nbytes: int, correction: int = 0) -> TransformState | None:
    """The quantised transform stage whose estimated layer size (plus ``correction``) is at most
    ``nbytes`` and within 0.5% of it (None if even the coarsest useful step is over)."""
    spread = float(np.std(tr.residual)) or 1.0
    sizes = tr.__dict__.setdefault("_sizes", {})  # step -> estimated bytes (states are not kept: memory)

    def size(step):
        if step not in sizes:
            sizes[step] = tr.estimate_bytes(tr.quantize(step))
        return step, sizes[step] + correction

    found = _search(size, nbytes, spread * 1e-3, spread * 64.0)
    return None if found is None else tr.quantize(found[0])


def squared_error(tr: Transformed, state: TransformState) -> float:
    """Sum of squared differences between the residual and what the transform stage rebuilds."""
    return float(sum(np.sum((tr.residual[s] - tr.reconstruct(state, i)) ** 2) for i, s in enumerate(tr.slices)))


def fit_bytes(residual: np.ndarray, nbytes: int, *, block=BLOCK, levels: int = LEVELS, planar: bool = False,
              transformed: Transformed | None = None, state: TransformState | None = None) -> ResidualLayer | None:
    """The transform-stage layer of ``residual`` whose size is at most ``nbytes`` and within about 1% of
    it; None if even the coarsest useful step does not fit. The step is searched on the encoder's size
    estimate (``search_bytes``; or ``state`` given), the layer encoded, and the search repeated with the
    estimate corrected by what the encoding measured (tables, range-coder words)."""
    tr = transformed or Transformed(residual, block, levels, planar)
    state = state or search_bytes(tr, nbytes)
    best = None
    for _ in range(4):
        if state is None:
            break
        layer = encode_layer(tr, tr.residual, transform=state)
        if layer.nbytes <= nbytes and (best is None or layer.nbytes > best.nbytes):
            best = layer
        if best is not None and best.nbytes >= 0.99 * nbytes:
            break
        state = search_bytes(tr, nbytes, correction=layer.nbytes - tr.estimate_bytes(state))
    return best


def fit_max_error(residual: np.ndarray, step: float, *, max_error: float, delta: float, noise_sigma: float = 0.0,
                  block=BLOCK, levels: int = LEVELS, factors=BOUNDED_TRANSFORM_FACTORS,
                  predictive_factors=BOUNDED_PREDICTIVE_FACTORS,
                  linear_factors=BOUNDED_LINEAR_FACTORS) -> ResidualLayer:
    """The error-bounded layer: a correction stage of step ``step`` after a transform stage, choosing the
    smallest (estimated from the coder's symbol counts; the chosen one is encoded) of: the plain correction
    after a transform stage of step ``factor * max_error`` for ``factor`` in ``factors`` (0 = no transform
    stage), the predictive correction after one for ``factor`` in ``predictive_factors`` and the
    linear-predictive one for ``factor`` in ``linear_factors``."""
    residual = np.asarray(residual, np.float64)
    candidates = ([(f, "plain") for f in factors] + [(f, "predictive") for f in predictive_factors]
                  + [(f, "linear") for f in linear_factors])
    # a transform step is a multiple of the bound: none under a zero bound (lossless)
    candidates = [(f, form) for f, form in candidates if f == 0 or f * max_error > 0]
    tr = Transformed(residual, block, levels) if any(f > 0 for f, _ in candidates) else None
    grid = tr.grid if tr is not None else block_grid(residual.shape, block)
    slices = [grid.block_slices(i) for i in range(grid.n_blocks)]
    best = None
    for f, form in candidates:
        state = tr.quantize(f * max_error) if f > 0 else None
        bits = state.bits if state is not None else 0.0
        prepared = _correction_blocks(residual, slices, tr, state, step, form)
        _, counts, extra, weights = prepared
        bits += extra + entropy.choose(counts)[1] + (0 if weights is None else 64 * weights.size)
        if best is None or bits < best[0]:
            best = (bits, state, form, prepared)
        del prepared
    return encode_layer(tr, residual, transform=best[1], correction_step=step, form=best[2],
                        max_error=max_error, delta=delta, noise_sigma=noise_sigma, block=block, prepared=best[3])
