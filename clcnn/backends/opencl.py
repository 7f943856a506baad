"""The OpenCL backend: device discovery and OpenCLBackend (one context and in-order queue per device, kernels from
cl/*.cl, profiling, step recording); its memory is in opencl_memory.py."""
from __future__ import annotations

import contextlib

import pyopencl as cl

from .base import Backend, DeviceError, DeviceInfo
from .opencl_gemm import OpenCLGemm
from .opencl_memory import CLArray, OpenCLMemory
from .opencl_ops import OpenCLOps, _roundup
from .opencl_programs import get_program, scalar_arg_dtypes

_TYPE_BITS = {cl.device_type.CPU: "cpu", cl.device_type.GPU: "gpu", cl.device_type.ACCELERATOR: "accelerator"}
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


class OpenCLBackend(OpenCLMemory, OpenCLGemm, OpenCLOps, Backend):
    """Backend on one OpenCL device: one context, one in-order queue; ops enqueue without waiting."""

    def __init__(self, info: DeviceInfo):
        match = [dev for i, dev in _enumerate() if i.id == info.id and i.name == info.name]
        if not match:
            raise DeviceError(f"OpenCL device {info.id} ({info.name}) not found")
        self.info, self.device = info, match[0]
        try:
            self.ctx = cl.Context([self.device])
            self.queue = cl.CommandQueue(self.ctx, self.device)
            self.copy_queue = cl.CommandQueue(self.ctx, self.device)   # transfers beside the compute queue
        except cl.Error as exc:
            raise DeviceError(f"cannot open OpenCL device {info.id} ({info.name}): {exc}") from exc
        maxwg = self.device.max_work_group_size
        self.compute_units = self.device.max_compute_units   # read once: a device query per op costs a driver call
        self.eltwise_wg = min(ELTWISE_WG, maxwg)
        self.reduce_wg = 1 << (min(REDUCE_WG, maxwg).bit_length() - 1)
        self._gemm_init()   # GEMM configs, override, tuned table (opencl_gemm.py)
        from .opencl_tune import load_tuning
        tuning = load_tuning(info)
        tuned_wg = tuning.get("eltwise_wg")
        self.conv_tuned = dict(tuning.get("conv", {}))   # measured per geometry by `clcnn tune`
        if isinstance(tuned_wg, int) and 0 < tuned_wg <= maxwg:   # saved by `clcnn tune`
            self.eltwise_wg = tuned_wg
        self._kernels: dict[tuple, cl.Kernel] = {}
        self._scratch: dict[str, CLArray] = {}
        self._kernel_origin: dict[int, tuple] = {}   # id(kernel) -> (program, name, scalar dtypes)
        self._graph: list | None = None   # the sequence being captured, if any
        self._events: list | None = None  # launch events, kept only inside profiling()
        self.stage_uploads = info.type == "gpu"
        self._staging: dict[int, list] = {}   # nbytes -> ring of [pinned buffer, its mapped host view, last copy]
        self._readback: dict[int, list] = {}   # nbytes -> ring of (pinned buffer, its mapped host view)
        self.view_align = max(1, self.device.mem_base_addr_align // 32)   # bits -> float32 elements
        if info.type == "gpu":   # large chunks of the mini-batch in one unrolled GEMM: up to 1/32 of the card,
            # <= 256 MiB (1 GiB until 2026-12-04: with the hybrid's dx and the implicit layers the only unrolled
            # buffer on GPUs by default, a cap of 256 rather than 1024 MiB cuts the CIFAR CNN's peak at batch 1024
            # by 144 MiB; docs/PERFORMANCE.md)
            self.workspace_bytes = int(min(256 << 20, max(64 << 20, self.device.global_mem_size // 32)))

    # ---- kernels --------------------------------------------------------------------------------------
    def kernel(self, file: str, name: str, defines: dict | None = None) -> cl.Kernel:
        """The cached cl.Kernel ``name`` of ``cl/<file>`` built with ``defines`` (fetched once, then reused)."""
        key = (file, name, tuple(sorted((defines or {}).items())))
        knl = self._kernels.get(key)
        if knl is None:
            prg = get_program(self.ctx, self.device, file, defines)
            knl = cl.Kernel(prg, name)
            knl.set_scalar_arg_dtypes(scalar_arg_dtypes(file, name))
            self._kernels[key] = knl
            self._kernel_origin[id(knl)] = (prg, name, scalar_arg_dtypes(file, name))
        return knl

    def _run(self, knl: cl.Kernel, gsize, lsize, *args) -> None:
        if self._graph is not None:   # capturing: a kernel object of its own, arguments set once, kept
            prg, name, dtypes = self._kernel_origin[id(knl)]
            knl = cl.Kernel(prg, name)
            knl.set_scalar_arg_dtypes(dtypes)
            self._graph.append((knl, gsize, lsize, args))
        knl.set_args(*args)
        self.launches += 1
        evt = cl.enqueue_nd_range_kernel(self.queue, knl, gsize, lsize)
        if self._events is not None:
            self._events.append((evt, knl.function_name, gsize))

    # ---- device timing (the autotuner) -------------------------------------------------------------------
    @contextlib.contextmanager
    def profiling(self):
        """Inside: ops go to a profiling queue and their events are kept for ``event_time``."""
        self.synchronize()
        saved = self.queue
        self.queue = cl.CommandQueue(self.ctx, self.device, properties=cl.command_queue_properties.PROFILING_ENABLE)
        self._events = []
        try:
            yield
        finally:
            self.queue.finish()
            self.queue, self._events = saved, None

    def event_time(self, since: int | None = None):
        """Without ``since``: a mark (the count of launches so far). With it: device seconds from the start of the
        first launch after that mark to the end of the last one (waits for them)."""
        if since is None:
            return len(self._events)
        evts = [e for e, _, _ in self._events[since:]]
        if not evts:
            return 0.0
        evts[-1].wait()
        return (evts[-1].profile.end - evts[0].profile.start) * 1e-9

    def event_log(self, since: int = 0) -> list[tuple[str, tuple, float]]:
        """(kernel name, global size, device seconds) of each launch since a mark, inside ``profiling()``."""
        self.queue.finish()
        return [(name, g, (e.profile.end - e.profile.start) * 1e-9) for e, name, g in self._events[since:]]

    # ---- prepared steps ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def capture(self):
        """Record every kernel launch, fill and copy enqueued inside (they also run now) for ``replay``."""
        if self._graph is not None:
            raise RuntimeError("capture() does not nest")
        self._graph = graph = []
        try:
            yield graph
        finally:
            self._graph = None

    def replay(self, graph) -> None:
        """Enqueue a captured sequence again: one enqueue call per launch, no argument setting."""
        queue, enqueue = self.queue, cl.enqueue_nd_range_kernel
        self.launches += len(graph)
        for knl, gsize, lsize, _ in graph:
            if lsize == "call":
                knl()
            else:
                enqueue(queue, knl, gsize, lsize)

    def _record(self, fn) -> None:
        """Run ``fn`` (an enqueue with no kernel: fill, copy) now and, when capturing, again on every replay."""
        if self._graph is not None:
            self._graph.append((fn, None, "call", None))
        self.launches += 1
        fn()

    def _no_capture(self, what: str) -> None:
        if self._graph is not None:
            raise RuntimeError(f"{what} cannot be captured (it moves host data)")

    def _eltwise(self, file: str, name: str, total: int, *args, defines=None) -> None:
        if total > 0:
            wg = self.eltwise_wg
            self._run(self.kernel(file, name, defines), (_roundup(total, wg),), (wg,), *args)
