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
    layer = vmg.residual_layer()
    if layer is not None:
        info.update(layer.describe())
        lines.insert(-1, "enhancement:   " + enhancement_text(info, format_bytes))
    print("\n".join(lines))
    if args.json:
        print_json(info)
    return 0


def enhancement_text(info: dict, format_bytes) -> str:
    """One line on the enhancement layer: its size, stages and, for an error-bounded file, the guarantee."""
    stages = " + ".join(info["residual_stages"])
    text = (f"{format_bytes(info['residual_bytes'])} in {info['residual_blocks']} blocks ({stages}); "
            "decode adds it unless --layers base")
    if info["max_error"] is not None:
        sigma = f", {info['max_error'] / info['noise_sigma']:.2g} x the estimated noise" if info["noise_sigma"] else ""
        within = ("exactly (lossless)" if info["max_error"] == 0
                  else f"within {info['max_error']:g} of the original")
        text += (f"\n               error-bounded: every voxel decodes {within}"
                 f"{sigma} (margin {info['max_error_delta']:.2g} for decoders whose Gaussian sum differs)")
    return text
