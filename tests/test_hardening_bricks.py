"""Issue 15, items 6, 7 and 11 (symlinks): the bricked encoder's staging directory.

Nothing of the user's is deleted (item 6), staged parts are checked as the
reader would check them before they are trusted on ``--resume`` and the
assembled file is verified before it replaces an output (item 7), and a
symbolic link is never written through or deleted (item 11). The driver
runs with a stand-in encoder (fast; the real one is tested elsewhere) on an
in-process cluster.
"""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from napari_volmicro.bricks import compress_bricked
from napari_volmicro.bricks.staging import BrickPart, Staging
from napari_volmicro.container import VmgFile
from napari_volmicro.errors import VolmicroError
from napari_volmicro.gaussians import GaussianVolume
from napari_volmicro.intensity import IntensityMapping


def peak_encoder(data, spacing, *, gaussians, seed, **kwargs):
    """Isotropic Gaussians at the brightest points of a 3-voxel lattice (deterministic, instant)."""
    data = np.asarray(data, np.float64)
    off = float(np.median(data))
    scale = float(data.max() - off) or 1.0
    pts = np.stack(np.meshgrid(*[np.arange(1, n, 3) for n in data.shape], indexing="ij"), -1).reshape(-1, 3)
    vals = (data[tuple(pts.T)] - off) / scale
    keep = np.argsort(-vals, kind="stable")[:gaussians]
    n = len(keep)
    return GaussianVolume(data.shape, pts[keep].astype(np.float32), np.full((n, 3), 1.3, np.float32),
                          np.tile(np.float32([1, 0, 0, 0]), (n, 1)), vals[keep].astype(np.float32),
                          mapping=IntensityMapping(off, scale, np.float32))



@pytest.fixture
def source(tmp_path):
    rng = np.random.default_rng(5)
    vol = rng.normal(10, 1, (16, 32, 32)).astype(np.float32)
    for z, y, x in ((4, 8, 8), (12, 20, 24), (8, 28, 5), (3, 25, 18)):
        vol[z - 2:z + 2, y - 2:y + 2, x - 2:x + 2] += 100
    path = tmp_path / "src.npy"
    np.save(path, vol)
    return path


def _encode(source, out, client, **kw):
    return compress_bricked(source, out, brick=(16, 16, 16), halo=2, gaussians=40, client=client,
                            encoder=peak_encoder, **kw)


# -- item 6: only what the project wrote is deleted -----------------------------------------------


def test_item06_a_users_directory_with_an_empty_manifest_is_not_deleted(source, tmp_path, client):
    out = tmp_path / "out.vmg"
    parts = tmp_path / "out.vmg.parts"
    parts.mkdir()
    (parts / "manifest.json").write_text("{}")
    (parts / "thesis.docx").write_bytes(b"years of work")
    with pytest.raises(VolmicroError, match="not a parts directory of napari-volmicro"):
        _encode(source, out, client)
    assert (parts / "thesis.docx").read_bytes() == b"years of work"
    assert (parts / "manifest.json").read_text() == "{}"


def test_item06_own_parts_are_cleared_but_foreign_files_refuse(source, tmp_path, client):
    out = tmp_path / "out.vmg"
    _encode(source, out, client, keep_parts=True)
    parts = tmp_path / "out.vmg.parts"
    assert json.loads((parts / "manifest.json").read_text())["writer"] == "napari-volmicro bricked encode"
    (parts / "notes.txt").write_text("mine")
    with pytest.raises(VolmicroError, match=r"holds files napari-volmicro did not write \(notes.txt\)"):
        _encode(source, out, client)
    assert (parts / "notes.txt").exists() and any(parts.glob("brick-*.npz"))
    (parts / "notes.txt").unlink()
    report = _encode(source, out, client)  # without --resume: its own files are replaced, the run completes
    assert report["reused"] == 0 and not parts.exists()


def test_item06_remove_leaves_foreign_files_and_the_directory(tmp_path):
    staging = Staging(tmp_path / "o.vmg", {"a": 1})
    (staging.dir / "later.txt").write_text("someone's")
    staging.remove()
    assert sorted(p.name for p in staging.dir.iterdir()) == ["later.txt"]


# -- item 11: symbolic links ----------------------------------------------------------------------------


def test_item11_symlinked_parts_directory_is_refused_and_its_target_kept(source, tmp_path, client):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "manifest.json").write_text("{}")
    (target / "data.bin").write_bytes(b"keep")
    (tmp_path / "out.vmg.parts").symlink_to(target)
    with pytest.raises(VolmicroError, match="is a symbolic link; napari-volmicro never writes through or deletes"):
        _encode(source, tmp_path / "out.vmg", client)
    assert sorted(p.name for p in target.iterdir()) == ["data.bin", "manifest.json"]


def test_item11_symlinked_file_inside_is_foreign(tmp_path):
    staging = Staging(tmp_path / "o.vmg", {"a": 1})
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (staging.dir / "brick-00000000.npz").symlink_to(victim)
    with pytest.raises(VolmicroError, match="did not write"):
        Staging(tmp_path / "o.vmg", {"a": 1})
    assert victim.read_text() == "keep"


# -- item 7: staged parts are not trusted -----------------------------------------------------------


def _tamper(staging: Staging, index: int, **changes) -> None:
    """Rewrite part ``index`` with some fields changed and every checksum recomputed (a hostile edit)."""
    p = staging.read(index)
    fields = {k: getattr(p, k) for k in ("planes", "pos_lo", "pos_hi", "reach_lo", "reach_hi", "node_index",
                                         "node_values", "stats")}
    fields.update(changes)
    staging.write(BrickPart(index, **fields))


def _planes_tampered(planes):
    bad = planes.copy()
    bad[:, :] = 0xFFFF  # codes past every range the payload allows
    return bad


@pytest.mark.parametrize("damage", ["bytes", "planes", "nodes", "reach", "zip-bomb"])
def test_item07_damaged_parts_are_encoded_again_on_resume(source, tmp_path, client, capsys, damage):
    ref = tmp_path / "ref.vmg"
    _encode(source, ref, client)
    out = tmp_path / "out.vmg"
    report = _encode(source, out, client, keep_parts=True)
    staging_dir = tmp_path / "out.vmg.parts"
    staging = Staging.__new__(Staging)
    staging.dir = staging_dir
    filled = [i for i in range(report["bricks"]) if VmgFile(out).bricks[i].count > 0]
    i = filled[0]
    part_file = staging_dir / f"brick-{i:08d}.npz"
    if damage == "bytes":
        data = bytearray(part_file.read_bytes())
        data[len(data) // 2:len(data) // 2 + 16] = b"\xff" * 16
        part_file.write_bytes(bytes(data))
    elif damage == "planes":
        _tamper(staging, i, planes=_planes_tampered(staging.read(i).planes))
    elif damage == "nodes":
        _tamper(staging, i, node_index=np.asarray([10**9], np.int64), node_values=np.asarray([0.5]))
    elif damage == "reach":
        _tamper(staging, i, reach_lo=np.zeros(3, np.float32), reach_hi=np.zeros(3, np.float32))
    else:  # a member whose header claims far more than the file holds
        with zipfile.ZipFile(part_file, "a") as zf:
            import io

            buf = io.BytesIO()
            np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False,
                                                       "shape": (10**12,)})
            zf.writestr("huge.npy", buf.getvalue())
    out.write_bytes(b"the previous good output")
    report = _encode(source, out, client, resume=True)
    err = capsys.readouterr().err
    assert f"brick-{i:08d}.npz is damaged and is encoded again" in err
    assert report["encoded"] >= 1 and report["reused"] == report["bricks"] - report["encoded"] - report["background"]
    assert out.read_bytes() == ref.read_bytes()  # the same file as an untouched run
    VmgFile(out).verify()


def test_item07_a_file_failing_verification_never_replaces_the_output(tmp_path):
    staging = Staging(tmp_path / "o.vmg", {"a": 1})
    out = tmp_path / "o.vmg"
    out.write_bytes(b"good")
    with pytest.raises(VolmicroError, match="failed verification"):
        staging.write_verified(out, lambda path: open(path, "wb").write(b"VMG\x00\r\n\x1a\n" + b"\x00" * 100))
    assert out.read_bytes() == b"good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.vmg", "o.vmg.parts"]


# -- item 8: SIGTERM in the middle of a bricked run --------------------------------------------------


def test_item08_sigterm_mid_run_keeps_the_parts_and_resume_finishes(source, tmp_path, client, monkeypatch):
    """SIGTERM (as ``volmicro`` handles it) after the first finished brick: no output, the finished
    parts stay, and ``--resume`` completes the same file an uninterrupted run writes."""
    from napari_volmicro.cli._interrupt import TEST_SIGNAL_ENV, Terminated, signal_point, terminate_cleanly

    ref = tmp_path / "ref.vmg"
    _encode(source, ref, client)
    out = tmp_path / "out.vmg"
    monkeypatch.setenv(TEST_SIGNAL_ENV, "bricks:TERM")

    def progress(p):
        if p.done == 1:
            signal_point("bricks")

    with terminate_cleanly(), pytest.raises(Terminated):
        _encode(source, out, client, progress=progress)
    assert not out.exists() and any((tmp_path / "out.vmg.parts").glob("brick-*.npz"))
    monkeypatch.delenv(TEST_SIGNAL_ENV)
    report = _encode(source, out, client, resume=True)
    assert report["reused"] >= 1 and out.read_bytes() == ref.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.vmg", "ref.vmg", "src.npy"]
