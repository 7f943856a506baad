"""OpenCL and Numba are imported lazily: without PyOpenCL clcnn still trains on cpu; without Numba it still
trains on an OpenCL device; asking for the missing backend is a clear DeviceError."""
import os
import subprocess
import sys

import pytest

from conftest import usable_device_ids

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = """
import sys
sys.modules[sys.argv[1]] = None          # makes `import {module}` raise ImportError, as if not installed
import numpy as np, clcnn
from clcnn.backends import DeviceError
ids = [d.id for d in clcnn.list_devices()]
m = clcnn.models.lenet5().to(sys.argv[2])
x = np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32)
opt = clcnn.optim.SGD(m, lr=0.05)
losses = [m.train_step(x, np.arange(4), opt) for _ in range(4)]
assert losses[-1] < losses[0]
try:
    clcnn.get_backend(sys.argv[3])
    raise SystemExit("expected a DeviceError for " + sys.argv[3])
except DeviceError as exc:
    print("ids", ids, "|", exc)
"""


def _run(*args):
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.run([sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, env=env)


def test_without_pyopencl_trains_on_cpu():
    res = _run("pyopencl", "cpu", "cl:0")
    assert res.returncode == 0, res.stderr
    assert "ids ['cpu'] |" in res.stdout and "unknown device" in res.stdout


@pytest.mark.parametrize("dev", [d for d in usable_device_ids(simulators=False) if d.startswith("cl:")][:1])
def test_without_numba_trains_on_opencl(dev):
    res = _run("numba", dev, "cpu")
    assert res.returncode == 0, res.stderr
    assert "needs Numba" in res.stdout
