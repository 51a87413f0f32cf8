"""``volmicro evaluate``: metrics of a model against its original, via cli.main."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

import napari_volmicro
from napari_volmicro import metrics
from napari_volmicro.cli import main
from napari_volmicro.cli.evaluate import REPORT_KEYS
from napari_volmicro.gaussians import GaussianVolume, matrices_to_quaternions
from napari_volmicro.intensity import IntensityMapping
from napari_volmicro.volume_io import read_volume, write_volume

DATA = Path(__file__).parent / "data"
HAVE_CONTAINER = importlib.util.find_spec("napari_volmicro.container") is not None


def _bead_model(bead: np.ndarray) -> GaussianVolume:
    """One Gaussian fitted to the bead by moments, on the median background."""
    bg = float(np.median(bead))
    w = np.clip(bead.astype(np.float64) - bg, 0, None)
    w[w < 0.05 * w.max()] = 0
    idx = np.indices(bead.shape).reshape(3, -1).T.astype(np.float64)
    wf = w.ravel()
    centre = (idx * wf[:, None]).sum(0) / wf.sum()
    d = idx - centre
    cov = (d * wf[:, None]).T @ d / wf.sum()
    evals, evecs = np.linalg.eigh(cov)
    if np.linalg.det(evecs) < 0:
        evecs[:, 0] *= -1
    peak = float(bead.max()) - bg
    return GaussianVolume(
        bead.shape, [centre], [np.sqrt(evals)], matrices_to_quaternions(evecs[None]), [1.0],
        mapping=IntensityMapping(offset=bg, scale=peak, dtype=bead.dtype),
    )


@pytest.fixture(scope="module")
def bead():
    volume, _ = read_volume(DATA / "bead_flowdec.tif")
    return volume[16:48, 16:48, 16:48]  # 32^3 crop around the bead


@pytest.fixture
def fake_vmg(tmp_path, monkeypatch, bead):
    """A model file of known size whose loading returns the in-memory bead model."""
    gv = _bead_model(bead)
    model_path = tmp_path / "bead.vmg"
    model_path.write_bytes(b"\0" * 300)
    monkeypatch.setattr(napari_volmicro, "load", lambda path: gv)
    original_path = write_volume(tmp_path / "bead.tif", bead)
    return original_path, model_path, gv


def test_text_and_json_report_match_metrics(fake_vmg, bead, capsys):
    original_path, model_path, gv = fake_vmg
    rc = main(["evaluate", str(original_path), str(model_path), "--evaluator", "reference", "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0
    report = json.loads(out[-1])
    for key in REPORT_KEYS:
        assert key in report
        assert any(line.startswith(key) for line in out[:-1])
    recon = gv.decode(evaluator="reference")
    assert report["psnr_full"] == pytest.approx(metrics.psnr_full(bead, recon))
    assert report["psnr_fg"] == pytest.approx(metrics.psnr_fg(bead, recon))
    assert report["ssim3d"] == pytest.approx(metrics.ssim3d(bead, recon))
    # one Gaussian on the median describes the bead far better than the flat background
    flat = metrics.psnr_full(bead, np.full_like(bead, np.median(bead)))
    assert report["psnr_full"] > flat + 3
    assert report["bpp"] == pytest.approx(8 * 300 / bead.size)
    assert report["ratio"] == pytest.approx(bead.size * 4 / 300)
    assert report["n_gaussians"] == 1
    assert report["decode_seconds"] > 0
    assert report["decode_mvox_per_s"] == pytest.approx(bead.size / 1e6 / report["decode_seconds"])
    assert report["evaluator"] == "reference" and report["shape"] == [32, 32, 32]


def test_text_only_without_json(fake_vmg, capsys):
    original_path, model_path, _ = fake_vmg
    assert main(["evaluate", str(original_path), str(model_path), "--evaluator", "reference"]) == 0
    out = capsys.readouterr().out
    assert "psnr_full" in out and " dB" in out and "{" not in out


def test_exact_model_reports_null_psnr(tmp_path, monkeypatch, bead, capsys):
    gv = _bead_model(bead)
    exact = gv.decode(evaluator="reference")  # the original *is* the model's decoding
    original_path = write_volume(tmp_path / "exact.npy", exact)
    (tmp_path / "m.vmg").write_bytes(b"\0" * 100)
    monkeypatch.setattr(napari_volmicro, "load", lambda path: gv)
    assert main(["evaluate", str(original_path), str(tmp_path / "m.vmg"), "--evaluator", "reference", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["psnr_full"] is None and report["psnr_fg"] is None
    assert report["ssim3d"] == pytest.approx(1.0)


def test_shape_mismatch_is_a_clear_error(fake_vmg, tmp_path, bead, capsys):
    _, model_path, _ = fake_vmg
    other = write_volume(tmp_path / "other.tif", bead[:, :, :20])
    rc = main(["evaluate", str(other), str(model_path), "--evaluator", "reference"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "model shape (32, 32, 32)" in err and "(32, 32, 20)" in err and "other.tif" in err
    assert "Traceback" not in err


def test_missing_original(tmp_path, capsys):
    rc = main(["evaluate", str(tmp_path / "nope.tif"), str(tmp_path / "m.vmg")])
    assert rc == 2
    assert "no such file" in capsys.readouterr().err


def test_bad_original_is_refused(tmp_path, capsys):
    write_volume(tmp_path / "flat.npy", np.zeros((4, 64, 64), np.uint16))
    (tmp_path / "m.vmg").write_bytes(b"\0")
    rc = main(["evaluate", str(tmp_path / "flat.npy"), str(tmp_path / "m.vmg")])
    assert rc == 2
    assert "fewer than 8 voxels along Z=4" in capsys.readouterr().err


@pytest.mark.skipif(not HAVE_CONTAINER, reason="napari_volmicro.container (engineer B) is not there yet")
def test_real_vmg_round_trip(tmp_path, bead, capsys):
    from napari_volmicro.container import file_size, quantize

    gv = _bead_model(bead)
    model_path = gv.save(tmp_path / "bead.vmg")
    original_path = write_volume(tmp_path / "bead.tif", bead)
    assert main(["evaluate", str(original_path), str(model_path), "--evaluator", "reference", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    stored = quantize(gv).decode(evaluator="reference")
    assert report["psnr_full"] == pytest.approx(metrics.psnr_full(bead, stored))
    assert report["file_bytes"] == file_size(gv) == model_path.stat().st_size
    assert report["bpp"] == pytest.approx(8 * model_path.stat().st_size / bead.size)
    assert math.isfinite(report["psnr_full"])
