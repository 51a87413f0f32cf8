"""Incremental writing of a bricked encode: one file per finished brick, then one ``.vmg``.

The ``.vmg`` layout puts its tables before the payloads, so a file cannot
grow brick by brick. Instead every finished brick is written, atomically, to
``OUT.vmg.parts/brick-<index>.npz`` (plain numeric arrays, loaded with
``allow_pickle=False``: exactly the stored payload planes, boxes and the
brick's background samples), next to a ``manifest.json`` holding a hash of
everything that determines the result (input shape, dtype, chunks' source,
brick layout, budget, preset, seed). A crash loses only unfinished bricks;
``resume=True`` reuses the finished ones after checking the manifest, and the
final file is assembled from the parts atomically, so a resumed run writes
the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import VolmicroError

MANIFEST = "manifest.json"
#: bump when the part layout changes (old parts are then refused on resume)
PART_VERSION = 2  # 2: parts hold .vmg format-2 payloads


@dataclass(frozen=True)
class BrickPart:
    """A finished brick, in the global model's units.

    planes: (11, count) uint16 payload planes (container codec); pos_lo/pos_hi, reach_lo/reach_hi:
    float32 (3,) boxes (reach all zero when empty); node_index: int64 (K,) global background nodes
    this brick owns, node_values: float64 (K,) their values (model units); stats: float64 extras
    (seconds, Gaussians before the core cut, local PSNR estimate).
    """

    index: int
    planes: np.ndarray
    pos_lo: np.ndarray
    pos_hi: np.ndarray
    reach_lo: np.ndarray
    reach_hi: np.ndarray
    node_index: np.ndarray
    node_values: np.ndarray
    stats: np.ndarray

    @property
    def count(self) -> int:
        return int(self.planes.shape[1])


def settings_hash(settings: dict) -> str:
    """SHA-256 of the settings as canonical JSON."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _write_atomic(path: Path, write) -> None:
    from ..atomic import write_atomic

    write_atomic(path, write)


class Staging:
    """The ``OUT.vmg.parts`` directory of one bricked encode."""

    def __init__(self, output, settings: dict, *, resume: bool = False):
        self.output = Path(output)
        self.dir = self.output.with_name(self.output.name + ".parts")
        self.settings = settings
        self.hash = settings_hash(settings)
        manifest = self.dir / MANIFEST
        if self.dir.exists():
            if not manifest.exists() and any(self.dir.iterdir()):
                raise VolmicroError(
                    f"{self.dir} exists and is not a parts directory of napari-volmicro (no {MANIFEST}); "
                    "move it away or choose another output name"
                )
            if not resume:
                shutil.rmtree(self.dir)
            else:
                try:
                    old = json.loads(manifest.read_text())
                except (OSError, ValueError):
                    old = None
                if not isinstance(old, dict) or old.get("hash") != self.hash or old.get("version") != PART_VERSION:
                    raise VolmicroError(
                        f"--resume: {self.dir} holds parts of a different encode (input, brick layout or "
                        "parameters differ, or its manifest is missing); run without --resume to start over"
                    )
        self.dir.mkdir(parents=True, exist_ok=True)
        if not manifest.exists():
            body = json.dumps({"version": PART_VERSION, "hash": self.hash, "settings": self.settings},
                              indent=1, sort_keys=True, default=str).encode()
            _write_atomic(manifest, lambda fh: fh.write(body))

    def part_path(self, index: int) -> Path:
        return self.dir / f"brick-{index:08d}.npz"

    def finished(self) -> set[int]:
        """Indices of bricks whose part file exists and reads back intact."""
        done = set()
        for p in self.dir.glob("brick-*.npz"):
            try:
                index = int(p.stem.split("-")[1])
                self.read(index)
            except (ValueError, OSError, VolmicroError):
                p.unlink(missing_ok=True)  # a damaged part is re-encoded
                continue
            done.add(index)
        return done

    def write(self, part: BrickPart) -> Path:
        arrays = {
            "index": np.asarray([part.index], np.int64),
            "planes": np.ascontiguousarray(part.planes, np.uint16),
            "pos_lo": np.asarray(part.pos_lo, np.float32), "pos_hi": np.asarray(part.pos_hi, np.float32),
            "reach_lo": np.asarray(part.reach_lo, np.float32), "reach_hi": np.asarray(part.reach_hi, np.float32),
            "node_index": np.asarray(part.node_index, np.int64),
            "node_values": np.asarray(part.node_values, np.float64),
            "stats": np.asarray(part.stats, np.float64),
        }
        crc = 0
        for k in sorted(arrays):
            crc = zlib.crc32(arrays[k].tobytes(), crc)
        arrays["crc"] = np.asarray([crc], np.uint32)
        path = self.part_path(part.index)
        _write_atomic(path, lambda fh: np.savez(fh, **arrays))
        return path

    def read(self, index: int) -> BrickPart:
        path = self.part_path(index)
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (ValueError, KeyError, zlib.error, EOFError, zipfile.BadZipFile) as exc:
            raise VolmicroError(f"{path}: damaged brick part ({exc})") from None
        crc = 0
        try:
            for k in sorted(set(arrays) - {"crc"}):
                crc = zlib.crc32(arrays[k].tobytes(), crc)
            ok = int(arrays["crc"][0]) == crc and int(arrays["index"][0]) == index
            planes = arrays["planes"]
            ok = ok and planes.dtype == np.uint16 and planes.ndim == 2 and planes.shape[0] == 11
        except (KeyError, IndexError):
            ok = False
        if not ok:
            raise VolmicroError(f"{path}: damaged brick part (checksum or fields do not match)")
        return BrickPart(index, planes, arrays["pos_lo"], arrays["pos_hi"], arrays["reach_lo"], arrays["reach_hi"],
                         arrays["node_index"], arrays["node_values"], arrays["stats"])

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
