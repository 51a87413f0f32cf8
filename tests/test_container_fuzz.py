"""Mutated .vmg files: the only thing that may come out is a ``FormatError``.

The documented rule (docs/format.md, "Reader safety"): any change to a valid
file's bytes - bit flips, overwritten bytes, truncation, appended bytes,
inserted or deleted bytes, a splice of two files - makes ``load`` raise a
``FormatError`` (or a subclass). Appended bytes are refused, not ignored.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_volmicro import container
from napari_volmicro.errors import FormatError
from napari_volmicro.intensity import IntensityMapping
from napari_volmicro.synthetic import random_volume

FIELDS = ("centers", "scales", "quaternions", "amplitudes")
SETTINGS = settings(
    max_examples=200,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _model(seed, n):
    gv = random_volume((12, 20, 16), n=n, seed=seed, mapping=IntensityMapping(20.0, 300.0, np.uint8))
    bg = np.random.default_rng(seed).uniform(0, 0.1, size=(2, 3, 2)).astype(np.float32)
    return gv.replace(background=bg)


#: a file with a background section and four bricks, and a different one of the same layout
VALID = container.to_bytes(_model(1, 9), brick_shape=(6, 20, 8))
OTHER = container.to_bytes(_model(2, 9), brick_shape=(6, 20, 8))
EXPECTED = {
    VALID: container.quantize(_model(1, 9), brick_shape=(6, 20, 8)),
    OTHER: container.quantize(_model(2, 9), brick_shape=(6, 20, 8)),
}


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "m.vmg"


def check(path, data: bytes):
    """``load`` either returns the right model (bytes unchanged) or raises ``FormatError``."""
    path.write_bytes(data)
    if data in EXPECTED:
        got = container.load(path)
        for f in FIELDS:
            np.testing.assert_array_equal(getattr(got, f), getattr(EXPECTED[data], f))
        return
    with pytest.raises(FormatError):
        container.load(path)
    try:  # reading only the header and tables: fine (e.g. a cut inside the bricks) or FormatError
        container.read_info(path)
    except FormatError:
        pass


def test_the_fuzzed_file_has_every_part(path):
    path.write_bytes(VALID)
    vmg = container.VmgFile(path)
    assert len(vmg.bricks) == 4 and len(vmg.sections) == 1 and vmg.complete
    assert all(b.count > 0 for b in vmg.bricks)


def test_every_single_byte_change_is_detected(path):
    """Exhaustive: each byte of the file XORed with 0x01 and with 0xff (every byte is covered)."""
    for i in range(len(VALID)):
        for mask in (0x01, 0xFF):
            data = bytearray(VALID)
            data[i] ^= mask
            path.write_bytes(bytes(data))
            with pytest.raises(FormatError):
                container.load(path)


def test_every_truncation_is_detected(path):
    for n in range(len(VALID)):
        path.write_bytes(VALID[:n])
        with pytest.raises(FormatError):
            container.load(path)


@SETTINGS
@given(flips=st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 7)), min_size=1, max_size=8))
def test_bit_flips(path, flips):
    data = bytearray(VALID)
    for pos, bit in flips:
        data[pos] ^= 1 << bit
    check(path, bytes(data))


@SETTINGS
@given(pos=st.integers(0, len(VALID) - 1), new=st.binary(min_size=1, max_size=64))
def test_overwritten_bytes(path, pos, new):
    data = VALID[:pos] + new + VALID[pos + len(new) :]
    check(path, data[: max(len(VALID), pos + len(new))])


@SETTINGS
@given(
    kind=st.sampled_from(["append", "insert", "delete", "splice"]),
    a=st.integers(0, len(VALID)),
    b=st.integers(0, len(VALID)),
    extra=st.binary(min_size=1, max_size=40),
)
def test_appended_inserted_deleted_and_spliced_bytes(path, kind, a, b, extra):
    if kind == "append":
        data = VALID + extra
    elif kind == "insert":
        data = VALID[:a] + extra + VALID[a:]
    elif kind == "delete":
        lo, hi = sorted((a, b))
        data = VALID[:lo] + VALID[hi + 1 :]
    else:  # the start of one file and the end of another
        data = VALID[:a] + OTHER[b:]
    check(path, data)


@SETTINGS
@given(rest=st.binary(max_size=600))
def test_random_bytes_after_a_valid_magic_and_version(path, rest):
    check(path, VALID[:10] + rest)


# -- payloads with valid checksums: the version-2 decoder's own checks -------------------------

VALID_V1 = container.to_bytes(_model(1, 9), brick_shape=(6, 20, 8), version=1)


def test_version_1_file_every_single_byte_change_and_truncation_is_detected(path):
    assert VALID_V1[8] == 1
    for i in range(len(VALID_V1)):
        data = bytearray(VALID_V1)
        data[i] ^= 0x01
        path.write_bytes(bytes(data))
        with pytest.raises(FormatError):
            container.load(path)
    for n in range(0, len(VALID_V1), 3):
        path.write_bytes(VALID_V1[:n])
        with pytest.raises(FormatError):
            container.load(path)


def _with_payload(data: bytes, i: int, new: bytes) -> bytes:
    """``data`` with brick ``i``'s payload replaced by ``new``, every checksum, length and offset fixed."""
    import dataclasses

    from napari_volmicro.container import layout
    from napari_volmicro.container.codec import parse_background
    from napari_volmicro.intensity import CODE_DTYPES

    h = layout.parse_header(data[: layout.HEADER_SIZE], "x", len(data))
    bricks, sections = layout.parse_tables(h, data[: layout.HEADER_SIZE], data[layout.HEADER_SIZE : h.data_start], "x")
    payloads = [data[b.offset : b.end] for b in bricks]
    payloads[i] = new
    entries = [dataclasses.replace(b, crc=layout.crc32(p), nbytes=len(p)) for b, p in zip(bricks, payloads)]
    s = sections[0]
    out = container.lay_out(
        shape=h.shape, spacing=h.spacing, mapping=IntensityMapping(h.offset, h.scale, CODE_DTYPES[h.dtype_code]),
        background=parse_background(data[s.offset : s.end], "x"), bricks=entries,
    )
    return out.head + b"".join(payloads)


def test_with_payload_rebuilds_the_same_file():
    # replacing a payload by itself reproduces the file byte for byte
    b = _brick(2)
    assert _with_payload(VALID, 2, VALID[b.offset : b.end]) == VALID


def _brick(i):
    from napari_volmicro.container import layout

    h = layout.parse_header(VALID[: layout.HEADER_SIZE], "x", len(VALID))
    bricks, _ = layout.parse_tables(h, VALID[: layout.HEADER_SIZE], VALID[layout.HEADER_SIZE : h.data_start], "x")
    return bricks[i]


def check_any(path, data: bytes):
    """``load`` returns a model or raises ``FormatError``; nothing else may come out."""
    path.write_bytes(data)
    try:
        container.load(path)
    except FormatError:
        pass


@SETTINGS
@given(i=st.integers(0, 3), flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)), min_size=1, max_size=6))
def test_version_2_payload_bit_flips_behind_valid_checksums(path, i, flips):
    b = _brick(i)
    payload = bytearray(VALID[b.offset : b.end])
    for pos, bit in flips:
        payload[pos % len(payload)] ^= 1 << bit
    check_any(path, _with_payload(VALID, i, bytes(payload)))


@SETTINGS
@given(i=st.integers(0, 3), payload=st.binary(min_size=0, max_size=300))
def test_version_2_random_payloads_behind_valid_checksums(path, i, payload):
    check_any(path, _with_payload(VALID, i, payload))
