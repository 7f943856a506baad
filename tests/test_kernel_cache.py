"""OpenCL programs: memoized in-process, binaries cached on disk and loaded by later processes, bad binaries
rebuilt from source."""
import os
import subprocess
import sys

import pytest

from conftest import usable_device_ids

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPENCL = [d for d in usable_device_ids(simulators=False) if d.startswith("cl:")]
SCRIPT = """
import sys
from clcnn.backends import opencl_programs as P
if sys.argv[2] == "forbid-build":
    def refuse(*a, **k):
        raise SystemExit("built from source although a cached binary exists")
    P._build_source = refuse
import clcnn
be = clcnn.get_backend(sys.argv[1])
be.self_test()
k1 = be.kernel("activation.cl", "relu_forward")
assert k1 is be.kernel("activation.cl", "relu_forward"), "kernel objects must be reused"
print("ok")
"""


def _run(dev, mode, cache):
    env = {**os.environ, "CLCNN_CACHE_DIR": str(cache), "PYTHONPATH": ROOT}
    return subprocess.run([sys.executable, "-c", SCRIPT, dev, mode], capture_output=True, text=True, env=env)


@pytest.mark.skipif(not OPENCL, reason="no usable non-simulator OpenCL device")
def test_binaries_cached_on_disk_and_reused(tmp_path):
    dev = OPENCL[0]
    first = _run(dev, "build", tmp_path)
    assert first.returncode == 0, first.stderr
    bins = sorted(tmp_path.glob("*.bin"))
    assert bins and not list(tmp_path.glob("*.tmp"))
    second = _run(dev, "forbid-build", tmp_path)
    assert second.returncode == 0 and second.stdout.strip() == "ok", second.stderr
    for b in bins:  # damaged binaries: rejected and rebuilt from source, not a crash
        b.write_bytes(b"garbage")
    third = _run(dev, "build", tmp_path)
    assert third.returncode == 0, third.stderr
    assert all(b.read_bytes() != b"garbage" for b in bins)
