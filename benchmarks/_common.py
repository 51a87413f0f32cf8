"""Shared helpers for the benchmark scripts: volumes, measurement, tables.

Metrics are exactly ``napari_volmicro.metrics`` (psnr_full, psnr_fg, ssim3d;
bpp = 8 * every byte of the stream / voxels). Timings are wall-clock seconds
on whatever machine runs the script (noisy on a shared CPU).
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from napari_volmicro import metrics
from napari_volmicro.volume_io import check_volume, read_volume

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "benchmarks"
OUT_DIR = BENCH_DIR / "out"
DOCS_DIR = ROOT / "docs"

#: benchmark volumes by short name (ZYX, as stored)
VOLUMES = {
    "purkinje": ROOT / "src" / "napari_volmicro" / "_data" / "purkinje_flowdec.tif",
    "nuclei": ROOT / "tests" / "data" / "cellseg3d_nuclei.tif",
    "bead": ROOT / "tests" / "data" / "bead_flowdec.tif",
    "neuron": ROOT / "tests" / "data" / "rivuletpy_neuron.tif",
    # 18 Mvoxel raw two-photon tissue (26 x 1116 x 627 uint16): only in the shared data folder
    "cellfinder": ROOT.parent / "shared" / "data" / "cellfinder_stp_signal.tif",
}


def load_volume(name_or_path: str) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A benchmark volume by short name (``VOLUMES``) or by path, checked."""
    path = VOLUMES.get(name_or_path, Path(name_or_path))
    array, spacing = read_volume(path)
    return check_volume(array, source=str(path)), spacing


def load_sibling(name: str):
    """Import ``benchmarks/<name>.py`` as a module named ``volmicro_bench_<name>``.

    Benchmarks are scripts, not a package; this loads a sibling by file path so
    it works whatever the current directory is.
    """
    mod_name = f"volmicro_bench_{name}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, BENCH_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class Result:
    """One method on one volume at one rate."""

    volume: str
    method: str
    target_bpp: float | None
    n_bytes: int
    bpp: float
    psnr_full: float
    psnr_fg: float
    ssim3d: float
    encode_s: float
    decode_s: float
    decode_mvox_s: float
    knob: str = ""
    note: str = ""
    extra: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = None
        return out


def measure(
    volume_name: str, method: str, original: np.ndarray, decoded: np.ndarray, n_bytes: int, *,
    target_bpp: float | None, encode_s: float, decode_s: float, knob: str = "", note: str = "", extra=None,
) -> Result:
    """Score ``decoded`` against ``original`` with ``napari_volmicro.metrics``."""
    q = metrics.quality_report(original, decoded, file_bytes=n_bytes)
    return Result(
        volume=volume_name, method=method, target_bpp=target_bpp, n_bytes=int(n_bytes), bpp=q["bpp"],
        psnr_full=q["psnr_full"], psnr_fg=q["psnr_fg"], ssim3d=q["ssim3d"], encode_s=encode_s,
        decode_s=decode_s, decode_mvox_s=original.size / 1e6 / decode_s if decode_s > 0 else math.inf,
        knob=knob, note=note, extra=dict(extra or {}),
    )


TABLE_HEADER = (
    f"{'volume':<9} {'method':<16} {'target':>6} {'bpp':>7} {'bytes':>8} {'psnr_full':>9} {'psnr_fg':>8} "
    f"{'ssim3d':>7} {'enc s':>7} {'dec s':>7} {'MVox/s':>7}  knob / note"
)


def table_row(r: Result) -> str:
    target = f"{r.target_bpp:.3f}" if r.target_bpp is not None else "-"
    tail = "  ".join(x for x in (r.knob, r.note) if x)
    return (
        f"{r.volume:<9} {r.method:<16} {target:>6} {r.bpp:7.4f} {r.n_bytes:8d} {r.psnr_full:9.2f} "
        f"{r.psnr_fg:8.2f} {r.ssim3d:7.4f} {r.encode_s:7.2f} {r.decode_s:7.3f} {r.decode_mvox_s:7.1f}  {tail}"
    )


def markdown_table(results: list[Result]) -> str:
    lines = [
        "| volume | method | target bpp | bpp | psnr_full (dB) | psnr_fg (dB) | ssim3d | encode s | decode s | "
        "decode MVox/s | knob / note |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        target = f"{r.target_bpp:.3f}" if r.target_bpp is not None else "-"
        tail = "; ".join(x for x in (r.knob, r.note) if x)
        lines.append(
            f"| {r.volume} | {r.method} | {target} | {r.bpp:.4f} | {r.psnr_full:.2f} | {r.psnr_fg:.2f} | "
            f"{r.ssim3d:.4f} | {r.encode_s:.2f} | {r.decode_s:.3f} | {r.decode_mvox_s:.1f} | {tail} |"
        )
    return "\n".join(lines)


def print_json_line(obj) -> None:
    print(json.dumps(obj, sort_keys=True), flush=True)
