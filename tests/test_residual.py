"""The enhancement layer (``napari_volmicro.residual``): transform, entropy coding, contexts (kernels
against their plain definitions), the byte layout (bounded, fuzzed), region decodes, the rate and
error-bounded encoders on real crops with trained bases, and decoding through the container."""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile

import napari_volmicro
from napari_volmicro import container
from napari_volmicro.errors import FormatError, VolmicroError
from napari_volmicro.residual import (
    blob,
    contexts,
    correction,
    encode,
    entropy,
    finish,
    hybrid,
    linear,
    noise,
    wavelet,
    wavelet_coder,
)
from napari_volmicro.residual.layer import ResidualLayer

DATA = Path(__file__).parent / "data"
PURKINJE = Path(napari_volmicro.__file__).parent / "_data" / "purkinje_flowdec.tif"


def _psnr(a, b):
    a = np.asarray(a, np.float64)
    peak = a.max() - a.min()
    return 10 * math.log10(peak**2 / np.mean((a - np.asarray(b, np.float64)) ** 2))


@pytest.fixture(scope="module")
def nuclei_crop():
    """Real dense nuclei (float32 holding integers 222..2781), 40 x 48 x 56."""
    return tifffile.imread(DATA / "cellseg3d_nuclei.tif")[20:60, 10:58, 20:76].copy()


@pytest.fixture(scope="module")
def trained(nuclei_crop):
    """A base the encoder trained on the crop (few steps: a real but rough model)."""
    from napari_volmicro.encode import Trainer

    t = Trainer(nuclei_crop, bpp=0.05, steps=120, seed=0)
    for _ in t.run():
        pass
    return t.result


# -- transform ------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(26, 64, 64), (5, 7, 9), (17, 4, 33), (1, 1, 1), (2, 3, 1)])
@pytest.mark.parametrize("planar", [False, True])
def test_wavelet_round_trip_and_kernel_matches_reference(shape, planar):
    x = np.random.default_rng(0).normal(size=shape) * 100
    levels = wavelet.decomposition(4, planar)
    c = wavelet.forward(x, levels)
    assert np.array_equal(c, wavelet.forward_reference(x, levels))  # bit for bit: same arithmetic, same order
    assert np.array_equal(wavelet.inverse(c, levels), wavelet.inverse_reference(c, levels))
    assert np.allclose(wavelet.inverse(c, levels), x, atol=1e-9)
    if planar:  # each Z plane transformed on its own: the same as a 2D transform of that plane
        assert not any(axes[0] for _, axes in wavelet.plan(shape, levels))
        assert np.array_equal(c[-1:], wavelet.forward(x[-1:], 4))


def test_band_gains_are_the_synthesis_norms():
    shape = (26, 40, 33)
    for (_, sl, _), g in zip(wavelet.band_boxes(shape, 4), wavelet.band_gains(shape, 4)):
        e = np.zeros(shape)
        e[tuple((s.start + s.stop) // 2 for s in sl)] = 1.0
        assert np.linalg.norm(wavelet.inverse(e, 4)) == pytest.approx(g, rel=1e-9)


def test_bands_tile_the_block():
    shape = (26, 64, 50)
    cover = np.zeros(shape, int)
    for _, sl, _ in wavelet.band_boxes(shape, 4):
        cover[sl] += 1
    assert np.all(cover == 1)


# -- entropy coding -----------------------------------------------------------------------------


def test_codebook_is_fixed():
    """The codebook is part of the format: its integer weights must never change."""
    cb = entropy.codebook()
    assert cb.shape == (entropy.CODEBOOK_SIZE, entropy.ALPHABET)
    assert np.all(cb == np.rint(cb)) and cb.min() >= 1 and cb.max() < 2**53
    assert zlib.crc32(cb.astype("<u8").tobytes()) == 0x88107982


def test_entropy_round_trip():
    rng = np.random.default_rng(1)
    sym = np.minimum(rng.geometric(0.3, 4000) - 1, entropy.ESCAPE)
    ctx = rng.integers(0, 6, 4000)
    counts = np.zeros((6, entropy.ALPHABET))
    np.add.at(counts, (ctx, sym), 1)
    entries, bits = entropy.choose(counts)
    exc = np.concatenate([rng.integers(0, 10**9, 50), [0, 1, 2**39]])
    enc = entropy.new_encoder()
    entropy.encode_groups(enc, sym, ctx, entries)
    entropy.encode_excess(enc, exc)
    entropy.encode_bits(enc, sym % 2)
    data = entropy.finish(enc)
    assert len(data) * 8 < bits + 64 * 52 + 4000 + 256  # the estimate is the size, within a few words
    dec = entropy.new_decoder(data)
    assert np.array_equal(entropy.decode_groups(dec, ctx, entries), sym)
    assert np.array_equal(entropy.decode_excess(dec, len(exc)), exc)
    assert np.array_equal(entropy.decode_bits(dec, 4000), sym % 2)


# -- contexts: kernels against their definitions -------------------------------------------------


def _phase_contexts_reference(ps, q, odd):
    a = contexts.activity(q)
    sel = contexts.parity(q.shape) if odd else ~contexts.parity(q.shape)
    if not odd:
        return contexts.context_a(ps[sel])
    return contexts.context_b(contexts.neighbour_sum(np.where(~contexts.parity(q.shape), a, 0))[sel], ps[sel])


def test_context_kernels_match_definitions(nuclei_crop):
    from napari_volmicro.residual import _kernels as K

    rng = np.random.default_rng(2)
    q = rng.integers(-30, 30, (9, 10, 11)) * (rng.random((9, 10, 11)) < 0.4)
    ps = rng.integers(0, 70, q.shape)
    for odd in (0, 1):
        assert np.array_equal(K.phase_contexts(ps, q, odd), _phase_contexts_reference(ps, q, odd))
        for z in range(q.shape[0]):
            assert np.array_equal(K.slice_contexts(q, z, odd), correction.slice_contexts_reference(q, z, odd))
    for n in (0, 1, 500):
        cx = rng.integers(0, contexts.N_CTX, n)
        ent = rng.integers(0, entropy.CODEBOOK_SIZE, contexts.N_CTX)
        ent[3] = ent[5]  # two contexts sharing an entry form one group
        for got, want in zip(entropy._groups(cx, ent), entropy._groups_reference(cx, ent)):
            assert np.array_equal(got, want)
    # dequantisation and the compiled counting pass against their definitions, on a real block
    c = wavelet.forward(nuclei_crop - nuclei_crop.mean(), 4)
    qb = wavelet_coder.quantize(c, 9.0, 4)
    nu = rng.uniform(-0.3, 0.3, wavelet_coder.N_CLASSES)
    assert np.array_equal(wavelet_coder.dequantize(qb, 9.0, 4, nu), wavelet_coder.dequantize_reference(qb, 9.0, 4, nu))
    c = wavelet.forward(nuclei_crop - nuclei_crop.mean(), 4)
    for step in (10.0, 60.0, 400.0):
        qb = wavelet_coder.quantize(c, step, 4)
        a, ea = wavelet_coder.count(qb, 4)
        b, eb = wavelet_coder.count_fast(qb, 4)
        assert np.array_equal(a, b) and ea == eb
        qc = correction.quantize((nuclei_crop - nuclei_crop.mean()) / step, 1.0)
        a, ea = correction.count(qc)
        b, eb = correction.count_fast(qc)
        assert np.array_equal(a, b) and ea == eb


# -- the layer -----------------------------------------------------------------------------------


@pytest.mark.parametrize("planar", [False, True])
def test_layer_round_trip_and_regions(nuclei_crop, planar):
    r = nuclei_crop - np.median(nuclei_crop)
    tr = encode.Transformed(r, block=24, planar=planar)
    layer = encode.encode_layer(tr, r, transform=tr.quantize(40.0))
    again = ResidualLayer.from_bytes(layer.to_bytes())
    assert again.header.n_blocks == 2 * 2 * 3
    assert again.header.planar == planar and ("planar" in again.describe()["residual_stages"]) == planar
    whole = again.decode()
    assert _psnr(r, whole) > 30
    region = (slice(3, 38, 4), slice(20, 21), slice(1, 55, 3))
    fresh = ResidualLayer.from_bytes(layer.to_bytes())
    assert np.array_equal(fresh.decode(region), whole[region])
    assert len(fresh._cache) == len(fresh.header.blocks_meeting((3, 20, 1), (36, 21, 53)))
    assert len(fresh._cache) < fresh.header.n_blocks  # the region's blocks only
    # the cache is bounded by bytes, keeping the newest blocks
    from napari_volmicro.residual import layer as layer_module

    small = ResidualLayer.from_bytes(layer.to_bytes())
    n = small.header.n_blocks
    last_two = sum(np.prod([sl.stop - sl.start for sl in small.header.block_slices(i)]) * 8 for i in (n - 2, n - 1))
    old = layer_module.CACHE_BYTES
    layer_module.CACHE_BYTES = int(last_two)
    try:
        for i in range(small.header.n_blocks):
            small.block_values(i)
        assert list(small._cache) == [small.header.n_blocks - 2, small.header.n_blocks - 1]
        assert small._cached_bytes == sum(v.nbytes for v in small._cache.values())
    finally:
        layer_module.CACHE_BYTES = old


def test_fit_bytes_lands_on_the_budget_and_quality_rises(nuclei_crop):
    r = nuclei_crop - np.median(nuclei_crop)
    tr = encode.Transformed(r)
    last = -np.inf
    for nbytes in (1500, 6000, 24000):
        layer = encode.fit_bytes(r, nbytes, transformed=tr)
        assert 0.96 * nbytes <= layer.nbytes <= nbytes
        q = _psnr(nuclei_crop, np.median(nuclei_crop) + layer.decode())
        assert q > last + 1.0
        last = q


# -- error bound -----------------------------------------------------------------------------------


def _crops():
    nuclei = tifffile.imread(DATA / "cellseg3d_nuclei.tif")[30:62, 20:60, 30:70]
    return {
        "uint16 nuclei": nuclei.astype(np.uint16),  # integers 222..2781
        "uint8 neuron": tifffile.imread(DATA / "rivuletpy_neuron.tif")[50:80, 150:200, 150:200],
        "float32 purkinje": tifffile.imread(PURKINJE)[10:40, 100:150, 100:150],  # quarter grey levels
        "float32 bead": tifffile.imread(DATA / "bead_flowdec.tif")[16:48, 16:48, 16:48],
    }


@pytest.mark.parametrize("name", list(_crops()))
def test_max_error_is_guaranteed_on_real_crops(name):
    vol = _crops()[name]
    from napari_volmicro.encode import Trainer

    t = Trainer(vol, bpp=0.05, steps=40, seed=0)
    for _ in t.run():
        pass
    gv = t.result
    sigma = noise.noise_sigma(vol)
    for bound in ("1", "2.5", "1sigma", "4sigma"):
        e, _ = hybrid.parse_max_error(bound, vol)
        model = hybrid.add_bounded_layer(vol, gv, e, sigma)
        layer = ResidualLayer.from_bytes(model.residual.to_bytes())
        decoded = model.replace(residual=layer).decode()
        base = hybrid.base_values(model)
        promise = math.floor(e) if vol.dtype.kind in "iu" else e
        assert layer.max_error == pytest.approx(promise)
        err = np.abs(decoded.astype(np.float64) - vol.astype(np.float64)).max()
        assert err <= promise, (name, bound, err, promise)
        # a decoder whose base differs by up to 0.9 delta keeps the promise
        wobble = np.random.default_rng(3).uniform(-0.9, 0.9, vol.shape) * layer.header.delta
        again = finish(base + wobble + layer.decode(), gv.mapping)
        assert np.abs(again.astype(np.float64) - vol.astype(np.float64)).max() <= promise


@pytest.mark.parametrize("form", ["plain", "transform+plain", "predictive", "linear"])
def test_each_correction_form_keeps_the_bound(form):
    """The encoder picks among these by size; each one on its own must keep the promise (tissue crop, uint16)."""
    vol = tifffile.imread(DATA / "cellseg3d_nuclei.tif")[40:66, 10:70, 20:80].astype(np.uint16)
    r = vol.astype(np.float64) - np.median(vol)
    factors, pred, lin = {"plain": ((0.0,), (), ()), "transform+plain": ((3.0,), (), ()),
                          "predictive": ((), (0.0,), ()), "linear": ((), (), (0.0,))}[form]
    step = hybrid.bounded_step(5.0, True, 1e-3)
    layer = encode.fit_max_error(r, step, max_error=5.0, delta=1e-3, factors=factors, predictive_factors=pred,
                                 linear_factors=lin, block=32)
    again = ResidualLayer.from_bytes(layer.to_bytes())
    assert again.header.predictive == (form == "predictive")
    assert again.header.linear == (form == "linear")
    assert again.header.has_transform == (form == "transform+plain")
    decoded = finish(np.median(vol) + again.decode(), _Mapping())
    assert np.abs(decoded.astype(np.float64) - vol).max() <= 5
    region = (slice(3, 25, 2), slice(30, 31), slice(0, 60, 7))
    assert np.array_equal(ResidualLayer.from_bytes(layer.to_bytes()).decode(region), again.decode()[region])


def test_planar_transform_wins_where_planes_do_not_correlate(nuclei_crop, trained):
    """Two-photon tissue sampled every few microns in Z (cellfinder crop): transforming each plane on its
    own rebuilds better at equal bytes than the 3D transform; dense light-sheet nuclei: the reverse. The
    rate mode measures both and keeps the better."""
    from napari_volmicro.encode import Trainer

    tissue = tifffile.imread(DATA / "cellfinder_tissue_crop.tif").copy()  # 12 x 64 x 64 uint16
    for vol, planar_better in ((tissue, True), (nuclei_crop, False)):
        x = vol.astype(np.float64)
        r = x - np.median(x)
        err = {}
        for planar in (False, True):
            tr = encode.Transformed(r, *((encode.PLANAR_BLOCK, encode.PLANAR_LEVELS) if planar else ()),
                                    planar=planar)
            err[planar] = encode.squared_error(tr, encode.search_bytes(tr, 4000))
        assert (err[True] < 0.9 * err[False]) if planar_better else (err[False] < 0.9 * err[True]), err
    t = Trainer(tissue, bpp=0.05, steps=40, seed=0)
    for _ in t.run():
        pass
    for vol, gv, planar_better in ((tissue, t.result, True), (nuclei_crop, trained, False)):
        model = hybrid.add_rate_layer(vol, gv, int(0.3 * vol.size / 8))
        assert model.residual.header.planar == planar_better


def test_zero_max_error_is_lossless_and_rate_mode_stops_at_lossless():
    """``--max-error 0`` on an integer volume decodes every voxel exactly (no transform stage of step 0 is
    tried); in rate mode, a sparse volume that a layer rebuilds exactly at the budget gets the smaller
    lossless file instead of bytes spent on nothing (traced neuron crop, uint8)."""
    from napari_volmicro.container import file_size
    from napari_volmicro.encode import Trainer

    vol = tifffile.imread(DATA / "rivuletpy_neuron.tif")[0:30, 100:150, 150:200].copy()  # 2,846 voxels of neuron
    t = Trainer(vol, bpp=0.05, steps=40, seed=0)
    for _ in t.run():
        pass
    exact = hybrid.add_bounded_layer(vol, t.result, 0.0)
    whole_base = hybrid.add_bounded_layer(vol, t.result, 0.0, fractions=(1.0,))
    # sparse: fewer Gaussians code the bound in fewer bytes, and the smaller file is kept
    assert exact.n_gaussians < whole_base.n_gaussians and file_size(exact) < file_size(whole_base)
    assert np.array_equal(whole_base.decode(), vol)
    again = ResidualLayer.from_bytes(exact.residual.to_bytes())
    assert again.max_error == 0 and not again.header.has_transform
    assert np.array_equal(exact.replace(residual=again).decode(), vol)
    lossless_bytes = file_size(exact)
    budget = 3 * lossless_bytes
    model = hybrid.add_rate_layer(vol, t.result, budget)
    assert model.residual.max_error == 0 and file_size(model) < budget
    assert np.array_equal(model.decode(), vol)
    # a budget below the lossless size keeps the rate layer and fills the budget
    tight = hybrid.add_rate_layer(vol, t.result, lossless_bytes // 2)
    assert tight.residual.max_error is None and 0.95 * (lossless_bytes // 2) <= file_size(tight) <= lossless_bytes // 2


def test_linear_kernels_match_the_plain_definition():
    rng = np.random.default_rng(0)
    r = rng.normal(0, 7, (6, 9, 8)).cumsum(axis=2)  # correlated along X, like real residuals
    w = rng.normal(0, 0.2, linear.N_WEIGHTS)
    q, rec = linear.quantize_block(r, w, 2.5)
    assert np.abs(rec - r).max() <= 1.25 + 1e-9
    assert np.array_equal(linear.rebuild(q, w, 2.5), rec)
    assert np.allclose(linear.rebuild_reference(q, w, 2.5), rec, rtol=0, atol=1e-9)
    # the fit recovers the weights of a process made by the predictor from independent innovations
    w_true = np.zeros(linear.N_WEIGHTS)
    w_true[[0, 2, 6]] = 0.4, 0.3, 0.2
    made = linear.rebuild(rng.integers(-20, 21, (20, 30, 30)), w_true, 1.0)
    assert np.abs(linear.fit_weights([made], [made]) - w_true).max() < 0.03


@pytest.mark.parametrize("k", [1, 2])
def test_linear_form_is_smaller_on_a_real_residual(nuclei_crop, trained, k):
    """After a trained base the nuclei residual is correlated between neighbours; the linear form codes it
    in fewer bytes than the interpolating (SZ3-style) and plain forms at 1 and 2 noise sigmas, keeping the bound."""
    r = nuclei_crop.astype(np.float64) - hybrid.base_values(hybrid.stored_base(trained))
    e = k * noise.noise_sigma(nuclei_crop)
    step = hybrid.bounded_step(e, False, 1e-6)
    sizes = {}
    for form, f, p, lin in (("plain", (0.0,), (), ()), ("predictive", (), (0.0,), ()), ("linear", (), (), (0.0,))):
        layer = encode.fit_max_error(r, step, max_error=e, delta=1e-6, factors=f, predictive_factors=p,
                                     linear_factors=lin)
        sizes[form] = layer.nbytes
        assert np.abs(ResidualLayer.from_bytes(layer.to_bytes()).decode() - r).max() <= e
    assert sizes["linear"] < 0.95 * min(sizes["plain"], sizes["predictive"]), sizes
    chosen = encode.fit_max_error(r, step, max_error=e, delta=1e-6)
    assert chosen.header.linear and chosen.nbytes == sizes["linear"]


class _Mapping:
    """An integer output mapping for ``finish`` (uint16)."""

    is_integer = True
    clip_range = (0.0, 65535.0)
    dtype = np.dtype(np.uint16)


def test_parse_max_error():
    vol = np.random.default_rng(0).normal(100, 4, (20, 30, 30))
    assert hybrid.parse_max_error("3", vol) == (3.0, 0.0)
    e, s = hybrid.parse_max_error("1.5sigma", vol)
    assert s == pytest.approx(4, rel=0.1) and e == pytest.approx(1.5 * s)
    for bad in ("abc", "-1", "nan", "sigma"):
        with pytest.raises(VolmicroError):
            hybrid.parse_max_error(bad, vol)
    with pytest.raises(VolmicroError, match="noise is 0"):
        hybrid.parse_max_error("1sigma", np.zeros((4, 8, 8)))


def test_noise_sigma_on_white_noise_and_smooth_signal():
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[:40, :50, :60]
    smooth = 1000 * np.sin(z / 7) * np.cos(y / 9) + 3 * x
    assert noise.noise_sigma(smooth + rng.normal(0, 2, smooth.shape)) == pytest.approx(2, rel=0.05)
    assert noise.noise_sigma(rng.normal(0, 5, (1, 300, 300))) == pytest.approx(5, rel=0.05)


# -- through the container and GaussianVolume.decode ------------------------------------------


def test_saved_layer_decodes_by_default_and_base_on_request(tmp_path, nuclei_crop, trained):
    total = int(0.3 * nuclei_crop.size / 8)
    gv = hybrid.add_rate_layer(nuclei_crop, trained, total)
    assert gv.residual is not None
    path = gv.save(tmp_path / "m.vmg")
    assert 0.97 * total <= path.stat().st_size <= total
    m = napari_volmicro.load(path)
    assert isinstance(m.residual, ResidualLayer)
    full, base = m.decode(), m.decode(layers="base")
    assert np.array_equal(base, hybrid.stored_base(trained).decode())
    assert np.array_equal(gv.decode(), full)  # the model in memory decodes as its file
    assert _psnr(nuclei_crop, full) > _psnr(nuclei_crop, base) + 3
    region = (slice(5, 30, 2), slice(0, 48), slice(40, 41))
    assert np.array_equal(m.decode(region), full[region])
    assert np.array_equal(m.decode(region, evaluator="reference"), full[region])
    with pytest.raises(VolmicroError, match="approximate"):
        m.decode(evaluator="knn", layers="all")
    assert np.array_equal(m.decode(region, evaluator="knn"), m.decode(region, evaluator="knn", layers="base"))
    assert m.subset(np.arange(3)).residual is None
    # a re-save keeps the layer byte for byte
    again = napari_volmicro.load(m.save(tmp_path / "m2.vmg"))
    assert again.residual.to_bytes() == m.residual.to_bytes()


def test_bricked_lazy_model_adds_the_layer(tmp_path, nuclei_crop, trained):
    gv = hybrid.add_rate_layer(nuclei_crop, trained, int(0.2 * nuclei_crop.size / 8))
    path = container.save(gv, tmp_path / "b.vmg", brick_shape=(20, 24, 28))
    lazy = napari_volmicro.load(path)
    assert type(lazy).__name__ == "LazyGaussianVolume"
    region = (slice(0, 20), slice(0, 24), slice(0, 28))
    assert np.array_equal(lazy.decode(region), gv.decode(region))
    assert not np.array_equal(lazy.decode(region), lazy.decode(region, layers="base"))


# -- hostile bytes ----------------------------------------------------------------------------------


def _small_layer(form="plain", planar=False):
    vol = tifffile.imread(DATA / "bead_flowdec.tif")[20:44, 20:44, 20:44].astype(np.float64)
    r = vol - vol.mean()
    tr = encode.Transformed(r, block=12, planar=planar)
    return encode.encode_layer(tr, r, transform=tr.quantize(5.0), correction_step=3.0, max_error=1.5,
                               form=form).to_bytes()


@pytest.mark.parametrize("form", ["plain", "predictive", "linear", "planar"])
def test_fuzzed_layers_raise_only_format_errors(form):
    good = _small_layer(*(("plain", True) if form == "planar" else (form,)))
    rng = np.random.default_rng(5)
    hb = blob.header_size(lambda o, n: good[o: o + n], len(good), "x")
    n_blocks = blob.parse_header(good[:hb], "x").n_blocks
    data_start = hb + 8 * n_blocks
    cases = [good[:k] for k in (0, 3, 40, hb - 1, hb + 5, len(good) - 1)]
    for _ in range(60):
        b = bytearray(good)
        for _ in range(rng.integers(1, 6)):
            b[rng.integers(0, len(b))] = rng.integers(0, 256)
        cases.append(bytes(b))
    # payload bytes garbled behind recomputed CRCs: the range decoder meets what no encoder wrote
    for _ in range(30):
        b = bytearray(good)
        pos = data_start
        for i in range(n_blocks):
            (length,) = np.frombuffer(good, "<u4", 1, hb + 8 * i)
            payload = bytes(rng.integers(0, 256, int(length), dtype=np.uint8))
            b[pos: pos + length] = payload
            b[hb + 8 * i + 4: hb + 8 * i + 8] = np.uint32(zlib.crc32(payload)).tobytes()
            pos += int(length)
        cases.append(bytes(b))
    cases.append(good[:hb] + b"\xff" * (len(good) - hb))
    for data in cases:
        try:
            layer = ResidualLayer.from_bytes(data)
            out = layer.decode()
        except FormatError:
            continue
        assert np.all(np.isfinite(out))


def test_layer_header_checks():
    good = _small_layer()
    hb = blob.header_size(lambda o, n: good[o: o + n], len(good), "x")
    with pytest.raises(FormatError, match="shape"):
        blob.parse_header(good[:hb], "x", shape=(1, 2, 3))
    bad = bytearray(good)
    bad[0:4] = b"NOPE"
    with pytest.raises(FormatError, match="magic"):
        ResidualLayer.from_bytes(bytes(bad))
    with pytest.raises(FormatError, match="checksum"):
        ResidualLayer.from_bytes(good[:20] + bytes([good[20] ^ 1]) + good[21:])


def test_linear_layer_weights_are_checked():
    from dataclasses import replace

    good = _small_layer("linear")
    hb = blob.header_size(lambda o, n: good[o: o + n], len(good), "x")
    h = blob.parse_header(good[:hb], "x")
    assert h.linear and not h.predictive and h.weights.shape == (linear.N_WEIGHTS,)
    assert blob.pack(h, _payloads(good, h, hb)) == good
    for bad in (np.full(linear.N_WEIGHTS, np.nan), np.full(linear.N_WEIGHTS, 2 * linear.MAX_WEIGHT)):
        with pytest.raises(FormatError, match="weights"):
            ResidualLayer.from_bytes(blob.pack(replace(h, weights=bad), _payloads(good, h, hb)))
    with pytest.raises(FormatError, match="stage bits"):
        ResidualLayer.from_bytes(blob.pack(replace(h, stages=h.stages | blob.STAGE_PREDICTIVE), _payloads(good, h, hb)))


def _payloads(data: bytes, h, hb: int) -> list[bytes]:
    lengths, pos, out = np.frombuffer(data, "<u4", 2 * h.n_blocks, hb)[::2], hb + 8 * h.n_blocks, []
    for n in lengths.tolist():
        out.append(data[pos: pos + n])
        pos += n
    return out
