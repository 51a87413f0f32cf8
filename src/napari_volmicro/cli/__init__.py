"""The ``volmicro`` command line.

Each subcommand lives in its own module under ``cli/`` and exposes
``register(subparsers)``, which adds a parser whose ``func(args) -> int`` runs it.
Errors a user can cause (``VolmicroError``, missing files) print one line on
stderr and exit with status 2; Ctrl-C exits with 130, SIGTERM with 143 (both
after removing temporary files). Warnings print as one line
``volmicro COMMAND: warning: ...`` (no source line). With ``--json`` a
subcommand prints one JSON object as its last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from importlib import import_module

from .. import __version__
from ..errors import VolmicroError

#: subcommand modules, in the order ``--help`` lists them
SUBCOMMANDS = ["compress", "decode", "evaluate", "info", "demo"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="volmicro",
        description="Compress 3D microscopy volumes into anisotropic Gaussians, and decode them.",
        epilog="examples:\n"
        "  volmicro compress stack.tif -o stack.vmg      (then: napari stack.vmg)\n"
        "  volmicro info stack.vmg\n"
        "  volmicro decode stack.vmg -o roi.tif --roi 0:50,100:228,100:228\n"
        "  volmicro evaluate stack.tif stack.vmg\n"
        "'volmicro COMMAND --help' explains each command and the quality numbers.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = import_module(f"napari_volmicro.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"napari_volmicro.cli.{name}":
                continue  # subcommand not implemented yet
            raise
        module.register(sub)
    return parser


#: options whose value may start with "-" (a region such as -10:5,...): "--roi X" is read as "--roi=X"
_DASH_VALUE_OPTIONS = ("--roi",)


def _join_dash_values(argv: list[str]) -> list[str]:
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a in _DASH_VALUE_OPTIONS and i + 1 < len(argv) and argv[i + 1].startswith("-") and ":" in argv[i + 1]:
            out.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def warn(command: str, text: str) -> None:
    """One warning line on stderr: ``volmicro COMMAND: warning: TEXT``."""
    print(f"volmicro {command}: warning: {text}", file=sys.stderr, flush=True)


def print_json(obj) -> None:
    """Print ``obj`` as one JSON line (the last line of a ``--json`` run)."""
    print(json.dumps(obj, sort_keys=True), flush=True)


def main(argv=None) -> int:
    from ._interrupt import Terminated, terminate_cleanly

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(_join_dash_values(argv))
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    command = args.command

    def show(message, category, filename, lineno, file=None, line=None):
        warn(command, str(message))

    try:
        with warnings.catch_warnings(), terminate_cleanly():
            warnings.showwarning = show
            return int(args.func(args) or 0)
    except VolmicroError as exc:
        print(f"volmicro {command}: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"volmicro {command}: error: no such file: {exc.filename or exc}", file=sys.stderr)
        return 2
    except IsADirectoryError as exc:
        print(f"volmicro {command}: error: is a directory, expected a file: {exc.filename}", file=sys.stderr)
        return 2
    except PermissionError as exc:
        print(f"volmicro {command}: error: permission denied: {exc.filename or exc}", file=sys.stderr)
        return 2
    except MemoryError as exc:
        print(f"volmicro {command}: error: out of memory ({exc or 'allocation failed'}); try a smaller "
              "region (--roi) or brick-by-brick work (--bricks)", file=sys.stderr)
        return 2
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"volmicro {command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except Terminated:
        print(f"volmicro {command}: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"volmicro {command}: interrupted", file=sys.stderr)
        return 130


def entry_point() -> None:  # console script
    sys.exit(main())
