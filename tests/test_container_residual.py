"""The enhancement-layer hook of the container: an optional section (type 2) holding an opaque blob,
written from ``gv.residual.to_bytes()``, read by range, attached through ``napari_volmicro.residual``."""

import sys
import types
import zlib

import numpy as np
import pytest

import napari_volmicro
from napari_volmicro import container
from napari_volmicro.container import layout
from napari_volmicro.errors import ChecksumError, FormatError


class BlobLayer:
    """A stand-in for the residual layer: ``to_bytes`` gives a fixed blob."""

    def __init__(self, blob: bytes):
        self.blob = blob

    def to_bytes(self) -> bytes:
        return self.blob


BLOB = bytes(range(256)) * 7 + b"tail"


def _with_layer(gv, blob=BLOB):
    gv = gv.replace()  # a copy: the fixture's model stays without a layer
    layer = BlobLayer(blob)
    layer.shape = gv.shape
    object.__setattr__(gv, "residual", layer)  # works before GaussianVolume has the field
    return gv


@pytest.fixture
def fake_residual_module(monkeypatch):
    """``napari_volmicro.residual`` with an ``open_layer`` that records the VmgFile it was given."""
    mod = types.ModuleType("napari_volmicro.residual")
    opened = []

    class Opened:
        def __init__(self, vmg):
            self.shape, self.name = tuple(vmg.shape), vmg.name

        def __eq__(self, other):
            return other == ("layer-of", self.name)

    def open_layer(vmg):
        opened.append(vmg)
        return Opened(vmg)

    mod.open_layer = open_layer
    monkeypatch.setitem(sys.modules, "napari_volmicro.residual", mod)
    return opened


@pytest.mark.parametrize("brick_shape", [None, (12, 20, 18)])
def test_residual_section_round_trip(tmp_path, small_model, brick_shape, fake_residual_module):
    gv = _with_layer(small_model.replace(background=np.full((2, 2, 2), 0.01, np.float32)))
    path = container.save(gv, tmp_path / "r.vmg", brick_shape=brick_shape)
    data = path.read_bytes()
    assert len(data) == container.file_size(gv, brick_shape=brick_shape)
    vmg = container.VmgFile(path)
    kinds = [(s.type, s.required) for s in vmg.sections]
    assert kinds == [(layout.SECTION_BACKGROUND, True), (layout.SECTION_RESIDUAL, False)]
    offset, length = vmg.section_range()
    assert length == len(BLOB) and data[offset : offset + length] == BLOB
    assert vmg.read_section_range(0, length) == BLOB
    assert vmg.read_section_range(300, 17) == BLOB[300:317]
    assert vmg.read_section_range(length, 0) == b""
    assert vmg.info["residual_bytes"] == len(BLOB)
    vmg.verify()
    # the layer is opened once, on demand, with this VmgFile
    assert vmg.residual_layer() == ("layer-of", str(path)) and vmg.residual_layer() is vmg.residual_layer()
    assert fake_residual_module == [vmg]
    assert container.load(path).residual == ("layer-of", str(path))  # load() attaches it
    # the base model is unchanged by the section
    plain = container.load(container.save(small_model.replace(background=gv.background), tmp_path / "p.vmg",
                                          brick_shape=brick_shape))
    loaded = container.load(path)
    for f in ("centers", "scales", "quaternions", "amplitudes"):
        np.testing.assert_array_equal(getattr(loaded, f), getattr(plain, f))
    # a lazy model exposes the layer and copies the section byte for byte
    lazy = napari_volmicro.load(path)
    if brick_shape is not None:
        assert lazy.residual == ("layer-of", str(path)) and not lazy.loaded
        lazy.save(tmp_path / "copy.vmg")
        assert (tmp_path / "copy.vmg").read_bytes() == data


def test_without_residual_module_the_section_is_ignored(tmp_path, small_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "napari_volmicro.residual", None)  # import raises ImportError
    path = container.save(_with_layer(small_model), tmp_path / "r.vmg")
    vmg = container.VmgFile(path)
    assert vmg.residual_layer() is None and vmg.section_range() is not None
    assert container.load(path).n_gaussians == small_model.n_gaussians
    assert container.VmgFile(container.save(small_model, tmp_path / "p.vmg")).section_range() is None


def test_section_ranges_are_bounds_checked(tmp_path, small_model):
    vmg = container.VmgFile(container.save(_with_layer(small_model), tmp_path / "r.vmg"))
    n = len(BLOB)
    for off, length in ((n - 3, 4), (-1, 2), (0, -1), (n + 1, 0), (2**62, 2**62), ("a", 1), (True, 1)):
        with pytest.raises(FormatError, match=r"r\.vmg: section 2"):
            vmg.read_section_range(off, length)
    plain = container.VmgFile(container.save(small_model, tmp_path / "p.vmg"))
    with pytest.raises(FormatError, match="has no section of type 2"):
        plain.read_section_range(0, 1)


def test_corrupt_residual_section_is_caught_by_verify_and_copy(tmp_path, small_model):
    path = container.save(_with_layer(small_model), tmp_path / "r.vmg", brick_shape=(12, 20, 18))
    data = bytearray(path.read_bytes())
    offset, length = container.VmgFile(path).section_range()
    data[offset + 5] ^= 0xFF
    path.write_bytes(bytes(data))
    vmg = container.VmgFile(path)  # opening does not read the section
    with pytest.raises(ChecksumError, match=r"section 0 \(type 2\) checksum mismatch"):
        vmg.verify()
    with pytest.raises(ChecksumError, match="type 2"):
        napari_volmicro.load(path).save(tmp_path / "copy.vmg")
    assert not (tmp_path / "copy.vmg").exists()
    assert zlib.crc32(bytes(data[offset : offset + length])) != zlib.crc32(BLOB)


def test_two_residual_sections_are_refused(tmp_path, small_model):
    from napari_volmicro.container.writer import lay_out

    gv = small_model
    entries, payloads = container.writer._entries(gv, None, container.FORMAT_VERSION)
    lo = lay_out(shape=gv.shape, spacing=gv.spacing, mapping=gv.mapping, background=None, bricks=entries,
                 residual=b"abc")
    # duplicate the residual section entry by hand: rebuild header/tables with two sections
    h = layout.parse_header(lo.head[:88], "x", len(lo.head))
    import dataclasses

    h2 = dataclasses.replace(h, n_sections=2)
    start = h2.data_start
    secs = [layout.SectionInfo(layout.SECTION_RESIDUAL, 0, zlib.crc32(b"abc"), start, 3),
            layout.SectionInfo(layout.SECTION_RESIDUAL, 0, zlib.crc32(b"abc"), start + 3, 3)]
    bricks = [dataclasses.replace(b, offset=start + 6) for b in entries]
    head = h2.pack()
    table = b"".join(b.pack(h2.version) for b in bricks) + b"".join(s.pack() for s in secs)
    table += layout.table_crc(head, table).to_bytes(4, "little")
    path = tmp_path / "two.vmg"
    path.write_bytes(head + table + b"abcabc" + b"".join(payloads))
    with pytest.raises(FormatError, match="more than one enhancement"):
        container.VmgFile(path)
