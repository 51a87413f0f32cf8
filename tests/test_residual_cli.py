"""``volmicro compress --max-error`` / ``--layers``, ``decode --layers``, ``info`` and ``evaluate`` on files
with an enhancement layer (real crop, short trainings)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_volmicro.cli import main

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def crop(tmp_path_factory):
    """Real nuclei as uint16 (the file's values are integers 222..2781), 32 x 40 x 40."""
    vol = tifffile.imread(DATA / "cellseg3d_nuclei.tif")[30:62, 20:60, 30:70].astype(np.uint16)
    path = tmp_path_factory.mktemp("cli") / "crop.tif"
    tifffile.imwrite(path, vol)
    return path, vol


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_compress_max_error_info_decode(tmp_path, crop, capsys):
    path, vol = crop
    vmg = tmp_path / "a.vmg"
    assert main(["compress", str(path), "-o", str(vmg), "--max-error", "3", "--steps", "30", "--json"]) == 0
    report = _last_json(capsys.readouterr().out)
    assert report["max_error"] == 3 and report["residual_bytes"] > 0
    assert main(["info", str(vmg)]) == 0
    text = capsys.readouterr().out
    assert "error-bounded: every voxel decodes within 3 of the original" in text
    out = tmp_path / "d.tif"
    assert main(["decode", str(vmg), "-o", str(out)]) == 0
    assert np.abs(tifffile.imread(out).astype(float) - vol).max() <= 3
    roi = tmp_path / "r.npy"
    assert main(["decode", str(vmg), "-o", str(roi), "--roi", "4:20,0:40:3,7:8", "--json"]) == 0
    assert _last_json(capsys.readouterr().out)["layers"] == "all"
    assert np.array_equal(np.load(roi), tifffile.imread(out)[4:20, 0:40:3, 7:8])
    base = tmp_path / "b.tif"
    assert main(["decode", str(vmg), "-o", str(base), "--layers", "base"]) == 0
    assert np.abs(tifffile.imread(base).astype(float) - vol).max() > 3
    # an approximate evaluator: base only, said on stderr; asking for both is refused
    assert main(["decode", str(vmg), "-o", str(tmp_path / "k.tif"), "--evaluator", "knn"]) == 0
    assert "enhancement layer" in capsys.readouterr().err
    assert main(["decode", str(vmg), "-o", str(tmp_path / "k2.tif"), "--evaluator", "knn", "--layers", "all"]) == 2
    assert main(["evaluate", str(path), str(vmg), "--json"]) == 0
    full = _last_json(capsys.readouterr().out)
    assert main(["evaluate", str(path), str(vmg), "--layers", "base", "--json"]) == 0
    assert full["psnr_full"] > _last_json(capsys.readouterr().out)["psnr_full"] + 3


def test_compress_max_error_zero_is_lossless(tmp_path, crop, capsys):
    path, vol = crop
    vmg = tmp_path / "exact.vmg"
    assert main(["compress", str(path), "-o", str(vmg), "--max-error", "0", "--steps", "20"]) == 0
    assert "lossless: every voxel decodes exactly" in capsys.readouterr().out
    assert main(["info", str(vmg)]) == 0
    assert "error-bounded: every voxel decodes exactly (lossless)" in capsys.readouterr().out
    out = tmp_path / "exact.tif"
    assert main(["decode", str(vmg), "-o", str(out)]) == 0
    assert np.array_equal(tifffile.imread(out), vol)


def test_compress_rate_mode_fills_budget_and_base_only_option(tmp_path, crop, capsys):
    path, vol = crop
    vmg = tmp_path / "r.vmg"
    assert main(["compress", str(path), "-o", str(vmg), "--bpp", "0.4", "--steps", "30", "--json"]) == 0
    layered = _last_json(capsys.readouterr().out)
    assert layered["residual_bytes"] > 0 and layered["max_error"] is None
    assert 0.97 * 0.4 <= layered["bpp"] <= 0.4
    assert main(["compress", str(path), "-o", str(tmp_path / "b.vmg"), "--bpp", "0.4", "--steps", "30",
                 "--layers", "base", "--json"]) == 0
    base_only = _last_json(capsys.readouterr().out)
    assert base_only["residual_bytes"] is None
    assert layered["psnr_full"] > base_only["psnr_full"] + 2


def test_max_error_below_the_float_margin_is_refused_before_training(tmp_path, capsys):
    vol = tifffile.imread(DATA / "bead_flowdec.tif")[20:44, 20:44, 20:44]  # float32
    path = tmp_path / "float.tif"
    tifffile.imwrite(path, vol)
    assert main(["compress", str(path), "-o", str(tmp_path / "f.vmg"), "--max-error", "0"]) == 2
    captured = capsys.readouterr()
    assert "below the float margin" in captured.err and "steps" not in captured.out + captured.err
    assert not (tmp_path / "f.vmg").exists()


def test_bad_max_error_is_refused(tmp_path, crop, capsys):
    path, _ = crop
    assert main(["compress", str(path), "-o", str(tmp_path / "x.vmg"), "--max-error", "lots"]) == 2
    assert "--max-error must be" in capsys.readouterr().err
