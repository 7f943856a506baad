"""Device discovery and backend selection: ``cpu`` (Numba), ``cl:N`` (OpenCL), ``auto``."""
from __future__ import annotations

import os
import warnings

from .base import Backend, DeviceError, DeviceInfo

__all__ = ["Backend", "DeviceError", "DeviceInfo", "list_devices", "get_backend", "resolve_device"]

NUMBA_INFO = DeviceInfo(id="cpu", name="Numba parallel CPU", backend="numba", type="cpu", platform="numba")
_backends: dict[str, Backend] = {}
_cl_devices: list[DeviceInfo] | None = None


def _opencl_devices() -> list[DeviceInfo]:
    """The flat, stable list of OpenCL devices, or [] when PyOpenCL or every ICD is missing/broken."""
    global _cl_devices
    if _cl_devices is None:
        try:
            from . import opencl
            _cl_devices = opencl.list_cl_devices()
        except Exception as exc:  # no pyopencl, no ICD loader, a broken platform: OpenCL is simply absent
            if os.environ.get("CLCNN_DEBUG"):
                warnings.warn(f"OpenCL unavailable: {exc}")
            _cl_devices = []
    return _cl_devices


def list_devices() -> list[DeviceInfo]:
    """Every device clcnn can use: ``cpu`` first, then ``cl:0``, ``cl:1``, ... in a stable order."""
    return [NUMBA_INFO] + _opencl_devices()


def resolve_device(device=None) -> DeviceInfo:
    """A device id ("cpu", "cl:N", "auto"), a DeviceInfo, or None (``$CLCNN_DEVICE`` or "auto") -> DeviceInfo.

    ``auto`` is the first OpenCL GPU, else ``cpu``. Raises DeviceError for an unknown id.
    """
    if isinstance(device, DeviceInfo):
        return device
    if device is None:
        device = os.environ.get("CLCNN_DEVICE", "auto")
    dev = str(device).strip().lower()
    if dev == "auto":
        gpus = [d for d in _opencl_devices() if d.type == "gpu"]
        return gpus[0] if gpus else NUMBA_INFO
    if dev in ("cpu", "numba"):
        return NUMBA_INFO
    for info in _opencl_devices():
        if info.id == dev:
            return info
    known = ", ".join(d.id for d in list_devices())
    raise DeviceError(f"unknown device {device!r} (available: {known}; see `clcnn devices`)")


def _open(info: DeviceInfo) -> Backend:
    if info.id not in _backends:
        if info.backend == "numba":
            try:
                from .numba import NumbaBackend
            except ImportError as exc:
                raise DeviceError(f"the cpu backend needs Numba, which does not import here ({exc}); "
                                  "pip install numba, or pick an OpenCL device (clcnn devices)") from None
            _backends[info.id] = NumbaBackend(info)
        else:
            from .opencl import OpenCLBackend
            _backends[info.id] = OpenCLBackend(info)
    return _backends[info.id]


def get_backend(device=None) -> Backend:
    """The (cached, one per device) Backend for ``device``; see ``resolve_device``.

    When ``auto`` picks an OpenCL device whose kernels fail to build or run, warn in one line and use ``cpu``.
    """
    is_auto = device is None and os.environ.get("CLCNN_DEVICE", "auto").lower() == "auto" or \
        isinstance(device, str) and device.strip().lower() == "auto"
    info = resolve_device(device)
    if info.backend == "numba" or not is_auto:
        return _open(info)
    try:
        backend = _open(info)
        backend.self_test()
        return backend
    except Exception as exc:
        _backends.pop(info.id, None)
        warnings.warn(f"clcnn: {info.id} ({info.name}) failed its kernel self-test ({exc}); using cpu instead",
                      RuntimeWarning, stacklevel=2)
        return _open(NUMBA_INFO)
