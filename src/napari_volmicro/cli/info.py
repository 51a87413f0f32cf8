"""``volmicro info IN.vmg``: what a .vmg file holds, after checking every checksum."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "info",
        help="describe a .vmg file (shape, dtype, Gaussians, size) and verify its checksums",
        description="Print a .vmg file's header fields and sizes; every checksum is verified.",
    )
    p.add_argument("input", metavar="IN.vmg", help="compressed volume")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..container import VmgFile
    from . import print_json
    from ._checks import check_model_input
    from ._text import format_bytes, ratio_text

    check_model_input(args.input, command="info")
    vmg = VmgFile(args.input)
    vmg.verify()
    info = vmg.info
    info["checksums"] = "ok"
    z, y, x = info["shape"]
    sz, sy, sx = info["spacing"]
    bg = info["background_shape"]
    lines = [
        f"file:          {info['path']} ({format_bytes(info['file_bytes'])}, format version {info['format_version']})",
        f"shape (ZYX):   {z} x {y} x {x} voxels, {info['dtype']}",
        f"spacing (ZYX): {sz:g} x {sy:g} x {sx:g}",
        f"intensity:     original = {info['intensity_offset']:g} + {info['intensity_scale']:g} * model",
        f"gaussians:     {info['n_gaussians']:,} in {info['n_bricks']} brick{'s' if info['n_bricks'] != 1 else ''}",
        f"background:    {'none' if bg is None else ' x '.join(map(str, bg)) + ' grid'}",
        f"size:          {info['bpp']:.4f} bits per voxel, ratio {ratio_text(info['ratio'])} against raw {info['dtype']}",
        "checksums:     ok",
    ]
    print("\n".join(lines))
    if args.json:
        print_json(info)
    return 0
