"""Format 3's fast reader against its reference, and the writer's split of a large model into bricks.

``payload_v3.read_arrays`` (one compiled pass, its own ANS decoder) must return bit for bit what
``decode(from_bytes(...))`` (constriction, numpy) returns, and refuse exactly what the reference
refuses, with the reference's message. ``save`` without ``brick_shape`` splits a model of more than
``writer.SPLIT_GAUSSIANS`` Gaussians into bricks; the files round-trip byte for byte.
"""

from pathlib import Path

import numpy as np
import pytest

from napari_volmicro import container
from napari_volmicro.container import codec, payload_v3, writer
from napari_volmicro.errors import FormatError
from napari_volmicro.intensity import IntensityMapping
from napari_volmicro.synthetic import benchmark_volume, random_volume

FIELDS = ("centers", "scales", "quaternions", "amplitudes")
U16 = IntensityMapping(offset=100.0, scale=4000.0, dtype=np.uint16)
SAMPLE = Path(container.__file__).parent.parent / "_data" / "purkinje_sample.vmg"


def _outcome(fn, *args):
    """The arrays ``fn(*args)`` returns (as raw bits), or the message of the ``FormatError`` it raises."""
    try:
        out = fn(*args)
    except FormatError as exc:
        return str(exc)
    return {k: (v.dtype.str, v.shape, v.tobytes()) for k, v in out.items()}


def _reference(buf, count, lo):
    return payload_v3.decode(payload_v3.from_bytes(buf, count, lo, None, "b"), lo, None)


def _fast(buf, count, lo):
    return payload_v3.read_arrays(buf, count, lo, "b")


def _brick(gv, core_lo=(0, 0, 0), core_hi=None):
    planes, lo, _, _ = codec.quantize_part(gv, np.arange(gv.n_gaussians), core_lo, core_hi or gv.shape, 3)
    return payload_v3.to_bytes(planes), planes.shape[1], lo


def _models():
    yield random_volume((16, 20, 24), n=1, seed=1)
    yield random_volume((16, 20, 24), n=7, seed=2, mapping=U16)
    yield random_volume((40, 64, 64), n=300, seed=3, scale_range=(0.3, 9.0))
    yield random_volume((20, 3000, 20), n=900, seed=4)  # a core past 3,966 voxels: position shift e > 0
    yield benchmark_volume(shape=(50, 160, 200), n=3000, seed=5)
    yield container.load(SAMPLE)  # the trained Purkinje model (2,364 Gaussians), re-coded in format 3


@pytest.mark.parametrize("gv", list(_models()), ids=lambda gv: f"n{gv.n_gaussians}")
def test_fast_reader_equals_the_reference(gv):
    buf, n, lo = _brick(gv)
    want = _outcome(_reference, buf, n, lo)
    assert isinstance(want, dict)
    assert _outcome(_fast, buf, n, lo) == want


def test_ans_decoder_equals_constriction():
    """Streams of every alphabet the format codes (2..49), skewed and flat, short and long, one after
    another in one coder: the compiled decoder pops the same symbols and ends empty."""
    from napari_volmicro.container._v3_kernels import _stream

    rng = np.random.default_rng(0)
    streams = []
    for alphabet in (2, 3, 5, 9, 17, 31, 32, 33, 49):
        for n in (1, 31, 32, 33, 97, 5000):
            p = rng.dirichlet(np.full(alphabet, rng.choice([0.1, 1.0, 10.0])))
            streams.append((rng.choice(alphabet, n, p=p).astype(np.int64), alphabet))
    words = np.frombuffer(payload_v3.encode_streams(streams), "<u4")
    import constriction

    ref = constriction.stream.stack.AnsCoder(words.astype(np.uint32))
    state, pos = np.uint64(words[-1]), len(words) - 1
    while pos > 0 and state < np.uint64(1 << 32):
        pos -= 1
        state = (state << np.uint64(32)) | np.uint64(words[pos])
    counts, cdf, find = np.empty(4097, np.int64), np.empty(4098, np.int64), np.empty(1 << 12, np.int64)
    for symbols, alphabet in streams:
        out = np.empty(len(symbols), np.int64)
        state, pos = _stream(words, state, pos, out, len(symbols), alphabet, payload_v3.FIRST_CHUNK,
                             payload_v3.COUNT_WEIGHT, counts, cdf, find)
        state = np.uint64(state)
        np.testing.assert_array_equal(out, symbols)
        np.testing.assert_array_equal(payload_v3.decode_stream(ref, len(symbols), alphabet, "x"), symbols)
    assert state == 0 and pos == 0 and ref.is_empty()


def test_fast_reader_refuses_exactly_what_the_reference_refuses():
    """Mutated payloads (bit flips, overwritten bytes and words, cut or lengthened, a hostile head):
    the fast reader gives the reference's arrays or the reference's error, every time."""
    gv = random_volume((40, 64, 64), n=400, seed=7, scale_range=(0.3, 6.0), mapping=U16)
    buf, n, lo = _brick(gv)
    rng = np.random.default_rng(1)
    seen = {"ok": 0, "error": 0}
    for trial in range(600):
        data = bytearray(buf)
        kind = trial % 6
        if kind == 0:  # a bit flip anywhere
            i = int(rng.integers(len(data)))
            data[i] ^= 1 << int(rng.integers(8))
        elif kind == 1:  # a random byte in the raw bits or the coded words
            data[int(rng.integers(payload_v3.HEADER_SIZE, len(data)))] = int(rng.integers(256))
        elif kind == 2:  # cut short or lengthened
            data = data[: int(rng.integers(payload_v3.HEADER_SIZE, len(data)))] if rng.random() < 0.5 else \
                data + bytes(int(rng.integers(1, 9)))
        elif kind == 3:  # a head field changed
            field = int(rng.integers(8))
            head = list(payload_v3.HEAD.unpack_from(data))
            head[field] = int(rng.integers(0, 1 << 16 if field != 1 else 1 << 12))
            data[: payload_v3.HEADER_SIZE] = payload_v3.HEAD.pack(*head)
        elif kind == 4:  # the coded words replaced by random ones (same count)
            w = payload_v3.HEAD.unpack_from(data)[1]
            data[payload_v3.HEADER_SIZE : payload_v3.HEADER_SIZE + 4 * w] = rng.integers(0, 256, 4 * w, np.uint8).tobytes()
        else:  # another count claimed for the same bytes
            n_claim = int(rng.integers(1, 2 * n))
            want = _outcome(_reference, bytes(data), n_claim, lo)
            assert _outcome(_fast, bytes(data), n_claim, lo) == want
            continue
        want = _outcome(_reference, bytes(data), n, lo)
        got = _outcome(_fast, bytes(data), n, lo)
        assert got == want, f"trial {trial}"
        seen["ok" if isinstance(want, dict) else "error"] += 1
    assert seen["error"] > 200 and seen["ok"] > 0  # the mutations reach both outcomes


def test_box_bounds_equals_numpy():
    from napari_volmicro.container._v3_kernels import box_bounds

    table = np.random.default_rng(2).normal(size=(500, 16))
    lo, hi = box_bounds(table, 0, 10)
    np.testing.assert_array_equal(lo, (table[:, 0:3] - table[:, 10:13]).min(axis=0))
    np.testing.assert_array_equal(hi, (table[:, 0:3] + table[:, 10:13]).max(axis=0))


# -- the writer splits a large model into bricks -----------------------------------------------


@pytest.fixture
def small_split(monkeypatch):
    """Split above 150 Gaussians down to 8-voxel sides (the defaults need larger models than tests want)."""
    monkeypatch.setattr(writer, "SPLIT_GAUSSIANS", 150)
    monkeypatch.setattr(writer, "SPLIT_MIN_SIDE", 8)
    return 150


def test_split_bricks_partition_the_model():
    rng = np.random.default_rng(3)
    shape = (40, 300, 90)
    voxels = np.concatenate([rng.integers(0, shape, (2000, 3)), np.tile([[5, 7, 9]], (500, 1))])
    bricks = writer.split_bricks(shape, voxels, max_gaussians=300, min_side=8)
    members = np.concatenate([idx for _, _, idx in bricks])
    assert np.array_equal(np.sort(members), np.arange(len(voxels)))
    for lo, hi, idx in bricks:
        assert len(idx) and np.all(np.diff(idx) > 0)  # members keep their order
        assert np.all((voxels[idx] >= lo) & (voxels[idx] < hi))
        side = max(b - a for a, b in zip(lo, hi))
        assert len(idx) <= 300 or side < 16  # the 500 Gaussians in one voxel stop at the smallest side
    cores = sum(np.prod(np.subtract(hi, lo)) for lo, hi, _ in bricks)
    assert cores <= np.prod(shape) and len(bricks) > 2000 // 300


def test_a_model_above_the_split_size_is_saved_in_bricks_and_round_trips(tmp_path, small_split):
    gv = random_volume((32, 96, 80), n=700, seed=8, scale_range=(0.4, 3.0), mapping=U16)
    small = gv.subset(np.arange(small_split))
    path = container.save(gv, tmp_path / "a.vmg")
    vmg = container.VmgFile(path)
    assert len(vmg.bricks) > 700 // small_split and all(0 < b.count <= small_split for b in vmg.bricks)
    assert path.stat().st_size == container.file_size(gv) == len(container.to_bytes(gv))
    loaded = vmg.load()
    want = container.quantize(gv)
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(loaded, f), getattr(want, f))
    container.save(loaded, tmp_path / "b.vmg")
    assert (tmp_path / "b.vmg").read_bytes() == path.read_bytes()
    # a model at the split size stays one brick
    assert container.read_info(container.save(small, tmp_path / "s.vmg"))["n_bricks"] == 1
    # a region reads only the bricks that reach it and decodes as the whole model does
    region = (slice(0, 32), slice(10, 40), slice(50, 80))
    wanted = vmg.bricks_for_region(region)
    assert 0 < len(wanted) < len(vmg.bricks)
    before = vmg.bytes_read
    part = container.VmgFile(path).load_region(region)
    np.testing.assert_allclose(part.decode(region, evaluator="reference"), loaded.decode(region, evaluator="reference"),
                               rtol=0, atol=1e-12)
    assert vmg.bytes_read == before and part.n_gaussians < loaded.n_gaussians
