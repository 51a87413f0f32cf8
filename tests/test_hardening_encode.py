"""Issue 15, item 14: the background field of shallow, thin and odd-shaped volumes.

A 26-plane volume gave ``field_shape`` a Z axis of 0 nodes (``IndexError`` in
``encode/field.py`` ``axis_matrix`` on the first training step, e.g.
``volmicro compress cellfinder_stp_signal.tif --bricks 256``).
"""

import itertools

import numpy as np
import pytest

from napari_volmicro.encode.budget import field_shape


@pytest.mark.parametrize("nodes", [8, 20, 64, 100, 500, 4096])
def test_field_shape_never_has_an_empty_axis(nodes):
    sizes = (8, 9, 26, 100, 288, 1116)
    for shape in itertools.product(sizes, sizes, (8, 9, 26, 288, 627)):
        g = field_shape(nodes, shape)
        if g is None:
            continue
        assert min(g) >= 1, (shape, nodes, g)
        assert int(np.prod(g)) <= nodes, (shape, nodes, g)
        assert all(a <= n for a, n in zip(g, shape)), (shape, nodes, g)


def test_field_shape_unchanged_where_it_worked():
    # values the landed code gave for ordinary volumes (kept bit for bit: same training results)
    assert field_shape(4096, (50, 256, 256)) == (5, 27, 27)
    assert field_shape(64, (64, 64, 64)) == (4, 4, 4)
    assert field_shape(500, (119, 415, 409)) == (3, 12, 11)


def _blobs(shape, seed=0):
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"), -1)
    vol = np.zeros(shape, np.float32)
    for _ in range(6):
        c = rng.uniform(0, 1, 3) * (np.asarray(shape) - 1)
        vol += 100 * np.exp(-(((grid - c) / 2.5) ** 2).sum(-1))
    return vol + 5


@pytest.mark.parametrize("shape", [(8, 300, 300), (9, 200, 9), (120, 8, 8), (26, 96, 61)])
def test_shallow_thin_and_odd_volumes_train(shape):
    """The field the trainer plans has no empty axis and a few training steps run."""
    from napari_volmicro.encode import Trainer

    vol = _blobs(shape)
    trainer = Trainer(vol, gaussians=40, steps=3, seed=0)
    assert trainer.field_shape is None or min(trainer.field_shape) >= 1
    for _ in trainer.run():
        pass
    gv = trainer.result
    assert gv.shape == shape
    assert gv.background is None or min(gv.background.shape) >= 1
    recon = gv.decode()
    assert recon.shape == shape and np.isfinite(recon).all()


def test_bricked_encode_of_a_shallow_volume(tmp_path):
    """Bricks of 8 planes (as ``--bricks 256`` on a 26-plane stack): each brick's field has >= 1 node
    per axis, the file is written and decodes close to the input."""
    from napari_volmicro import load
    from napari_volmicro.bricks import compress_bricked, make_client

    vol = _blobs((8, 192, 96), seed=3)
    np.save(tmp_path / "shallow.npy", vol)
    client = make_client(workers=1, processes=False)
    try:
        report = compress_bricked(tmp_path / "shallow.npy", tmp_path / "out.vmg", brick=(8, 96, 96), halo=0,
                                  gaussians=60, steps=5, client=client)
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()
    assert report["bricks"] == 2 and report["output"] == str(tmp_path / "out.vmg")
    recon = load(tmp_path / "out.vmg").decode()
    assert recon.shape == vol.shape and np.isfinite(recon).all()
