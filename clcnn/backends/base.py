"""The Backend interface: the small fixed set of ops every clcnn device implements.

Every op has the same name here, as a kernel in ``cl/<family>.cl`` and as a function in ``cpu/<family>.py``.
Arrays are backend handles (``np.ndarray`` for numba, ``CLArray`` for OpenCL) that expose ``.shape``,
``.dtype``, ``.size`` and ``.reshape(shape)`` (a view sharing storage). All float data is float32 and
row-major (C order); labels and arg-max indices are int32. Offsets, leading dimensions and strides are
counted in elements, never bytes.

Ops only enqueue work; ``download`` and ``synchronize`` are the only calls that wait for the device.
"""
from __future__ import annotations

import contextlib
import weakref
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


from ..errors import ConfigError, DeviceError  # noqa: F401  (re-exported: backends raise it)


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


class Backend(ABC):
    """The op set. Subclasses: ``NumbaBackend`` (backends/numba.py) and ``OpenCLBackend`` (backends/opencl.py)."""

    info: DeviceInfo

    # ---- memory ---------------------------------------------------------------------------------------
    @abstractmethod
    def zeros(self, shape, dtype=np.float32):
        """A new device array filled with zeros."""

    @abstractmethod
    def upload(self, host: np.ndarray):
        """A new device array holding a copy of ``host`` (made contiguous; float64 is NOT converted)."""

    @abstractmethod
    def upload_into(self, dst, host: np.ndarray) -> None:
        """Copy ``host`` (same size and dtype as ``dst``) into the existing array ``dst``; may be asynchronous,
        so the caller keeps ``host`` alive and unchanged until the next synchronize/download."""

    @abstractmethod
    def download(self, a) -> np.ndarray:
        """A host copy of ``a`` with its shape and dtype; waits for all queued work."""

    def download_async(self, a):
        """Start copying ``a`` to the host; returns a function that waits for the copy and returns the host array
        (a buffer the backend may reuse two calls later: use or copy it before then)."""
        host = self.download(a)
        return lambda: host

    @abstractmethod
    def synchronize(self) -> None:
        """Wait until every op enqueued so far has finished."""

    @abstractmethod
    def fill(self, a, value: float) -> None:
        """a[...] = value."""

    @abstractmethod
    def copy(self, src, dst) -> None:
        """dst[...] = src (same size)."""

    @abstractmethod
    def scratch(self, name: str, size: int):
        """A float32 workspace of at least ``size`` elements, reused across calls with the same ``name``.
        Contents are undefined. The returned handle is 1-D (size >= requested)."""

    view_align: int = 1   # element offsets passed to ``view`` must be multiples of this
    workspace_bytes: int = 64 << 20   # default cap of a convolution's unrolled (im2col) workspace

    @abstractmethod
    def view(self, a, offset: int, shape):
        """A device array of ``shape`` sharing ``a``'s storage from element ``offset`` (a multiple of
        ``view_align``): writes through either are seen by both. ``a`` must be a 1-D array from ``zeros``."""

    # ---- gemm ---------------------------------------------------------------------------------------------
    @abstractmethod
    def gemm(self, a, b, c, m: int, n: int, k: int, *, trans_a: bool = False, trans_b: bool = False,
             alpha: float = 1.0, beta: float = 0.0, lda: int | None = None, ldb: int | None = None,
             ldc: int | None = None, a_off: int = 0, b_off: int = 0, c_off: int = 0, batch: int = 1,
             stride_a: int = 0, stride_b: int = 0, stride_c: int = 0, reduce: bool = False,
             bias=None, bias_axis: int = 0, relu: bool = False) -> None:
        """Row-major strided-batched GEMM over flat storage, with an optional fused bias + ReLU write-out.

        For b in range(batch), with op(X) = X.T if trans_X else X:
            A_b = a.flat[a_off + b*stride_a:] viewed as (k, m) with row stride lda if trans_a else (m, k)
            B_b = b.flat[b_off + b*stride_b:] viewed as (n, k) with row stride ldb if trans_b else (k, n)
            C_b = c.flat[c_off + b*stride_c:] viewed as (m, n) with row stride ldc
        reduce=False:  C_b = alpha * op(A_b) @ op(B_b) + beta * C_b          (each batch entry separately)
        reduce=True:   C_0 = alpha * sum_b op(A_b) @ op(B_b) + beta * C_0     (batch-reduce; stride_c unused)
        Default leading dimensions are the dense ones (the column count of the stored matrix).
        Any m, n, k >= 1; beta == 0 must not read C (it may hold garbage/NaN).
        Epilogue, applied to each written C_b (to C_0 once when reduce) after alpha/beta:
            bias (a float32 device vector) is added as bias[i] to row i (bias_axis=0, length m: a conv's
            per-channel bias) or as bias[j] to column j (bias_axis=1, length n: a dense layer's bias);
            relu=True then stores max(., 0).
        """

    # ---- convolution unrolling ---------------------------------------------------------------------------
    @abstractmethod
    def im2col(self, x, cols, n0: int, nb: int, c: int, h: int, w: int, kh: int, kw: int,
               stride: int, pad: int) -> None:
        """x: (N, C, H, W) -> cols: (C*kh*kw, nb*Ho*Wo) for images n0 .. n0+nb-1.

        Ho = (H + 2*pad - kh)//stride + 1, Wo likewise, L = Ho*Wo.
        cols[(ci*kh + i)*kw + j, n*L + oh*Wo + ow] = x[n0+n, ci, oh*stride - pad + i, ow*stride - pad + j]
        (0 outside the image). ``cols`` may be larger than needed: only the first (C*kh*kw)*(nb*L) elements
        are written, as a dense matrix with row stride nb*L.
        """

    @abstractmethod
    def col2im(self, cols, x, n0: int, nb: int, c: int, h: int, w: int, kh: int, kw: int,
               stride: int, pad: int) -> None:
        """The adjoint of im2col: x[n0+n, ci, y, x] = sum of every cols entry that im2col read from it.
        Overwrites (does not accumulate into) images n0 .. n0+nb-1 of x; race-free (gather per pixel)."""

    @abstractmethod
    def conv_backward_data(self, weight, dy, dx, dcols, n0: int, nb: int, m: int, c: int, h: int, w: int,
                           kh: int, kw: int, stride: int, pad: int) -> None:
        """A convolution's input gradient: weight: (M, C*kh*kw), dy: (N, M, Ho*Wo) -> dx: (N, C, H, W).

        For n in n0 .. n0+nb-1: dx[n] = col2im(weight.T @ dy[n]) (the geometry as im2col's), overwritten; other
        images of dx are untouched. dcols: a 1-D scratch of >= (C*kh*kw)*(nb*Ho*Wo) floats the backend may use
        as it likes (contents undefined after). Equal to the batched gemm into dcols as (C*kh*kw, nb*Ho*Wo)
        followed by col2im; a backend may instead unroll one image at a time in cache (numba).
        """

    # ---- pooling ------------------------------------------------------------------------------------------
    @abstractmethod
    def maxpool_forward(self, x, y, argmax, n: int, c: int, h: int, w: int, k: int, stride: int) -> None:
        """x: (N, C, H, W) -> y: (N, C, Ho, Wo), argmax: int32 (N, C, Ho, Wo) holding hi*W + wi of the max
        inside its (n, c) plane (first max wins on ties). Ho = (H - k)//stride + 1, no padding."""

    @abstractmethod
    def maxpool_backward(self, dy, argmax, dx, n: int, c: int, h: int, w: int, k: int, stride: int,
                         y=None) -> None:
        """dy: (N, C, Ho, Wo), argmax -> dx: (N, C, H, W); dx overwritten; each input pixel gathers the dy of
        every window whose arg-max it is (race-free, correct for overlapping windows).
        y (optional, the forward output (N, C, Ho, Wo)): only windows with y > 0 pass their dy -- exactly the
        backward of a ReLU applied before the pooling (its output at the arg-max is y), fused."""

    # ---- bias ---------------------------------------------------------------------------------------------
    @abstractmethod
    def bias_add(self, y, bias, n: int, c: int, inner: int) -> None:
        """y: (N, C, inner) += bias: (C,) broadcast (inner=1 for dense layers, Ho*Wo for convolutions)."""

    @abstractmethod
    def bias_grad(self, dy, db, n: int, c: int, inner: int, beta: float = 0.0) -> None:
        """db: (C,) = beta*db + sum over n and inner of dy: (N, C, inner)."""

    # ---- activations (elementwise over `size` elements) -----------------------------------------------------
    @abstractmethod
    def relu_forward(self, x, y, size: int) -> None:
        """y = max(x, 0) (y may be x)."""

    @abstractmethod
    def relu_backward(self, y, dy, dx, size: int) -> None:
        """dx = dy where y > 0 else 0 (y is the forward output; dx may be dy)."""

    @abstractmethod
    def sigmoid_forward(self, x, y, size: int) -> None:
        """y = 1/(1+exp(-x)), computed without overflow for large |x| (y may be x)."""

    @abstractmethod
    def sigmoid_backward(self, y, dy, dx, size: int) -> None:
        """dx = dy * y * (1 - y) (y is the forward output; dx may be dy)."""

    # ---- losses -------------------------------------------------------------------------------------------
    @abstractmethod
    def softmax_xent_forward(self, logits, labels, probs, loss, n: int, c: int, accumulate: bool = False) -> None:
        """logits: (N, C), labels: int32 (N,) -> probs: (N, C) softmax (max-subtracted),
        loss: (1,) = mean_n(-log p[n, labels[n]]) (+= instead of = when accumulate). Labels outside [0, C) are
        a programming error (undefined). The log uses the stable form logsumexp - logit."""

    @abstractmethod
    def softmax_xent_backward(self, probs, labels, dlogits, n: int, c: int) -> None:
        """dlogits: (N, C) = (probs - onehot(labels)) / N."""

    @abstractmethod
    def sigmoid_bce_forward(self, logits, labels, probs, loss, n: int, accumulate: bool = False) -> None:
        """logits: (N, 1), labels int32 (N,) in {0,1} -> probs = sigmoid(logits),
        loss: (1,) = mean_n(softplus(z) - y*z) (stable form) (+= when accumulate)."""

    @abstractmethod
    def sigmoid_bce_backward(self, probs, labels, dlogits, n: int) -> None:
        """dlogits: (N, 1) = (probs - labels) / N."""

    # ---- optimizer ----------------------------------------------------------------------------------------
    @abstractmethod
    def sgd_update(self, param, grad, velocity, hyper, size: int) -> None:
        """PyTorch's SGD rule (dampening 0, no Nesterov), elementwise over ``size`` elements:
        g = grad + weight_decay*param; v = momentum*v + g; param -= lr*v, with hyper = [lr, momentum,
        weight_decay] a float32 (3,) device array (read by the device, so a recorded step replays with the
        values written there since). While momentum == 0, velocity is ignored (may be None) and param -= lr*g."""

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
