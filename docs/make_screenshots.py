#!/usr/bin/env python
"""Screenshots for docs/user-guide.md, taken from a real napari window.

Run under Xvfb with a large screen (a hidden viewer screenshots black):

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_screenshots.py

Writes docs/screenshots/{compress,browse-2d,browse-3d-ellipsoids,points-features}.png.
Needs src/napari_volmicro/_data/purkinje_sample.vmg (scripts/make_sample_vmg.py).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "screenshots"


def pump(app, seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.005)


def wait(app, cond, timeout=600):
    end = time.perf_counter() + timeout
    while not cond():
        if time.perf_counter() > end:
            raise TimeoutError("screenshot scene did not settle")
        app.processEvents()
        time.sleep(0.01)


def shot(viewer, app, name):
    pump(app, 0.5)
    path = OUT / name
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    print("wrote", path)


def compress_scene(app, steps):
    import napari

    from napari_volmicro._napari._compress import CompressWidget

    viewer = napari.Viewer(show=True, title="napari-volmicro: Compress")
    viewer.window._qt_window.resize(1500, 950)
    viewer.open_sample("napari-volmicro", "purkinje")
    widget = CompressWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Compress", area="right")
    widget.steps_spin.setValue(steps)
    widget.snapshot_every_s = 2.0
    widget.start()
    wait(app, lambda: widget.worker is None)
    viewer.layers["purkinje"].visible = False
    viewer.layers["purkinje Gaussians"].visible = False
    viewer.dims.set_current_step(0, 25)
    shot(viewer, app, "compress.png")
    viewer.close()


def browse_scenes(app):
    import napari

    from napari_volmicro._napari._sample_data import PURKINJE_VMG

    viewer = napari.Viewer(show=True, title="napari-volmicro: Browse")
    viewer.window._qt_window.resize(1500, 950)
    image, points = viewer.open(str(PURKINJE_VMG), plugin="napari-volmicro")
    browse = next(w for n, w in viewer.window.dock_widgets.items() if n.startswith("Browse"))
    points.visible = False
    pump(app, 1.0)
    viewer.dims.set_current_step(0, 24)
    viewer.scene.camera.center = (0, 150, 128)
    viewer.scene.camera.zoom = 6.0
    pump(app, 1.0)
    wait(app, lambda: browse.browser.last is not None and not browse.browser.busy)
    shot(viewer, app, "browse-2d.png")

    viewer.dims.ndisplay = 3
    viewer.scene.camera.angles = (0, 30, 60)
    viewer.reset_view()
    pump(app, 0.5)
    wait(app, lambda: browse.browser.last.request.broadcast_axis is None and not browse.browser.busy)
    browse.ell_n.setValue(300)
    n_layers = len(viewer.layers)
    browse.ell_button.click()
    wait(app, lambda: len(viewer.layers) > n_layers)
    viewer.layers[-1].opacity = 0.5
    shot(viewer, app, "browse-3d-ellipsoids.png")

    viewer.layers[-1].visible = False
    viewer.dims.ndisplay = 2
    points.visible = True
    points.face_color = "anisotropy"
    points.face_colormap = "plasma"
    viewer.layers.selection = {points}
    pump(app, 1.0)
    shot(viewer, app, "points-features.png")
    viewer.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=120, help="training steps for the Compress screenshot")
    ap.add_argument("--only", choices=["compress", "browse"], default=None)
    args = ap.parse_args(argv)
    OUT.mkdir(exist_ok=True)
    from napari.qt import get_qapp

    app = get_qapp()
    if args.only in (None, "browse"):
        browse_scenes(app)
    if args.only in (None, "compress"):
        compress_scene(app, args.steps)


if __name__ == "__main__":
    main()
