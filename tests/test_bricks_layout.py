"""Brick grid, halo and ownership logic, and the budget split (no dask, no training)."""

import numpy as np
import pytest

from napari_volmicro.bricks.encode_bricks import brick_seed, split_budget
from napari_volmicro.bricks.layout import BrickGrid, background_nodes
from napari_volmicro.errors import InputError


def test_cores_tile_the_volume_exactly_once():
    grid = BrickGrid((37, 50, 21), (16, 16, 8), halo=3)
    assert grid.grid_shape == (3, 4, 3)
    cover = np.zeros(grid.shape, np.int32)
    for b in grid:
        cover[b.core_slices] += 1
    assert np.all(cover == 1)
    last = grid[len(grid) - 1]
    assert last.core_lo == (32, 48, 16) and last.core_hi == (37, 50, 21)


def test_read_box_is_core_plus_halo_clipped_and_at_least_eight():
    grid = BrickGrid((40, 40, 40), 16, halo=4)
    b = grid[13]  # middle brick (1, 1, 1)
    assert b.cell == (1, 1, 1)
    assert b.read_lo == (12, 12, 12) and b.read_hi == (36, 36, 36)
    corner = grid[0]
    assert corner.read_lo == (0, 0, 0) and corner.read_hi == (20, 20, 20)
    # local core slices pick the core out of the read box
    vol = np.arange(40**3).reshape(40, 40, 40)
    assert np.array_equal(vol[b.read_slices][b.core_in_read], vol[b.core_slices])
    # an edge brick of 2 voxels with no halo still reads 8 voxels (the encoder's minimum)
    thin = BrickGrid((34, 16, 16), 16, halo=0)[2]
    assert thin.core_shape == (2, 16, 16)
    assert thin.read_lo[0] == 26 and thin.read_hi[0] == 34


def test_owner_follows_the_container_rule():
    """The brick that owns a centre is the brick the container writer files it under."""
    from napari_volmicro.container import VmgFile, save
    from napari_volmicro.synthetic import random_volume

    gv = random_volume(shape=(30, 34, 26), n=300, seed=2)
    rng = np.random.default_rng(0)
    # include centres outside the volume and exactly on cell faces
    c = gv.centers.copy()
    c[:10] = rng.uniform(-3, 35, (10, 3))
    c[10:20, 0] = 15.5  # voxel-face coordinate between bricks 0 and 1 along Z (brick 16)
    gv = gv.replace(centers=c)
    grid = BrickGrid(gv.shape, (16, 16, 8))
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        path = save(gv, Path(d) / "m.vmg", brick_shape=grid.brick_shape)
        f = VmgFile(path)
        for i, info in enumerate(f.bricks):
            sub = f.load_bricks([i])
            owners = grid.owner(sub.centers)
            expect = grid.owner(np.asarray(info.core_lo, np.float64)[None])[0]
            assert np.all(owners == expect)
            assert grid[int(expect)].core_lo == info.core_lo


def test_bricks_meeting_region():
    grid = BrickGrid((64, 64, 64), 16)
    ids = grid.bricks_meeting((slice(10, 20), slice(0, 16), slice(47, 49)))
    cells = {grid[i].cell for i in ids}
    assert cells == {(0, 0, 2), (0, 0, 3), (1, 0, 2), (1, 0, 3)}


def test_background_nodes_cover_the_axes():
    grid, pts = background_nodes((40, 100, 7), 20.0)
    assert grid == (3, 6, 2)
    assert len(pts) == 36
    assert pts[:, 0].min() == 0 and pts[:, 0].max() == 39
    assert pts[:, 1].max() == 99 and pts[:, 2].max() == 6


def test_split_budget_is_exact_and_proportional():
    n = split_budget(1000, np.array([0, 1, 1, 2, 0.5]))
    assert n.sum() == 1000 and n[0] == 0
    assert n[3] == pytest.approx(2 * n[1], abs=1)
    assert split_budget(7, np.zeros(3)).sum() == 0
    assert brick_seed(0, 1) == brick_seed(0, 1) != brick_seed(0, 2) != brick_seed(1, 2)


def test_bad_grid_arguments():
    with pytest.raises(InputError, match="brick size"):
        BrickGrid((10, 10, 10), (0, 4, 4))
    with pytest.raises(InputError, match="halo"):
        BrickGrid((10, 10, 10), 4, halo=-1)


def test_staging_parts_round_trip_and_damage(tmp_path):
    from napari_volmicro.bricks.staging import BrickPart, Staging
    from napari_volmicro.errors import VolmicroError

    st = Staging(tmp_path / "o.vmg", {"a": 1})
    part = BrickPart(3, np.arange(22, dtype=np.uint16).reshape(11, 2), np.zeros(3, np.float32),
                     np.ones(3, np.float32), np.zeros(3, np.float32), np.ones(3, np.float32),
                     np.array([5, 6]), np.array([0.1, 0.2]), np.array([1.0]))
    st.write(part)
    back = st.read(3)
    assert np.array_equal(back.planes, part.planes) and np.array_equal(back.node_values, part.node_values)
    assert st.finished() == {3}
    # a damaged part is dropped (re-encoded), not trusted
    raw = bytearray(st.part_path(3).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    st.part_path(3).write_bytes(bytes(raw))
    assert st.finished() == set()
    # resume with other settings is refused; without resume the parts are discarded
    with pytest.raises(VolmicroError, match="different encode"):
        Staging(tmp_path / "o.vmg", {"a": 2}, resume=True)
    Staging(tmp_path / "o.vmg", {"a": 2})
    # a directory of the same name that is not ours is never deleted
    other = tmp_path / "x.vmg.parts"
    other.mkdir()
    (other / "precious.txt").write_text("keep")
    with pytest.raises(VolmicroError, match="not a parts directory"):
        Staging(tmp_path / "x.vmg", {"a": 1})
    assert (other / "precious.txt").exists()
