"""Shared pytest fixtures: a ``device`` fixture over every clcnn device, simulator detection, markers."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

import clcnn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `import reference` from the test modules


def platform_slug(platform: str) -> str:
    """A short readable tag for an OpenCL platform name ("Portable Computing Language" -> "pocl")."""
    low = platform.lower()
    for key, tag in (("oclgrind", "oclgrind"), ("portable computing language", "pocl"), ("pocl", "pocl"),
                     ("nvidia", "nvidia"), ("amd", "amd"), ("intel", "intel"), ("apple", "apple")):
        if key in low:
            return tag
    return re.sub(r"[^a-z0-9]+", "-", low).strip("-")[:16] or "cl"


def is_simulator(backend_or_info) -> bool:
    """True for Oclgrind devices (slow simulators: tests should use small shapes there)."""
    info = getattr(backend_or_info, "info", backend_or_info)
    return "oclgrind" in info.platform.lower()


def _device_params():
    """Every device; a platform family's devices after its first (Debian's PoCL beside the wheel's) belong to the
    deep grid: in a cold lean run their cost is building every kernel once more (5.5 of 9 minutes of a fresh
    clone's tests on 2 cores were kernel builds, 2026-12-03)."""
    params, seen = [], set()
    for info in clcnn.list_devices():
        if info.backend == "numba":
            params.append(pytest.param(info.id, id=info.id))
        elif is_simulator(info):
            params.append(pytest.param(info.id, id=f"{info.id}-oclgrind", marks=[pytest.mark.oclgrind]))
        else:
            family = platform_slug(info.platform)
            marks = [pytest.mark.deep] if family in seen else []
            seen.add(family)
            params.append(pytest.param(info.id, id=f"{info.id}-{family}", marks=marks))
    return params


# curves.png costs ~1 s per `clcnn train` process (importing matplotlib): off for the suite's many small runs;
# tests/test_plots.py and test_predict.py switch it back on where the picture is what they test
os.environ.setdefault("CLCNN_CURVES", "0")

DEEP = os.environ.get("CLCNN_TEST_DEEP") == "1"   # the full grid (.ci/run sets it); a person's `make test` is lean


def deep(*values, id=None):
    """A parametrize entry (``values``: one per argument name) that belongs to the deep grid only: deselected
    unless CLCNN_TEST_DEEP=1. E.g. ``parametrize("size", [1, 1001, deep(65539)])``."""
    return pytest.param(*values, marks=pytest.mark.deep, id=id)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a test that takes more than a few seconds")
    config.addinivalue_line("markers", "oclgrind: runs on the Oclgrind simulator (slow; small shapes)")
    config.addinivalue_line("markers", "deep: part of the full grid, run only with CLCNN_TEST_DEEP=1")


def pytest_collection_modifyitems(config, items):
    """Without CLCNN_TEST_DEEP=1, tests marked ``deep`` are deselected (not skipped: they are the deep grid)."""
    if DEEP:
        return
    kept = [it for it in items if it.get_closest_marker("deep") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[it for it in items if it.get_closest_marker("deep") is not None])
        items[:] = kept


def pytest_sessionstart(session):
    """CI sets CLCNN_REQUIRE_OPENCL=1: a missing PoCL device must fail the run, not silently skip tests."""
    if os.environ.get("CLCNN_REQUIRE_OPENCL") == "1":
        devs = clcnn.list_devices()
        if not any(d.backend == "opencl" and platform_slug(d.platform) == "pocl" for d in devs):
            listed = "; ".join(str(d) for d in devs)
            pytest.exit(f"CLCNN_REQUIRE_OPENCL=1 but no PoCL OpenCL device was found (devices: {listed}). "
                        "Set CLCNN_DEBUG=1 to see why OpenCL is unavailable.", returncode=3)


# Host/driver incompatibilities that are not clcnn bugs: the device is skipped (failed under CLCNN_REQUIRE_OPENCL=1).
# PoCL linked against an LLVM too old to know the host CPU (e.g. LLVM 14 on AMD Zen 5) passes "-target-cpu generic"
# and every kernel build fails (https://github.com/pocl/pocl/issues/1049).
KNOWN_DRIVER_PROBLEMS = ("unknown target CPU 'generic'",)
_device_problems: dict[str, str | None] = {}


def _driver_problem(backend) -> str | None:
    """The reason ``backend`` cannot work here if its self-test fails with a known driver problem, else None."""
    did = backend.info.id
    if did not in _device_problems:
        try:
            backend.self_test()
            _device_problems[did] = None
        except Exception as exc:  # noqa: BLE001 - any other failure is left to the individual op tests to show
            known = [p for p in KNOWN_DRIVER_PROBLEMS if p in str(exc)]
            _device_problems[did] = \
                f"{did} ({backend.info.name}) cannot build kernels on this host: {known[0]}" if known else None
    return _device_problems[did]


device_params = _device_params  # public name: other test modules parametrize their own fixtures with it


@pytest.fixture(scope="session", params=_device_params())
def device(request):
    """The Backend of one device ("cpu", "cl:0", ...); one instance per device for the whole session."""
    return open_device(request.param)


def lean_device_params():
    """device_params(), with the Oclgrind simulator in the deep grid only (as each platform's devices after its
    first already are): for layer-level tests whose cost is building every kernel again (or
    simulating whole networks); the op tests run on every device, Oclgrind included."""
    return [pytest.param(*p.values, id=p.id, marks=[*p.marks, pytest.mark.deep]) if p.id.endswith("-oclgrind")
            else p for p in _device_params()]


@pytest.fixture(scope="session", params=lean_device_params())
def lean_device(request):
    """``device``, over lean_device_params()."""
    return open_device(request.param)


def open_device(device_id: str):
    """clcnn.get_backend(device_id), but skipped (or failed under CLCNN_REQUIRE_OPENCL=1 when no PoCL device
    works) when the driver cannot build kernels for a known non-clcnn reason; use it in custom device fixtures."""
    backend = clcnn.get_backend(device_id)
    if getattr(backend.info, "type", None) == "cpu" and hasattr(backend, "geometry_constants"):
        # in-process tests on CPU OpenCL devices take the sizes as arguments (one program per op family, not one
        # per shape drawn); test_*_geometry_constants (test_ops.py) and the CLI's subprocesses run the default
        backend.geometry_constants = False
    problem = _driver_problem(backend)
    if problem:
        if os.environ.get("CLCNN_REQUIRE_OPENCL") == "1" and not _some_pocl_works():
            pytest.fail(f"CLCNN_REQUIRE_OPENCL=1 but no PoCL device can build kernels: {problem}", pytrace=False)
        pytest.skip(problem)
    return backend


def _some_pocl_works() -> bool:
    pocl = [d for d in clcnn.list_devices() if d.backend == "opencl" and platform_slug(d.platform) == "pocl"]
    return any(_driver_problem(clcnn.get_backend(d.id)) is None for d in pocl)


@pytest.fixture
def small(device) -> bool:
    """True when ``device`` is a simulator and the test should shrink its shapes."""
    return is_simulator(device)


def platform_pair() -> list[str] | None:
    """Two usable non-simulator OpenCL devices of one platform (e.g. PoCL's under POCL_DEVICES="pthread pthread"),
    or None."""
    ids = [d for d in usable_device_ids(simulators=False) if d != "cpu"]
    by_platform: dict[str, list[str]] = {}
    for info in clcnn.list_devices():
        if info.id in ids:
            by_platform.setdefault(info.platform, []).append(info.id)
    return next((v[:2] for v in by_platform.values() if len(v) >= 2), None)


PAIR_PREAMBLE = r'''
import json, sys, warnings
import numpy as np
import clcnn
from clcnn.optim import SGD
sys.path.insert(0, sys.argv[1])
from test_parallel import net, batch
from conftest import platform_pair
warnings.simplefilter("ignore")
pair = platform_pair()
if pair is None:
    print(json.dumps({"pair": None})); sys.exit(0)
'''


def run_on_platform_pair(body: str) -> dict:
    """Run ``body`` in a child process with POCL_DEVICES="pthread pthread" (PoCL then gives two CPU devices of one
    platform; devices are enumerated once per process), after PAIR_PREAMBLE, which sets ``pair`` to two device ids
    of one platform. Returns the JSON object its last line prints; skips when there is no pair (fails instead
    under CLCNN_REQUIRE_OPENCL=1)."""
    import json
    import subprocess
    env = dict(os.environ, POCL_DEVICES="pthread pthread")
    res = subprocess.run([sys.executable, "-c", PAIR_PREAMBLE + body, os.path.dirname(os.path.abspath(__file__))],
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    if out.get("pair") is None:
        if os.environ.get("CLCNN_REQUIRE_OPENCL") == "1":
            pytest.fail("no two usable OpenCL devices of one platform even with POCL_DEVICES='pthread pthread'")
        pytest.skip("no two usable OpenCL devices of one platform")
    return out


def usable_device_ids(simulators: bool = True) -> list[str]:
    """Ids of every device that can run clcnn here (known-broken drivers left out; they are skipped with their
    reason by the `device` fixture), optionally without simulators."""
    ids = []
    for info in clcnn.list_devices():
        if is_simulator(info) and not simulators:
            continue
        if info.backend == "opencl" and _driver_problem(clcnn.get_backend(info.id)):
            continue
        ids.append(info.id)
    return ids


def _opencl_params():
    """The OpenCL devices of ``device_params()``; the simulator only in the deep grid."""
    return [p if "oclgrind" not in p.id else pytest.param(*p.values, id=p.id, marks=[*p.marks, pytest.mark.deep])
            for p in device_params() if p.values[0] != "cpu"]


@pytest.fixture(params=_opencl_params())
def geometry_device(request):
    """An OpenCL device made to build im2col/col2im/maxpool with each geometry's sizes as -D constants (the GPU
    path; see OpenCLOps.geometry_constants); Oclgrind in the deep grid only."""
    dev = open_device(request.param)
    saved, dev.geometry_constants = dev.geometry_constants, True
    yield dev
    dev.geometry_constants = saved
