"""The GPU kernels, executed line for line on the CPU by numba's CUDA simulator.

CI has no GPU. The checks in ``tests/gpu_sim/check_*.py`` run in a separate
process with ``NUMBA_ENABLE_CUDASIM=1`` (numba reads it at import, so the rest
of the suite keeps the ordinary numba): every GPU kernel and the GPU paths of
training, dense decoding and the K-strongest decoder are compared with the CPU
kernels and brute force on tiny crops of real volumes.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.parametrize("module", ["check_kernels.py", "check_decode.py", "check_training.py"])
def test_gpu_kernels_under_cuda_simulator(module):
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning",
           "-o", "python_files=check_*.py", "-o", "addopts=", str(HERE / "gpu_sim" / module)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200, cwd=HERE.parent)
    tail = (r.stdout[-8000:] + "\n" + r.stderr[-4000:]).strip()
    assert r.returncode == 0, tail
    assert " passed" in r.stdout and "skipped" not in r.stdout.splitlines()[-1], tail
