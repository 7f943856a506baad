"""Device ids, `auto`, $CLCNN_DEVICE and the fallback to cpu when an OpenCL device cannot run the kernels."""
import warnings

import pytest

import clcnn
from clcnn import backends
from clcnn.backends import DeviceError, DeviceInfo


def test_ids_are_flat_and_stable():
    a, b = clcnn.list_devices(), clcnn.list_devices()
    assert a == b and a[0].id == "cpu"
    assert [d.id for d in a[1:]] == [f"cl:{i}" for i in range(len(a) - 1)]
    assert all(d.backend == "opencl" for d in a[1:])


def test_oclgrind_is_never_auto():
    auto = backends.resolve_device("auto")
    assert "oclgrind" not in auto.platform.lower()
    assert auto.type == "gpu" or auto.id == "cpu"


def test_unknown_device_is_a_device_error():
    with pytest.raises(DeviceError, match="unknown device"):
        backends.resolve_device("cl:999")


def test_env_var_sets_default(monkeypatch):
    monkeypatch.setenv("CLCNN_DEVICE", "cpu")
    assert backends.resolve_device(None).id == "cpu"


def test_auto_falls_back_to_cpu_when_gpu_fails(monkeypatch):
    """A GPU that cannot be opened or fails the self-test makes `auto` warn once and use cpu."""
    fake = DeviceInfo(id="cl:7", name="Broken GPU", backend="opencl", type="gpu", platform="Nowhere")
    monkeypatch.setattr(backends, "_cl_devices", [fake])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        be = backends.get_backend("auto")
    assert be.info.id == "cpu"
    assert any("cl:7" in str(w.message) and "using cpu" in str(w.message) for w in caught)
    with pytest.raises(Exception):
        backends.get_backend("cl:7")  # named explicitly: no silent fallback
