"""The Backend interface: the small fixed set of ops every clcnn device implements.

Every op has the same name here, as a kernel in ``cl/<family>.cl`` and as a function in ``cpu/<family>.py``.
Arrays are backend handles (``np.ndarray`` for numba, ``CLArray`` for OpenCL) that expose ``.shape``,
``.dtype``, ``.size`` and ``.reshape(shape)`` (a view sharing storage). All float data is float32 and
row-major (C order); labels and arg-max indices are int32. Offsets, leading dimensions and strides are
counted in elements, never bytes.

Ops only enqueue work; ``download`` and ``synchronize`` are the only calls that wait for the device.

Special values (NaN, +-inf, -0.0, values near the float32 limits) follow PyTorch's CPU ops, identically on every
device (tests/test_reliability.py, tests/test_hypothesis.py; docs/CHECKS.md):
- NaN propagates through every op: gemm, bias, sigmoid, pooling and the losses as IEEE arithmetic gives it;
  a max never drops a NaN (OpenCL's fmax/fmin would: the kernels compare instead).
- relu_forward: 0 where x < 0, else x, so NaN stays NaN and -0.0 stays -0.0 (torch.relu); relu_backward (and
  the ReLU fused into gemm's write-out and maxpool_backward's mask): 0 where y <= 0, else dy, so a NaN output
  passes its gradient (PyTorch's threshold_backward).
- maxpool_forward: the first maximum of a window in scan order wins; a NaN beats every number, and the last NaN of
  a window wins over earlier ones (PyTorch's ``v > m || isnan(v)``; its arg-max is that NaN's index).
- softmax_xent: a NaN or +inf logit makes its row's probabilities and the batch loss NaN; a -inf logit is a
  probability 0 (the loss +inf when it is the label's). beta == 0 in gemm never reads C (NaN in C is ignored).
Where PyTorch's own devices may differ (the sign of a zero, which NaN a max returns), its CPU's rule is kept.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


from ..errors import ConfigError, DeviceError  # noqa: F401  (re-exported: backends raise it)
from .capabilities import Capabilities, Mark, Transfer  # noqa: F401  (re-exported)
from .base_conv import ConvOps
from .device_info import DeviceInfo  # noqa: F401  (re-exported)


class Backend(ConvOps, Capabilities, ABC):
    """The op set (the convolution ops: base_conv.ConvOps). Subclasses: ``NumbaBackend`` (backends/numba.py) and ``OpenCLBackend`` (backends/opencl.py)."""

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
             bias=None, bias_axis: int = 0, relu: bool = False, relu_mask=None, row_sums=None) -> None:
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
            relu_mask (a float32 device array holding a dense C: batch 1, c_off 0, ldc n; with no bias and no
            relu) stores 0 where relu_mask <= 0 (relu_backward's rule: a NaN passes): the backward of a ReLU
            whose output is relu_mask, fused into a product giving that ReLU's output gradient.
        row_sums (a float32 device vector of length m; batch 1, a_off 0, the dense lda, no bias, relu or
        relu_mask): also row_sums = beta * row_sums + op(A).sum(axis=1) (beta == 0 must not read it): a dense
        layer's bias gradient, sum_n dy[n, :], beside its weight gradient dy.T @ x, in the same pass where the
        backend can (OpenCL's vec tiles without split-K), else with bias_grad after it.
        """

    def dense_backward(self, dy, x, weight, grad_weight, grad_bias, dx, n: int, in_features: int,
                       out_features: int, beta: float = 0.0, relu_mask: bool = False) -> None:
        """A dense layer's backward (y = x @ weight.T + bias): dy (N, out), x (N, in), weight (out, in) ->
            grad_weight (out, in) = beta * grad_weight + dy.T @ x,  grad_bias (out,) = beta * grad_bias + dy.sum(0),
            dx (N, in) = dy @ weight, then 0 where x <= 0 when relu_mask (x is a ReLU's output; relu_backward's rule).
        dx None: the input gradient is skipped. beta == 0 must not read the gradients. ValueError for an array
        smaller than its shape. This composition of gemm is the rule; OpenCL runs both products in one launch
        (cl/dense.cl) where its tiles allow."""
        _check_sizes("dense_backward", dy=(dy, n * out_features), x=(x, n * in_features),
                     weight=(weight, out_features * in_features), grad_weight=(grad_weight, out_features * in_features),
                     grad_bias=(grad_bias, out_features), dx=(dx, n * in_features))
        self._dense_backward(dy, x, weight, grad_weight, grad_bias, dx, n, in_features, out_features, beta,
                             relu_mask)

    def _dense_backward(self, dy, x, weight, grad_weight, grad_bias, dx, n, in_features, out_features, beta,
                        relu_mask) -> None:
        """dense_backward after its checks: the rule as two gemm calls (a backend may do it in fewer launches)."""
        self.gemm(dy, x, grad_weight, out_features, in_features, n, trans_a=True, beta=beta, row_sums=grad_bias)
        if dx is not None:
            self.gemm(dy, weight, dx, n, in_features, out_features, relu_mask=x if relu_mask else None)

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

    @abstractmethod
    def tanh_forward(self, x, y, size: int) -> None:
        """y = tanh(x) (y may be x)."""

    @abstractmethod
    def tanh_backward(self, y, dy, dx, size: int) -> None:
        """dx = dy * (1 - y^2) (y is the forward output; dx may be dy)."""

    @abstractmethod
    def add(self, a, b, y, size: int) -> None:
        """y = a + b elementwise (y may be a or b): a residual block's sum, and its input gradient's."""

    # ---- normalisation, dropout, average pooling (cpu/batchnorm.py, cpu/dropout.py have the formulas) -------
    @abstractmethod
    def batchnorm_forward(self, x, y, weight, bias, running_mean, running_var, save_mean, save_invstd, n: int,
                          c: int, inner: int, eps: float, momentum: float, training: bool, relu: bool = False) -> None:
        """x: (N, C, inner) -> y (not x) = (x - mean)/sqrt(var + eps) * weight + bias per channel (PyTorch's
        BatchNorm), then max(y, 0) with ``relu`` (a following ReLU fused; relu_forward's NaN rule). training: the
        batch's mean/var (biased, M = N*inner >= 2 values), running_mean/running_var (C,) := (1-momentum)*r +
        momentum*batch (the var unbiased, *M/(M-1)); else the running ones. save_mean, save_invstd (C,): out."""

    @abstractmethod
    def batchnorm_backward(self, x, dy, dx, weight, save_mean, save_invstd, dweight, dbias, n: int, c: int,
                           inner: int, training: bool, beta: float = 0.0, y=None) -> None:
        """dy: (N, C, inner) -> dweight = beta*dweight + sum(dy*xhat), dbias = beta*dbias + sum(dy), dx (unless
        None) = weight*invstd*(dy - (sum(dy) + xhat*sum(dy*xhat))/M) if ``training``, else weight*invstd*dy.
        y (the forward's output with relu): dy is first cut to 0 where y <= 0 (the fused ReLU's backward)."""

    @abstractmethod
    def batchnorm_fold(self, weight, bias, bn_weight, bn_bias, running_mean, running_var, folded_weight, folded_bias,
                       m: int, inner: int, eps: float) -> None:
        """A batch-norm in eval mode folded into the layer before it, whose weight is (M, inner) (a Conv2D's
        (M, C, k, k)) and bias (M,): s = bn_weight / sqrt(running_var + eps) (float32, as batchnorm_forward),
        folded_weight = weight * s[:, None], folded_bias = (bias - running_mean) * s + bn_bias, so that
        layer(x; folded) == batchnorm(layer(x)) up to rounding: torch.nn.BatchNorm2d's eval formula
        (x - running_mean) / sqrt(running_var + eps) * weight + bias, distributed over the layer's affine map."""

    @abstractmethod
    def dropout_forward(self, x, y, mask, counter, key, stream: int, threshold: int, scale: float,
                        size: int) -> None:
        """Inverted dropout with Philox-4x32-10 (bit-identical on every device): r_i = philox((i >> 2, step,
        stream, 0), key)[i & 3], step = counter[0] (int32 (1,) device array read as uint32: a replayed step reads
        what counter_advance left), key two uint32; kept when (r_i >> 8) >= threshold (= round(p * 2^24)):
        y = x*scale, mask = scale, else y = mask = 0."""

    @abstractmethod
    def dropout_backward(self, dy, mask, dx, size: int) -> None:
        """dx = dy * mask (dx may be dy)."""

    @abstractmethod
    def counter_advance(self, counter) -> None:
        """counter[0] += 1 on the device (int32 (1,), wrapping as uint32): dropout's step counter."""

    @abstractmethod
    def avgpool_forward(self, x, y, n: int, c: int, h: int, w: int, kh: int, kw: int, stride: int) -> None:
        """x: (N, C, H, W) -> y: (N, C, Ho, Wo) window means, Ho = (H - kh)//stride + 1, Wo = (W - kw)//stride
        + 1, no padding (PyTorch's AvgPool2d, padding 0; kh = H, kw = W: a global average)."""

    @abstractmethod
    def avgpool_backward(self, dy, dx, n: int, c: int, h: int, w: int, kh: int, kw: int, stride: int) -> None:
        """dy: (N, C, Ho, Wo) -> dx: (N, C, H, W) overwritten, each pixel gathering dy/(kh*kw) of its windows."""

    # ---- losses -------------------------------------------------------------------------------------------
    @abstractmethod
    def softmax_xent_forward(self, logits, labels, probs, loss, n: int, c: int, accumulate: bool = False,
                             label_smoothing: float = 0.0, dlogits=None) -> None:
        """logits: (N, C), labels: int32 (N,) -> probs: (N, C) softmax (max-subtracted),
        loss: (1,) = mean_n(-(1-eps)*log p[n, labels[n]] - eps*mean_j log p[n, j]) with eps = label_smoothing
        in [0, 1] (torch.nn.CrossEntropyLoss(label_smoothing=eps); eps = 0: the plain cross-entropy) (+= instead
        of = when accumulate). Labels outside [0, C) are a programming error (undefined). The log uses the
        stable form logsumexp - logit. dlogits (optional, (N, C)): the gradient in the same pass,
        (probs - y) / N with y = (1-eps)*onehot(labels) + eps/C."""

    @abstractmethod
    def sigmoid_bce_forward(self, logits, labels, probs, loss, n: int, accumulate: bool = False,
                            dlogits=None) -> None:
        """logits: (N, 1), labels int32 (N,) in {0,1} -> probs = sigmoid(logits),
        loss: (1,) = mean_n(softplus(z) - y*z) (stable form) (+= when accumulate); dlogits (optional, (N, 1)):
        the gradient in the same pass, (probs - labels) / N."""

    # ---- optimizer ----------------------------------------------------------------------------------------
    @abstractmethod
    def sgd_update(self, param, grad, velocity, hyper, size: int, nesterov: bool = False) -> None:
        """torch.optim.SGD's rule (dampening 0; PyTorch's documented algorithm), elementwise over ``size``:
        g = grad + weight_decay*param; v = momentum*v + g; g = v, or with ``nesterov`` g = g + momentum*v;
        param -= lr*g, with hyper = [lr, momentum, weight_decay] a float32 (3,) device array (read by the device,
        so a recorded step replays with the values written there since). While momentum == 0, velocity is
        ignored (may be None) and param -= lr*g."""

    @abstractmethod
    def adam_update(self, param, grad, exp_avg, exp_avg_sq, hyper, size: int, decoupled: bool = False) -> None:
        """torch.optim.Adam's rule (amsgrad off; PyTorch's documented algorithm), or with ``decoupled``
        torch.optim.AdamW's (decoupled weight decay), elementwise over ``size`` elements:
            Adam: g = grad + wd*param;   AdamW: param *= 1 - lr*wd, g = grad
            m = beta1*m + (1 - beta1)*g;  v = beta2*v + (1 - beta2)*g*g     (exp_avg, exp_avg_sq)
            param -= step_size * m / (sqrt(v)/bias_correction2_sqrt + eps)
        with hyper = [lr, beta1, beta2, eps, wd, step, step_size, bias_correction2_sqrt, 1 - beta1, 1 - beta2]
        a float32 (10,) device array the host writes before each step: step t counts from 1, step_size =
        lr/(1 - beta1^t), bias_correction2_sqrt = sqrt(1 - beta2^t), 1 - beta computed in float64 (a recorded
        step replays with the values written since)."""


def _check_sizes(op: str, **arrays) -> None:
    """ValueError naming the first array (name=(array or None, elements needed)) holding fewer elements."""
    for name, (a, need) in arrays.items():
        if a is not None and a.size < need:
            raise ValueError(f"{op}: {name} holds {a.size} elements, {need} needed")
