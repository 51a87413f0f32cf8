"""A COIN-style SIREN baseline: a small sine network overfitted to one volume.

COIN (Dupont et al., 2021) stores an image as the float16 weights of a SIREN
(Sitzmann et al., 2020) that maps a pixel's coordinates to its value. Here:
5 linear layers (3 -> w, three w -> w, w -> 1), sine activations with
omega_0 = 30, coordinates of each voxel normalised to [-1, 1] per axis (ZYX),
target intensities mapped linearly from [min, max] to [0, 1]. The width ``w``
is the largest whose float16 weights plus the stream header (shape, dtype,
mapping: 36 bytes) fit the byte budget ``target_bpp * voxels / 8``.

Training: Adam (lr 2e-4 as in COIN; the best of 2e-4, 5e-4 and 1e-3 in a
40 s trial on Purkinje), random mini-batches of 8192 voxels, on the CPU for a
wall-clock time budget (it stops after the step that crosses it; the process
CPU time is reported too). The score is measured on what the stream stores:
the weights rounded to float16, decoded over the whole volume.

Run alone: ``python benchmarks/siren.py --volumes purkinje --bpp 0.073 --seconds 120``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

N_LAYERS = 5
OMEGA_0 = 30.0
HEADER_BYTES = 36  # same header as codec_baselines.py: Z, Y, X, dtype, lo, hi


def n_params(width: int) -> int:
    """Weights + biases of 3 -> w -> w -> w -> w -> 1."""
    return (3 * width + width) + (N_LAYERS - 2) * (width * width + width) + (width + 1)


def width_for_budget(n_bytes: int) -> int:
    """The largest width whose float16 weights plus the header fit ``n_bytes``."""
    w = 1
    while HEADER_BYTES + 2 * n_params(w + 1) <= n_bytes:
        w += 1
    if HEADER_BYTES + 2 * n_params(w) > n_bytes:
        raise ValueError(f"a budget of {n_bytes} bytes cannot hold even a width-1 SIREN")
    return w


def _build(width: int, seed: int):
    import torch
    from torch import nn

    class Sine(nn.Module):
        def __init__(self, n_in, n_out, first):
            super().__init__()
            self.linear = nn.Linear(n_in, n_out)
            bound = 1.0 / n_in if first else math.sqrt(6.0 / n_in) / OMEGA_0
            with torch.no_grad():
                self.linear.weight.uniform_(-bound, bound)

        def forward(self, x):
            return torch.sin(OMEGA_0 * self.linear(x))

    torch.manual_seed(seed)
    layers = [Sine(3, width, True)] + [Sine(width, width, False) for _ in range(N_LAYERS - 2)]
    last = nn.Linear(width, 1)
    with torch.no_grad():
        bound = math.sqrt(6.0 / width) / OMEGA_0
        last.weight.uniform_(-bound, bound)
    return nn.Sequential(*layers, last)


def _coords(shape, idx):
    """(M,) flat voxel indices -> (M, 3) coordinates in [-1, 1] (ZYX)."""
    import torch

    zyx = np.unravel_index(idx, shape)
    scale = np.array([2.0 / max(n - 1, 1) for n in shape])
    pts = np.stack(zyx, axis=1).astype(np.float32) * scale.astype(np.float32) - 1.0
    return torch.from_numpy(pts)


def train(volume: np.ndarray, target_bpp: float, seconds: float, *, seed: int = 0, lr: float = 2e-4,
          batch: int = 1 << 13, progress=None):
    """Fit a SIREN within the byte budget of ``target_bpp`` for ``seconds`` of wall time.

    Returns ``(model, info)``: ``model`` with float16-rounded weights (what the
    stream stores), ``info`` with width, n_bytes, steps and train_seconds.
    """
    import torch

    n_vox = volume.size
    budget = int(target_bpp * n_vox / 8)
    width = width_for_budget(budget)
    model = _build(width, seed)
    lo, hi = float(volume.min()), float(volume.max())
    span = hi - lo if hi > lo else 1.0
    target = torch.from_numpy(((volume.astype(np.float64) - lo) / span).astype(np.float32).ravel())
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    cpu_start = time.process_time()
    step = 0
    loss = float("nan")
    while time.perf_counter() - start < seconds:
        idx = rng.integers(0, n_vox, size=batch)
        x = _coords(volume.shape, idx)
        y = target[torch.from_numpy(idx)]
        pred = model(x).squeeze(1)
        loss_t = torch.mean((pred - y) ** 2)
        opt.zero_grad(set_to_none=True)
        loss_t.backward()
        opt.step()
        step += 1
        loss = float(loss_t.detach())
        if progress and step % 200 == 0:
            progress(step, time.perf_counter() - start, loss)
    train_seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    with torch.no_grad():  # what the stream stores
        for p in model.parameters():
            p.copy_(p.to(torch.float16).to(torch.float32))
    n_bytes = HEADER_BYTES + 2 * n_params(width)
    info = {"width": width, "n_bytes": n_bytes, "steps": step, "train_seconds": train_seconds, "cpu_seconds": cpu_seconds,
            "final_batch_loss": loss, "lo": lo, "hi": hi}
    return model, info


def decode(model, shape, dtype, lo: float, hi: float, chunk: int = 1 << 18) -> np.ndarray:
    """Evaluate the network at every voxel; values in original units and ``dtype``."""
    import torch

    n_vox = int(np.prod(shape))
    out = np.empty(n_vox, np.float64)
    span = hi - lo if hi > lo else 1.0
    with torch.no_grad():
        for s in range(0, n_vox, chunk):
            idx = np.arange(s, min(s + chunk, n_vox))
            out[s: s + len(idx)] = model(_coords(shape, idx)).squeeze(1).numpy()
    values = lo + out.reshape(shape) * span
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def run(volume_name: str, volume: np.ndarray, target_bpp: float, seconds: float, *, seed: int = 0,
        lr: float = 2e-4, threads: int | None = 1, verbose: bool = False) -> _common.Result:
    """Train, decode (timed) and score with ``napari_volmicro.metrics``.

    ``threads``: torch intra-op threads (default 1: on this shared 2-core
    machine two threads made a training step 7x slower under load).
    """
    if threads:
        import torch

        torch.set_num_threads(threads)

    def progress(step, elapsed, loss):
        print(f"  siren step {step} {elapsed:.0f}s loss {loss:.3g}", file=sys.stderr, flush=True)

    model, info = train(volume, target_bpp, seconds, seed=seed, lr=lr, progress=progress if verbose else None)
    t0 = time.perf_counter()
    decoded = decode(model, volume.shape, volume.dtype, info["lo"], info["hi"])
    decode_s = time.perf_counter() - t0
    return _common.measure(
        volume_name, "siren", volume, decoded, info["n_bytes"], target_bpp=target_bpp,
        encode_s=info["train_seconds"], decode_s=decode_s,
        knob=f"width={info['width']}, {info['steps']} steps",
        extra={k: info[k] for k in ("width", "steps", "final_batch_loss", "cpu_seconds")},
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--volumes", nargs="+", default=["purkinje"], help=f"names ({', '.join(_common.VOLUMES)}) or paths")
    parser.add_argument("--bpp", nargs="+", type=float, default=[0.073])
    parser.add_argument("--seconds", type=float, default=120.0, help="training wall time per run (default 120)")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1; 0 = torch's choice)")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = []
    print(_common.TABLE_HEADER, flush=True)
    for vname in args.volumes:
        volume, _ = _common.load_volume(vname)
        for target in args.bpp:
            r = run(vname, volume, target, args.seconds, seed=args.seed, lr=args.lr, threads=args.threads,
                    verbose=args.verbose)
            results.append(r)
            print(_common.table_row(r), flush=True)
    if args.json:
        _common.print_json_line({"results": [r.as_json() for r in results]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
