"""The two-layer encoder: Gaussians for the base, the enhancement layer for the rest.

``compress(volume, ...)`` trains the base (``encode.Trainer``) and adds the
layer, computed against the base **as a decoder will see it**: the model the
file stores (``container.quantize``) decoded by the dense evaluator.

- Rate mode (``bpp`` / ``ratio`` / ``gaussians``): the base gets
  ``base_share(total)`` of the byte budget (``BASE_SHARE``, chosen by
  measurement: docs/benchmarks.md), the transform stage the rest
  (``encode.fit_bytes``); the file lands at or just under the budget.
  ``enhance=False`` spends the whole budget on the Gaussians (the base-only
  encoder).
- Error-bounded mode (``max_error``): the base is trained at its own budget
  (the given one, default ``BOUNDED_BASE_BPP``), then the layer guarantees
  every voxel within ``max_error`` (``encode.fit_max_error``).

``max_error`` is in grey levels (original units) or, as a string ending in
``sigma``, in units of the estimated noise (``noise.noise_sigma``).
``add_rate_layer`` / ``add_bounded_layer`` are the steps, for callers that
train the base themselves; both return the base as stored (``stored_base``)
with the layer, so the model in memory decodes exactly as its file.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError
from . import encode, noise

#: share of the byte budget the Gaussians get in rate mode (the enhancement layer gets the rest)
BASE_SHARE = 0.5
#: base budget (bits per voxel) of the error-bounded mode when none is given
BOUNDED_BASE_BPP = 0.04
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


def add_rate_layer(volume: np.ndarray, gv, total_bytes: int):
    """The stored base of ``gv`` with a transform-stage layer that fills the file up to ``total_bytes``
    (no layer if the base already fills it or the layer cannot fit)."""
    from ..container import file_size
    from ..container.layout import SECTION

    base = stored_base(gv)
    room = int(total_bytes) - file_size(base) - SECTION.size
    if room < 256:
        return base
    layer = encode.fit_bytes(np.asarray(volume, np.float64) - base_values(base), room)
    return base if layer is None else base.replace(residual=layer)


def add_bounded_layer(volume: np.ndarray, gv, max_error: float, sigma: float = 0.0):
    """The stored base of ``gv`` with the error-bounded layer for ``max_error`` (original units)."""
    volume = np.asarray(volume)
    is_int = volume.dtype.kind in "iu"
    delta = delta_for(volume)
    step = bounded_step(max_error, is_int, delta)
    bound = float(math.floor(max_error)) if is_int else float(max_error)
    base = stored_base(gv)
    layer = encode.fit_max_error(volume.astype(np.float64) - base_values(base), step, max_error=bound, delta=delta,
                                 noise_sigma=sigma)
    return base.replace(residual=layer)


def base_share(total_bytes: int) -> int:
    """Bytes of a rate-mode budget that go to the Gaussians."""
    return int(BASE_SHARE * total_bytes)
