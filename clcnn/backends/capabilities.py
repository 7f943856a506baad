"""The Backend's optional capabilities, with concrete defaults that backends refine.

Overlapped transfers (data parallelism over MPI, clcnn/distributed.py), memory accounting, prepared steps
(capture/replay), GEMM variants and the health check. ``Backend`` (backends/base.py) inherits this mixin;
the methods use only the Backend's core ops (``download``, ``view``, ``upload``, ``gemm``, ...).
"""
from __future__ import annotations

import contextlib
import os
import weakref

import numpy as np

from ..errors import ConfigError, DeviceError


CONV_ALGORITHMS = ("im2col", "direct", "hybrid", "implicit")


def conv_key(n, c, h, w, m, k, stride, pad, pool) -> str:
    """The tuning cache's name of one convolution geometry (Backend.conv_algorithm's arguments)."""
    return f"conv n{n} c{c} h{h} w{w} m{m} k{k} s{stride} p{pad} pool{pool}"


class Mark:
    """A point in a device's queue, set by ``Backend.mark``."""
    event = None


class Transfer:
    """An asynchronous copy between a device and a host array (``Backend.read_async`` / ``write_async``)."""

    def __init__(self, event, host: np.ndarray):
        self.event, self.host = event, host

    def wait(self) -> np.ndarray:
        if self.event is not None:
            self.event.wait()
        return self.host


class Capabilities:
    """The optional-capability half of ``Backend``: every method has a correct (synchronous) default."""

    # ---- overlapped transfers (an optional capability: data parallelism over MPI, clcnn/distributed.py) -------
    # A gradient chunk is read back as soon as the backward pass has passed a mark, while the device goes on.
    # Backends whose ops are asynchronous refine these; the defaults run synchronously (Numba) and are correct.
    def mark(self, point: "Mark") -> None:
        """Set ``point`` to "everything enqueued so far" (recorded by ``capture``: a replay refreshes it)."""

    def pinned(self, size: int) -> np.ndarray:
        """A float32 host array of ``size`` the device copies to and from directly (page-locked where it can)."""
        return np.zeros(size, np.float32)

    def read_async(self, a, start: int, host: np.ndarray, after=()) -> "Transfer":
        """Copy ``a[start:start + host.size]`` into ``host`` once the marks/transfers in ``after`` are done,
        without holding up the ops enqueued after it; ``.wait()`` on the result waits for the copy."""
        host[...] = self.download(self.view(a, start, host.size))
        return Transfer(None, host)

    def write_async(self, a, start: int, host: np.ndarray, after=()) -> "Transfer":
        """Copy ``host`` into ``a[start:start + host.size]`` once ``after`` is done, beside the compute queue;
        the ops that need it wait with ``wait_all``. ``host`` must stay unchanged until the copy is done."""
        self.upload_into(self.view(a, start, host.size), host)
        return Transfer(None, host)

    def wait_all(self, items) -> None:
        """Ops enqueued after this start only once every mark/transfer in ``items`` is done."""

    def flush(self) -> None:
        """Hand everything enqueued so far to the device (another queue may be waiting on it)."""

    # ---- accounting, prepared steps, variants (concrete defaults; backends refine them) --------------------
    launches = 0   # device enqueues so far (OpenCL: kernels, fills, copies, markers, replayed ones too; Numba: op
                   # calls; not host transfers); `clcnn bench train` sets it to 0 and reads it per step
    def _track(self, array, nbytes: int):
        """Count ``nbytes`` as in use until ``array`` is garbage-collected; returns ``array``."""
        self._mem_in_use = getattr(self, "_mem_in_use", 0) + nbytes
        self._mem_peak = max(getattr(self, "_mem_peak", 0), self._mem_in_use)
        weakref.finalize(array, self._untrack, nbytes)
        return array

    def _untrack(self, nbytes: int) -> None:
        self._mem_in_use -= nbytes

    def memory_stats(self) -> dict:
        """{"in_use_bytes", "peak_bytes"}: device memory held by arrays this backend allocated."""
        return {"in_use_bytes": getattr(self, "_mem_in_use", 0), "peak_bytes": getattr(self, "_mem_peak", 0)}

    def memory_capacity(self) -> int | None:
        """Bytes this device can hold at most (None: unknown): for host memory (the Numba backend, and CPU OpenCL
        devices, whose memory is the host's) the physical memory available now, for a GPU its global memory.
        Used to refuse a batch whose activations cannot fit, before the kernel allocations the OS would kill."""
        try:
            host = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            host = None
        info = getattr(self, "info", None)
        dev = getattr(self, "device", None)
        if getattr(info, "type", "cpu") != "cpu" and dev is not None:
            return int(dev.global_mem_size)
        return host

    def reset_peak_memory(self) -> None:
        self._mem_peak = getattr(self, "_mem_in_use", 0)

    def capture(self):
        """A context manager recording the ops enqueued inside it (they also run) into a prepared sequence that
        ``replay`` enqueues again with no per-op host work; it yields None where the backend has none (then the
        caller just runs the ops each time). Only ops whose arguments stay the same may be captured."""
        return contextlib.nullcontext(None)

    def replay(self, graph) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no prepared sequences")

    def gemm_variants(self, m: int, n: int, k: int, variant: str | None = None) -> list[tuple[str, object]]:
        """(name, config) pairs ``clcnn bench gemm`` compares; ``gemm_forced(config)`` selects one."""
        if variant not in (None, "auto", "all"):
            raise ConfigError(f"{self.info.id} has no GEMM variant {variant!r} (it has: auto)")
        return [("auto", None)]

    def gemm_forced(self, config):
        """A context manager inside which every GEMM uses ``config`` (from gemm_variants; None: the default)."""
        return contextlib.nullcontext()

    # ---- convolution algorithm ----------------------------------------------------------------------------
    conv_algo: str | None = None   # one of CONV_ALGORITHMS forced for every convolution (tests, benchmarks)

    conv_tuned: dict = {}   # conv_key -> one of CONV_ALGORITHMS, measured by `clcnn tune` (OpenCL's tuning cache)

    def conv_algorithm(self, n: int, c: int, h: int, w: int, m: int, k: int, stride: int, pad: int,
                       pool: int) -> str:
        """How a Conv2D of this geometry runs here, one of CONV_ALGORITHMS: "direct" (conv_forward and
        conv_backward, ``pool`` > 1 the max-pool after it in the same ops), "im2col" (im2col + GEMM both ways, the
        seed's method), "hybrid" (conv_forward; backward: the pool's, implicit_conv_backward_weight and im2col's
        conv_backward_data) or "implicit" (the implicit_conv ops: im2col's products with no unrolled buffer). ``conv_algo``
        wins, then the tuner's measured choice for this geometry, then ``_conv_rule`` (each backend's)."""
        if self.conv_algo is not None:
            if self.conv_algo not in CONV_ALGORITHMS:
                raise ConfigError(f"conv_algo must be one of {', '.join(CONV_ALGORITHMS)} (got {self.conv_algo!r})")
            return self.conv_algo
        tuned = self._tuned_conv(n, conv_key(n, c, h, w, m, k, stride, pad, pool))
        return tuned or self._conv_rule(n, c, h, w, m, k, stride, pad, pool)

    def _tuned_conv(self, n: int, key: str) -> str | None:
        """The tuned algorithm of this geometry: its own batch size's entry, else that of the nearest batch size
        tuned for the same geometry (a last partial batch, an eval chunk, a data-parallel shard), else None."""
        if key in self.conv_tuned:
            return self.conv_tuned[key]
        rest = key.split(" ", 2)[2]   # "conv n<N> <the geometry>"
        near = [(abs(int(k.split(" ")[1][1:]) - n), v) for k, v in self.conv_tuned.items()
                if k.startswith("conv n") and k.split(" ", 2)[2:] == [rest]]
        return min(near)[1] if near else None

    def _conv_rule(self, n, c, h, w, m, k, stride, pad, pool) -> str:
        return "im2col"

    # ---- health -------------------------------------------------------------------------------------------
    def self_test(self) -> None:
        """Build and run a small GEMM and ReLU and compare with NumPy; raises DeviceError if they disagree."""
        try:
            rng = np.random.default_rng(0)
            a, b = rng.standard_normal((5, 7), np.float32), rng.standard_normal((7, 3), np.float32)
            da, db, dc = self.upload(a), self.upload(b), self.zeros((5, 3))
            self.gemm(da, db, dc, 5, 3, 7)
            self.relu_forward(dc, dc, 15)
            got, want = self.download(dc), np.maximum(a.astype(np.float64) @ b, 0)
        except Exception as exc:
            raise DeviceError(f"{self.info.id} ({self.info.name}) cannot run clcnn's kernels: {exc}") from exc
        if not np.allclose(got, want, rtol=1e-4, atol=1e-4):
            raise DeviceError(f"{self.info.id} ({self.info.name}): self-test GEMM gave wrong results")
