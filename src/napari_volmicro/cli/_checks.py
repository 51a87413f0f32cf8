"""Checks the command line runs before any work: output paths, and inputs that are not what they seem.

Each raises ``InputError`` naming the user's path (never a temporary name) and
saying what to do. Running them first means a missing directory, a directory
given as the output, a read-only folder or a swapped argument costs nothing,
instead of failing after minutes of training.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError

#: first bytes of files that are volumes, not models
_VOLUME_MAGIC = {
    b"II*\x00": "a TIFF volume",
    b"MM\x00*": "a TIFF volume",
    b"II+\x00": "a BigTIFF volume",
    b"MM\x00+": "a BigTIFF volume",
    b"\x93NUMPY": "a NumPy (.npy) volume",
    b"PK\x03\x04": "a zip archive (.npz?)",
}


def _is_zarr_dir(path: Path) -> bool:
    return path.is_dir() and any((path / m).exists() for m in (".zgroup", ".zarray", "zarr.json", ".zattrs"))


def check_output(path, *, option: str = "-o", suffixes: tuple[str, ...] = (".vmg",), directory: bool = False,
                 overwrite: bool = True) -> Path:
    """Refuse an output path that cannot be written, before any work.

    suffixes: accepted extensions (lower case). directory: the output is a directory store
    (OME-Zarr). overwrite: whether an existing output may be replaced (when False, an
    existing one is refused with a hint to ``--overwrite``).
    """
    out = Path(path)
    label = f"{option} {out}"
    if out.suffix.lower() not in suffixes:
        raise InputError(f"{label}: expected a name ending in {', '.join(suffixes)}")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.exists():
        raise InputError(f"{label}: the directory {parent} does not exist; create it first")
    if not parent.is_dir():
        raise InputError(f"{label}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{label}: the directory {parent} is not writable")
    if out.is_symlink() and not out.exists():
        raise InputError(f"{label}: is a broken symbolic link")
    if out.exists():
        if directory:
            if not out.is_dir():
                raise InputError(f"{label}: exists and is a file, not a Zarr directory; choose another name")
            if not _is_zarr_dir(out):
                raise InputError(f"{label}: exists and is a directory that is not a Zarr store; "
                                 "it is never replaced; choose another name")
        elif out.is_dir():
            raise InputError(f"{label}: is a directory; give a file name, e.g. {out / ('out' + suffixes[0])}")
        if not overwrite:
            raise InputError(f"{label}: exists; add --overwrite to replace it")
        if not directory and not os.access(out, os.W_OK) and not os.access(parent, os.W_OK):
            raise InputError(f"{label}: exists and is not writable")
    return out


def check_model_input(path, *, command: str) -> Path:
    """A ``.vmg`` input that exists and is not a volume handed over by mistake."""
    p = Path(path)
    if p.is_dir():
        if _is_zarr_dir(p) or p.suffix.lower() == ".zarr":
            raise InputError(f"{p}: is a Zarr volume, not a .vmg model; compress it first: "
                             f"volmicro compress {p} -o {p.with_suffix('.vmg').name} --bricks 256")
        raise InputError(f"{p}: is a directory, expected a .vmg file")
    if not p.exists():
        return p  # the reader says "no such file"
    try:
        with open(p, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return p
    for magic, what in _VOLUME_MAGIC.items():
        if head.startswith(magic):
            hint = f"compress it first: volmicro compress {p} -o {p.with_suffix('.vmg').name}"
            if command == "evaluate":
                hint = "the model comes second: volmicro evaluate ORIGINAL MODEL.vmg"
            raise InputError(f"{p}: is {what}, not a .vmg model; {hint}")
    return p


def check_volume_input(path, *, command: str) -> Path:
    """A volume input that is not a ``.vmg`` model handed over by mistake."""
    p = Path(path)
    looks_vmg = p.suffix.lower() == ".vmg"
    if not looks_vmg and p.is_file():
        try:
            with open(p, "rb") as fh:
                looks_vmg = fh.read(4) == b"VMG\x00"
        except OSError:
            pass
    if looks_vmg:
        if command == "evaluate":
            raise InputError(f"{p}: is a .vmg model, expected the original volume first; "
                             "the order is: volmicro evaluate ORIGINAL MODEL.vmg")
        raise InputError(f"{p}: is a .vmg model, not a volume; to get its volume back: "
                         f"volmicro decode {p} -o {p.with_suffix('.tif').name}")
    return p
