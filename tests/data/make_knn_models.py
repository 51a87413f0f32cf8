"""Train the small models under tests/data that the KNN agreement tests decode (default preset, seed 0).

    python tests/data/make_knn_models.py

Each is the default preset's model of a crop of a test volume at 0.3 bpp,
saved as a .vmg; ``tests/test_knn.py`` decodes it against the same crop.
"""

from pathlib import Path

import numpy as np
import tifffile

from napari_volmicro.encode import compress

DATA = Path(__file__).resolve().parent
#: model file -> (volume, crop ZYX, bpp); tests/test_knn.py reads the same table
CROPS = {
    "rivuletpy_neuron_crop_0.3.vmg": ("rivuletpy_neuron.tif", (slice(0, 32), slice(186, 282), slice(85, 181)), 0.3),
    "cellseg3d_nuclei_crop_0.3.vmg": ("cellseg3d_nuclei.tif", (slice(40, 72), slice(0, 86), slice(0, 94)), 0.3),
}

if __name__ == "__main__":
    for name, (volume, crop, bpp) in CROPS.items():
        v = np.ascontiguousarray(tifffile.imread(DATA / volume)[crop])
        gv = compress(v, bpp=bpp, seed=0, device="cpu")
        gv.save(DATA / name)
        print(name, v.shape, gv.n_gaussians)
