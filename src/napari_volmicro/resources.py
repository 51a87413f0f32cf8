"""Memory and disk this process may use, and refusing work that cannot fit, before it starts.

A file can claim any size (a 184-byte ``.vmg`` may declare 100000^3 voxels, a
138-byte TIFF 100000^2 pixels per page); whatever allocates or writes on the
strength of such a claim asks here first and refuses with an ``InputError``
that says what it would need, what is available and what to do instead.

- ``available_memory()``: bytes this process can still allocate: the
  kernel's ``MemAvailable``, lowered by a cgroup memory limit and by
  ``RLIMIT_AS`` (``resource.setrlimit``) when those are tighter.
- ``free_disk(path)``: free bytes on the file system holding ``path`` (or
  its nearest existing parent).
- ``check_memory(need, what, hint)`` / ``check_disk(need, path, what, hint)``.
- ``format_bytes(n)``: ``"1,045 bytes (1.0 kB)"``-style text (decimal units).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import InputError

#: Fraction of the available memory one job may plan to use (the rest: Python, libraries, the OS).
MEMORY_FRACTION = 0.8


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - no psutil, or it cannot read this system
        return None


def _cgroup_room() -> int | None:
    """Bytes left under a cgroup v2 memory limit (None without one)."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        return max(0, int(limit) - used)
    except (OSError, ValueError):
        return None


def _rlimit_room() -> int | None:
    """Bytes of address space left under ``RLIMIT_AS`` (None when unlimited)."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft == resource.RLIM_INFINITY:
            return None
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[0])
        return max(0, soft - pages * os.sysconf("SC_PAGE_SIZE"))
    except (ImportError, OSError, ValueError, AttributeError):
        return None


def available_memory() -> int:
    """Bytes this process can still allocate (see the module doc); a large number if unknown."""
    rooms = [r for r in (_meminfo_available(), _cgroup_room(), _rlimit_room()) if r is not None]
    return min(rooms) if rooms else 1 << 62


def free_disk(path) -> int:
    """Free bytes on the file system of ``path`` (or of its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return int(shutil.disk_usage(p).free)


def format_bytes(n: float) -> str:
    """``"1,045 bytes (1.0 kB)"``; decimal units (kB, MB, GB, TB, PB, EB); small sizes bytes only."""
    n = float(n)
    text = f"{n:,.0f} bytes" if n < 1e21 else f"{n:.3g} bytes"
    if n < 1000:
        return text
    for unit, size in (("EB", 1e18), ("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{text} ({n / size:.1f} {unit})"
    return text  # pragma: no cover


def short_bytes(n: float) -> str:
    """``"1.0 kB"`` (or ``"512 bytes"``) alone."""
    text = format_bytes(n)
    return text[text.index("(") + 1:-1] if "(" in text else text


def check_memory(need: int, what: str, hint: str = "") -> None:
    """Refuse (``InputError``) when ``need`` bytes exceed the memory this process may plan to use."""
    room = int(available_memory() * MEMORY_FRACTION)
    if need > room:
        raise InputError(
            f"{what} needs about {short_bytes(need)} of memory; {short_bytes(room)} is available"
            + (f"; {hint}" if hint else "")
        )


def check_disk(need: int, path, what: str, hint: str = "") -> None:
    """Refuse (``InputError``) when ``need`` bytes exceed the free space where ``path`` goes."""
    free = free_disk(path)
    if need > free:
        where = Path(path).absolute().parent
        raise InputError(
            f"{what} needs up to {short_bytes(need)} of disk; {short_bytes(free)} is free in {where}"
            + (f"; {hint}" if hint else "")
        )
