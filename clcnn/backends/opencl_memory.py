"""The OpenCL backend's memory: device arrays (CLArray), uploads through pinned staging, downloads, views, and
the asynchronous copies of the data-parallel gradient exchange. OpenCLBackend inherits OpenCLMemory."""
from __future__ import annotations

import math
import os

import numpy as np
import pyopencl as cl

from .base import Transfer

STAGE_MIN_BYTES = 64 << 10   # GPU uploads this large get pinned staging buffers of their own size; smaller ones
SMALL_SLOTS = 8              # share a ring of this many pinned STAGE_MIN_BYTES slots
PARALLEL_COPY_BYTES = 1 << 20   # host copies this large may use several cores (cpu/_hostcopy.py)
_copy_threads = None


def _usable_cores() -> int:
    """Cores this process may run on (an MPI rank bound to one core gets 1), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def host_copy(dst: np.ndarray, src: np.ndarray) -> None:
    """dst[...] = src: large copies on up to $CLCNN_COPY_THREADS Numba threads (default: half the cores this
    process may use, at most 8; 0 or 1: one core). One core fills pinned memory at ~8 GB/s; on the 2x H200 host,
    8 threads took one process driving both GPUs from 185k to 240k img/s (docs/PERFORMANCE.md)."""
    global _copy_threads
    if _copy_threads is None:
        env = os.environ.get("CLCNN_COPY_THREADS", "").strip()
        _copy_threads = int(env) if env.isdigit() else min(8, _usable_cores() // 2)
    if _copy_threads > 1 and src.nbytes >= PARALLEL_COPY_BYTES:
        try:
            from ..cpu._hostcopy import parallel_copy
        except ImportError:   # no Numba: one core does it
            _copy_threads = 0
        else:
            parallel_copy(dst, src, _copy_threads)
            return
    dst[...] = src


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


class OpenCLMemory:
    """Mixin of OpenCLBackend: needs ``ctx``, ``queue``, ``copy_queue``, ``device``, ``stage_uploads``,
    ``_staging``, ``_readback``, ``_scratch``, ``_track`` and the capture hooks ``_record``/``_no_capture``."""

    def _alloc(self, shape, dtype) -> CLArray:
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        nbytes = max(math.prod(shape) * np.dtype(dtype).itemsize, 4)   # zero-size buffers are invalid
        a = CLArray(cl.Buffer(self.ctx, cl.mem_flags.READ_WRITE, nbytes), shape, dtype)
        a.owner = self._track(_Allocation(), nbytes)   # shared by every view: counted until the last one dies
        return a

    def zeros(self, shape, dtype=np.float32) -> CLArray:
        a = self._alloc(shape, dtype)
        if a.size:   # not recorded: a new allocation is zeroed once, not on every replay
            cl.enqueue_fill_buffer(self.queue, a.buf, np.zeros(1, a.dtype), 0, a.nbytes)
        return a

    def upload(self, host: np.ndarray) -> CLArray:
        self._no_capture("upload")
        host = np.ascontiguousarray(host)
        a = self._alloc(host.shape, host.dtype)
        if host.size:
            cl.enqueue_copy(self.queue, a.buf, host, is_blocking=True)
        return a

    def upload_into(self, dst: CLArray, host: np.ndarray) -> None:
        self._no_capture("upload_into")
        host = np.ascontiguousarray(host)
        if host.nbytes != dst.nbytes or host.dtype != dst.dtype:
            raise ValueError(f"upload_into: {host.shape} {host.dtype} does not match {dst}")
        if self.stage_uploads and host.size:
            self._staged_copy(dst, host)
        elif host.size:
            # blocking: the call returns once the device holds the data, so the caller may reuse ``host`` at once
            # (a non-blocking copy's event would wait for it anyway when dropped: pyopencl's NannyEvent)
            cl.enqueue_copy(self.queue, dst.buf, host, is_blocking=True)

    def _staged_copy(self, dst: CLArray, host: np.ndarray) -> None:
        """Copy through a pinned host buffer: the driver then DMAs asynchronously and the host goes on enqueuing,
        where a copy from pageable memory, however small, waits for the queue to drain (on NVIDIA: a 4 KB label
        upload held the host until the previous step was done). A ring of two buffers per size for large
        uploads, one shared ring of small slots for the rest."""
        small = host.nbytes < STAGE_MIN_BYTES
        key, size, depth = ("small", STAGE_MIN_BYTES, SMALL_SLOTS) if small else (host.nbytes, host.nbytes, 2)
        ring = self._staging.setdefault(key, [])
        if len(ring) < depth:
            pinned = cl.Buffer(self.ctx, cl.mem_flags.READ_ONLY | cl.mem_flags.ALLOC_HOST_PTR, size)
            mapped, _ = cl.enqueue_map_buffer(self.queue, pinned, cl.map_flags.WRITE, 0, (size,), np.uint8,
                                              is_blocking=True)
            ring.append([pinned, mapped, None])
        slot = ring.pop(0)
        ring.append(slot)
        if slot[2] is not None:
            slot[2].wait()   # the copy that last read this slot (a ring's length of uploads ago) has finished
        view = slot[1][:host.nbytes]
        host_copy(view, host.reshape(-1).view(np.uint8))
        slot[2] = cl.enqueue_copy(self.queue, dst.buf, view, is_blocking=False)

    def download(self, a: CLArray) -> np.ndarray:
        self._no_capture("download")
        out = np.empty(a.shape, a.dtype)
        if a.size:
            cl.enqueue_copy(self.queue, out, a.buf, is_blocking=True)   # in-order queue: waits for all work
        return out

    def download_async(self, a: CLArray):
        """Non-blocking read-back; on GPUs into a pinned host buffer (a ring of two per size), which the driver
        fills by DMA without staging."""
        self._no_capture("download_async")
        if not a.size:
            return lambda: np.empty(a.shape, a.dtype)
        if self.stage_uploads:
            ring = self._readback.setdefault(a.nbytes, [])
            if len(ring) < 2:
                pinned = cl.Buffer(self.ctx, cl.mem_flags.WRITE_ONLY | cl.mem_flags.ALLOC_HOST_PTR, a.nbytes)
                mapped, _ = cl.enqueue_map_buffer(self.queue, pinned, cl.map_flags.READ, 0, (a.nbytes,), np.uint8,
                                                  is_blocking=True)
                ring.append((pinned, mapped))
            slot = ring.pop(0)
            ring.append(slot)
            host = slot[1].view(a.dtype).reshape(a.shape)
        else:
            host = np.empty(a.shape, a.dtype)
        evt = cl.enqueue_copy(self.queue, host, a.buf, is_blocking=False)

        def wait():
            evt.wait()
            return host
        return wait

    def synchronize(self) -> None:
        self.queue.finish()
        self.copy_queue.finish()

    def fill(self, a: CLArray, value: float) -> None:
        if a.size:
            pattern = np.array([value], dtype=a.dtype)
            self._record(lambda: cl.enqueue_fill_buffer(self.queue, a.buf, pattern, 0, a.nbytes))

    def copy(self, src: CLArray, dst: CLArray) -> None:
        if src.nbytes != dst.nbytes:
            raise ValueError(f"copy: {src} and {dst} differ in size")
        if src.size:
            self._record(lambda: cl.enqueue_copy(self.queue, dst.buf, src.buf, byte_count=src.nbytes))

    def view(self, a: CLArray, offset: int, shape) -> CLArray:
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        size, item = math.prod(shape), a.dtype.itemsize
        if offset < 0 or offset + size > a.size or offset % self.view_align:
            raise ValueError(f"view: [{offset}, {offset + size}) outside an array of {a.size} or offset not a "
                             f"multiple of {self.view_align}")
        sub = a.buf.get_sub_region(offset * item, max(size, 1) * item)   # an OpenCL sub-buffer
        v = CLArray(sub, shape, a.dtype)
        v.owner = a.owner
        return v

    # ---- overlapped transfers (Backend's optional capability; clcnn/distributed.py) --------------------------
    def mark(self, point) -> None:
        def enqueue():
            point.event = cl.enqueue_marker(self.queue)
        self._record(enqueue)

    def pinned(self, size: int) -> np.ndarray:
        """Mapped ALLOC_HOST_PTR memory: the driver DMAs it directly."""
        nbytes = max(int(size), 1) * 4
        buf = cl.Buffer(self.ctx, cl.mem_flags.READ_WRITE | cl.mem_flags.ALLOC_HOST_PTR, nbytes)
        host, _ = cl.enqueue_map_buffer(self.queue, buf, cl.map_flags.READ | cl.map_flags.WRITE, 0, (nbytes // 4,),
                                        np.float32, is_blocking=True)
        self._pinned = getattr(self, "_pinned", []) + [buf]   # the buffer lives as long as the backend
        return host[:size]

    @staticmethod
    def _wait_list(after) -> list:
        return [e for e in (getattr(a, "event", None) for a in after) if e is not None]

    def read_async(self, a, start, host, after=()):
        self._no_capture("read_async")
        evt = cl.enqueue_copy(self.copy_queue, host, a.buf, src_offset=4 * start, is_blocking=False,
                              wait_for=self._wait_list(after) or None)
        return Transfer(evt, host)

    def write_async(self, a, start, host, after=()):
        self._no_capture("write_async")
        evt = cl.enqueue_copy(self.copy_queue, a.buf, host, dst_offset=4 * start, is_blocking=False,
                              wait_for=self._wait_list(after) or None)
        return Transfer(evt, host)

    def wait_all(self, items) -> None:
        events = self._wait_list(items)
        if events:
            cl.enqueue_barrier(self.queue, wait_for=events)

    def flush(self) -> None:
        self.queue.flush()
        self.copy_queue.flush()

    def scratch(self, name: str, size: int) -> CLArray:
        cur = self._scratch.get(name)
        if cur is None or cur.size < size:
            cur = self._scratch[name] = self._alloc((max(int(size), 1),), np.float32)   # exact: caps hold
        return cur
