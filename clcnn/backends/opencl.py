"""The OpenCL backend: device discovery, CLArray device handles and OpenCLBackend (kernels in cl/*.cl)."""
from __future__ import annotations

import math

import numpy as np
import pyopencl as cl

from .base import Backend, DeviceError, DeviceInfo
from .opencl_ops import OpenCLOps, _roundup
from .opencl_programs import get_program, scalar_arg_dtypes

_TYPE_BITS = {cl.device_type.CPU: "cpu", cl.device_type.GPU: "gpu", cl.device_type.ACCELERATOR: "accelerator"}
# GEMM tile configs, best first: TM x TN C-tile, TK k-slab, WM x WN outputs per work-item
GEMM_CONFIGS = ({"TM": 128, "TN": 128, "TK": 16, "WM": 8, "WN": 8},   # 256 work-items, 16.5 KiB local
                {"TM": 64, "TN": 64, "TK": 16, "WM": 4, "WN": 4},     # 256 work-items, 8.3 KiB local
                {"TM": 32, "TN": 32, "TK": 16, "WM": 4, "WN": 4},     # 64 work-items
                {"TM": 16, "TN": 16, "TK": 16, "WM": 4, "WN": 4},     # 16 work-items
                {"TM": 16, "TN": 128, "TK": 16, "WM": 2, "WN": 8},    # 128 work-items: few rows (conv forward)
                {"TM": 128, "TN": 16, "TK": 16, "WM": 8, "WN": 2})    # 128 work-items: few columns
ELTWISE_WG = 256     # work-group size of elementwise launches (capped by the device)
REDUCE_WG = 256      # work-group size of bias_grad / loss reductions (power of two, capped by the device)


def _device_type(dev: cl.Device) -> str:
    bits = [name for bit, name in _TYPE_BITS.items() if dev.type & bit]
    return bits[0] if len(bits) == 1 else "other"


def _enumerate() -> list[tuple[DeviceInfo, cl.Device]]:
    out = []
    for plat in cl.get_platforms():
        try:
            devices = plat.get_devices()
        except Exception:  # a platform without usable devices (or a broken ICD) is skipped
            continue
        for dev in devices:
            out.append((DeviceInfo(id=f"cl:{len(out)}", name=dev.name.strip(), backend="opencl",
                                   type=_device_type(dev), platform=plat.name.strip(),
                                   version=dev.driver_version.strip()), dev))
    return out


def list_cl_devices() -> list[DeviceInfo]:
    """Every OpenCL device, flat over platforms in order: ids cl:0, cl:1, ..."""
    return [info for info, _ in _enumerate()]


class _Allocation:
    """Lives as long as any CLArray view of one allocation (memory accounting)."""


class CLArray:
    """A device array: an OpenCL buffer with a shape and dtype (row-major, no offset)."""

    owner = None

    def __init__(self, buf: cl.Buffer, shape, dtype):
        self.buf, self.shape, self.dtype = buf, tuple(int(s) for s in shape), np.dtype(dtype)
        self.size = math.prod(self.shape)
        self.nbytes = self.size * self.dtype.itemsize

    def reshape(self, *shape) -> "CLArray":
        """A new handle on the same buffer; one -1 entry is inferred as in numpy."""
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            shape = tuple(shape[0])
        shape = list(int(s) for s in shape)
        if shape.count(-1) > 1:
            raise ValueError("can only specify one unknown dimension")
        if -1 in shape:
            known = math.prod(s for s in shape if s != -1)
            if known == 0 or self.size % known:
                raise ValueError(f"cannot reshape array of size {self.size} into shape {tuple(shape)}")
            shape[shape.index(-1)] = self.size // known
        if math.prod(shape) != self.size:
            raise ValueError(f"cannot reshape array of size {self.size} into shape {tuple(shape)}")
        view = CLArray(self.buf, shape, self.dtype)
        view.owner = self.owner
        return view

    def __repr__(self) -> str:
        return f"CLArray(shape={self.shape}, dtype={self.dtype})"


class OpenCLBackend(OpenCLOps, Backend):
    """Backend on one OpenCL device: one context, one in-order queue; ops enqueue without waiting."""

    def __init__(self, info: DeviceInfo):
        match = [dev for i, dev in _enumerate() if i.id == info.id and i.name == info.name]
        if not match:
            raise DeviceError(f"OpenCL device {info.id} ({info.name}) not found")
        self.info, self.device = info, match[0]
        try:
            self.ctx = cl.Context([self.device])
            self.queue = cl.CommandQueue(self.ctx, self.device)
        except cl.Error as exc:
            raise DeviceError(f"cannot open OpenCL device {info.id} ({info.name}): {exc}") from exc
        maxwg = self.device.max_work_group_size
        self.eltwise_wg = min(ELTWISE_WG, maxwg)
        self.reduce_wg = 1 << (min(REDUCE_WG, maxwg).bit_length() - 1)
        self.gemm_configs = [p for p in GEMM_CONFIGS if self._gemm_fits(p)] or [GEMM_CONFIGS[3]]
        self.gemm_params = self.gemm_configs[0]   # the largest tile: what big square GEMMs use
        self._gemm_choice: dict[tuple, dict] = {}
        self.gemm_override: dict | None = None   # a config from gemm_configs to use for every GEMM (tools, tuning)
        self._kernels: dict[tuple, cl.Kernel] = {}
        self._scratch: dict[str, CLArray] = {}
        self._pending: list[np.ndarray] = []   # host arrays of in-flight non-blocking uploads

    # ---- kernels --------------------------------------------------------------------------------------
    def gemm_config(self, m: int, n: int) -> dict:
        """The tile config for an (m, n) output: least padded work, weighted against small per-thread blocks
        (a 128x128 tile on a 6-row conv output would compute 95% padding)."""
        if self.gemm_override is not None:
            return self.gemm_override
        key = (m, n)
        if key not in self._gemm_choice:
            def cost(p):
                padded = -(-m // p["TM"]) * p["TM"] * -(-n // p["TN"]) * p["TN"]
                return padded * (1 + 16 / (p["WM"] * p["WN"]))
            self._gemm_choice[key] = min(self.gemm_configs, key=cost)
        return self._gemm_choice[key]

    def _gemm_fits(self, p: dict) -> bool:
        threads = (p["TM"] // p["WM"]) * (p["TN"] // p["WN"])
        local = 4 * p["TK"] * (p["TM"] + p["TN"] + 2)
        return threads <= self.device.max_work_group_size and local <= self.device.local_mem_size

    def kernel(self, file: str, name: str, defines: dict | None = None) -> cl.Kernel:
        """The cached cl.Kernel ``name`` of ``cl/<file>`` built with ``defines`` (fetched once, then reused)."""
        key = (file, name, tuple(sorted((defines or {}).items())))
        knl = self._kernels.get(key)
        if knl is None:
            knl = cl.Kernel(get_program(self.ctx, self.device, file, defines), name)
            knl.set_scalar_arg_dtypes(scalar_arg_dtypes(file, name))
            self._kernels[key] = knl
        return knl

    def _run(self, knl: cl.Kernel, gsize, lsize, *args) -> None:
        knl.set_args(*args)
        cl.enqueue_nd_range_kernel(self.queue, knl, gsize, lsize)

    def _eltwise(self, file: str, name: str, total: int, *args, defines=None) -> None:
        if total > 0:
            wg = self.eltwise_wg
            self._run(self.kernel(file, name, defines), (_roundup(total, wg),), (wg,), *args)

    # ---- memory ---------------------------------------------------------------------------------------
    def _alloc(self, shape, dtype) -> CLArray:
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        nbytes = max(math.prod(shape) * np.dtype(dtype).itemsize, 4)   # zero-size buffers are invalid
        a = CLArray(cl.Buffer(self.ctx, cl.mem_flags.READ_WRITE, nbytes), shape, dtype)
        a.owner = self._track(_Allocation(), nbytes)   # shared by every view: counted until the last one dies
        return a

    def zeros(self, shape, dtype=np.float32) -> CLArray:
        a = self._alloc(shape, dtype)
        self.fill(a, 0)
        return a

    def upload(self, host: np.ndarray) -> CLArray:
        host = np.ascontiguousarray(host)
        a = self._alloc(host.shape, host.dtype)
        if host.size:
            cl.enqueue_copy(self.queue, a.buf, host, is_blocking=True)
        return a

    def upload_into(self, dst: CLArray, host: np.ndarray) -> None:
        host = np.ascontiguousarray(host)
        if host.nbytes != dst.nbytes or host.dtype != dst.dtype:
            raise ValueError(f"upload_into: {host.shape} {host.dtype} does not match {dst}")
        if host.size:
            cl.enqueue_copy(self.queue, dst.buf, host, is_blocking=False)
            self._pending.append(host)

    def download(self, a: CLArray) -> np.ndarray:
        out = np.empty(a.shape, a.dtype)
        if a.size:
            cl.enqueue_copy(self.queue, out, a.buf, is_blocking=True)   # in-order queue: waits for all work
        self._pending.clear()
        return out

    def synchronize(self) -> None:
        self.queue.finish()
        self._pending.clear()

    def fill(self, a: CLArray, value: float) -> None:
        if a.size:
            pattern = np.array([value], dtype=a.dtype)
            cl.enqueue_fill_buffer(self.queue, a.buf, pattern, 0, a.nbytes)

    def copy(self, src: CLArray, dst: CLArray) -> None:
        if src.nbytes != dst.nbytes:
            raise ValueError(f"copy: {src} and {dst} differ in size")
        if src.size:
            cl.enqueue_copy(self.queue, dst.buf, src.buf, byte_count=src.nbytes)

    def scratch(self, name: str, size: int) -> CLArray:
        cur = self._scratch.get(name)
        if cur is None or cur.size < size:
            cur = self._scratch[name] = self._alloc((max(int(size), 1),), np.float32)   # exact: caps hold
        return cur
