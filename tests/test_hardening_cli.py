"""Issue 15: what a new user and a hostile file run into, on the command line.

Each test names its item. Hostile inputs are built here (a model declaring
100000^3 voxels is a valid 184-byte file; a TIFF or .npy header may claim
any size). Signals arrive at named moments (``VOLMICRO_TEST_SIGNAL_AT``),
not after guessed delays. Most tests run ``main`` in-process (fast); a few
run the real command in a subprocess.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from napari_volmicro.cli import main
from napari_volmicro.cli._interrupt import TEST_SIGNAL_ENV
from napari_volmicro.container import save
from napari_volmicro.gaussians import GaussianVolume
from napari_volmicro.intensity import IntensityMapping
from napari_volmicro.synthetic import random_volume

CMD = [sys.executable, "-c", "from napari_volmicro.cli import entry_point; entry_point()"]
REPO = Path(__file__).resolve().parent.parent


def _blobs(shape=(16, 32, 32), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"), -1)
    vol = np.full(shape, 10.0, np.float32)
    for _ in range(5):
        c = rng.uniform(0.2, 0.8, 3) * (np.asarray(shape) - 1)
        vol += 200 * np.exp(-(((grid - c) / 2.0) ** 2).sum(-1))
    return vol


@pytest.fixture
def volume_npy(tmp_path):
    path = tmp_path / "vol.npy"
    np.save(path, _blobs())
    return path


@pytest.fixture
def model(tmp_path):
    gv = random_volume(shape=(16, 24, 20), n=30, seed=1, mapping=IntensityMapping(5.0, 100.0, np.uint16))
    return save(gv.replace(spacing=(2.0, 0.5, 0.5)), tmp_path / "m.vmg")


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp" in p.name or p.name.endswith(".parts"))


def _err(capsys) -> str:
    return capsys.readouterr().err


# -- item 2: a valid header that declares 100000^3 voxels ----------------------------------------


@pytest.fixture
def huge_model(tmp_path):
    return save(GaussianVolume.empty((100000, 100000, 100000)), tmp_path / "huge.vmg")


def test_item02_huge_header_refused_before_allocating(huge_model, tmp_path, capsys):
    assert huge_model.stat().st_size < 1000
    t0 = time.perf_counter()
    assert main(["decode", str(huge_model), "-o", str(tmp_path / "r.tif")]) == 2
    err = _err(capsys)
    assert "100000 x 100000 x 100000 voxels of float32 = 4,000,000,000,000,000 bytes (4.0 PB)" in err
    assert "of memory" in err and "--roi" in err and "Traceback" not in err
    assert main(["decode", str(huge_model), "-o", str(tmp_path / "r.zarr")]) == 2
    err = _err(capsys)
    assert "needs up to 4.0 PB of disk" in err and "free in" in err
    assert time.perf_counter() - t0 < 30
    assert not (tmp_path / "r.tif").exists() and not (tmp_path / "r.zarr").exists()
    assert _leftovers(tmp_path) == []


def test_item02_region_of_a_huge_model_still_decodes(huge_model, tmp_path):
    from napari_volmicro.volume_io import read_volume

    out = tmp_path / "corner.tif"
    assert main(["decode", str(huge_model), "-o", str(out), "--roi", "0:4,0:5,99990:100000"]) == 0
    assert read_volume(out)[0].shape == (4, 5, 10)


# -- item 4: a 130-byte TIFF / an .npy header claiming gigabytes -------------------------------------


def _tiff_claiming(width: int, height: int) -> bytes:
    """A little-endian TIFF with one uncompressed 8-bit page declaring width x height pixels, 8 bytes of them."""
    entries = []
    n = 9
    pix = 8 + 2 + 12 * n + 4
    for tag, typ, val in ((256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1),
                          (273, 4, pix), (277, 3, 1), (278, 4, height), (279, 4, min(width * height, 2**32 - 1))):
        entries.append(struct.pack("<HHII", tag, typ, 1, val))
    return b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", n) + b"".join(entries) + b"\0" * 4 + b"\0" * 8


def _npy_claiming(shape, dtype="<f4") -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def test_item04_tiff_claiming_10gb_is_refused_from_its_header(tmp_path, capsys):
    from napari_volmicro.errors import InputError
    from napari_volmicro.volume_io import read_volume

    bomb = tmp_path / "bomb.tif"
    bomb.write_bytes(_tiff_claiming(100000, 100000))
    assert bomb.stat().st_size < 200
    with pytest.raises(InputError, match=r"truncated or corrupt TIFF: it declares 100000 x 100000 uint8 pixels"):
        read_volume(bomb)
    assert main(["compress", str(bomb), "-o", str(tmp_path / "x.vmg")]) == 2
    assert "100000" in _err(capsys)


def test_item04_npy_header_claiming_petabytes_is_refused(tmp_path, capsys):
    bomb = tmp_path / "bomb.npy"
    bomb.write_bytes(_npy_claiming((100000, 100000, 100000)))
    assert main(["compress", str(bomb), "-o", str(tmp_path / "x.vmg")]) == 2
    err = _err(capsys)
    assert "100000 x 100000 x 100000 float32 = 4,000,000,000,000,000 bytes (4.0 PB) needs about" in err
    assert "--bricks 256" in err
    assert "Traceback" not in err


def test_item04_volume_larger_than_memory_points_to_bricks(volume_npy, tmp_path, monkeypatch, capsys):
    from napari_volmicro import resources

    monkeypatch.setattr(resources, "available_memory", lambda: 100_000)  # 100 kB "free"
    assert main(["compress", str(volume_npy), "-o", str(tmp_path / "x.vmg")]) == 2
    err = _err(capsys)
    assert "16 x 32 x 32 float32" in err and "of memory" in err and "--bricks 256" in err
    assert not (tmp_path / "x.vmg").exists()


# -- item 8: nothing lost: Ctrl-C / SIGTERM at named moments, existing outputs ------------------------


@pytest.mark.parametrize("point", ["before-training", "training", "after-training", "after-save"])
@pytest.mark.parametrize("sig", ["INT", "TERM"])
def test_item08_compress_signal_keeps_the_old_output(volume_npy, tmp_path, monkeypatch, capsys, point, sig):
    out = tmp_path / "out.vmg"
    out.write_bytes(b"the previous model")
    monkeypatch.setenv(TEST_SIGNAL_ENV, f"{point}:{sig}")
    rc = main(["compress", str(volume_npy), "-o", str(out), "--steps", "3", "--gaussians", "20"])
    assert rc == (130 if sig == "INT" else 143)
    assert ("interrupted" if sig == "INT" else "terminated") in _err(capsys)
    assert out.read_bytes() == b"the previous model"
    assert _leftovers(tmp_path) == []


def test_item08_signal_after_the_replace_reports_success(volume_npy, tmp_path, monkeypatch, capsys):
    from napari_volmicro import load

    out = tmp_path / "out.vmg"
    out.write_bytes(b"the previous model")
    monkeypatch.setenv(TEST_SIGNAL_ENV, "after-replace")
    assert main(["compress", str(volume_npy), "-o", str(out), "--steps", "3", "--gaussians", "20"]) == 0
    assert "it is complete" in _err(capsys)
    assert load(out).shape == (16, 32, 32)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("sig", ["INT", "TERM"])
def test_item08_decode_signals_leave_no_partial_output(model, tmp_path, monkeypatch, sig):
    monkeypatch.setenv(TEST_SIGNAL_ENV, f"after-decode:{sig}")
    assert main(["decode", str(model), "-o", str(tmp_path / "x.tif")]) == (130 if sig == "INT" else 143)
    monkeypatch.setenv(TEST_SIGNAL_ENV, f"decode-chunk:{sig}")
    assert main(["decode", str(model), "-o", str(tmp_path / "x.zarr")]) == (130 if sig == "INT" else 143)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.vmg"]


def test_item08_existing_outputs_are_replaced_only_with_overwrite(model, tmp_path, capsys):
    raw = tmp_path / "raw.zarr"  # a user's directory that happens to have the name
    raw.mkdir()
    (raw / "data.bin").write_bytes(b"precious")
    assert main(["decode", str(model), "-o", str(raw)]) == 2
    assert "not a Zarr store; it is never replaced" in _err(capsys)
    assert main(["decode", str(model), "-o", str(raw), "--overwrite"]) == 2
    assert (raw / "data.bin").read_bytes() == b"precious"

    out = tmp_path / "d.zarr"
    assert main(["decode", str(model), "-o", str(out)]) == 0
    assert main(["decode", str(model), "-o", str(out)]) == 2
    assert "exists; add --overwrite to replace it" in _err(capsys)
    assert main(["decode", str(model), "-o", str(out), "--overwrite"]) == 0

    tif = tmp_path / "raw.tif"
    tif.write_bytes(b"someone's data")
    assert main(["decode", str(model), "-o", str(tif)]) == 2
    assert tif.read_bytes() == b"someone's data"
    assert main(["decode", str(model), "-o", str(tif), "--overwrite"]) == 0
    assert _leftovers(tmp_path) == []


def test_item08_real_sigterm_during_zarr_decode(model, tmp_path):
    env = {**os.environ, TEST_SIGNAL_ENV: "decode-chunk:TERM"}
    r = subprocess.run(CMD + ["decode", str(model), "-o", str(tmp_path / "x.zarr")], capture_output=True,
                       text=True, timeout=300, env=env)
    assert r.returncode == 143 and "terminated" in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.vmg"]


# -- item 9: the output path is checked before any work ------------------------------------------------


def test_item09_bad_output_paths_fail_before_training(volume_npy, tmp_path, monkeypatch, capsys):
    import napari_volmicro.encode as encode

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(encode, "Trainer", no_training)
    (tmp_path / "dir.vmg").mkdir()
    cases = [
        (tmp_path / "missing" / "x.vmg", "the directory " + str(tmp_path / "missing") + " does not exist"),
        (tmp_path / "dir.vmg", "is a directory; give a file name"),
    ]
    for out, message in cases:
        assert main(["compress", str(volume_npy), "-o", str(out)]) == 2
        err = _err(capsys)
        assert message in err and str(out) in err and ".tmp" not in err, err
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == tmp_path else real_access(p, mode))
    assert main(["compress", str(volume_npy), "-o", str(tmp_path / "x.vmg")]) == 2
    assert f"the directory {tmp_path} is not writable" in _err(capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only directories")
def test_item09_read_only_directory(volume_npy, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["compress", str(volume_npy), "-o", str(ro / "x.vmg")]) == 2
        assert "is not writable" in _err(capsys)
    finally:
        ro.chmod(0o755)


# -- item 12: writer side: spacings a TIFF tag cannot hold, float16 models -----------------------------


@pytest.mark.parametrize("spacing", [5e-324, 1e-12, 1e300])
def test_item12_extreme_spacing_writes_a_tiff(tmp_path, spacing):
    from napari_volmicro.volume_io import read_volume

    gv = random_volume(shape=(8, 9, 10), n=5, seed=2).replace(spacing=(spacing,) * 3)
    path = save(gv, tmp_path / "s.vmg")
    assert main(["decode", str(path), "-o", str(tmp_path / "s.tif")]) == 0
    arr, read_spacing = read_volume(tmp_path / "s.tif")
    assert arr.shape == (8, 9, 10) and read_spacing == pytest.approx((spacing,) * 3, rel=1e-9)


def test_item12_float16_model_decodes_to_a_float32_tiff(tmp_path):
    from napari_volmicro.volume_io import read_volume

    gv = random_volume(shape=(8, 9, 10), n=5, seed=3, mapping=IntensityMapping(0.0, 2.0, np.float16))
    path = save(gv, tmp_path / "h.vmg")
    assert main(["decode", str(path), "-o", str(tmp_path / "h.tif")]) == 0
    from napari_volmicro import load

    arr, _ = read_volume(tmp_path / "h.tif")
    assert arr.dtype == np.float32
    np.testing.assert_array_equal(arr, load(path).decode().astype(np.float32))
    assert main(["decode", str(path), "-o", str(tmp_path / "h.npy")]) == 0
    assert np.load(tmp_path / "h.npy").dtype == np.float16


# -- item 15: degenerate results --------------------------------------------------------------------


def test_item15_noise_is_reported_as_useless(tmp_path, capsys):
    noise = tmp_path / "noise.npy"
    np.save(noise, np.random.default_rng(0).random((16, 32, 32)).astype(np.float32))
    rc = main(["compress", str(noise), "-o", str(tmp_path / "n.vmg"), "--steps", "5", "--bpp", "0.5", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0
    assert "warning: the model is no better than a flat volume at the mean intensity" in err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["warnings"] and report["psnr_full"] < 12


def test_item15_budget_above_the_raw_size_needs_force(volume_npy, tmp_path, capsys):
    out = tmp_path / "big.vmg"
    assert main(["compress", str(volume_npy), "-o", str(out), "--ratio", "0.5", "--steps", "2"]) == 2
    err = _err(capsys)
    assert "larger than the volume itself" in err and "--force" in err
    assert not out.exists()
    assert main(["compress", str(volume_npy), "-o", str(out), "--gaussians", "100000", "--steps", "2"]) == 2
    assert "--force" in _err(capsys)


def test_item15_bricked_budget_above_the_raw_size_needs_force(volume_npy, tmp_path, capsys):
    assert main(["compress", str(volume_npy), "-o", str(tmp_path / "b.vmg"), "--bricks", "16", "--ratio", "0.5"]) == 2
    assert "--force" in _err(capsys)
    assert _leftovers(tmp_path) == []


# -- item 16: messages --------------------------------------------------------------------------------


def test_item16_npy_output_notes_the_dropped_spacing_in_one_line(model, tmp_path, capsys):
    assert main(["decode", str(model), "-o", str(tmp_path / "x.npy")]) == 0
    err = _err(capsys)
    assert "volmicro decode: warning:" in err and "cannot store the voxel size 2 x 0.5 x 0.5" in err
    assert "UserWarning" not in err and "warnings.warn" not in err and err.count("\n") == 1


def test_item16_roi_with_negative_start_and_exclusive_stop(model, tmp_path, capsys):
    assert main(["decode", str(model), "-o", str(tmp_path / "x.tif"), "--roi", "-10:5,0:5,0:5"]) == 2
    err = _err(capsys)
    assert "expected one argument" not in err
    assert "region axis Z: -10:5 is outside the volume" in err and "no negative indices" in err
    assert main(["decode", str(model), "-o", str(tmp_path / "x.tif"), "--roi", "0:17,0:5,0:5"]) == 2
    assert "start and stop must be in 0..16: voxels 0 to 15, stop excluded" in _err(capsys)
    assert main(["decode", str(model), "-o", str(tmp_path / "x.tif"), "--roi=0:16,0:5,0:5"]) == 0


def test_item16_volumes_given_as_models_and_swapped_arguments(model, volume_npy, tmp_path, capsys):
    tif = tmp_path / "v.tif"
    from napari_volmicro.volume_io import write_volume

    write_volume(tif, _blobs(), None)
    for argv in (["info", str(tif)], ["decode", str(tif), "-o", str(tmp_path / "o.tif")]):
        assert main(argv) == 2
        err = _err(capsys)
        assert "is a TIFF volume, not a .vmg model; compress it first" in err and "b'" not in err
    assert main(["info", str(volume_npy)]) == 2
    assert "is a NumPy (.npy) volume" in _err(capsys)
    assert main(["evaluate", str(model), str(volume_npy)]) == 2
    assert "the order is: volmicro evaluate ORIGINAL MODEL.vmg" in _err(capsys)
    assert main(["evaluate", str(volume_npy), str(volume_npy)]) == 2
    assert "the model comes second" in _err(capsys)


def test_item16_the_ratio_is_printed_one_way(model, tmp_path, capsys):
    from napari_volmicro.cli._text import ratio_text

    assert ratio_text(456.789) == "456.8:1" and ratio_text(12345.6) == "12,345.6:1"
    assert main(["info", str(model)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"ratio [\d,]+\.\d:1 against", out)
    original = tmp_path / "orig.npy"
    np.save(original, load_model_volume(model))
    assert main(["evaluate", str(original), str(model)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^ratio\s+[\d,]+\.\d:1$", out, re.M), out
    for bad in ("x\n", "ratio {", ":1:1"):
        assert bad not in out


def load_model_volume(path):
    from napari_volmicro import load

    return load(path).decode()


# -- items 17 and 18: help text, progress, what compress says ---------------------------------------


@pytest.mark.parametrize("command", ["compress", "decode", "evaluate", "info", "demo", None])
def test_item17_help_is_plain_text_with_examples(command, capsys):
    with pytest.raises(SystemExit):
        main(([command] if command else []) + ["--help"])
    text = capsys.readouterr().out
    assert "``" not in text and "volume_io" not in text and "see metrics" not in text
    if command in ("compress", "evaluate", "demo"):
        assert "psnr_fg    the same over the foreground only" in text and "ssim3d" in text
    if command != "info":
        assert "example" in text


def test_item17_18_compress_says_what_it_found_and_how_to_read_the_result(volume_npy, tmp_path, capsys):
    out = tmp_path / "c.vmg"
    assert main(["compress", str(volume_npy), "-o", str(out), "--steps", "20", "--gaussians", "30"]) == 0
    stdout, stderr = capsys.readouterr()
    err_lines = stderr.splitlines()
    assert err_lines[0] == f"input: {volume_npy}: 16 x 32 x 32 voxels (ZYX), float32, 65,536 bytes (65.5 kB)"
    assert err_lines[1] == "voxel size: none in the file (voxel units, 1 x 1 x 1)"
    assert err_lines[2].startswith("budget: 30 Gaussians; 20 steps on ")
    progress = [line for line in err_lines if line.startswith("compress: ")]
    assert "\r" not in stderr and 1 <= len(progress) <= 10 and progress[-1].startswith("compress: 20/20 steps")
    assert re.search(r"wrote .*c\.vmg: 30 Gaussians, [\d,]+ bytes( \([\d.]+ kB\))?, [\d.]+ bpp, ratio [\d,.]+:1",
                     stdout), stdout
    assert "dB: higher is better" in stdout and f"napari {out}" in stdout


def test_item16_messages_from_the_real_command(model, huge_model, tmp_path):
    """The messages as a user sees them: one line on stderr, exit status 2, no traceback."""
    from napari_volmicro.volume_io import write_volume

    tif = tmp_path / "v.tif"
    write_volume(tif, _blobs(), None)
    cases = [
        (["info", str(tif)], "is a TIFF volume, not a .vmg model; compress it first"),
        (["decode", str(model), "-o", str(tmp_path / "x.tif"), "--roi", "-10:5,0:5,0:5"], "no negative indices"),
        (["evaluate", str(model), str(tif)], "the order is: volmicro evaluate ORIGINAL MODEL.vmg"),
        (["decode", str(huge_model), "-o", str(tmp_path / "r.tif")], "needs about 12.0 PB of memory"),
    ]
    for argv, message in cases:
        r = subprocess.run(CMD + argv, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and message in r.stderr, (argv, r.stderr)
        assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"volmicro {argv[0]}: error: ")


def test_item18_progress_bar_eta_ignores_the_compile_step():
    """On a terminal the bar starts at the first finished step, so a slow first step (kernel
    compilation: 20-60 s on a new machine) is not in the rate the time left comes from."""
    import io

    from napari_volmicro.cli._progress import Progress

    stream = io.StringIO()
    bar = Progress(1000, "compress", "step", stream=stream, interactive=True)
    time.sleep(0.3)  # the first step, compiling
    bar.update(1)
    for i in range(2, 51):
        bar.update(i)
    d = bar.bar.format_dict
    assert d["initial"] == 1 and d["n"] == 50
    assert (d["n"] - d["initial"]) / max(d["elapsed"], 1e-9) > 49 / 0.3  # counting the 0.3 s would give less
    bar.close()
    assert "compress" in stream.getvalue()


def test_item18_plain_progress_lines_when_not_a_terminal():
    import io

    from napari_volmicro.cli._progress import Progress

    stream = io.StringIO()
    bar = Progress(1000, "compress", "step", stream=stream)
    for i in range(1, 1001):
        bar.update(i, loss="1e-3")
    bar.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and len(lines) == 10
    assert lines[0].startswith("compress: 100/1000 steps (10%)") and lines[-1].startswith("compress: 1000/1000")


def test_item18_decoded_tiff_claims_no_unit_without_a_spacing(tmp_path):
    import tifffile

    gv = random_volume(shape=(8, 9, 10), n=5, seed=4)
    plain = save(gv, tmp_path / "plain.vmg")
    spaced = save(gv.replace(spacing=(2.0, 0.5, 0.5)), tmp_path / "spaced.vmg")
    assert main(["decode", str(plain), "-o", str(tmp_path / "plain.tif")]) == 0
    assert main(["decode", str(spaced), "-o", str(tmp_path / "spaced.tif")]) == 0
    with tifffile.TiffFile(tmp_path / "plain.tif") as tif:
        assert "unit" not in (tif.imagej_metadata or {})
    with tifffile.TiffFile(tmp_path / "spaced.tif") as tif:
        assert tif.imagej_metadata["unit"] == "micron" and tif.imagej_metadata["spacing"] == 2.0


# -- item 19: the demo leaves nothing in the current directory --------------------------------------


def test_item19_demo_writes_into_a_temporary_directory_it_names(tmp_path, monkeypatch, capsys):
    import tempfile

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    assert main(["demo", "--steps", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    written = Path(report["output"])
    assert written.exists() and written.parent.parent == tmp_path / "tmp" and written.name == "purkinje.vmg"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"]


# -- item 21: install docs -----------------------------------------------------------------------------


def test_item21_cpu_torch_install_is_documented_and_wired():
    install = (REPO / "scripts" / "install.sh").read_text()
    readme = (REPO / "README.md").read_text()
    pyproject = (REPO / "pyproject.toml").read_text()
    assert "VOLMICRO_TORCH_INDEX" in install and '--index-url "$VOLMICRO_TORCH_INDEX"' in install
    assert "https://download.pytorch.org/whl/cpu" in readme and "VOLMICRO_TORCH_INDEX" in readme
    assert "stops pip from pulling multi-GB CUDA builds" not in pyproject
    r = subprocess.run(["bash", "-n", str(REPO / "scripts" / "install.sh")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# -- item 10: scheduler peers that are not dask schedulers -----------------------------------------


def _peer(mode: str):
    """A loopback peer that answers like an HTTP service ("reply") or accepts and stays silent."""
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    held = []

    def serve():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            if mode == "reply":
                c.sendall(b"HTTP/1.0 426 Upgrade Required\r\ncontent-length: 0\r\n\r\n")
                c.close()
            else:
                held.append(c)

    threading.Thread(target=serve, daemon=True).start()
    return srv, f"tcp://127.0.0.1:{srv.getsockname()[1]}"


@pytest.mark.parametrize("mode, message", [
    ("silent", "accepted the connection but sent nothing within 2 s"),
    ("reply", "does not speak the dask protocol (it began with 'HTTP/1.0'"),
])
def test_item10_bad_scheduler_peers_fail_fast_and_clean(volume_npy, tmp_path, capsys, mode, message):
    srv, address = _peer(mode)
    try:
        t0 = time.perf_counter()
        rc = main(["compress", str(volume_npy), "-o", str(tmp_path / "s.vmg"), "--bricks", "16",
                   "--scheduler", address, "--scheduler-timeout", "2"])
        elapsed = time.perf_counter() - t0
    finally:
        srv.close()
    err = _err(capsys)
    assert rc == 2 and message in err, err
    assert elapsed < 20
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
def test_item10_scheduler_timeout_must_be_positive(volume_npy, tmp_path, capsys, value):
    with pytest.raises(SystemExit) as exc:
        main(["compress", str(volume_npy), "-o", str(tmp_path / "s.vmg"), "--bricks", "16",
              "--scheduler", "tcp://127.0.0.1:1", f"--scheduler-timeout={value}"])
    assert exc.value.code == 2
    assert "expected a positive number of seconds" in _err(capsys)


# -- items 11 and 13: Zarr keys and sizes in bricked mode -------------------------------------------


@pytest.fixture
def zarrs(tmp_path):
    import zarr

    arr = zarr.create_array(str(tmp_path / "ok.zarr"), shape=(16, 16, 16), chunks=(8, 8, 8), dtype="f4")
    arr[:] = 1
    grp = zarr.open_group(str(tmp_path / "grp.zarr"), mode="w")
    grp.create_array("vol", shape=(16, 16, 16), chunks=(8, 8, 8), dtype="f4")
    return tmp_path


@pytest.mark.parametrize("source, message", [
    ("ok.zarr::nokey", "ok.zarr is a Zarr array, not a group; '::nokey' picks an array inside a group"),
    ("grp.zarr::../ok.zarr", "the key must name an array inside the group"),
    ("grp.zarr::nokey", "no array 'nokey' in the Zarr group (it holds: vol)"),
])
def test_item11_zarr_keys(zarrs, capsys, source, message):
    assert main(["compress", str(zarrs / source), "-o", str(zarrs / "z.vmg"), "--bricks", "8"]) == 2
    assert message in _err(capsys)


@pytest.mark.parametrize("source", ["grp.zarr", "grp.zarr::vol", "ok.zarr"])
def test_item11_zarr_without_bricks_points_to_bricks(zarrs, capsys, source):
    assert main(["compress", str(zarrs / source), "-o", str(zarrs / "z.vmg")]) == 2
    assert "Zarr input is read brick by brick; add --bricks" in _err(capsys)
    assert not (zarrs / "z.vmg").exists()


def test_item13_zarr_of_1e18_voxels_is_refused_up_front(tmp_path, capsys):
    import zarr

    zarr.create_array(str(tmp_path / "big.zarr"), shape=(10**6, 10**6, 10**6), chunks=(256, 256, 256),
                      dtype="u1")
    t0 = time.perf_counter()
    assert main(["compress", str(tmp_path / "big.zarr"), "-o", str(tmp_path / "b.vmg"), "--bricks", "256"]) == 2
    err = _err(capsys)
    assert time.perf_counter() - t0 < 30
    assert "1000000 x 1000000 x 1000000 voxels = 1,000,000,000,000,000,000 bytes (1.0 EB)" in err
    assert "59,638,983,643 bricks of 256 x 256 x 256" in err and "larger --bricks" in err
    assert _leftovers(tmp_path) == []
