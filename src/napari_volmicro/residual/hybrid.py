"""The two-layer encoder: Gaussians for the base, the enhancement layer for the rest.

``compress(volume, ...)`` trains the base (``encode.Trainer``) and adds the
layer, computed against the base **as a decoder will see it**: the model the
file stores (``container.quantize``) decoded by the dense evaluator.

- Rate mode (``bpp`` / ``ratio``): the base is trained for ``BASE_SHARE``
  of the byte budget (at most ``MAX_BASE_BPP``); then, of that base and its
  thinnings (``THIN_FRACTIONS`` of its Gaussians, the most massive kept), the
  one whose transform stage filling the rest of the budget rebuilds the
  volume best is kept (``add_rate_layer``): volumes that Gaussians describe
  well keep their Gaussians, noisy or textured ones give bytes to the layer;
  the layer's transform is 3D or planar (each Z plane on its own), whichever
  rebuilds the volume better.
  The file lands at or just under the budget (within about 1%), or below it
  when an integer volume fits losslessly (``LOSSLESS_MSE``).
  ``enhance=False`` (or a ``gaussians`` count) spends the whole budget on the
  Gaussians (the base-only encoder).
- Error-bounded mode (``max_error``): the base is trained at its own budget
  (the given one, default ``BOUNDED_BASE_BPP``), then the layer guarantees
  every voxel within ``max_error`` (``encode.fit_max_error``), on the base or
  the thinning of it (``BOUNDED_THIN_FRACTIONS``) that makes the smaller file.

``max_error`` is in grey levels (original units) or, as a string ending in
``sigma``, in units of the estimated noise (``noise.noise_sigma``).
``plan`` decides the base's budget before training, ``complete`` adds the
layer after it (``add_rate_layer`` / ``add_bounded_layer``); both return the
base as stored (``stored_base``) with the layer, so the model in memory
decodes exactly as its file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from . import encode, noise

#: share of the byte budget the Gaussians are trained for in rate mode (at most MAX_BASE_BPP) ...
BASE_SHARE = 0.5
MAX_BASE_BPP = 0.15
#: ... then the base kept is the thinning of it (fractions of its Gaussians, by mass) whose layer
#: rebuilds the volume best at the total budget, tried in this order until one rebuilds worse than
#: the one before (textured tissue keeps 1-3% of its Gaussians; measured: docs/benchmarks.md)
THIN_FRACTIONS = (1.0, 0.5, 0.25, 0.1, 0.03, 0.01)
#: a thinner base is kept only if its layer's squared error is at least this fraction lower (0.04 dB):
#: the Gaussians are the structure Browse, points and ellipsoids show, not given up for nothing
MIN_THIN_GAIN = 0.01
#: smallest useful enhancement layer (bytes)
MIN_LAYER_BYTES = 256
#: in rate mode on an integer volume, a layer whose mean squared error (grey levels^2) is at most this
#: (rounding would leave almost every voxel exact) is replaced by a lossless one when that fits the budget
LOSSLESS_MSE = 0.05
#: base budget (bits per voxel) of the error-bounded mode when none is given ...
BOUNDED_BASE_BPP = 0.04
#: ... and the thinnings of the base tried (until one makes a larger file): sparse volumes code the
#: bound in fewer bytes with fewer Gaussians (traced neuron, lossless: 0.099 bpp with its whole base,
#: 0.030 with a tenth), dense ones keep theirs (nuclei: every thinning is larger)
BOUNDED_THIN_FRACTIONS = (1.0, 0.1, 0.01)
#: the decoded base may differ from the encoder's by less than DELTA_FRACTION * (data range)
#: original units (float32 rounding of model values, summation order on other devices) without
#: breaking the error bound: the correction step keeps that margin (``bounded_step``)
DELTA_FRACTION = 2.0**-20
#: smallest margin, in original units
DELTA_MIN = 2.0**-30


def parse_max_error(value, volume: np.ndarray | None = None) -> tuple[float, float]:
    """``value`` (a number of grey levels, or ``"1.5sigma"``) -> (error bound in original units,
    noise sigma used or 0.0). InputError for anything else, or sigma units on a noiseless volume."""
    sigma = 0.0
    text = str(value).strip().lower()
    in_sigma = text.endswith("sigma")
    try:
        k = float(text[: -len("sigma")] if in_sigma else text)
    except ValueError:
        raise InputError(
            f"--max-error must be a number of grey levels (e.g. 2) or a multiple of the noise (e.g. 1.5sigma), "
            f"got {value!r}"
        ) from None
    bound = k
    if in_sigma and math.isfinite(k) and k >= 0:
        if volume is None:
            raise InputError("--max-error in sigma units needs the volume to estimate its noise")
        sigma = noise.noise_sigma(volume)
        if not sigma > 0:
            raise InputError(
                "--max-error in sigma units: the volume's estimated noise is 0 (it is constant where it "
                "varies at all); give the bound in grey levels instead"
            )
        bound = k * sigma
    if not math.isfinite(bound) or bound < 0:
        raise InputError(f"--max-error must be a finite non-negative bound, got {value!r}")
    return bound, sigma


def delta_for(volume: np.ndarray) -> float:
    """The margin (original units) the correction step keeps for base differences between decoders."""
    lo, hi = float(np.min(volume)), float(np.max(volume))
    delta = max(DELTA_MIN, DELTA_FRACTION * max(hi - lo, abs(hi), abs(lo)))
    if volume.dtype.kind == "f":
        # the float output itself rounds to the dtype: half an ulp of the largest magnitude
        delta += 0.5 * float(np.spacing(np.asarray(max(abs(hi), abs(lo)), volume.dtype)))
    return delta


def bounded_step(max_error: float, is_integer: bool, delta: float) -> float:
    """Correction step for a bound: ``2 floor(E) + 1 - 2 delta`` for integer volumes (rounding the output
    then keeps |error| <= floor(E)), ``2 (E - delta)`` for float ones."""
    if is_integer:
        return 2.0 * math.floor(max_error) + 1.0 - 2.0 * delta
    step = 2.0 * (max_error - delta)
    if step <= 0:
        raise InputError(f"--max-error {max_error:g} is below the float margin {delta:g} of this volume")
    return step


def stored_base(gv):
    """The Gaussians exactly as a ``.vmg`` file stores them (``container.quantize``), without a layer:
    the base an enhancement layer is computed against, so the model in memory decodes as its file."""
    from ..container import quantize

    return quantize(gv.replace(residual=None))


def base_values(gv) -> np.ndarray:
    """The base as a decoder sees it: ``stored_base(gv)`` decoded by the dense evaluator, original units,
    float64 (``gv`` already stored: itself)."""
    return gv.mapping.to_original_float(gv.decode_model(evaluator="dense"))


def thinned(gv, fraction: float):
    """``gv`` keeping the ``fraction`` of its Gaussians (at least one) with the largest mass (|amplitude|
    times the product of the three scales), in their original order."""
    n = gv.n_gaussians
    keep = max(1, int(round(fraction * n)))  # the base keeps at least one Gaussian
    if keep >= n:
        return gv
    mass = np.abs(gv.amplitudes.astype(np.float64)) * np.prod(gv.scales.astype(np.float64), axis=1)
    return gv.subset(np.sort(np.argsort(-mass, kind="stable")[:keep]))


def add_rate_layer(volume: np.ndarray, gv, total_bytes: int, fractions=None):
    """The stored base of ``gv`` (or of its best thinning, among ``fractions``, default
    ``THIN_FRACTIONS``) with a transform-stage layer that fills the file up to ``total_bytes``.

    Each thinning frees bytes for the layer; the one whose layer (searched on the size estimate)
    rebuilds ``volume`` with the least squared error is encoded (thinnings are tried in order until
    one rebuilds worse than the one before; a thinner one is kept only if it is ``MIN_THIN_GAIN``
    better). The transform is 3D or planar (``wavelet.decomposition``), whichever rebuilds the
    first thinning better: planar wins where Z planes are too far apart to correlate. No layer if the base already fills the budget. On an
    integer volume that the layer would rebuild almost exactly (mean squared error at most
    ``LOSSLESS_MSE``), the lossless error-bounded layer (``max_error`` 0) of the same base is kept
    instead when it fits: a file smaller than the budget that decodes every voxel exactly."""
    from ..container import file_size
    from ..container.layout import SECTION

    original = np.asarray(volume)
    volume = original.astype(np.float64)
    best = None
    previous = np.inf
    planar_options = (False, True)
    for f in (THIN_FRACTIONS if fractions is None else fractions):
        base = stored_base(thinned(gv, f))
        room = int(total_bytes) - file_size(base) - SECTION.size
        if room < MIN_LAYER_BYTES:
            if best is None:
                best = (np.inf, base, None, None)
            continue
        tried = []
        residual = volume - base_values(base)
        for planar in planar_options:
            shape = (encode.PLANAR_BLOCK, encode.PLANAR_LEVELS) if planar else (encode.BLOCK, encode.LEVELS)
            tr = encode.Transformed(residual, *shape, planar=planar)
            state = encode.search_bytes(tr, room)
            if state is not None:
                tried.append((encode.squared_error(tr, state), planar, tr, state))
        if not tried:
            continue
        err, planar, tr, state = min(tried, key=lambda t: t[0])
        planar_options = (planar,)
        if best is None or err < (1.0 - MIN_THIN_GAIN) * best[0]:
            best = (err, base, tr, (room, state))
        if err > previous:
            break  # thinning further only loses more of what the Gaussians held
        previous = err
    err, base, tr, chosen = best
    if tr is None:
        return base
    if original.dtype.kind in "iu" and err <= LOSSLESS_MSE * volume.size:
        # the layer would rebuild (nearly) every voxel exactly: a lossless file that fits is better
        lossless = add_bounded_layer(original, base, 0.0)
        if file_size(lossless) <= total_bytes:
            return lossless
    layer = encode.fit_bytes(tr.residual, chosen[0], transformed=tr, state=chosen[1])
    return base if layer is None else base.replace(residual=layer)


def add_bounded_layer(volume: np.ndarray, gv, max_error: float, sigma: float = 0.0, fractions=None):
    """The stored base of ``gv`` (or of a thinning of it, among ``fractions``, default
    ``BOUNDED_THIN_FRACTIONS``, tried in order until one makes a larger file) with the error-bounded
    layer for ``max_error`` (original units): the smallest file."""
    from ..container import file_size

    volume = np.asarray(volume)
    is_int = volume.dtype.kind in "iu"
    delta = delta_for(volume)
    step = bounded_step(max_error, is_int, delta)
    bound = float(math.floor(max_error)) if is_int else float(max_error)
    values = volume.astype(np.float64)
    best = None
    for f in (BOUNDED_THIN_FRACTIONS if fractions is None else fractions):
        base = stored_base(thinned(gv, f))
        layer = encode.fit_max_error(values - base_values(base), step, max_error=bound, delta=delta,
                                     noise_sigma=sigma)
        model = base.replace(residual=layer)
        size = file_size(model)
        if best is not None and size >= best[0]:
            break
        best = (size, model)
    return best[1]


@dataclass(frozen=True)
class Plan:
    """How ``compress`` spends a budget: ``base`` (the Trainer's budget keywords), ``total_bytes`` (the
    whole file in rate mode, else None), ``max_error`` (original units, error-bounded mode, else None)
    and the noise ``sigma`` it came from (0.0: given in grey levels)."""

    base: dict
    total_bytes: int | None = None
    max_error: float | None = None
    sigma: float = 0.0

    @property
    def layered(self) -> bool:
        return self.total_bytes is not None or self.max_error is not None


def plan(volume: np.ndarray, *, bpp=None, ratio=None, gaussians=None, max_error=None, enhance: bool = True) -> Plan:
    """The budget split for ``volume`` (see the module docstring). Without ``enhance`` (or with a
    ``gaussians`` count) the whole budget goes to the Gaussians, as the base-only encoder does."""
    from ..encode import budget as budgets

    volume = np.asarray(volume)
    if max_error is not None:
        bound, sigma = parse_max_error(max_error, volume)
        bounded_step(bound, volume.dtype.kind in "iu", delta_for(volume))  # a bound too small: refused now
        base = {"bpp": bpp, "ratio": ratio, "gaussians": gaussians}
        if bpp is None and ratio is None and gaussians is None:
            base["bpp"] = BOUNDED_BASE_BPP
        return Plan(base, None, bound, sigma)
    if not enhance or gaussians is not None:
        return Plan({"bpp": bpp, "ratio": ratio, "gaussians": gaussians})
    total = budgets.budget_bytes(volume.size, volume.dtype.itemsize, bpp=bpp, ratio=ratio, gaussians=None)
    base_bpp = min(8.0 * BASE_SHARE * total / volume.size, MAX_BASE_BPP)
    return Plan({"bpp": base_bpp}, int(total))


def complete(volume: np.ndarray, gv, how: Plan):
    """The trained base ``gv`` finished as ``how`` says: the stored base with its enhancement layer
    (rate mode: the thinning of the base, ``THIN_FRACTIONS``, whose layer filling the budget decodes
    closest to ``volume``), or ``gv`` itself for a base-only plan."""
    if how.max_error is not None:
        return add_bounded_layer(volume, gv, how.max_error, how.sigma)
    if how.total_bytes is None:
        return gv
    return add_rate_layer(volume, gv, how.total_bytes)


def compress(volume, spacing=None, *, bpp=None, ratio=None, gaussians=None, max_error=None, layers: str = "all",
             progress=None, **trainer_options):
    """Train the base and add the enhancement layer (what ``volmicro compress`` does): returns the stored
    base with its layer (``layers="base"``: the Gaussians alone, the whole budget theirs).
    ``trainer_options`` go to ``encode.Trainer`` (preset, steps, seed, device, ...); ``progress`` is
    called with every training ``Snapshot``."""
    from ..encode import Trainer
    from ..volume_io import check_volume

    volume = check_volume(volume, source="volume")
    if layers not in ("all", "base"):
        raise InputError(f"layers must be 'all' or 'base', got {layers!r}")
    how = plan(volume, bpp=bpp, ratio=ratio, gaussians=gaussians, max_error=max_error, enhance=layers == "all")
    trainer = Trainer(volume, spacing, **how.base, **trainer_options)
    for snap in trainer.run():
        if progress is not None:
            progress(snap)
    return complete(volume, trainer.result, how)
