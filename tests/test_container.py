"""The .vmg container: exact round trips, quantisation bounds, bricks and regions, errors."""

import dataclasses
import os
import struct

import numpy as np
import pytest

import napari_volmicro
from napari_volmicro import container
from napari_volmicro.container import layout, payload_v2
from napari_volmicro.container.codec import BACKGROUND_WRITE_CODE
from napari_volmicro.errors import ChecksumError, FormatError, InputError, UnsupportedVersionError
from napari_volmicro.evaluate import get_evaluator
from napari_volmicro.gaussians import GaussianVolume
from napari_volmicro.intensity import IntensityMapping
from napari_volmicro.metrics import psnr_full
from napari_volmicro.synthetic import random_volume

FIELDS = ("centers", "scales", "quaternions", "amplitudes")
U16 = IntensityMapping(offset=100.0, scale=4000.0, dtype=np.uint16)
#: relative error bounds of scales and amplitudes: float16 (version 1); float16 then rounded to
#: 5 / 6 mantissa bits (version 2)
SCALE_RTOL = {1: 2**-11, 2: 2**-6 + 2**-11, 3: 2**-5 + 2**-11}
AMPLITUDE_RTOL = {1: 2**-11, 2: 2**-7 + 2**-11, 3: 2**-6 + 2**-11}


def fast_evaluator() -> str:
    """The dense evaluator when it is installed, else the brute-force reference."""
    try:
        get_evaluator("dense")
        return "dense"
    except ImportError:
        return "reference"


def assert_same_model(a: GaussianVolume, b: GaussianVolume):
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
    assert a.shape == b.shape and a.spacing == b.spacing and a.mapping == b.mapping
    if a.background is None:
        assert b.background is None
    else:
        np.testing.assert_array_equal(a.background, b.background)


def with_background(gv: GaussianVolume, seed=3) -> GaussianVolume:
    rng = np.random.default_rng(seed)
    return gv.replace(background=rng.uniform(-0.01, 0.05, size=(3, 5, 4)).astype(np.float32))


# -- crafting files with valid checksums (to reach the checks behind them) -------------


@dataclasses.dataclass
class Parts:
    header: layout.Header
    bricks: list
    sections: list
    section_payloads: list
    brick_payloads: list


def split(data: bytes) -> Parts:
    h = layout.parse_header(data[: layout.HEADER_SIZE], "x", len(data))
    table = data[layout.HEADER_SIZE : h.data_start]
    bricks, sections = layout.parse_tables(h, data[: layout.HEADER_SIZE], table, "x")
    bricks = list(bricks)
    return Parts(
        h,
        bricks,
        sections,
        [data[s.offset : s.end] for s in sections],
        [data[b.offset : b.end] for b in bricks],
    )


def assemble(p: Parts, fix_offsets=True) -> bytes:
    """Bytes of a file with these parts; CRCs (and, by default, offsets) recomputed."""
    h = dataclasses.replace(p.header, n_bricks=len(p.bricks), n_sections=len(p.sections))
    pos = h.data_start
    sections, bricks = [], []
    for s, d in zip(p.sections, p.section_payloads):
        sections.append(
            dataclasses.replace(
                s, crc=layout.crc32(d), length=len(d), offset=pos if fix_offsets else s.offset
            )
        )
        pos += len(d)
    for b, d in zip(p.bricks, p.brick_payloads):
        nbytes = len(d) if h.version >= 2 else b.count * 22
        bricks.append(dataclasses.replace(b, crc=layout.crc32(d), nbytes=nbytes, offset=pos if fix_offsets else b.offset))
        pos += len(d)
    head = h.pack()
    table = b"".join(b.pack(h.version) for b in bricks) + b"".join(s.pack() for s in sections)
    table += struct.pack("<I", layout.table_crc(head, table))
    return head + table + b"".join(p.section_payloads) + b"".join(p.brick_payloads)


def write(tmp_path, data: bytes, name="f.vmg"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


# -- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("brick_shape", [None, (8, 16, 16), (32, 5, 64)])
@pytest.mark.parametrize("background", [False, True])
@pytest.mark.parametrize("version", [1, 2, 3])
def test_save_load_gives_quantized_model_and_resave_is_byte_identical(tmp_path, brick_shape, background, version):
    gv = random_volume((32, 64, 64), n=200, seed=1, mapping=U16)
    if background:
        gv = with_background(gv)
    gv = gv.replace(spacing=(2.0, 0.3, 0.25))
    kw = dict(brick_shape=brick_shape, version=version)
    path = container.save(gv, tmp_path / "a.vmg", **kw)
    assert path == tmp_path / "a.vmg"
    assert os.path.getsize(path) == container.file_size(gv, **kw)
    assert container.read_info(path)["format_version"] == version
    loaded = container.load(path)
    assert_same_model(loaded, container.quantize(gv, **kw))
    container.save(loaded, tmp_path / "b.vmg", **kw)
    assert (tmp_path / "a.vmg").read_bytes() == (tmp_path / "b.vmg").read_bytes()
    # quantising is idempotent: a loaded model is already exactly representable
    assert_same_model(container.quantize(loaded, **kw), loaded)
    if brick_shape is None and version < 3:  # one brick keeps the Gaussians' order
        np.testing.assert_allclose(loaded.amplitudes, gv.amplitudes, rtol=AMPLITUDE_RTOL[version])
    if brick_shape is None:  # every Gaussian is stored (version 3 in Morton order), amplitudes within bounds
        np.testing.assert_allclose(np.sort(loaded.amplitudes), np.sort(gv.amplitudes), rtol=AMPLITUDE_RTOL[version])


def test_version_3_is_the_default_and_versions_1_and_2_stay_readable(tmp_path):
    gv = with_background(random_volume((32, 64, 64), n=300, seed=21, mapping=U16))
    assert container.FORMAT_VERSION == 3
    v3 = container.save(gv, tmp_path / "v3.vmg", brick_shape=(16, 32, 32))
    v2 = container.save(gv, tmp_path / "v2.vmg", brick_shape=(16, 32, 32), version=2)
    v1 = container.save(gv, tmp_path / "v1.vmg", brick_shape=(16, 32, 32), version=1)
    assert [container.read_info(v)["format_version"] for v in (v3, v2, v1)] == [3, 2, 1]
    assert os.path.getsize(v2) < 0.7 * os.path.getsize(v1)
    assert os.path.getsize(v3) < os.path.getsize(v2)
    old2 = napari_volmicro.load(v2)
    assert_same_model(old2.whole(), container.quantize(gv, brick_shape=(16, 32, 32), version=2))
    old = napari_volmicro.load(v1)  # a many-brick file: the lazy model
    assert_same_model(old.whole(), container.quantize(gv, brick_shape=(16, 32, 32), version=1))
    # a lazy copy keeps the source's version and bytes; saving the model anew writes version 3
    old.save(tmp_path / "copy.vmg")
    assert (tmp_path / "copy.vmg").read_bytes() == v1.read_bytes()
    container.save(old.whole(), tmp_path / "up.vmg")
    assert container.read_info(tmp_path / "up.vmg")["format_version"] == 3
    with pytest.raises(InputError, match="format version must be one of 1, 2, 3"):
        container.save(gv, tmp_path / "x.vmg", version=4)


def test_package_level_load_and_method_save(tmp_path):
    gv = random_volume(n=20, seed=4)
    path = gv.save(tmp_path / "m.vmg")
    assert_same_model(napari_volmicro.load(path), container.quantize(gv))
    assert_same_model(napari_volmicro.load(str(path)), container.quantize(gv))


def test_version_1_file_is_22_bytes_per_gaussian_plus_fixed_overhead():
    small, big = random_volume(n=10, seed=0), random_volume(n=1010, seed=0)
    assert container.file_size(big, version=1) - container.file_size(small, version=1) == 1000 * 22
    overhead = layout.HEADER_SIZE + layout.BRICK_V1.size + layout.TABLE_CRC_SIZE
    assert container.file_size(small, version=1) == overhead + 10 * 22 == 180 + 220
    bg = with_background(small)
    assert container.file_size(bg, version=1) == container.file_size(small, version=1) + layout.SECTION.size + 16 + 3 * 5 * 4 * 4
    assert len(container.to_bytes(big, version=1)) == container.file_size(big, version=1)


def _widths(codes):
    return [int(row.max() - row.min()).bit_length() for row in codes.astype(np.int64)]


@pytest.mark.parametrize("n", [1, 7, 1000])
def test_version_2_file_size_is_the_bit_packed_planes(n):
    gv = random_volume((50, 256, 256), n=n, seed=n, scale_range=(0.5, 8.0))
    lo, hi = gv.centers.min(axis=0), gv.centers.max(axis=0)
    codes = payload_v2.quantize(gv, np.arange(n), lo, hi)
    widths = _widths(codes)
    payload = 33 + sum((n * w + 7) // 8 for w in widths)
    overhead = layout.HEADER_SIZE + layout.BRICK.size + layout.TABLE_CRC_SIZE
    assert overhead == 184
    assert container.file_size(gv, version=2) == overhead + payload == len(container.to_bytes(gv, version=2))
    if n == 1:
        assert widths == [0] * 11 and payload == 33  # one Gaussian: every code is its plane's base
    if n == 1000:
        # positions over a 256-voxel box at <= 1/16 voxel: 12 or 13 bits (Y, X), 10 (Z, 50 voxels)
        assert widths[0] == 10 and widths[1] in (12, 13) and widths[2] in (12, 13)
        assert widths[6] == 2 and max(widths[7:10]) == 9  # quaternion index, components in [-128, 128]
        assert payload / n < 14  # versus 22 bytes in version 1
    with_bg = with_background(gv)
    assert container.file_size(with_bg, version=2) == container.file_size(gv, version=2) + layout.SECTION.size + 16 + 3 * 5 * 4 * 4


def test_version_2_planes_pack_and_unpack_exactly():
    rng = np.random.default_rng(3)
    for n in (1, 2, 5, 8, 9, 333):
        gv = random_volume((20, 30, 40), n=n, seed=int(rng.integers(1000)))
        lo, hi = gv.centers.min(axis=0), gv.centers.max(axis=0)
        codes = payload_v2.quantize(gv, np.arange(n), lo, hi)
        buf = payload_v2.to_bytes(codes)
        assert len(buf) == payload_v2.size(codes) <= payload_v2.max_size(n)
        np.testing.assert_array_equal(payload_v2.from_bytes(buf, n, lo, hi, "x"), codes)


@pytest.mark.parametrize("version", [1, 2])
def test_quantisation_error_bounds(version):
    shape = (100, 647, 813)
    gv = random_volume(shape, n=2000, seed=5, scale_range=(0.3, 40.0))
    q = container.quantize(gv, version=version)
    # positions: over (at most) the volume extent, version 1 in 65535 steps, version 2 in steps
    # of at most 1/16 voxel: error <= step / 2 (+ float32 rounding)
    err = np.abs(q.centers.astype(np.float64) - gv.centers)
    lo, hi = gv.centers.min(axis=0), gv.centers.max(axis=0)
    ext = hi.astype(np.float64) - lo
    step = ext / (65535 if version == 1 else payload_v2.position_levels(lo, hi))
    assert np.all(step <= (np.asarray(shape) / 65535 if version == 1 else 1 / 16))
    bound = step / 2 + np.spacing(np.float32(max(shape)))
    assert np.all(err <= bound), (err.max(axis=0), bound)
    assert np.all(err.max(axis=0) > 0.8 * step / 2)  # really quantised, not stored as floats
    # scales and amplitudes: relative error bounds
    np.testing.assert_allclose(q.scales, gv.scales, rtol=SCALE_RTOL[version], atol=0)
    np.testing.assert_allclose(q.amplitudes, gv.amplitudes, rtol=AMPLITUDE_RTOL[version], atol=0)
    # rotations: same rotation (q and -q are equal), to float16 precision (version 1) or with
    # components (divided by the largest) in steps of 1/128 (version 2)
    rot_err = np.abs(q.rotations() - gv.rotations()).max()
    assert rot_err <= (2e-3 if version == 1 else 2.5e-2), rot_err
    np.testing.assert_allclose(np.linalg.norm(q.quaternions, axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("version", [1, 2])
def test_extreme_values_are_clamped_into_float16_range(version):
    gv = GaussianVolume(
        (10, 10, 10),
        centers=[[-30.0, 4.0, 12.5], [5.0, 5.0, 5.0]],
        scales=[[1e-7, 1e5, 2.0], [1.0, 1.0, 1.0]],
        quaternions=[[0.0, 0.0, 0.0, -1.0], [1.0, 1e-9, 0.0, 0.0]],
        amplitudes=[1e6, -3.0],
    )
    q = container.quantize(gv, version=version)
    assert np.all(np.isfinite(q.scales)) and np.all(q.scales > 0)
    assert q.scales[0, 0] == np.float32(np.finfo(np.float16).tiny)
    # the largest finite float16 (version 1), or the largest with 5 / 6 mantissa bits (version 2)
    assert q.scales[0, 1] == (65504 if version == 1 else (2 - 2**-5) * 2**15)
    assert q.amplitudes[0] == (65504 if version == 1 else (2 - 2**-6) * 2**15) and q.amplitudes[1] == -3
    # centres outside the volume are kept (the position box covers them exactly)
    np.testing.assert_array_equal(q.centers[0], [-30.0, 4.0, 12.5])
    np.testing.assert_allclose(q.rotations(), gv.rotations(), atol=1e-3)


def test_version_2_quaternion_form_is_canonical():
    # components that round to -1 or +1 before the largest one: the first of magnitude 1 is stored as +1
    quats = np.array([[-0.999, 1.0, 0.2, 0.0], [0.5, -0.5, 0.5, -0.5], [1e-9, -1.0, 0.0, 0.0], [0.3, 0.1, 0.996, -0.997]])
    gv = GaussianVolume((8, 8, 8), centers=np.full((4, 3), 4.0), scales=np.ones((4, 3)), quaternions=quats,
                        amplitudes=np.ones(4))
    q = container.quantize(gv, version=2)
    assert_same_model(container.quantize(q, version=2), q)
    np.testing.assert_allclose(q.rotations(), gv.rotations(), atol=2e-2)
    codes = payload_v2.quantize(gv, np.arange(4), np.full(3, 4.0), np.full(3, 4.0))
    assert codes[6].tolist() == [0, 0, 1, 2]


@pytest.mark.parametrize("version, max_loss, min_psnr", [(1, 0.05, 55), (2, 0.2, 50)])
def test_decoding_after_save_load_matches_memory(tmp_path, version, max_loss, min_psnr):
    # a harsh case for quantisation: sparse Gaussians of 0.6-4 voxels at up to the full intensity range
    # (version 2 loses 0.15 dB here; on trained models 0.007-0.026 dB, docs/format.md)
    shape = (32, 64, 64)
    gv = random_volume(shape, n=400, seed=7, mapping=U16)
    ev = fast_evaluator()
    memory = gv.decode(evaluator=ev)
    # a realistic "original": the model plus noise, about 40 dB below the peak
    rng = np.random.default_rng(0)
    peak = float(memory.max() - memory.min())
    original = np.clip(memory + rng.normal(0, 0.01 * peak, size=shape), 0, 65535).round().astype(np.uint16)
    from_file = container.load(container.save(gv, tmp_path / "d.vmg", version=version)).decode(evaluator=ev)
    p_mem, p_file = psnr_full(original, memory), psnr_full(original, from_file)
    assert 30 < p_mem < 50
    assert abs(p_mem - p_file) <= max_loss, (p_mem, p_file)
    assert psnr_full(memory, from_file) > min_psnr  # the file changes the decode by far less than the noise
    assert not np.array_equal(memory, from_file)  # ... but it is quantised


def test_empty_model_round_trips_and_decodes_to_background(tmp_path):
    mapping = IntensityMapping(offset=25.0, scale=200.0, dtype=np.uint8)
    gv = GaussianVolume.empty((5, 6, 7), mapping=mapping, spacing=(3.0, 1.0, 1.0))
    path = container.save(gv, tmp_path / "e.vmg")
    assert os.path.getsize(path) == 184 == container.file_size(gv)
    assert os.path.getsize(container.save(gv, tmp_path / "e1.vmg", version=1)) == 180
    loaded = container.load(path)
    assert_same_model(loaded, gv)
    assert np.all(loaded.decode(evaluator="reference") == 25)
    vmg = container.VmgFile(path)
    assert vmg.bricks[0].count == 0 and vmg.bricks_for_region(None) == []
    assert container.VmgFile(container.save(gv, tmp_path / "e2.vmg", brick_shape=(2, 2, 2))).n_gaussians == 0


def test_background_field_round_trips_exactly(tmp_path):
    gv = with_background(random_volume(n=30, seed=2, mapping=U16))
    loaded = container.load(container.save(gv, tmp_path / "bg.vmg"))
    np.testing.assert_array_equal(loaded.background, gv.background)
    assert BACKGROUND_WRITE_CODE == 7  # float32
    assert container.read_info(tmp_path / "bg.vmg")["background_shape"] == [3, 5, 4]
    ev = fast_evaluator()
    np.testing.assert_array_equal(loaded.decode(evaluator=ev), container.quantize(gv).decode(evaluator=ev))


def test_read_info_reports_header_fields_without_reading_payloads(tmp_path):
    gv = random_volume((20, 30, 40), n=50, seed=3, mapping=U16).replace(spacing=(2.0, 0.5, 0.5))
    path = container.save(gv, tmp_path / "i.vmg")
    info = container.read_info(path)
    size = os.path.getsize(path)
    assert info["shape"] == [20, 30, 40] and info["dtype"] == "uint16"
    assert info["spacing"] == [2.0, 0.5, 0.5]
    assert info["n_gaussians"] == 50 and info["n_bricks"] == 1 and info["format_version"] == 3
    assert info["intensity_offset"] == 100.0 and info["intensity_scale"] == 4000.0
    assert info["file_bytes"] == size and info["complete"] is True
    assert info["bpp"] == pytest.approx(8 * size / (20 * 30 * 40))
    assert info["ratio"] == pytest.approx(20 * 30 * 40 * 2 / size)
    vmg = container.VmgFile(path)
    assert vmg.bytes_read == 184  # header + table only; the payload bytes were not read


def test_atomic_save_leaves_no_temp_file_and_keeps_old_file_on_failure(tmp_path, monkeypatch):
    gv = random_volume(n=10, seed=1)
    path = container.save(gv, tmp_path / "x.vmg")
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        container.save(random_volume(n=11, seed=2), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.vmg"]


# -- bricks and regions ------------------------------------------------------------------


def test_multi_brick_load_region_reads_only_needed_bricks_and_decodes_exactly(tmp_path):
    shape = (32, 64, 64)
    gv = random_volume(shape, n=300, seed=11, scale_range=(0.5, 2.5), mapping=U16)
    path = container.save(gv, tmp_path / "m.vmg", brick_shape=(16, 16, 16))
    vmg = container.VmgFile(path)
    assert len(vmg.bricks) == 32  # every 16^3 brick of a 2 x 4 x 4 grid holds some of 300 centres
    full = vmg.load()
    region = (slice(0, 10), slice(20, 40), slice(3, 30, 2))
    wanted = vmg.bricks_for_region(region)
    assert 0 < len(wanted) < len(vmg.bricks)
    # every Gaussian whose 3-sigma box meets the region is in a selected brick
    starts = np.cumsum([0] + [b.count for b in vmg.bricks])
    selected = np.zeros(full.n_gaussians, bool)
    for i in wanted:
        selected[starts[i] : starts[i + 1]] = True
    ext = full.extents()
    first, last = np.array([0, 20, 3]), np.array([9, 39, 29])
    meets = np.all((full.centers - ext <= last) & (full.centers + ext >= first), axis=1)
    assert np.all(selected[meets]) and meets.sum() < full.n_gaussians
    # reading the region touches only the selected bricks' payload bytes
    before = vmg.bytes_read
    part = vmg.load_region(region)
    assert vmg.bytes_read - before == sum(vmg.bricks[i].nbytes for i in wanted)
    assert part.n_gaussians == selected.sum()
    sub = full.subset(selected)
    for f in ("centers", "scales", "amplitudes"):
        np.testing.assert_array_equal(getattr(part, f), getattr(sub, f))
    # GaussianVolume re-normalises quaternions on construction: equal to float32 rounding
    np.testing.assert_allclose(part.quaternions, sub.quaternions, rtol=0, atol=1e-7)
    got = part.decode(region, evaluator="reference")
    want = full.decode(region, evaluator="reference")
    np.testing.assert_array_equal(got, want)


def test_truncated_many_brick_file_still_reads_intact_bricks(tmp_path):
    gv = random_volume((32, 64, 64), n=120, seed=12)
    path = container.save(gv, tmp_path / "t.vmg", brick_shape=(16, 32, 32))
    data = path.read_bytes()
    full = container.VmgFile(path)
    cut = full.bricks[3].offset + 5  # inside brick 3's payload
    short = write(tmp_path, data[:cut], "short.vmg")
    vmg = container.VmgFile(short)
    assert not vmg.complete and vmg.info["complete"] is False
    intact = vmg.load_bricks([0, 1, 2])
    assert_same_model(intact, full.load_bricks([0, 1, 2]))
    with pytest.raises(FormatError, match=r"brick 3: truncated"):
        vmg.load_bricks([3])
    with pytest.raises(FormatError, match=r"short\.vmg: truncated.*bricks cut off"):
        container.load(short)


def test_unknown_optional_section_is_skipped_unknown_required_section_is_refused(tmp_path):
    gv = with_background(random_volume(n=15, seed=6))
    p = split(container.to_bytes(gv))
    extra = layout.SectionInfo(type=77, flags=0, crc=0, offset=0, length=5)
    p.sections.append(extra)
    p.section_payloads.append(b"hello")
    loaded = container.load(write(tmp_path, assemble(p), "opt.vmg"))
    assert_same_model(loaded, container.quantize(gv))
    p.sections[-1] = dataclasses.replace(extra, flags=layout.SECTION_REQUIRED)
    with pytest.raises(UnsupportedVersionError, match=r"req\.vmg: section 1 has type 77.*required"):
        container.load(write(tmp_path, assemble(p), "req.vmg"))


# -- errors ------------------------------------------------------------------------------------


def _valid_model():
    return with_background(random_volume((16, 24, 20), n=25, seed=8, mapping=U16))


@pytest.fixture
def valid(tmp_path):
    return container.to_bytes(_valid_model(), brick_shape=(8, 24, 20))


@pytest.fixture
def valid_v2(tmp_path):
    return container.to_bytes(_valid_model(), brick_shape=(8, 24, 20), version=2)


@pytest.fixture
def valid_v1(tmp_path):
    return container.to_bytes(_valid_model(), brick_shape=(8, 24, 20), version=1)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError):
        container.load(tmp_path / "nope.vmg")
    with pytest.raises(IsADirectoryError):
        container.load(tmp_path)


@pytest.mark.parametrize(
    "data, match",
    [
        (b"", r"not a \.vmg|truncated header"),
        (b"VMG\x00\r\n", r"truncated header"),
        (b"\x89PNG\r\n\x1a\n" + bytes(100), r"not a \.vmg file"),
        (b"II*\x00" + bytes(200), r"not a \.vmg file"),
    ],
)
def test_not_a_vmg_file(tmp_path, data, match):
    with pytest.raises(FormatError, match=match):
        container.load(write(tmp_path, data))


def test_newer_version_is_reported_even_with_an_unknown_header(tmp_path, valid):
    data = bytearray(valid)
    data[8:10] = struct.pack("<H", 4)
    with pytest.raises(
        UnsupportedVersionError, match=r"f\.vmg: written by format version 4; .*up to 3, upgrade"
    ):
        container.load(write(tmp_path, bytes(data[:12])))
    with pytest.raises(UnsupportedVersionError):
        container.read_info(write(tmp_path, bytes(data)))


@pytest.mark.parametrize(
    "where, match",
    [
        (lambda v: 30, r"header checksum mismatch"),
        (lambda v: layout.HEADER_SIZE + 50, r"table checksum mismatch"),
        (lambda v: split(v).sections[0].offset + 20, r"section 0 \(type 1\) checksum mismatch"),
        (lambda v: split(v).bricks[1].offset + 3, r"brick 1: payload checksum mismatch"),
        (lambda v: len(v) - 1, r"brick 1: payload checksum mismatch"),
    ],
)
def test_bit_flip_is_a_checksum_error_naming_the_part(tmp_path, valid, where, match):
    data = bytearray(valid)
    data[where(valid)] ^= 0x10
    with pytest.raises(ChecksumError, match=r"f\.vmg: .*" + match):
        container.load(write(tmp_path, bytes(data)))


def test_truncation_anywhere_and_trailing_bytes(tmp_path, valid):
    p = split(valid)
    for cut, match in [
        (50, "truncated header"),
        (layout.HEADER_SIZE + 10, "truncated brick/section table"),
        (p.sections[0].offset + 3, "truncated: the sections"),
        (p.bricks[1].offset, "truncated: the file has"),
        (len(valid) - 1, "truncated"),
    ]:
        with pytest.raises(FormatError, match=match):
            container.load(write(tmp_path, valid[:cut]))
    with pytest.raises(FormatError, match="3 unexpected bytes after the end"):
        container.load(write(tmp_path, valid + b"abc"))


def _craft(valid, header=None, brick=None, section=None, payload=None):
    p = split(valid)
    if header:
        p.header = dataclasses.replace(p.header, **header)
    if brick:
        p.bricks[0] = dataclasses.replace(p.bricks[0], **brick)
    if section:
        p.sections[0] = dataclasses.replace(p.sections[0], **section)
    if payload:
        p.brick_payloads[0] = payload(p.brick_payloads[0], p.bricks[0].count)
    return assemble(p)


def _set_f16(plane: int, value):
    """Version 1: set Gaussian 0's float16 ``plane``."""

    def patch(buf, n):
        arr = np.frombuffer(buf, "<u2").reshape(11, n).copy()
        arr[plane].view("<f2")[0] = value
        return arr.tobytes()

    return patch


def _set_code(plane: int, value):
    """Version 2: re-pack a payload with Gaussian 0's ``plane`` code set to ``value`` (valid widths)."""

    def patch(buf, n):
        codes = payload_v2.from_bytes(buf, n, np.zeros(3), np.zeros(3) + 99, "x").astype(np.int64)
        codes[plane, 0] = value
        return payload_v2.to_bytes(codes)

    return patch


def _set_width(plane: int, width: int):
    def patch(buf, n):
        b = bytearray(buf)
        b[3 * plane + 2] = width
        return bytes(b)

    return patch


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(header=dict(shape=(0, 24, 20))), r"header shape \(0, 24, 20\) is invalid"),
        (dict(header=dict(dtype_code=42)), r"header dtype code 42 is unknown"),
        (dict(header=dict(spacing=(1.0, float("nan"), 1.0))), r"header spacing .* is invalid"),
        (dict(header=dict(scale=0.0)), r"intensity scale 0.0 is invalid"),
        (dict(header=dict(offset=float("inf"))), r"intensity offset inf is not finite"),
        (dict(header=dict(n_gaussians=26)), r"inconsistent counts: the header says 26 Gaussians"),
        (dict(header=dict(flags=4)), r"header flags 0x0004"),
        (dict(brick=dict(count=3)), r"payload length \d+ is impossible for 3 Gaussians"),
        (dict(brick=dict(core_hi=(8, 24, 99))), r"brick 0 core bounds 0:99 on axis X"),
        (dict(brick=dict(pos_lo=(float("nan"), 0.0, 0.0))), r"brick 0 has a NaN or infinite"),
        (dict(brick=dict(pos_lo=(5.0, 0.0, 0.0), pos_hi=(1.0, 9.0, 9.0))), r"position box .* has lo > hi"),
        (dict(brick=dict(reach_hi=(3.0, 3.0, 3.0))), r"outside the stored reach box"),
        (dict(section=dict(flags=0x8001)), r"section 0 has flags 0x8001"),
        (dict(payload=lambda b, n: b[:10]), r"brick 0 payload length 10 is impossible for 14 Gaussians"),
    ],
)
def test_fields_with_valid_checksums_are_still_validated(tmp_path, valid, changes, match):
    data = _craft(valid, **changes)
    with pytest.raises(FormatError, match=r"f\.vmg: .*" + match):
        container.load(write(tmp_path, data))


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(payload=_set_code(3, 0)), r"brick 0: Gaussian 0 has an invalid scale code"),
        (dict(payload=_set_code(5, 992)), r"brick 0: Gaussian 0 has an invalid scale code"),
        (dict(payload=_set_code(10, 32768 + 1984)), r"brick 0: Gaussian 0 has an invalid amplitude code"),
        (dict(payload=_set_code(6, 4)), r"brick 0: Gaussian 0 has an invalid quaternion index code"),
        (dict(payload=_set_code(8, 257)), r"brick 0: Gaussian 0 has an invalid quaternion code"),
        (dict(payload=_set_code(1, 2000)), r"brick 0: Gaussian 0 has an invalid position code"),
        (dict(payload=_set_width(4, 17)), r"brick 0: plane 4 has a width of 17 bits"),
        (dict(payload=_set_width(4, 1)), r"brick 0: payload has \d+ bytes, its plane widths need"),
    ],
)
def test_version_2_codes_are_validated(tmp_path, valid_v2, changes, match):
    data = _craft(valid_v2, **changes)
    with pytest.raises(FormatError, match=r"f\.vmg: .*" + match):
        container.load(write(tmp_path, data))


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(payload=_set_f16(3, np.nan)), r"brick 0: Gaussian 0 has a NaN or infinite value in its scales"),
        (dict(payload=_set_f16(5, -1.0)), r"brick 0: Gaussian 0 has a scale <= 0"),
        (dict(payload=_set_f16(10, np.inf)), r"infinite value in its amplitudes"),
        (dict(brick=dict(count=3)), r"inconsistent counts|payload starts at byte"),
    ],
)
def test_version_1_payload_values_are_validated(tmp_path, valid_v1, changes, match):
    data = _craft(valid_v1, **changes)
    with pytest.raises(FormatError, match=r"f\.vmg: .*" + match):
        container.load(write(tmp_path, data))


def test_version_2_padding_bits_must_be_zero(tmp_path, valid_v2):
    p = split(valid_v2)
    buf = bytearray(p.brick_payloads[0])
    desc = [payload_v2.DESCRIPTOR.unpack_from(buf, 3 * i) for i in range(11)]
    n = p.bricks[0].count
    # find a plane whose last byte has unused bits and set one of them
    pos = 33
    for _base, w in desc:
        length = (n * w + 7) // 8
        pos += length
        if w and n * w % 8:
            buf[pos - 1] |= 0x80
            break
    else:
        pytest.skip("no plane with padding bits")
    p.brick_payloads[0] = bytes(buf)
    with pytest.raises(FormatError, match=r"brick 0: plane \d+ has non-zero padding bits"):
        container.load(write(tmp_path, assemble(p)))


def test_all_zero_quaternion_and_bad_background_are_refused(tmp_path, valid, valid_v1):
    def zero_quat(buf, n):
        arr = np.frombuffer(buf, "<u2").reshape(11, n).copy()
        arr[6:10, 2] = 0
        return arr.tobytes()

    with pytest.raises(FormatError, match=r"Gaussian 2 has an all-zero quaternion"):
        container.load(write(tmp_path, _craft(valid_v1, payload=zero_quat)))
    p = split(valid)
    bg = bytearray(p.section_payloads[0])
    bg[16:20] = np.float32(np.nan).tobytes()
    p.section_payloads[0] = bytes(bg)
    with pytest.raises(FormatError, match=r"background section 0: the grid contains NaN"):
        container.load(write(tmp_path, assemble(p)))
    p.section_payloads[0] = bytes(bg[:-4])
    with pytest.raises(FormatError, match=r"background section 0: \d+ bytes, expected"):
        container.load(write(tmp_path, assemble(p)))


def test_payloads_out_of_order_are_refused(tmp_path, valid):
    p = split(valid)
    p.bricks[0] = dataclasses.replace(p.bricks[0], offset=p.bricks[0].offset + 5)
    with pytest.raises(FormatError, match=r"brick 0 payload starts at byte \d+, expected"):
        container.load(write(tmp_path, assemble(p, fix_offsets=False)))


def test_float16_background_written_by_another_writer_is_read(tmp_path, valid):
    p = split(valid)
    grid = np.frombuffer(p.section_payloads[0], "<f4", offset=16).reshape(3, 5, 4)
    head = struct.pack("<B3s3I", 9, b"\0\0\0", 3, 5, 4)
    p.section_payloads[0] = head + grid.astype("<f2").tobytes()
    loaded = container.load(write(tmp_path, assemble(p)))
    np.testing.assert_array_equal(loaded.background, grid.astype(np.float16).astype(np.float32))
    assert loaded.background.dtype == np.float32


def test_load_bricks_checks_indices(tmp_path, valid):
    vmg = container.VmgFile(write(tmp_path, valid))
    assert len(vmg.bricks) == 2
    with pytest.raises(InputError, match="brick index 2 is out of range"):
        vmg.load_bricks([2])
    both = vmg.load_bricks([1, 0, 1])  # sorted, duplicates dropped
    assert both.n_gaussians == vmg.n_gaussians == 25


def test_the_reader_in_docs_format_md_decodes_a_version_2_file(tmp_path):
    """docs/format.md's stand-alone version-2 reader (numpy only) gives the values ``load`` gives."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "format.md").read_text()
    code = re.findall(r"```python\n(.*?)```", doc, re.S)[0]
    gv = random_volume((30, 50, 40), n=300, seed=3)
    path = container.save(gv, tmp_path / "volume.vmg", brick_shape=(16, 32, 32), version=2)
    got = {"centers": [], "scales": [], "quaternions": [], "amplitudes": []}
    code = code.replace('open("volume.vmg", "rb")', f"open({str(path)!r}, 'rb')")
    code += "\n    got['centers'].append(centers); got['scales'].append(scales)\n"
    code += "    got['quaternions'].append(quats); got['amplitudes'].append(amplitudes)\n"
    exec(code, {"got": got})
    assert len(got["amplitudes"]) == container.VmgFile(path).header.n_bricks > 1
    want = container.load(path)
    for f in ("centers", "scales", "amplitudes"):
        np.testing.assert_array_equal(np.concatenate(got[f]), getattr(want, f))
    np.testing.assert_allclose(np.concatenate(got["quaternions"]), want.quaternions, rtol=0, atol=1e-7)


@pytest.mark.parametrize("shape, brick_shape, step", [((10, 12, 20000), None, 0.5), ((10, 12, 20000), (10, 12, 7000), 0.125),
                                                      ((6, 8, 3000), (6, 8, 700), 1 / 16)])
def test_version_3_position_grid_follows_the_core(tmp_path, shape, brick_shape, step):
    # the grid step doubles for each doubling of the core beyond 3,966 voxels; centres far outside the
    # volume are clamped to 64 voxels past their brick's core; save-load-save stays byte identical
    gv = random_volume(shape, n=300, seed=3)
    c = gv.centers.copy()
    c[0], c[1] = [-200.0, 5.0, 7.0], [3.0, 3.0, shape[2] + 500.0]
    gv = gv.replace(centers=c)
    a = container.save(gv, tmp_path / "a.vmg", brick_shape=brick_shape)
    loaded = container.load(a)
    b = container.save(loaded, tmp_path / "b.vmg", brick_shape=brick_shape)
    assert a.read_bytes() == b.read_bytes()
    got = np.sort(loaded.centers, axis=0)
    want = np.sort(np.clip(gv.centers, -0.5 - 64, np.asarray(shape) - 0.5 + 64), axis=0)
    err = np.abs(got - want)
    assert err[2:-2].max() <= step / 2 + 1e-3  # half a step inside
    assert err.max() <= step + 1e-3  # at most a step for a centre clamped to the margin
