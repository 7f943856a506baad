"""DeviceInfo: what ``clcnn.list_devices()`` reports of one device (a plain record; base.py re-exports it)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceInfo:
    """One entry of ``clcnn.list_devices()``.

    Attributes:
        id: ``"cpu"`` for the Numba backend, ``"cl:N"`` for the N-th OpenCL device of the flat list.
        name: the device's name as its driver reports it.
        backend: ``"numba"`` or ``"opencl"``.
        type: ``"cpu"``, ``"gpu"``, ``"accelerator"`` or ``"other"`` (simulators such as Oclgrind).
        platform: the OpenCL platform name, or ``"numba"``.
        version: driver/API version string.
    """
    id: str
    name: str
    backend: str
    type: str
    platform: str
    version: str = ""

    def __str__(self) -> str:
        return f"{self.id:6s} {self.backend:7s} {self.type:11s} {self.name} [{self.platform}]"
