"""Training configuration (``TrainConfig``) and the named presets.

Units: scales and distances in voxels; learning rates per raw parameter group
(see ``gaussians_torch.GaussianParameters``); loss weights dimensionless on the
model scale (background level 0, brightest voxel about 1).

Presets:

- ``default``: tuned by measurement on the 2-core CPU (data-driven init,
  exact training on a strided lattice, error-driven relocation, background
  field, budget-aware densification, final prune and fine-tune).
- ``paper``: Table 7 of the paper: N0 = 5000 uniform centres with isotropic
  covariance 0.01 I (normalised domain, converted to voxels per axis), 10,000
  steps, Adam lr 0.01 for every parameter, lambda_s = lambda_r = 1e-3,
  densification every 100 steps between 500 and 3500, gate on, edge weights on.
  Kept differences: each step trains on a random quarter-lattice (stride 1, 2, 2)
  instead of a 30% random sample, training is exact (every voxel sees every Gaussian within
  3 sigma, as decoding does) instead of K nearest; scale bounds s_min, s_max
  are converted to voxels (fractions of the largest axis); the budget is
  enforced by the final prune as for every preset.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from ..errors import InputError

#: bits per voxel when no budget is given
DEFAULT_BPP = 0.073


@dataclass(frozen=True)
class TrainConfig:
    # schedule
    steps: int = 2000
    # lattice sampling: each step trains on voxels offset + stride * i with a random offset
    stride: tuple[int, int, int] = (1, 2, 2)
    # initialisation
    init: str = "data"  # "data" (foreground, intensity-weighted) or "uniform" (paper)
    init_count: float = 1.0  # initial N as a multiple of the budget (or absolute if > 10 and init_absolute)
    init_absolute: int | None = None  # paper: 5000
    init_sigma: float | None = None  # isotropic init sigma (voxels) for "uniform"; None -> from neighbours
    # learning rates (Adam)
    # (measured on the nuclei volume, 400 steps at 0.073 bpp: these rates 38.05 dB;
    # half of them 37.6 dB, a quarter 36.7 dB, a tenth 34.8 dB)
    lr_position: float = 0.02
    lr_scale: float = 0.1
    lr_rotation: float = 0.1
    lr_amplitude: float = 0.2
    lr_background: float = 0.002
    lr_final_decay: float = 0.1  # cosine-free linear decay of all lrs to this fraction at the end
    # losses
    edge_weights: bool = True
    w_base: float = 1.0
    w_edge: float = 2.0
    lambda_sparse: float = 1e-4
    lambda_scale: float = 1e-3
    lambda_overlap: float = 0.0
    s_min: float = 0.35  # voxels
    s_max_fraction: float = 0.1  # of the largest axis
    # occupancy gate
    gate: bool = True
    gate_kind: str = "threshold"  # "threshold" or "mlp" (TOPS-Gate; measured worse recall, see benchmarks)
    gate_fraction: float = 0.03  # label: v > median + p * (max - median)
    gate_iterations: int = 1000
    gate_tau: float = 0.5
    background_sample: float = 0.5  # fraction of non-gated lattice voxels in each step's loss
    # background field
    background_field: bool = True
    background_budget: float = 0.04  # fraction of the byte budget the field may use
    # densification (paper 3.4)
    densify: bool = True
    densify_from: int = 300
    densify_until: int = 1200
    densify_every: int = 100
    grad_ema: float = 0.95
    tau_grad: float | None = None  # None: the top quantile below
    grad_quantile: float = 0.9
    tau_size_fraction: float = 0.02
    tau_prune: float = 1e-3
    growth: float = 1.25  # cap on N as a multiple of the budget during densification
    # relocation (error-driven)
    relocate: bool = True
    relocate_every: int = 100
    relocate_fraction: float = 0.02
    relocate_until: float = 0.85  # fraction of steps
    # budget
    fine_tune_fraction: float = 0.1  # steps after the final prune (fraction of total)
    budget_margin: float = 0.05  # a byte budget trains this fraction more than its estimated count, then fits exactly
    # where the Gaussians go: everywhere the error is (True), or inside the occupancy gate (False;
    # the gate's threshold misses textured tissue whose few bright voxels set the maximum)
    spend_everywhere: bool = True
    init_noise_k: float = 2.0  # "everywhere" init samples voxels above this many noise sigmas
    signed_amplitudes: bool = False  # amplitudes of either sign (dark structure, texture around a mean)
    # closed-form amplitudes and background field (solve.py): every this many steps (0: never)
    solve_every: int = 0
    solve_iterations: int = 12
    final_solve: bool = False  # one more solve on the full grid after the last step
    # ((z0, y0, x0), (z1, y1, x1)), voxels, stop excluded: the count budget is of Gaussians centred in this
    # box (a brick's core, whose Gaussians the bricked encoder keeps); Gaussians trained around it help fit
    # the halo and are left out of the result. None: the whole volume
    place_box: tuple | None = None


PRESETS: dict[str, TrainConfig] = {
    "default": TrainConfig(),
    "paper": TrainConfig(
        steps=10_000,
        stride=(1, 2, 2),  # a quarter of the voxels per step, as the paper's rho = 30% sample
        init="uniform",
        init_absolute=5000,
        init_sigma=0.1,  # sqrt(0.01) in normalised units; converted per axis
        lr_position=0.01,
        lr_scale=0.01,
        lr_rotation=0.01,
        lr_amplitude=0.01,
        lr_background=0.0,
        lr_final_decay=1.0,
        lambda_sparse=1e-3,
        lambda_scale=1e-3,
        s_min=1e-4,
        background_field=False,
        gate_kind="mlp",
        gate_fraction=0.01,
        background_sample=0.0,
        densify_from=500,
        densify_until=3500,
        tau_grad=1e-4,
        growth=6.0,
        relocate=False,
        fine_tune_fraction=0.0,
    ),
}


def make_config(preset: str = "default", steps: int | None = None, **overrides) -> TrainConfig:
    """The preset's config with ``steps`` and any field overrides applied.

    Schedules (densification window, relocation) scale with ``steps`` when it
    differs from the preset's.
    """
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    cfg = PRESETS[preset]
    names = {f.name for f in fields(TrainConfig)}
    bad = sorted(set(overrides) - names)
    if bad:
        raise InputError(f"unknown training option(s): {', '.join(bad)}")
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise InputError(f"steps must be a positive integer, got {steps!r}")
        f = steps / cfg.steps
        cfg = replace(
            cfg,
            steps=steps,
            densify_from=max(1, int(round(cfg.densify_from * f))),
            densify_until=max(1, int(round(cfg.densify_until * f))),
            densify_every=max(10, int(round(cfg.densify_every * min(1.0, max(f, 0.2))))),
            relocate_every=max(10, int(round(cfg.relocate_every * min(1.0, max(f, 0.2))))),
        )
    return replace(cfg, **overrides)


__all__ = ["DEFAULT_BPP", "PRESETS", "TrainConfig", "make_config"]
