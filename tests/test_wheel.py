"""A non-editable install of the built wheel carries cl/ and cpu/, imports every Numba kernel module and trains on
the first PoCL device (the deep grid: also on numba, whose kernels the installed copy compiles afresh, ~20 s, and
on every PoCL device)."""
import os
import subprocess
import sys

import pytest

import clcnn

from conftest import DEEP, platform_slug, usable_device_ids

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = """
import sys, numpy as np, clcnn, importlib.resources as r
assert clcnn.__file__.startswith(sys.argv[1]), clcnn.__file__
assert r.files("clcnn.cl").joinpath("gemm.cl").is_file()
import pkgutil, importlib, clcnn.cpu
for mod in pkgutil.iter_modules(clcnn.cpu.__path__):
    importlib.import_module("clcnn.cpu." + mod.name)   # njit compiles lazily: this only imports
for dev in sys.argv[2:]:
    m = clcnn.models.lenet5().to(dev)
    # batch 4 as in test_lazy_imports: the same OpenCL programs
    x = np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32)
    y = np.arange(4, dtype=np.int32)
    opt = clcnn.optim.SGD(m, lr=0.05, momentum=0.9)
    losses = [m.train_step(x, y, opt) for _ in range(5)]
    assert losses[-1] < losses[0], losses
    print(dev, "ok", losses[0], losses[-1])
"""


@pytest.mark.slow
def test_wheel_install_trains(tmp_path):
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), ROOT], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    whl = next(wheels.glob("clcnn-*.whl"))
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                           str(whl)], capture_output=True, text=True)
    assert inst.returncode == 0, inst.stderr
    assert (site / "clcnn" / "cl" / "gemm.cl").is_file() and (site / "clcnn" / "cpu" / "gemm.py").is_file()
    pocl = [d.id for d in clcnn.list_devices() if d.id in usable_device_ids(simulators=False)
            and platform_slug(d.platform) == "pocl"]
    devs = ["cpu"] + pocl if DEEP else pocl[:1] or ["cpu"]
    env = {**os.environ, "PYTHONPATH": str(site)}
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(site)] + devs, capture_output=True, text=True,
                         cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count(" ok ") == len(devs)
