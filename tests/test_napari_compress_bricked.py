"""Compress large volume widget: a real bricked encode (real encoder, few steps) of a small real crop
on an in-process dask cluster, under Xvfb. Stop and resume, a scheduler that does not answer,
refused layers, closing the viewer mid-run."""

import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytestmark = pytest.mark.gui

DATA = Path(__file__).parent / "data"
SCALE = (2.0, 0.5, 0.5)
#: the bricked encode every test runs: 16^3 bricks of a 16 x 32 x 48 crop = 6 bricks
RUN = dict(brick=16, halo=2, bpp=0.5, steps=12, gate=False)


def _errors():
    from napari.utils.notifications import NotificationSeverity, notification_manager

    return [n.message for n in notification_manager.records if n.severity == NotificationSeverity.ERROR]


@pytest.fixture(scope="module")
def nuclei_crop():
    import tifffile

    return np.ascontiguousarray(tifffile.imread(DATA / "cellseg3d_nuclei.tif")[30:46, 20:52, 30:78])


@pytest.fixture(scope="module")
def reference(tmp_path_factory, nuclei_crop):
    """The same encode through ``compress_bricked`` directly, uninterrupted: (bytes, report)."""
    from napari_volmicro.bricks import compress_bricked

    out = tmp_path_factory.mktemp("ref") / "ref.vmg"
    report = compress_bricked(nuclei_crop, out, spacing=SCALE, workers=1, processes=False, memory_limit="32GB",
                              **RUN)
    assert report["bricks"] == 6 and report["encoded"] >= 2
    return out.read_bytes(), report


class SlowEncoder:
    """The real encoder, slowed down so a test can act while bricks are in flight (same result)."""

    def __init__(self, seconds):
        self.seconds = seconds

    def __call__(self, data, spacing, **kwargs):
        from napari_volmicro.bricks.encode_bricks import _default_encoder

        time.sleep(self.seconds)
        return _default_encoder(data, spacing, **kwargs)


def _widget(viewer, volume, out):
    from napari_volmicro._napari._compress_bricked import BrickedCompressWidget

    viewer.add_image(volume, name="nuclei", scale=SCALE)
    widget = BrickedCompressWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Compress large volume")
    widget.local_processes = False  # worker threads in this process: seconds, not a process start-up
    widget.workers_spin.setValue(1)
    widget.memory_edit.setText("32GB")  # in-process workers count the whole test process (napari, torch)
    widget.bpp_spin.setValue(RUN["bpp"])
    widget.brick_spin.setValue(RUN["brick"])
    widget.halo_spin.setValue(RUN["halo"])
    widget.steps_spin.setValue(RUN["steps"])
    widget.extra_options = {"gate": RUN["gate"]}
    widget.output_edit.setText(str(out))
    return widget


def _wait(widget, qtbot, timeout=120_000):
    worker = widget.worker
    if worker is not None:
        with qtbot.waitSignal(worker.finished, timeout=timeout):
            pass


def test_bricked_run_writes_and_opens_the_file(make_napari_viewer_proxy, viewer_factory, nuclei_crop, reference,
                                               tmp_path, qtbot):
    from napari_volmicro._napari._layers import MODEL_KEY
    from napari_volmicro.container import VmgFile

    viewer = make_napari_viewer_proxy(ensure_main_thread=True)  # setting layer attributes off-thread raises
    out = tmp_path / "nuclei.vmg"
    widget = _widget(viewer, nuclei_crop, tmp_path / "nuclei")  # ".vmg" is appended
    updates = []
    before = len(_errors())
    widget.start()
    widget.worker.yielded.connect(updates.append)
    assert not widget.start_button.isEnabled() and widget.stop_button.isEnabled()
    _wait(widget, qtbot)
    assert _errors()[before:] == []
    report = widget.report
    assert report is not None and not report["stopped"] and report["output"] == str(out)
    # the widget ran exactly the library's encode: same bytes as compress_bricked called directly
    assert out.read_bytes() == reference[0]
    VmgFile(out).verify()
    assert not Path(str(out) + ".parts").exists()
    # progress reached the total; the per-brick tallies add up
    assert widget.progress.value() == widget.progress.maximum() == 6
    last = [u for u in updates if u.phase == "bricks"][-1]
    assert last.done == last.total == 6 and last.encoded + last.background == 6
    assert last.n_gaussians == report["n_gaussians"] and last.eta == 0.0
    # the file was opened with the plugin's reader: a model image layer (and its centres)
    image, centres = widget.output_layers
    assert image in viewer.layers and centres in viewer.layers
    assert type(image).__name__ == "Image" and MODEL_KEY in image.metadata
    assert type(centres).__name__ == "Points" and len(centres.data) == report["n_gaussians"]
    np.testing.assert_allclose(image.scale, SCALE)
    assert any(name.startswith("Browse") for name in viewer.window.dock_widgets)
    text = widget.summary_label.text()
    for key in ("bpp", "ratio", "6 bricks", "Gaussians", "bytes"):
        assert key in text, text
    assert widget.start_button.isEnabled() and not widget.stop_button.isEnabled()


def test_stop_keeps_staged_bricks_and_resume_finishes_with_the_same_bytes(viewer_factory, nuclei_crop, reference,
                                                                          tmp_path, qtbot):
    import dask.array as da

    viewer = viewer_factory()
    out = tmp_path / "big.vmg"
    # a dask layer (as napari-ome-zarr gives), chunks that do not match the bricks
    widget = _widget(viewer, da.from_array(nuclei_crop, chunks=(8, 20, 20)), out)
    widget.extra_options = {"gate": False, "encoder": SlowEncoder(0.4)}
    widget.start()
    qtbot.waitUntil(lambda: widget.progress.maximum() == 6 and widget.progress.value() >= 1, timeout=60_000)
    widget.stop_button.click()
    assert "stopping" in widget.status_label.text()
    _wait(widget, qtbot)
    report = widget.report
    assert report["stopped"] and report["output"] is None
    staged = sorted(Path(report["parts"]).glob("brick-*.npz"))
    done = report["encoded"] + report["background"]
    assert 1 <= done < 6 and len(staged) == done
    assert not out.exists()
    assert "stopped" in widget.summary_label.text() and widget.resume_check.isChecked()
    assert widget.output_layers == []
    # Start again with resume: only the missing bricks are encoded, and the file is the uninterrupted one
    widget.extra_options = {"gate": False}
    widget.start()
    _wait(widget, qtbot)
    report = widget.report
    assert not report["stopped"] and report["reused"] == done and report["encoded"] + report["background"] == 6 - done
    assert out.read_bytes() == reference[0]
    assert "reused" in widget.summary_label.text()


def test_a_scheduler_that_does_not_answer_gives_an_error_not_a_frozen_gui(viewer_factory, nuclei_crop, tmp_path,
                                                                            qtbot):
    viewer = viewer_factory()
    widget = _widget(viewer, nuclei_crop, tmp_path / "x.vmg")
    widget.cluster_combo.setCurrentText("scheduler address")
    assert widget.address_edit.isVisibleTo(widget) and not widget._local_row.isVisibleTo(widget)
    widget.address_edit.setText("tcp://127.0.0.1:9")  # nothing listens there
    widget.connect_timeout_s = 1.0
    before = len(_errors())
    t0 = time.perf_counter()
    widget.start()
    assert time.perf_counter() - t0 < 1.0  # the connection is tried in the worker
    assert widget.running
    _wait(widget, qtbot, timeout=30_000)
    errors = _errors()[before:]
    assert len(errors) == 1 and "tcp://127.0.0.1:9" in errors[0] and "did not answer within 1 s" in errors[0]
    assert widget.report is None and not (tmp_path / "x.vmg").exists()
    assert widget.start_button.isEnabled()


def test_unusable_layers_and_settings_are_refused(viewer_factory, tmp_path, qtbot):
    import dask.array as da

    from napari_volmicro._napari._compress_bricked import BrickedCompressWidget

    viewer = viewer_factory()
    viewer.add_image(np.zeros((32, 32), np.float32), name="flat")
    viewer.add_image(np.zeros((16, 16, 16, 3), np.uint8), name="colour", rgb=True)
    viewer.add_points(np.zeros((3, 3)), name="dots")
    viewer.add_image(np.zeros((4, 32, 32), np.float32), name="thin")
    widget = BrickedCompressWidget(viewer)
    for name, words in {"flat": "2D", "colour": "RGB", "dots": "Points", "thin": "at least 8"}.items():
        widget.layer_combo.setCurrentText(name)
        assert words in widget.layer_note.text(), (name, widget.layer_note.text())
        assert not widget.start_button.isEnabled()
        before = len(_errors())
        widget.start()
        assert widget.worker is None and len(_errors()) == before + 1
    # a multiscale dask volume is accepted (its full-resolution level is encoded)
    base = da.zeros((32, 64, 64), np.uint16, chunks=16)
    viewer.add_image([base, base[::2, ::2, ::2]], name="pyramid", multiscale=True)
    widget.layer_combo.setCurrentText("pyramid")
    assert widget.layer_note.text() == "" and widget.start_button.isEnabled()
    # no output path, no scheduler address: a message, no run
    before = len(_errors())
    widget.start()
    assert widget.worker is None and "output" in _errors()[-1] and len(_errors()) == before + 1
    widget.output_edit.setText(str(tmp_path / "p.vmg"))
    widget.cluster_combo.setCurrentText("scheduler address")
    widget.start()
    assert widget.worker is None and "scheduler address" in _errors()[-1]


def test_a_layer_opened_from_a_file_is_read_by_path(viewer_factory, nuclei_crop, tmp_path, qtbot):
    import tifffile

    from napari_volmicro._napari._compress_bricked import encode_source

    path = tmp_path / "nuclei.tif"
    tifffile.imwrite(path, nuclei_crop)
    viewer = viewer_factory()
    (layer,) = viewer.open(str(path), plugin="napari")
    assert encode_source(layer) == str(path)  # workers read their bricks from the file
    viewer.add_image(nuclei_crop, name="in memory")
    assert encode_source(viewer.layers["in memory"]) is viewer.layers["in memory"].data
    layer.data = nuclei_crop[:, :, :40]  # no longer what the file holds: the array itself
    assert encode_source(layer) is layer.data


def test_closing_the_viewer_stops_the_run(viewer_factory, nuclei_crop, tmp_path, qtbot):
    viewer = viewer_factory()
    widget = _widget(viewer, nuclei_crop, tmp_path / "c.vmg")
    widget.extra_options = {"gate": False, "encoder": SlowEncoder(0.4)}
    widget.start()
    worker = widget.worker
    qtbot.waitUntil(lambda: widget.progress.value() >= 1, timeout=60_000)
    errored = []
    worker.errored.connect(errored.append)
    before = len(_errors())
    viewer.close()
    # closing stopped the run and waited (without an event loop) for the worker to end
    assert widget.thread_done.is_set()
    qtbot.wait(200)
    assert errored == [] and len(_errors()) == before
    assert not (tmp_path / "c.vmg").exists()
    assert 1 <= len(list((tmp_path / "c.vmg.parts").glob("brick-*.npz"))) < 6


def test_tally_counts_kinds_and_estimates_the_time_left():
    from napari_volmicro._napari._bricked_loop import BrickTally, bricked_updates
    from napari_volmicro.bricks import BrickProgress

    tally = BrickTally()
    tally.add(BrickProgress(1, 6, 0, 0, "reused", 1.0))
    tally.add(BrickProgress(2, 6, 3, 0, "background", 2.0))
    u = tally.add(BrickProgress(3, 6, 1, 40, "encoded", 12.0))
    assert (u.done, u.encoded, u.background, u.reused, u.n_gaussians) == (3, 1, 1, 1, 40)
    assert u.eta == pytest.approx(30.0)  # 10 s per trained brick, 3 left
    u = tally.add(BrickProgress(4, 6, 2, 10, "encoded", 16.0))
    assert u.eta == pytest.approx(14.0) and u.n_gaussians == 50

    import threading

    def fake(source, output, *, stop, progress, **kw):
        for i in range(3):
            progress(BrickProgress(i + 1, 3, i, 5, "encoded", float(i)))
        if kw.get("fail"):
            raise ValueError("boom")
        return {"done": True, "stop_seen": stop.is_set()}

    gen = bricked_updates("src", "out.vmg", stop=threading.Event(), compress=fake, throttle_s=0.0)
    got = []
    try:
        while True:
            got.append(next(gen))
    except StopIteration as end:
        result = end.value
    assert got[0].phase == "starting" and got[-1].done == 3 and got[-1].n_gaussians == 15
    assert result == {"done": True, "stop_seen": False}
    done = threading.Event()
    with pytest.raises(ValueError, match="boom"):
        list(bricked_updates("src", "out.vmg", stop=threading.Event(), finished=done, compress=fake, fail=True))
    assert done.is_set()


def test_stop_during_the_statistics_pass_writes_nothing_and_resume_finishes(nuclei_crop, reference, tmp_path):
    """``compress_bricked(stop=...)`` directly: a stop before any brick is encoded."""
    import threading

    from napari_volmicro.bricks import compress_bricked

    out = tmp_path / "s.vmg"
    kwargs = dict(spacing=SCALE, workers=1, processes=False, memory_limit="32GB", **RUN)
    stop = threading.Event()
    stop.set()
    seen = []
    report = compress_bricked(nuclei_crop, out, stop=stop, progress=seen.append, **kwargs)
    assert report["stopped"] and report["output"] is None and report["encoded"] == 0 and seen == []
    parts = Path(report["parts"])
    assert not out.exists() and not list(parts.glob("brick-*.npz")) and not (parts / "stats.npz").exists()
    report = compress_bricked(nuclei_crop, out, resume=True, stop=threading.Event(), **kwargs)
    assert not report["stopped"] and report["encoded"] + report["background"] == 6
    assert out.read_bytes() == reference[0]
