"""The training loop behind ``Trainer.run`` (imports torch and numba)."""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from ..gaussians import GaussianVolume
from ..gaussians_torch import GaussianParameters
from ..intensity import IntensityMapping
from . import budget as budgets
from . import losses
from .densify import GradEMA, densify_step, relocate_step, residual_score, resize, spawn_step
from .field import on_lattice
from .gate import make_gate, noise_sigma, occupancy_threshold
from .init import init_from_data, init_uniform
from .splat import Lattice, prec6_from_matrices, splat_loss


def background_threshold(v: np.ndarray, fraction: float) -> float:
    """Level below which voxels count as background for the offset (original units).

    ``median + max(fraction * (max - median), 3 * noise)``, noise estimated as
    1.4826 x the median absolute deviation (on a subsample): the offset is the
    MEAN of those voxels (METHOD-NOTES: the median biases it), and the noise
    margin keeps a noise-only volume from being cut at its median.
    """
    sub = v.reshape(-1)[:: max(1, v.size // 2_000_000)]
    med = float(np.median(sub))
    mad = 1.4826 * float(np.median(np.abs(sub - med)))
    return max(occupancy_threshold(v, fraction), med + 3.0 * mad)


class TrainingLoop:
    def __init__(self, trainer):
        self.tr = trainer
        self.cfg = trainer.config
        self.result = None

    # -- setup -------------------------------------------------------------------

    def _prepare(self):
        tr, cfg = self.tr, self.cfg
        vol = tr._volume
        self.shape = vol.shape
        v = vol.astype(np.float32, copy=True)
        vmin, vmax = float(v.min()), float(v.max())
        thr = background_threshold(v, cfg.gate_fraction)
        below = v <= thr
        offset = float(v[below].mean(dtype=np.float64)) if below.any() else float(v.mean(dtype=np.float64))
        del below
        scale = vmax - offset if vmax - offset > 1e-12 * max(1.0, abs(vmax)) else 1.0
        self.mapping = IntensityMapping(offset=offset, scale=scale, dtype=vol.dtype)
        v -= offset
        v /= scale
        self.target = v  # model units
        self.peak = (vmax - vmin) / scale
        rng = self.rng = np.random.default_rng(tr.seed)
        self.gate = None
        if cfg.gate:
            self.gate = make_gate(cfg.gate_kind, cfg.gate_fraction, cfg.gate_iterations, cfg.gate_tau)
            self.gate.fit(v, seed=tr.seed)
            self.mask = self.gate.mask(self.shape)
            occupied = self.mask
        else:
            self.mask = None
            occupied = v > 0
        self.noise = noise_sigma(v)  # model units
        if cfg.spend_everywhere:
            occupied = v > cfg.init_noise_k * self.noise
        in_box = None
        if cfg.place_box is not None:
            inside = np.zeros(self.shape, bool)
            inside[_box_slices(cfg.place_box, self.shape)] = True
            in_box = int(np.count_nonzero(occupied & inside))
            grow_init = min(4.0, max(1.0, int(np.count_nonzero(occupied)) / max(in_box, 1)))
        self.weights = losses.edge_weight_map(v, cfg.w_base, cfg.w_edge) if cfg.edge_weights else None
        # a byte budget's count is an estimate: train a few more, and prune to the exact size (``_prune_to_budget``)
        self.n_target = tr.n_budget
        if tr.budget_bytes is not None and tr.n_budget > 0:
            self.n_target = int(math.ceil(tr.n_budget * (1.0 + cfg.budget_margin)))
        n0 = cfg.init_absolute if cfg.init_absolute is not None else int(round(cfg.init_count * self.n_target))
        if tr.n_budget == 0:
            n0 = 0
        init_lat = Lattice.make(self.shape, stride=cfg.stride)
        if cfg.init == "uniform":
            sig = cfg.init_sigma if cfg.init_sigma is not None else 0.1
            c, s, q, a = init_uniform(v, n0, rng, sigma=sig, lattice=init_lat)
        else:
            floor = cfg.init_noise_k * self.noise if cfg.spend_everywhere else 0.0
            if in_box is None:
                c, s, q, a = init_from_data(v, occupied, n0, rng, lattice=init_lat, floor=floor)
            else:  # n0 in the box (the count), and helpers around it in proportion to what is occupied there
                core = (occupied & inside) if in_box else inside
                parts = [init_from_data(v, core, n0, rng, lattice=init_lat, floor=floor)]
                n_out = int(round(n0 * (grow_init - 1.0)))
                if n_out:
                    parts.append(init_from_data(v, occupied & ~inside, n_out, rng, lattice=init_lat, floor=floor))
                c, s, q, a = (np.concatenate(x, 0) for x in zip(*parts))
        # torch device of the parameters, optimiser and lattice data; ``kernels``: which footprint kernels
        self.kernels = tr.device
        dev = self.dev = "cpu" if tr.device == "cpu" else _gpu_torch_device()
        self.params = GaussianParameters(self.shape, c, s, q, a, device=dev)
        self.field = None
        if tr.field_shape is not None:
            self.field = torch.nn.Parameter(torch.zeros(tr.field_shape, dtype=torch.float32, device=dev))
        groups = [
            {"params": [self.params.raw_position], "lr": cfg.lr_position},
            {"params": [self.params.raw_scale], "lr": cfg.lr_scale},
            {"params": [self.params.raw_rotation], "lr": cfg.lr_rotation},
            {"params": [self.params.raw_amplitude], "lr": cfg.lr_amplitude},
        ]
        if self.field is not None:
            groups.append({"params": [self.field], "lr": cfg.lr_background})
        self.opt = torch.optim.Adam(groups, betas=(0.9, 0.999), eps=1e-8)
        self.base_lrs = [g["lr"] for g in self.opt.param_groups]
        self.ema = GradEMA(len(self.params), cfg.grad_ema)
        self.n_initial = len(self.params)
        ext = float(max(self.shape))
        self.s_max = cfg.s_max_fraction * ext
        self.tau_size = cfg.tau_size_fraction * ext
        self._cache = {}
        self._zeros = {}
        self._device_cache = {}
        self.solve_log = []
        # cache every lattice offset's data when that costs at most ~2 volumes of memory
        self._cache_ok = int(np.prod(cfg.stride)) <= 8

    # -- one step ------------------------------------------------------------------

    def _lattice(self):
        off = tuple(int(self.rng.integers(0, s)) for s in self.cfg.stride)
        return Lattice.make(self.shape, off, self.cfg.stride)

    def _lattice_data(self, lat):
        """Target and per-voxel loss weight on ``lat`` (cached per offset).

        weight = edge weight x (1 inside the gate, ``background_sample`` outside),
        normalised so the loss is a weighted mean over the loss's voxels.
        """
        key = (lat.offset, lat.stride)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        cfg, sl = self.cfg, lat.slices
        t = torch.from_numpy(np.ascontiguousarray(self.target[sl]).reshape(-1))
        w = np.ones(lat.size, np.float32)
        if self.weights is not None:
            w = np.ascontiguousarray(self.weights[sl]).reshape(-1).copy()
        if self.mask is not None:
            inside = np.ascontiguousarray(self.mask[sl]).reshape(-1)
            w = np.where(inside, w, w * np.float32(cfg.background_sample))
            count = float(inside.sum()) + cfg.background_sample * float((~inside).sum())
        else:
            count = float(lat.size)
        w /= max(count, 1.0)
        hit = (np.ascontiguousarray(t.cpu().numpy(), np.float32), np.ascontiguousarray(w, np.float32))
        if self._cache_ok and lat.stride == tuple(cfg.stride):
            self._cache[key] = hit
        return hit

    def _lattice_tensors(self, lat):
        """``_lattice_data`` as flat float32 tensors on the training device (the GPU kernels' input), cached alike."""
        key = (lat.offset, lat.stride)
        hit = self._device_cache.get(key)
        if hit is None:
            t, w = self._lattice_data(lat)
            hit = (torch.from_numpy(t).to(self.dev), torch.from_numpy(w).to(self.dev))
            if self._cache_ok and lat.stride == tuple(self.cfg.stride):
                self._device_cache[key] = hit
        return hit

    def _step(self, step):
        cfg, p = self.cfg, self.params
        lat = self._lattice()
        dev = self.dev
        gpu = self.kernels == "cuda"
        t, wm = self._lattice_tensors(lat) if gpu else self._lattice_data(lat)
        frac = step / max(1, self.tr.total_steps)
        for g, lr in zip(self.opt.param_groups, self.base_lrs):
            g["lr"] = lr * (1.0 - (1.0 - cfg.lr_final_decay) * frac)
        info = {}
        if self.field is not None:
            bg = on_lattice(self.field, self.shape, lat)
        else:
            bg = self._zeros.get(lat.size)
            if bg is None:
                bg = self._zeros[lat.size] = torch.zeros(lat.size, dtype=torch.float32, device=dev)
        if len(p):
            scales = p.scales()
            amps = p.amplitudes()
            rot = p.rotations()
            prec = (rot * (scales**-2)[:, None, :]) @ rot.transpose(1, 2)
            with torch.no_grad():
                cov_diag = ((rot * rot) * (scales**2)[:, None, :]).sum(2)
                half = (3.0 * torch.sqrt(cov_diag)).double()
                if not gpu:
                    half = half.cpu().numpy()
            loss = splat_loss(amps, p.centers(), prec6_from_matrices(prec), bg, half, lat, t, wm, info,
                              kernels=self.kernels)
        else:
            amps = scales = None
            z = torch.zeros(0, device=dev)
            h0 = torch.zeros((0, 3), dtype=torch.float64, device=dev) if gpu else np.zeros((0, 3))
            loss = splat_loss(z, torch.zeros(0, 3, device=dev), torch.zeros(0, 6, device=dev), bg, h0, lat, t, wm,
                              info, kernels=self.kernels)
        if amps is not None:
            loss = loss + cfg.lambda_sparse * losses.sparsity(amps)
            loss = loss + cfg.lambda_scale * losses.scale_bounds(scales, cfg.s_min, self.s_max)
            if cfg.lambda_overlap > 0:
                loss = loss + cfg.lambda_overlap * losses.overlap(p.centers(), p.covariances())
        self.opt.zero_grad(set_to_none=True)
        if loss.requires_grad:
            loss.backward()
            self.opt.step()
        self.ema.update(p)
        mse, diff = info["mse"], info["diff"]
        return float(loss.detach()), mse, lat, diff

    # -- schedule -----------------------------------------------------------------

    def _maintain(self, step, lat, diff):
        cfg = self.cfg
        main_steps = self.main_steps
        if cfg.relocate and step > 0 and step % cfg.relocate_every == 0 and step < cfg.relocate_until * main_steps:
            res = -(diff.cpu().numpy() if torch.is_tensor(diff) else diff)
            score = signs = None
            if cfg.spend_everywhere:
                score, smooth = residual_score(res, lat.shape, signed=cfg.signed_amplitudes)
                signs = smooth if cfg.signed_amplitudes else None
            elif self.mask is not None:
                res = res * np.ascontiguousarray(self.mask[lat.slices]).reshape(-1)
            relocate_step(self.params, self.opt, res, _points(lat), cfg.relocate_fraction, self.rng, score=score,
                          signs=signs)
        if (cfg.densify and cfg.densify_from <= step <= cfg.densify_until and step % cfg.densify_every == 0
                and step < main_steps):
            self._update_target()
            outside = len(self.params) - self._count_in_box()
            cap = int(math.ceil(cfg.growth * max(self.n_target, self.n_initial))) + outside
            densify_step(
                self.params, self.opt, self.ema, tau_grad=cfg.tau_grad, grad_quantile=cfg.grad_quantile,
                tau_size=self.tau_size, tau_prune=cfg.tau_prune, s_max=self.s_max, max_n=cap, rng=self.rng,
            )
            deficit = self.n_target - self._count_in_box()
            if cfg.spend_everywhere and deficit > 0:  # pruned ones come back where the error is
                res = -(diff.cpu().numpy() if torch.is_tensor(diff) else diff)
                score, smooth = residual_score(res, lat.shape, signed=cfg.signed_amplitudes)
                score = self._in_place_box(score, lat)
                spawn_step(self.params, self.opt, self.ema, res, score, _points(lat), deficit, self.rng,
                           signs=smooth if cfg.signed_amplitudes else None)
        if step == main_steps - 1:
            self._prune_to_budget()
        if cfg.solve_every and step > 0 and step % cfg.solve_every == 0:
            self._solve(self._lattice(), cfg.solve_iterations)

    @torch.no_grad()
    def _box_member(self) -> np.ndarray | None:
        """Per Gaussian, whether the voxel of its centre lies in ``place_box`` (None without one)."""
        box = self.cfg.place_box
        if box is None:
            return None
        v = np.floor(self.params.centers().double().cpu().numpy() + 0.5)
        return np.all((v >= np.asarray(box[0])) & (v < np.asarray(box[1])), axis=1)

    def _count_in_box(self) -> int:
        member = self._box_member()
        return len(self.params) if member is None else int(np.count_nonzero(member))

    def _in_place_box(self, values: np.ndarray, lat) -> np.ndarray:
        """``values`` (flat over ``lat``) with zeros at lattice voxels outside ``place_box``."""
        box = self.cfg.place_box
        if box is None:
            return values
        axes = [((o + s * np.arange(n)) >= lo) & ((o + s * np.arange(n)) < hi)
                for o, s, n, lo, hi in zip(lat.offset, lat.stride, lat.shape, box[0], box[1])]
        inside = axes[0][:, None, None] & axes[1][None, :, None] & axes[2][None, None, :]
        return np.where(inside.reshape(-1), values, 0)

    @torch.no_grad()
    def _solve(self, lat, iterations):
        """Closed-form amplitudes and field on ``lat`` (``solve.py``); kept only if the loss falls."""
        from .solve import FieldOperator, solve_linear

        p = self.params
        if len(p) == 0 and self.field is None:
            return
        t, wm = self._lattice_data(lat)
        scales = p.scales().double()
        rot = p.rotations().double()
        prec = (rot * (scales**-2)[:, None, :]) @ rot.transpose(1, 2)
        cov_diag = ((rot * rot) * (scales**2)[:, None, :]).sum(2)
        half = (3.0 * torch.sqrt(cov_diag)).cpu().numpy()
        fop = None if self.field is None else FieldOperator(self.field.shape, self.shape, lat)
        f0 = None if self.field is None else self.field.detach().double().cpu().numpy()
        amps, field, before, after = solve_linear(
            p.centers().double().cpu().numpy(), prec6_from_matrices(prec).cpu().numpy(), half,
            scales.cpu().numpy(), lat, t, wm, amps0=p.amplitudes().double().cpu().numpy(), field0=f0,
            field_op=fop, iterations=iterations, nonneg=not self.cfg.signed_amplitudes,
        )
        self.solve_log.append((before, after))
        if not after < before:
            return
        from ..gaussians_torch import _logit

        p.raw_amplitude.data[:] = torch.as_tensor(_logit(np.clip(np.abs(amps), 1e-6, 0.95)), dtype=p.raw_amplitude.dtype)
        p.sign[:] = torch.as_tensor(np.where(amps < 0, -1.0, 1.0), dtype=p.sign.dtype)
        st = self.opt.state.get(p.raw_amplitude)
        if st:
            st["exp_avg"].zero_()
        if field is not None:
            self.field.data[:] = torch.as_tensor(field.reshape(self.field.shape), dtype=self.field.dtype)
            st = self.opt.state.get(self.field)
            if st:
                st["exp_avg"].zero_()

    @torch.no_grad()
    def _update_target(self):
        """Aim ``n_target`` at the count the byte budget holds at the current model's measured
        bytes per Gaussian (the stored size depends on the parameters: entropy-coded), plus the
        margin; the exact fit comes at the final prune. Densification fills up to it."""
        tr, n = self.tr, len(self.params)
        if tr.budget_bytes is None or n < 16:
            return
        gv = self._model()
        base = budgets.file_size(gv.subset(np.zeros(0, np.int64)))
        per = (budgets.file_size(gv) - base) / n
        if per <= 0:
            return
        fit = (tr.budget_bytes - base) / per
        self.n_target = max(1, int(math.ceil(fit * (1.0 + self.cfg.budget_margin))))

    @torch.no_grad()
    def _prune_to_budget(self):
        """Keep the most massive ``n_target`` Gaussians, then as many as the byte budget holds exactly."""
        gv = self._model()
        order = np.argsort(-budgets.importance(gv), kind="stable")
        member = self._box_member()
        if member is not None:  # the count is of the box's Gaussians; the helpers around it all stay
            inner = order[member[order]]
            keep = np.sort(np.concatenate([inner[: self.n_target], np.flatnonzero(~member)]))
            if len(keep) < len(order):
                keep_t = torch.as_tensor(keep, dtype=torch.long)
                resize(self.params, self.opt, keep_t)
                self.ema.resize(keep_t, 0)
            return
        n = min(len(order), self.n_target)
        if self.tr.budget_bytes is not None:
            # a little under the budget, so the fine-tuned model still fits at the end (one size check)
            n = largest_fitting(gv, order, n, self.tr.budget_bytes * (1.0 - FIT_SLACK))
        if n == len(order):
            return
        keep = np.sort(order[:n])
        keep_t = torch.as_tensor(keep, dtype=torch.long)
        resize(self.params, self.opt, keep_t)
        self.ema.resize(keep_t, 0)

    @torch.no_grad()
    def _model(self) -> GaussianVolume:
        bg = None if self.field is None else self.field.detach().cpu().numpy().astype(np.float32)
        return self.params.to_volume(mapping=self.mapping, spacing=self.tr.spacing, background=bg)

    # -- run ----------------------------------------------------------------------------

    def run(self):
        # torch's own thread pool spin-waits against numba's on a small CPU; the
        # heavy work is in the numba kernels, so torch runs single-threaded here
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield from self._run()
        except Exception as e:
            from ..gpu import is_out_of_memory, out_of_memory_error

            if self.tr.device == "cuda" and is_out_of_memory(e):
                raise out_of_memory_error(
                    f"training {self.tr.n_budget} Gaussians on", self.tr._volume.shape,
                    "encode it in bricks (volmicro compress --bricks 256 ..., or compress_bricked), with a smaller "
                    "budget, or on the CPU (--device cpu)",
                ) from None
            raise
        finally:
            torch.set_num_threads(threads)

    def _run(self):
        tr, cfg = self.tr, self.cfg
        t0 = time.perf_counter()
        self._prepare()
        total = tr.total_steps
        self.main_steps = total - int(round(cfg.fine_tune_fraction * total)) if cfg.densify or cfg.relocate else total
        self.main_steps = max(1, self.main_steps)
        stopped = False
        loss = mse = float("nan")
        step = 0
        for step in range(total):
            if tr._stop.is_set():
                stopped = True
                break
            loss, mse, lat, diff = self._step(step)
            self._maintain(step, lat, diff)
            elapsed = time.perf_counter() - t0
            done_steps = step + 1
            eta = elapsed / done_steps * (total - done_steps)
            model = None
            if tr._want_model.is_set():
                tr._want_model.clear()
                model = self._model()
            psnr = 10 * math.log10(self.peak**2 / mse) if mse > 0 and self.peak > 0 else float("inf")
            tr.history.append({"step": done_steps, "loss": loss, "psnr": psnr, "n": len(self.params)})
            if done_steps < total:
                yield _snapshot(done_steps, total, loss, psnr, len(self.params), elapsed, eta, False, False, model)
        else:
            step = total
        if cfg.final_solve and not stopped:
            self._solve(Lattice.make(self.shape), cfg.solve_iterations)
        gv = self._model()
        member = self._box_member()
        if member is not None:  # the box's Gaussians only, at most n_target of them (most massive first)
            gv = budgets.prune_to_count(gv.subset(np.flatnonzero(member)), self.n_target)
        elif tr.budget_bytes is None:
            gv = budgets.prune_to_count(gv, self.n_target)
        else:  # fits already after the prune (one size evaluation), unless stopped before it
            order = np.argsort(-budgets.importance(gv), kind="stable")
            n = largest_fitting(gv, order, min(gv.n_gaussians, self.n_target), tr.budget_bytes)
            if n < gv.n_gaussians:
                gv = gv.subset(np.sort(order[:n]))
        self.result = gv
        elapsed = time.perf_counter() - t0
        psnr = 10 * math.log10(self.peak**2 / mse) if mse > 0 and self.peak > 0 else float("inf")
        yield _snapshot(step if stopped else total, total, loss, psnr, gv.n_gaussians, elapsed, 0.0, True, stopped, gv)


def _gpu_torch_device():
    from ..gpu import torch_device

    return torch_device()


#: the prune before fine-tuning fits this fraction under the byte budget (fine-tuning may grow the
#: entropy-coded size a little; the final ``fit_budget`` then needs one size evaluation)
FIT_SLACK = 0.002


def largest_fitting(gv: GaussianVolume, order: np.ndarray, n_max: int, budget: float, tol: float = 0.001) -> int:
    """About the largest count N <= ``n_max`` whose ``order[:N]`` subset of ``gv`` fits in ``budget`` bytes
    (within ``tol`` of the count, never over the budget).

    Stored size grows almost linearly with N (nested subsets), so each step interpolates between the
    bracket's ends, kept at least 1/8 of the bracket inside them: a few size evaluations instead of
    bisection's log2(n) (each one entropy-codes the model).
    """

    def size(n):
        return budgets.file_size(gv.subset(np.sort(order[:n])))

    hi, s_hi = n_max, size(n_max)
    if s_hi <= budget:
        return n_max
    lo, s_lo = 0, size(0)
    if s_lo > budget:
        return 0
    while hi - lo > max(1, int(tol * hi)):
        guess = lo + (budget - s_lo) * (hi - lo) / max(s_hi - s_lo, 1e-9)
        margin = (hi - lo) // 8
        n = int(min(max(round(guess), lo + max(1, margin)), hi - max(1, margin)))
        s_n = size(n)
        if s_n <= budget:
            lo, s_lo = n, s_n
        else:
            hi, s_hi = n, s_n
    return lo


def _box_slices(box, shape) -> tuple[slice, ...]:
    """``place_box`` ((lo), (hi)) as slices, clipped to ``shape``."""
    return tuple(slice(max(0, int(lo)), min(int(n), int(hi))) for lo, hi, n in zip(box[0], box[1], shape))


def _points(lat):
    """Flat lattice indices -> (k, 3) voxel coordinates."""

    def points(idx):
        zyx = np.stack(np.unravel_index(idx, lat.shape), 1).astype(np.float64)
        return np.asarray(lat.offset) + np.asarray(lat.stride) * zyx

    return points


def _snapshot(*args):
    from .trainer import Snapshot

    return Snapshot(*args)
