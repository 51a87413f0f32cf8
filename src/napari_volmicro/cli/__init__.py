"""The ``volmicro`` command line.

Each subcommand lives in its own module under ``cli/`` and exposes
``register(subparsers)``, which adds a parser whose ``func(args) -> int`` runs it.
Errors a user can cause (``VolmicroError``, missing files) print one line on
stderr and exit with status 2; Ctrl-C exits with 130. With ``--json`` a
subcommand prints one JSON object as its last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib import import_module

from .. import __version__
from ..errors import VolmicroError

#: subcommand modules, in the order ``--help`` lists them
SUBCOMMANDS = ["compress", "decode", "evaluate", "info", "demo"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="volmicro",
        description="Compress 3D microscopy volumes into anisotropic Gaussians, and decode them.",
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


def print_json(obj) -> None:
    """Print ``obj`` as one JSON line (the last line of a ``--json`` run)."""
    print(json.dumps(obj, sort_keys=True), flush=True)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except VolmicroError as exc:
        print(f"volmicro {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"volmicro {args.command}: error: no such file: {exc.filename or exc}", file=sys.stderr)
        return 2
    except IsADirectoryError as exc:
        print(f"volmicro {args.command}: error: is a directory, expected a file: {exc.filename}", file=sys.stderr)
        return 2
    except PermissionError as exc:
        print(f"volmicro {args.command}: error: permission denied: {exc.filename or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"volmicro {args.command}: interrupted", file=sys.stderr)
        return 130


def entry_point() -> None:  # console script
    sys.exit(main())
