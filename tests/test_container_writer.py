"""One container writer: ``save``/``to_bytes`` and the bricked encoder's ``assemble`` both lay files out
through ``container.lay_out`` / ``write_bricks``, and agree byte for byte."""

import numpy as np
import pytest
import test_bricks_encode

import napari_volmicro
from napari_volmicro import container
from napari_volmicro.bricks import compress_bricked
from napari_volmicro.errors import VolmicroError
from napari_volmicro.intensity import IntensityMapping
from napari_volmicro.synthetic import random_volume

GridEncoder = test_bricks_encode.GridEncoder


@pytest.fixture
def model():
    gv = random_volume((24, 40, 36), n=120, seed=9, mapping=IntensityMapping(20.0, 500.0, np.uint16))
    return gv.replace(background=np.random.default_rng(1).uniform(0, 0.1, (2, 3, 3)).astype(np.float32))


def _encode(tmp_path, client, volume, name, brick, **kwargs):
    out = tmp_path / name
    compress_bricked(volume, out, brick=brick, halo=2, client=client, encoder=GridEncoder(), **kwargs)
    return out


def test_bricked_encoder_and_save_write_the_same_bytes(tmp_path, client, bead_crop):
    import dask.array as da

    vol = np.ascontiguousarray(bead_crop[:, :, :24])  # 16 x 32 x 24: 2 x 2 bricks of 16 x 16 x 12
    for kwargs in ({"gaussians": 80}, {"bpp": 1.0}):
        path = _encode(tmp_path, client, da.from_array(vol, chunks=8), "enc.vmg", (16, 16, 12), **kwargs)
        vmg = container.VmgFile(path)
        assert len(vmg.bricks) == 4 and all(b.count for b in vmg.bricks)
        assert vmg.background is not None  # a background section too
        data = path.read_bytes()
        # the in-memory writer lays the encoder's model out exactly as the encoder did
        assert container.to_bytes(container.load(path), brick_shape=(16, 16, 12)) == data
        # and a lazily opened model copies itself brick by brick, to the same bytes
        napari_volmicro.load(path).save(tmp_path / "copy.vmg")
        assert (tmp_path / "copy.vmg").read_bytes() == data


def test_lazy_copy_keeps_empty_bricks(tmp_path, client, bead_crop):
    import dask.array as da

    vol = np.zeros((32, 32, 32), np.float32)
    vol[18:30, 18:30, 18:30] = bead_crop[:12, :12, :12]
    path = _encode(tmp_path, client, da.from_array(vol, chunks=16), "bg.vmg", 16, gaussians=30)
    counts = [b.count for b in container.VmgFile(path).bricks]
    assert len(counts) == 8 and counts.count(0) >= 1
    gv = napari_volmicro.load(path)
    gv.save(tmp_path / "copy.vmg")
    assert (tmp_path / "copy.vmg").read_bytes() == path.read_bytes() and not gv.loaded


def test_write_bricks_streams_payloads_and_matches_to_bytes(tmp_path, model):
    want = container.to_bytes(model, brick_shape=(8, 20, 18))
    vmg = container.VmgFile(container.save(model, tmp_path / "a.vmg", brick_shape=(8, 20, 18)))
    assert (tmp_path / "a.vmg").read_bytes() == want
    payloads = [want[b.offset : b.end] for b in vmg.bricks]
    fields = dict(shape=model.shape, spacing=model.spacing, mapping=model.mapping, background=model.background)
    layout = container.lay_out(bricks=vmg.bricks, **fields)
    assert layout.head + b"".join(payloads) == want and layout.size == len(want)
    assert layout.bricks == vmg.bricks
    consumed = []

    def stream():
        for i, p in enumerate(payloads):
            consumed.append(i)
            yield p

    size = container.write_bricks(tmp_path / "b.vmg", bricks=vmg.bricks, payloads=stream(), **fields)
    assert size == len(want) and (tmp_path / "b.vmg").read_bytes() == want and consumed == list(range(len(payloads)))


@pytest.mark.parametrize("change", ["corrupt", "short", "missing", "extra"])
def test_write_bricks_refuses_payloads_that_do_not_match_the_table(tmp_path, model, change):
    path = container.save(model, tmp_path / "a.vmg", brick_shape=(8, 20, 18))
    before = path.read_bytes()
    vmg = container.VmgFile(path)
    payloads = [before[b.offset : b.end] for b in vmg.bricks]
    if change == "corrupt":
        payloads[1] = payloads[1][:5] + bytes([payloads[1][5] ^ 1]) + payloads[1][6:]
    elif change == "short":
        payloads[2] = payloads[2][:-22]
    elif change == "missing":
        payloads.pop()
    else:
        payloads.append(payloads[0])
    with pytest.raises(VolmicroError, match=r"a\.vmg"):
        container.write_bricks(path, shape=model.shape, spacing=model.spacing, mapping=model.mapping,
                               background=model.background, bricks=vmg.bricks, payloads=iter(payloads))
    assert path.read_bytes() == before  # the old file stays, and no temporary file is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.vmg"]
