"""napari manifest, reader, writer and sample data (run under Xvfb)."""

import numpy as np
import pytest

pytest.importorskip("napari")
pytestmark = pytest.mark.gui


def _errors():
    from napari.utils.notifications import NotificationSeverity, notification_manager

    return [n.message for n in notification_manager.records if n.severity == NotificationSeverity.ERROR]


def test_manifest_validates():
    from npe2 import PluginManifest

    pm = PluginManifest.from_distribution("napari-volmicro")
    pm.validate_imports()  # every python_name imports and exists
    contrib = pm.contributions
    assert {w.display_name for w in contrib.widgets} == {"Compress", "Compress large volume", "Browse"}
    assert contrib.readers[0].filename_patterns == ["*.vmg"]
    assert contrib.writers[0].layer_types == ["points"]
    assert len(contrib.sample_data) == 2


def test_reader_yields_model_layers(viewer_factory, vmg_file, small_model):
    from napari_volmicro.container import quantize
    from napari_volmicro.features import feature_table

    viewer = viewer_factory()
    layers = viewer.open(str(vmg_file), plugin="napari-volmicro")
    assert [type(lyr).__name__ for lyr in layers] == ["Image", "Points"]
    image, points = layers
    stored = quantize(small_model)
    assert image.data.shape == small_model.shape
    np.testing.assert_allclose(image.scale, small_model.spacing)
    np.testing.assert_allclose(points.scale, small_model.spacing)
    np.testing.assert_allclose(points.data, stored.centers, atol=1e-6)
    np.testing.assert_allclose(points.features["amplitude"], feature_table(stored)["amplitude"], rtol=1e-6)
    for col in ("scale_major", "anisotropy", "axis_z", "elevation_deg", "volume"):
        assert col in points.features
    # the Browse dock opened and attached to the image layer
    docks = list(viewer.window.dock_widgets)
    assert any(name.startswith("Browse") for name in docks), docks


def test_corrupt_file_gives_a_notification_not_a_traceback(viewer_factory, vmg_file, tmp_path):
    viewer = viewer_factory()
    data = bytearray(vmg_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "corrupt.vmg"
    bad.write_bytes(bytes(data))
    before = len(_errors())
    layers = viewer.open(str(bad), plugin="napari-volmicro")
    assert layers == [] and len(viewer.layers) == 0
    new = _errors()[before:]
    assert len(new) == 1 and "corrupt.vmg" in new[0]
    trunc = tmp_path / "truncated.vmg"
    trunc.write_bytes(vmg_file.read_bytes()[:40])
    assert viewer.open(str(trunc), plugin="napari-volmicro") == []
    assert "truncated.vmg" in _errors()[-1]


def test_writer_round_trips_after_deleting_points(viewer_factory, vmg_file, tmp_path):
    from napari_volmicro import load
    from napari_volmicro.container import quantize

    viewer = viewer_factory()
    _, points = viewer.open(str(vmg_file), plugin="napari-volmicro")
    original = load(vmg_file)
    amps = np.asarray(points.features["amplitude"])
    keep = amps >= np.median(amps)
    points.selected_data = set(np.flatnonzero(~keep).tolist())
    points.remove_selected()
    assert len(points.data) == keep.sum()
    out = tmp_path / "edited.vmg"
    viewer.layers.selection = {points}
    written = viewer.layers.save(str(out), selected=True, plugin="napari-volmicro")
    assert written == [str(out)]
    back = load(out)
    expect = quantize(original.subset(keep))
    assert back.n_gaussians == keep.sum()
    np.testing.assert_allclose(back.centers, expect.centers, atol=1e-5)
    np.testing.assert_allclose(back.amplitudes, expect.amplitudes, rtol=1e-5)
    np.testing.assert_allclose(back.scales, expect.scales, rtol=1e-5)
    assert back.mapping == original.mapping and back.spacing == original.spacing
    region = (slice(5, 9), slice(0, 40, 2), slice(0, 36, 2))
    np.testing.assert_array_equal(back.decode(region, "reference"), expect.decode(region, "reference"))


def test_writer_refuses_foreign_points(viewer_factory, tmp_path):
    from napari_volmicro._napari._writer import write_points
    from napari_volmicro.errors import InputError

    viewer = viewer_factory()
    pts = viewer.add_points(np.random.default_rng(0).uniform(0, 10, (5, 3)))
    with pytest.raises(InputError, match="napari-volmicro"):
        write_points(str(tmp_path / "x.vmg"), pts.data, pts._get_state())
    assert not (tmp_path / "x.vmg").exists()


def test_sample_volume(viewer_factory):
    viewer = viewer_factory()
    viewer.open_sample("napari-volmicro", "purkinje")
    (layer,) = viewer.layers
    assert layer.data.shape == (50, 256, 256)


def test_sample_model_opens_and_matches_the_sample_volume(viewer_factory, qtbot):
    from napari_volmicro._napari._sample_data import PURKINJE_VMG, purkinje_volume
    from napari_volmicro.metrics import psnr_full

    if not PURKINJE_VMG.exists():
        pytest.skip("sample .vmg not made yet (scripts/make_sample_vmg.py)")
    viewer = viewer_factory()
    viewer.open_sample("napari-volmicro", "purkinje_vmg")
    image, points = viewer.layers
    gv = image.metadata["volmicro_model"]
    assert gv.shape == (50, 256, 256) and len(points.data) == gv.n_gaussians
    # the Z slider covers the volume's planes, not the Points layer's size-padded extent
    assert viewer.dims.range[0].start == 0 and viewer.dims.nsteps[0] == 50
    # the model really is the sample stack: one decoded slice is close to it
    stack = purkinje_volume()[0][0]
    z = 25
    plane = gv.decode((slice(z, z + 1), slice(None), slice(None)), evaluator="dense")
    assert psnr_full(stack[z : z + 1], plane) > 35


@pytest.mark.parametrize("visible", [True, False], ids=["shown", "hidden"])
def test_points_layer_follows_models_of_changing_size(viewer_factory, qtbot, visible):
    """A live Points layer takes models with fewer and more Gaussians (as densification makes them),
    also while the user has hidden it (napari does not re-slice a hidden layer on a data change)."""
    from napari_volmicro._napari._layers import points_layer_data, update_points_layer
    from napari_volmicro.features import feature_table
    from napari_volmicro.synthetic import random_volume

    viewer = viewer_factory(show=True)
    first = random_volume((12, 40, 40), n=80, seed=1)
    data, kwargs, _ = points_layer_data(first, "centres")
    layer = viewer.add_points(data, **kwargs)
    viewer.dims.set_current_step(0, 6)
    layer.visible = visible
    for seed, n in ((2, 60), (3, 120), (4, 120), (5, 30)):
        gv = random_volume((12, 40, 40), n=n, seed=seed)
        update_points_layer(layer, gv, features=feature_table(gv))
        qtbot.wait(30)  # let the canvas draw what it was given (an inconsistent view would raise)
        np.testing.assert_allclose(layer.data, gv.centers, rtol=1e-6)
        f = feature_table(gv)
        want_size = 2.0 * np.cbrt(f["sigma_0"] * f["sigma_1"] * f["sigma_2"])
        np.testing.assert_allclose(layer.size, want_size, rtol=1e-6)
        np.testing.assert_allclose(layer.features["amplitude"], gv.amplitudes, rtol=1e-6)
        # the colours follow the new amplitudes: the brightest Gaussian gets viridis' top colour
        np.testing.assert_allclose(layer.face_color[np.argmax(gv.amplitudes), :3], [0.993248, 0.906157, 0.143936], atol=1e-3)
