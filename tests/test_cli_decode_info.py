"""``volmicro decode`` and ``volmicro info``: outputs, JSON lines and clean errors."""

import json
import struct
import subprocess
import sys

import numpy as np
import pytest

from napari_volmicro import container
from napari_volmicro.cli import main
from napari_volmicro.evaluate import DEFAULT_K
from napari_volmicro.intensity import IntensityMapping
from napari_volmicro.synthetic import random_volume
from napari_volmicro.volume_io import read_volume

U16 = IntensityMapping(offset=100.0, scale=4000.0, dtype=np.uint16)


@pytest.fixture
def vmg(tmp_path):
    gv = random_volume((12, 24, 20), n=60, seed=3, mapping=U16).replace(spacing=(2.0, 0.5, 0.5))
    return container.save(gv, tmp_path / "in.vmg", brick_shape=(6, 12, 10))


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_info_prints_summary_and_json(vmg, capsys):
    assert main(["info", str(vmg)]) == 0
    out = capsys.readouterr().out
    assert "12 x 24 x 20 voxels, uint16" in out and "checksums:     ok" in out and "60 in 8 bricks" in out
    assert main(["info", str(vmg), "--json"]) == 0
    info = last_json(capsys.readouterr().out)
    size = vmg.stat().st_size
    assert info["shape"] == [12, 24, 20] and info["dtype"] == "uint16"
    assert info["n_gaussians"] == 60 and info["file_bytes"] == size and info["n_bricks"] == 8
    assert info["spacing"] == [2.0, 0.5, 0.5] and info["format_version"] == 3
    assert info["intensity_offset"] == 100.0 and info["intensity_scale"] == 4000.0
    assert info["background_shape"] is None
    assert info["bpp"] == pytest.approx(8 * size / (12 * 24 * 20))
    assert info["ratio"] == pytest.approx(12 * 24 * 20 * 2 / size)


def test_decode_whole_volume_to_tiff_and_npy(vmg, tmp_path, capsys):
    want = container.load(vmg).decode(evaluator="reference")
    out = tmp_path / "out.tif"
    assert main(["decode", str(vmg), "-o", str(out), "--evaluator", "reference", "--json"]) == 0
    text = capsys.readouterr().out
    assert "MVox/s" in text
    rec = last_json(text)
    assert rec["path"] == str(out) and rec["shape"] == [12, 24, 20] and rec["dtype"] == "uint16"
    assert rec["evaluator"] == "reference" and rec["k"] == DEFAULT_K and rec["region"] == "0:12,0:24,0:20"
    assert rec["seconds"] > 0 and rec["mvox_per_s"] == pytest.approx(12 * 24 * 20 / 1e6 / rec["seconds"])
    arr, spacing = read_volume(out)
    np.testing.assert_array_equal(arr, want)
    assert spacing == pytest.approx((2.0, 0.5, 0.5))
    npy = tmp_path / "out.npy"
    assert main(["decode", str(vmg), "-o", str(npy), "--evaluator", "reference"]) == 0
    np.testing.assert_array_equal(np.load(npy), want)


def test_decode_roi_reads_only_needed_bricks(vmg, tmp_path, capsys):
    out = tmp_path / "roi.tif"
    assert (
        main(["decode", str(vmg), "-o", str(out), "--roi", "0:4,2:9,:", "--evaluator", "reference", "--json"])
        == 0
    )
    rec = last_json(capsys.readouterr().out)
    assert rec["shape"] == [4, 7, 20] and rec["region"] == "0:4,2:9,0:20"
    assert rec["bytes_read"] < vmg.stat().st_size
    arr, _ = read_volume(out)
    full = container.load(vmg).decode(evaluator="reference")
    np.testing.assert_array_equal(arr, full[0:4, 2:9, :])


def test_decode_uses_the_dense_evaluator_by_default(vmg, tmp_path, capsys):
    full = container.load(vmg).decode(evaluator="reference")
    out = tmp_path / "d.tif"
    assert main(["decode", str(vmg), "-o", str(out), "--roi", "2:10,::2,5:15"]) == 0  # dense by default
    np.testing.assert_array_equal(read_volume(out)[0], full[2:10, ::2, 5:15])
    capsys.readouterr()


def _corrupt(vmg, tmp_path):
    data = vmg.read_bytes()
    flipped = bytearray(data)
    flipped[-5] ^= 0x04
    newer = bytearray(data)
    newer[8:10] = struct.pack("<H", 4)
    files = {
        "truncated": data[:-30],
        "flipped": bytes(flipped),
        "magic": b"NOTAVMG!" + data[8:],
        "newer": bytes(newer),
    }
    paths = {}
    for name, blob in files.items():
        paths[name] = tmp_path / f"{name}.vmg"
        paths[name].write_bytes(blob)
    return paths


@pytest.mark.parametrize("command", ["info", "decode"])
def test_bad_files_give_one_line_errors(vmg, tmp_path, capsys, command):
    paths = _corrupt(vmg, tmp_path)
    cases = [
        (tmp_path / "missing.vmg", "no such file"),
        (paths["truncated"], "truncated"),
        (paths["flipped"], "checksum mismatch"),
        (paths["magic"], "not a .vmg file"),
        (
            paths["newer"],
            "written by format version 4; this reader supports up to 3, upgrade napari-volmicro",
        ),
        (tmp_path, "is a directory"),
    ]
    for path, message in cases:
        argv = [command, str(path)] + (["-o", str(tmp_path / "o.tif")] if command == "decode" else [])
        assert main(argv) == 2, path
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and f"volmicro {command}: error:" in err, err
        if path != tmp_path / "missing.vmg":
            assert str(path) in err
    assert not (tmp_path / "o.tif").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--roi", "0:50,:,:"], "region axis Z: 0:50 is outside the volume"),
        (["--roi", "5:5,:,:"], "region axis Z: 5:5 is empty"),
        (["--roi", "0:4,0:4"], "three comma-separated ranges"),
        (["--roi", "a:b,:,:"], "bounds must be integers"),
        (["--k", "0"], "--k must be a positive integer"),
        (["--k", "-3", "--evaluator", "knn"], "--k must be a positive integer"),
        (["-o", "x.png"], "unsupported extension '.png'"),
    ],
)
def test_bad_arguments_give_one_line_errors(vmg, tmp_path, capsys, extra, message):
    argv = ["decode", str(vmg), "-o", str(tmp_path / "o.tif"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_unknown_evaluator_is_an_argparse_error(vmg, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["decode", str(vmg), "-o", str(tmp_path / "o.tif"), "--evaluator", "magic"])
    assert exc.value.code == 2
    assert "invalid choice: 'magic'" in capsys.readouterr().err


def test_subprocess_errors_have_no_traceback(vmg, tmp_path):
    paths = _corrupt(vmg, tmp_path)
    code = "import sys; from napari_volmicro.cli import main; sys.exit(main(sys.argv[1:]))"
    for argv in (
        ["info", str(paths["flipped"])],
        ["decode", str(paths["truncated"]), "-o", str(tmp_path / "o.tif")],
        ["decode", str(vmg), "-o", str(tmp_path / "o.tif"), "--roi", "0:99,:,:"],
    ):
        res = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
        assert res.returncode == 2, res
        assert "Traceback" not in res.stderr and "error:" in res.stderr, res.stderr
    res = subprocess.run(
        [sys.executable, "-c", code, "info", str(vmg), "--json"], capture_output=True, text=True
    )
    assert res.returncode == 0 and last_json(res.stdout)["n_gaussians"] == 60


def test_decode_roi_from_truncated_file_uses_intact_bricks_with_a_warning(vmg, tmp_path, capsys):
    vf = container.VmgFile(vmg)
    wanted = vf.bricks_for_region((slice(0, 2), slice(0, 3), slice(0, 3)))
    assert max(wanted) < len(vf.bricks) - 1
    short = tmp_path / "short.vmg"
    short.write_bytes(vmg.read_bytes()[: vf.bricks[max(wanted)].end + 7])
    out = tmp_path / "s.tif"
    assert (
        main(["decode", str(short), "-o", str(out), "--roi", "0:2,0:3,0:3", "--evaluator", "reference"]) == 0
    )
    assert "is truncated" in capsys.readouterr().err
    full = container.load(vmg).decode(evaluator="reference")
    np.testing.assert_array_equal(read_volume(out)[0], full[0:2, 0:3, 0:3])
    assert main(["decode", str(short), "-o", str(out)]) == 2  # the whole volume needs every brick
    assert "truncated" in capsys.readouterr().err
