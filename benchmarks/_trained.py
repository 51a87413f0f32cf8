"""Models the encoder trained from real volumes, cached under ``benchmarks/out/models/``.

Decode benchmarks measure what users open: models the default preset trained
from the volumes in ``/work/shared/data`` (``--data`` or ``VOLMICRO_DATA``
elsewhere), saved as ``.vmg`` files (so they are the quantised model the file
holds). Each model is trained once, in its own subprocess (bounded memory),
and cached under a name made of the volume, the budget and a hash of the
encoder's source (``encode/*.py`` of the imported package plus its version),
so a rerun with the same encoder reuses it and a changed encoder retrains.
``stale_ok`` reuses the newest model of a case trained by another encoder
version (and says so) instead of retraining.

    python benchmarks/_trained.py --list                 # cases, cached files, keys
    nice python benchmarks/_trained.py --train all       # train what is missing
    nice python benchmarks/_trained.py --train tiled20k  # one case

Cases: ``<volume>@<bpp>`` for the five volumes at 0.073 and 0.3 bpp,
``tiled20k``: the Purkinje stack mirror-tiled to 100 x 647 x 813 (the size of
the paper's volume, not new data) at 20,000 Gaussians, and ``sample``: the
model shipped as napari sample data (not trained here).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out" / "models"
DATA = Path(os.environ.get("VOLMICRO_DATA", ROOT.parent / "shared" / "data"))

VOLUMES = ("purkinje_flowdec", "bead_flowdec", "cellseg3d_nuclei", "rivuletpy_neuron", "cellfinder_stp_signal")
RATES = (0.073, 0.3)
TILED_SHAPE = (100, 647, 813)
TILED_GAUSSIANS = 20_000
#: the model shipped as napari sample data (2,364 Gaussians of the Purkinje stack)
SAMPLE = ROOT / "src" / "napari_volmicro" / "_data" / "purkinje_sample.vmg"


@dataclass(frozen=True)
class Case:
    """One training: ``volume`` (file stem in the data folder), budget (``bpp`` or ``gaussians``),
    optional mirror-tiling to ``shape``."""

    name: str
    volume: str
    bpp: float | None = None
    gaussians: int | None = None
    shape: tuple[int, int, int] | None = None
    fixed: Path | None = None  # a model shipped with the package (not trained here)

    def original(self, data: Path = DATA):
        """The volume the model was trained on (tiled if the case says so)."""
        import tifffile

        v = tifffile.imread(data / f"{self.volume}.tif")
        if self.shape is not None:
            v = mirror_tile(v, self.shape)
        return v


def cases() -> dict[str, Case]:
    out = {}
    for vol in VOLUMES:
        for bpp in RATES:
            name = f"{vol}@{bpp}"
            out[name] = Case(name, vol, bpp=bpp)
    out["tiled20k"] = Case("tiled20k", "purkinje_flowdec", gaussians=TILED_GAUSSIANS, shape=TILED_SHAPE)
    out["sample"] = Case("sample", "purkinje_flowdec", fixed=SAMPLE)
    return out


def mirror_tile(v, shape):
    """``v`` mirrored and repeated to ``shape`` (ZYX), as ``benchmarks/encode.py`` builds its scale volumes."""
    from _common import load_sibling

    return load_sibling("encode").mirror_tile(v, shape)


def encoder_key() -> str:
    """Hash of the imported package's encoder source and version (10 hex digits)."""
    import napari_volmicro
    from napari_volmicro import encode

    h = hashlib.sha256(napari_volmicro.__version__.encode())
    for path in sorted(Path(encode.__file__).parent.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:10]


def _stem(case: Case) -> str:
    return case.name.replace("@", "_")


def cached_path(case: Case, key: str | None = None) -> Path:
    return OUT / f"{_stem(case)}__{key or encoder_key()}.vmg"


def find(case: Case, stale_ok: bool = False) -> Path | None:
    """The cached model of ``case`` for this encoder (or, with ``stale_ok``, the newest of any)."""
    path = cached_path(case)
    if path.exists():
        return path
    if stale_ok:
        others = sorted(OUT.glob(f"{_stem(case)}__*.vmg"), key=lambda p: p.stat().st_mtime)
        if others:
            return others[-1]
    return None


def model_path(case: Case | str, *, stale_ok: bool = False, train: bool = True) -> Path:
    """Path of ``case``'s cached model, training it (in a subprocess) if missing and ``train``."""
    if isinstance(case, str):
        case = cases()[case]
    if case.fixed is not None:
        return case.fixed
    path = find(case, stale_ok)
    if path is not None:
        if path != cached_path(case):
            print(f"note: {case.name}: using {path.name}, trained by another encoder version", file=sys.stderr)
        return path
    if not train:
        raise FileNotFoundError(f"no cached model for {case.name}; run: nice python benchmarks/_trained.py --train "
                                f"{case.name}")
    print(f"training {case.name} (cached as {cached_path(case).name}) ...", file=sys.stderr, flush=True)
    r = subprocess.run([sys.executable, __file__, "--train-one", case.name], check=False)
    if r.returncode != 0:
        raise RuntimeError(f"training {case.name} failed (exit {r.returncode})")
    return cached_path(case)


def info(path: Path) -> dict:
    """The training record saved beside a cached model (empty if none)."""
    side = path.with_suffix(".json")
    return json.loads(side.read_text()) if side.exists() else {}


def _train_one(case: Case) -> None:
    from napari_volmicro.encode import Trainer

    v = case.original()
    tr = Trainer(v, bpp=case.bpp, gaussians=case.gaussians, preset="default", seed=0)
    t0 = time.perf_counter()
    snap = None
    for snap in tr.run():  # noqa: B007
        pass
    seconds = time.perf_counter() - t0
    path = cached_path(case)
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part.vmg")
    tr.result.save(tmp)
    os.replace(tmp, path)
    path.with_suffix(".json").write_text(json.dumps({
        "case": case.name, "volume": case.volume, "bpp": case.bpp, "gaussians": case.gaussians,
        "shape": list(v.shape), "n_gaussians": tr.result.n_gaussians, "steps": snap.step if snap else 0,
        "encode_s": seconds, "encoder_key": encoder_key(), "file_bytes": path.stat().st_size,
    }, indent=1))
    print(f"{case.name}: {tr.result.n_gaussians} Gaussians, {seconds:.0f} s -> {path}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--list", action="store_true", help="cases and their cached models")
    ap.add_argument("--train", nargs="+", metavar="CASE", help="train these cases if missing ('all': every case)")
    ap.add_argument("--train-one", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    all_cases = cases()
    if a.train_one:
        _train_one(all_cases[a.train_one])
        return 0
    if a.train:
        names = [n for n, c in all_cases.items() if c.fixed is None] if a.train == ["all"] else a.train
        for name in names:
            if name not in all_cases:
                ap.error(f"unknown case {name!r}; one of {', '.join(all_cases)}")
        for name in names:
            model_path(name)
        return 0
    key = encoder_key()
    print(f"encoder key {key}; models in {OUT}")
    for name, case in all_cases.items():
        p = case.fixed or find(case, stale_ok=True)
        state = ("missing" if p is None else "shipped: " + p.name if case.fixed else
                 p.name if p == cached_path(case, key) else f"stale: {p.name}")
        print(f"  {name:32s} {state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
