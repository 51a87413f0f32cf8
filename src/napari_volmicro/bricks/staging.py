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

The directory may hold other people's files, or be planted. Only a
directory whose ``manifest.json`` is this package's (its ``writer`` marker,
or the version/hash/settings fields of older runs) is used, only the files
this package writes there are ever deleted (``manifest.json``,
``stats.npz``, ``brick-NNNNNNNN.npz`` and their temporary files), a
directory holding anything else is refused with the names found, and a
symbolic link is never followed to write or delete. Staged parts are not
trusted on ``--resume``: each is checked as the reader would check it (its
payload written as a one-brick ``.vmg`` and verified by
``container.VmgFile``; its brick index, boxes and background nodes against
the brick layout); a damaged part is deleted and its brick encoded again.
The assembled file is verified the same way before it replaces the output.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import FormatError, VolmicroError

MANIFEST = "manifest.json"
#: bump when the part layout changes (old parts are then refused on resume)
PART_VERSION = 2  # 2: parts hold .vmg format-2 payloads
#: the manifest's marker: this directory was written by napari-volmicro's bricked encoder
WRITER = "napari-volmicro bricked encode"
#: names of the files this package writes in a parts directory (and their atomic-write temporaries)
_OWN_FILES = re.compile(
    r"^(manifest\.json|stats\.npz|brick-\d{8}\.npz|\.check-\d+\.vmg"
    r"|\.(manifest\.json|stats\.npz|brick-\d{8}\.npz|check-\d+\.vmg)\.[^/]*\.tmp)$"
)


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


def _check_member_sizes(path: Path) -> None:
    """``VolmicroError`` if an array in the (uncompressed ``np.savez``) part claims more bytes than
    the whole file has: numpy would allocate the claimed size before reading."""
    size = path.stat().st_size
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            with zf.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = reader(fh)
            if dtype.hasobject or int(np.prod(shape, dtype=np.float64)) * dtype.itemsize > size:
                raise VolmicroError(f"{path}: damaged brick part ({info.filename} claims more data than the file holds)")


def _is_own_manifest(manifest: Path) -> bool:
    """Whether ``manifest`` is a manifest this package wrote (``WRITER`` marker, or the fields of older runs)."""
    if manifest.is_symlink() or not manifest.is_file():
        return False
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    if not isinstance(data, dict):
        return False
    if data.get("writer") == WRITER:
        return True
    h = data.get("hash")
    return (isinstance(data.get("version"), int) and isinstance(h, str) and re.fullmatch(r"[0-9a-f]{64}", h)
            is not None and isinstance(data.get("settings"), dict))


class Staging:
    """The ``OUT.vmg.parts`` directory of one bricked encode."""

    def __init__(self, output, settings: dict, *, resume: bool = False):
        self.output = Path(output)
        self.dir = self.output.with_name(self.output.name + ".parts")
        self.settings = settings
        self.hash = settings_hash(settings)
        manifest = self.dir / MANIFEST
        if self.dir.is_symlink():
            raise VolmicroError(
                f"{self.dir} is a symbolic link; napari-volmicro never writes through or deletes a link: "
                "remove it or choose another output name"
            )
        self.created = not self.dir.exists()
        if not self.created:
            if not self.dir.is_dir():
                raise VolmicroError(f"{self.dir} exists and is not a directory; move it away or choose another "
                                    "output name")
            own = _is_own_manifest(manifest)
            if not own and any(self.dir.iterdir()):
                raise VolmicroError(
                    f"{self.dir} exists and is not a parts directory of napari-volmicro (no manifest of ours); "
                    "move it away or choose another output name"
                )
            foreign = self._foreign_files()
            if foreign:
                shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
                raise VolmicroError(
                    f"{self.dir} holds files napari-volmicro did not write ({shown}); it deletes only its own "
                    "files: move those away or choose another output name"
                )
            if not resume:
                self._remove_own_files()
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
            body = json.dumps({"writer": WRITER, "version": PART_VERSION, "hash": self.hash,
                               "settings": self.settings}, indent=1, sort_keys=True, default=str).encode()
            _write_atomic(manifest, lambda fh: fh.write(body))

    def _foreign_files(self) -> list[str]:
        """Entries of the directory this package does not write (sub-directories and links included)."""
        out = []
        for p in sorted(self.dir.iterdir()):
            if p.is_symlink() or not p.is_file() or not _OWN_FILES.match(p.name):
                out.append(p.name + ("/" if p.is_dir() and not p.is_symlink() else ""))
        return out

    def _remove_own_files(self) -> None:
        for p in self.dir.iterdir():
            if _OWN_FILES.match(p.name) and (p.is_symlink() or p.is_file()):
                p.unlink(missing_ok=True)  # a link itself, never its target

    def discard_if_unused(self) -> None:
        """Remove the directory if this run created it and finished nothing there (a failed start)."""
        if self.created and not any(self.dir.glob("brick-*.npz")):
            self.remove()

    def part_path(self, index: int) -> Path:
        return self.dir / f"brick-{index:08d}.npz"

    def finished(self, grid=None, node_owner=None) -> set[int]:
        """Indices of bricks whose part file exists and reads back intact.

        grid (a ``BrickGrid``), node_owner (the brick owning each global background node): also
        check each part as the reader would (``check_part``). A damaged part is deleted (its brick
        is encoded again) and reported on stderr.
        """
        import sys

        done = set()
        for p in sorted(self.dir.glob("brick-*.npz")):
            try:
                index = int(p.stem.split("-")[1])
                part = self.read(index)
                if grid is not None:
                    self.check_part(part, grid, node_owner)
            except (ValueError, OSError, VolmicroError) as exc:
                print(f"--resume: {p.name} is damaged and is encoded again ({exc})", file=sys.stderr)
                p.unlink(missing_ok=True)
                continue
            done.add(index)
        return done

    def check_part(self, part: BrickPart, grid, node_owner=None) -> None:
        """``VolmicroError`` unless ``part`` is a valid brick ``part.index`` of ``grid``: its payload
        reads back through ``container.VmgFile`` as a one-brick file (codes, boxes, reach box, CRCs,
        as any reader checks them) and it holds exactly the background nodes it owns, with finite values."""
        from ..container import VmgFile, brick_entry, write_bricks
        from ..intensity import IntensityMapping

        where = f"{self.part_path(part.index).name}"
        if not 0 <= part.index < len(grid):
            raise VolmicroError(f"{where}: brick index {part.index} outside the layout's {len(grid)} bricks")
        b = grid[part.index]
        for name in ("pos_lo", "pos_hi", "reach_lo", "reach_hi"):
            v = getattr(part, name)
            if v.shape != (3,) or not np.isfinite(v).all():
                raise VolmicroError(f"{where}: {name} is not three finite numbers")
        nodes, values = part.node_index, part.node_values
        if nodes.ndim != 1 or values.shape != nodes.shape or not np.isfinite(values).all():
            raise VolmicroError(f"{where}: background nodes and values do not match or are not finite")
        if node_owner is not None:
            mine = np.flatnonzero(np.asarray(node_owner) == part.index)
            if not np.array_equal(np.sort(nodes), mine) or len(np.unique(nodes)) != len(nodes):
                raise VolmicroError(f"{where}: holds background nodes of other bricks, or misses its own")
        tmp = self.dir / f".check-{os.getpid()}.vmg"
        try:
            entry, data = brick_entry(b.core_lo, b.core_hi, part.planes, part.pos_lo, part.pos_hi,
                                      part.reach_lo, part.reach_hi)
            write_bricks(tmp, shape=grid.shape, spacing=(1.0, 1.0, 1.0), mapping=IntensityMapping(),
                         bricks=[entry], payloads=[data])
            VmgFile(tmp).verify()
        except (FormatError, VolmicroError, ValueError, IndexError, OverflowError) as exc:
            reason = str(exc).replace(f"{tmp}: ", "").replace(str(tmp), "the brick")
            raise VolmicroError(f"{where}: does not read back as a brick ({reason})") from None
        finally:
            tmp.unlink(missing_ok=True)

    def write_verified(self, output, write) -> int:
        """Call ``write(path)`` to write the assembled ``.vmg`` to a temporary file beside ``output``,
        verify it with ``container.VmgFile`` (every brick, as a reader would), then rename it over
        ``output``; returns its size. A file that fails is removed (``output`` stays as it was) and
        the brick it names is deleted from the parts, so ``--resume`` encodes it again."""
        from ..atomic import atomic_path
        from ..container import VmgFile

        output = Path(output)
        with atomic_path(output) as tmp:
            write(tmp)
            try:
                VmgFile(tmp).verify()
            except FormatError as exc:
                m = re.search(r"brick (\d+)", str(exc))
                if m:
                    self.part_path(int(m.group(1))).unlink(missing_ok=True)
                raise VolmicroError(
                    f"{output}: the file assembled from {self.dir} failed verification "
                    f"({str(exc).replace(str(tmp), 'it')}); nothing was written; run again with --resume to "
                    "encode the damaged brick again"
                ) from None
            return os.path.getsize(tmp)

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
            _check_member_sizes(path)
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (ValueError, KeyError, zlib.error, EOFError, zipfile.BadZipFile, OSError) as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            raise VolmicroError(f"{path}: damaged brick part ({exc})") from None
        crc = 0
        try:
            for k in sorted(set(arrays) - {"crc"}):
                crc = zlib.crc32(arrays[k].tobytes(), crc)
            ok = int(arrays["crc"][0]) == crc and int(arrays["index"][0]) == index
            planes = arrays["planes"]
            ok = ok and planes.dtype == np.uint16 and planes.ndim == 2 and planes.shape[0] == 11
        except (KeyError, IndexError, ValueError, TypeError):
            ok = False
        if not ok:
            raise VolmicroError(f"{path}: damaged brick part (checksum or fields do not match)")
        return BrickPart(index, planes, arrays["pos_lo"], arrays["pos_hi"], arrays["reach_lo"], arrays["reach_hi"],
                         arrays["node_index"], arrays["node_values"], arrays["stats"])

    def remove(self) -> None:
        """Delete this package's files and then the directory, if nothing else is left in it."""
        if self.dir.is_symlink() or not self.dir.is_dir():
            return
        self._remove_own_files()
        try:
            self.dir.rmdir()
        except OSError:  # someone else's files are there: they stay
            pass
