"""Occupancy gates separate foreground from background on a real crop."""

from pathlib import Path

import numpy as np
import tifffile

from napari_volmicro.encode.gate import OccupancyGate, ThresholdGate, occupancy_label

DATA = Path(__file__).parent / "data"


def _crop():
    v = tifffile.imread(DATA / "cellseg3d_nuclei.tif")
    return v[40:72, :, :].astype(np.float32)  # 32 x 86 x 94, nuclei on a ~220 offset


def test_label_is_background_relative():
    v = _crop()
    lab = occupancy_label(v, 0.03)
    # the paper's "1% of max" marks every voxel of an offset volume as occupied; ours does not
    assert (v > 0.01 * v.max()).mean() == 1.0
    assert 0.02 < lab.mean() < 0.5


def test_threshold_gate_contains_label():
    v = _crop()
    lab = occupancy_label(v, 0.03)
    m = ThresholdGate(0.03, dilation=1).fit(v).mask()
    assert m.shape == v.shape and m.dtype == bool
    assert m[lab].all()
    assert m.mean() < 0.7


def test_mlp_gate_separates_foreground_from_background():
    v = _crop()
    lab = occupancy_label(v, 0.03)
    gate = OccupancyGate(0.03, iterations=1000, batch=1024).fit(v, seed=0)
    m = gate.mask(v.shape)
    assert m.shape == v.shape
    acc = (m == lab).mean()
    prob = gate.probability(np.argwhere(np.ones(v.shape, bool))[::7].astype(float))
    base = max(lab.mean(), 1 - lab.mean())
    assert acc > base + 0.02, (acc, base)  # better than predicting the majority class
    # mean probability is higher on labelled foreground than on background
    flat = lab.reshape(-1)[::7]
    assert prob[flat].mean() > prob[~flat].mean() + 0.2
    assert all(not p.requires_grad for p in gate.net.parameters())  # frozen
