"""Command line: ``compress ... --bricks`` (run_bricked) and ``decode -o OUT.zarr``."""

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from napari_volmicro.cli import main
from napari_volmicro.cli.compress_bricked import add_bricked_arguments, run_bricked
from napari_volmicro.container import load, save
from napari_volmicro.intensity import IntensityMapping
from napari_volmicro.synthetic import random_volume

DATA = Path(__file__).parent / "data"


def _compress_parser():
    """The ``compress`` options run_bricked reads (engineer C's parser adds the same ones)."""
    p = argparse.ArgumentParser()
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--gaussians", type=int)
    p.add_argument("--bpp", type=float)
    p.add_argument("--ratio", type=float)
    p.add_argument("--steps", type=int)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-gate", action="store_true")
    p.add_argument("--json", action="store_true")
    add_bricked_arguments(p)
    return p


def test_run_bricked_from_the_command_line(tmp_path, capsys):
    import tifffile
    import zarr

    vol = tifffile.imread(DATA / "bead_flowdec.tif")[16:40, 8:40, 8:40]
    z = zarr.create_array(str(tmp_path / "in.zarr"), shape=vol.shape, chunks=(8, 8, 8), dtype=vol.dtype)
    z[:] = vol
    out = tmp_path / "out.vmg"
    args = _compress_parser().parse_args(
        [str(tmp_path / "in.zarr"), "-o", str(out), "--bricks", "24,16,32", "--halo", "4", "--workers", "1",
         "--memory-limit", "1GB", "--gaussians", "30", "--steps", "8", "--no-gate", "--json"]
    )
    assert run_bricked(args) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["bricks"] == 2 and report["n_gaussians"] == load(out).n_gaussians <= 30
    assert report["file_bytes"] == out.stat().st_size
    assert not (tmp_path / "out.vmg.parts").exists()


def test_brick_size_is_validated():
    with pytest.raises(SystemExit):
        _compress_parser().parse_args(["in.zarr", "-o", "o.vmg", "--bricks", "4"])
    args = _compress_parser().parse_args(["in.zarr", "-o", "o.vmg", "--bricks", "64,128,128"])
    assert args.bricks == (64, 128, 128)


def test_decode_to_zarr_command(tmp_path, capsys):
    gv = random_volume(shape=(20, 30, 40), n=60, seed=3, mapping=IntensityMapping(10.0, 200.0, np.uint8))
    path = save(gv, tmp_path / "m.vmg", brick_shape=(10, 16, 16))
    assert main(["decode", str(path), "-o", str(tmp_path / "m.zarr"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["shape"] == [20, 30, 40]
    from napari_volmicro.bricks import open_input

    assert np.array_equal(open_input(tmp_path / "m.zarr").read((slice(None),) * 3), load(path).decode())
    assert main(["decode", str(path), "-o", str(tmp_path / "r.zarr"), "--roi", "0:5,0:5,0:5"]) == 2
    assert "--roi writes" in capsys.readouterr().err
