"""Exceptions raised for bad input.

Every error a user can cause (a bad file, a bad region, a bad volume) is a
``VolmicroError``; the command line prints its message and exits non-zero
without a traceback. Each message names what was wrong, where, and what was
expected.
"""

from __future__ import annotations


class VolmicroError(Exception):
    """Base class of every error napari-volmicro raises for bad input."""


class FormatError(VolmicroError, ValueError):
    """A ``.vmg`` file is not valid: wrong magic, truncated, inconsistent fields."""


class ChecksumError(FormatError):
    """A ``.vmg`` file's stored checksum does not match its bytes (corrupt or truncated)."""


class UnsupportedVersionError(FormatError):
    """A ``.vmg`` file was written by a newer format version than this reader knows."""


class RegionError(VolmicroError, ValueError):
    """A requested region is empty, malformed or outside the volume."""


class InputError(VolmicroError, ValueError):
    """An input volume or parameter is unusable (wrong dimensionality, dtype, NaN, ...)."""
