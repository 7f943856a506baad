"""The Numba CPU backend: NumPy arrays in host memory, ops run by the parallel kernels of ``clcnn.cpu``."""
from __future__ import annotations

import functools
import os

import numpy as np

from ..cpu import _blas, activation as _act, bias as _bias, gemm as _gemm  # lazily
from ..cpu import im2col as _im2col, loss as _loss, maxpool as _maxpool, sgd as _sgd
from ..cpu import avgpool as _avgpool, batchnorm as _bn, dropout as _dropout
from ..cpu import adam as _adam, conv as _conv, implicit_conv as _implicit
from .base import Backend, DeviceInfo
from .gemm_configs import check_relu_mask, row_sums_geometry


def _short_omp_spin() -> None:
    """Numba's OpenMP threads spin GOMP_SPINCOUNT times (default 300000, milliseconds) at each barrier before they
    sleep. When another process holds a core, the spinning thread keeps the one with work off it: a CIFAR step at
    batch 64 took 82 ms with one core busy elsewhere, 54-65 ms with 1000-10000 spins, and the same 28 ms on an
    idle machine. libgomp reads this when Numba first starts its threads, so set it before any kernel runs
    (unless the user chose a spin count or wait policy)."""
    if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = "10000"


class NumbaBackend(Backend):
    """Arrays are C-contiguous float32/int32 ``np.ndarray``s; every op runs to completion before it returns."""

    def __init__(self, info: DeviceInfo):
        self.info = info
        self._scratch: dict[str, np.ndarray] = {}
        _blas.setup()   # one BLAS thread per Numba thread (see cpu/_blas.py)
        _short_omp_spin()

    def _conv_rule(self, n, c, h, w, m, k, stride, pad, pool) -> str:
        # conv_forward / conv_backward unroll one image at a time into each core's cache and multiply it there,
        # the pool, ReLU and bias gradient in the same pass (cpu/_conv_cached.py): faster than im2col's unrolled
        # batch in memory on every preset measured (docs/PERFORMANCE.md). Without an OpenBLAS to call, those ops
        # are loop nests: then im2col + NumPy's matmul.
        return "direct" if _blas.sgemm() is not None else "im2col"

    # ---- memory ---------------------------------------------------------------------------------------
    def zeros(self, shape, dtype=np.float32):
        a = np.zeros(shape, dtype)
        return self._track(a, a.nbytes)

    def upload(self, host):
        a = np.array(host, copy=True, order="C")
        return self._track(a, a.nbytes)

    def upload_into(self, dst, host):
        host = np.asarray(host)
        if host.size != dst.size or host.dtype != dst.dtype:
            raise ValueError(f"upload_into: {host.dtype}{host.shape} does not fit {dst.dtype}{dst.shape}")
        np.copyto(dst.reshape(-1), host.reshape(-1))

    def download(self, a):
        return np.array(a, copy=True)

    def synchronize(self):
        pass

    def fill(self, a, value):
        a.fill(value)

    def copy(self, src, dst):
        if src.size != dst.size:
            raise ValueError(f"copy: sizes differ ({src.size} vs {dst.size})")
        np.copyto(dst.reshape(-1), src.reshape(-1))

    def view(self, a, offset, shape):
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        size = int(np.prod(shape))
        if offset < 0 or offset + size > a.size:
            raise ValueError(f"view: [{offset}, {offset + size}) outside an array of {a.size}")
        return a[offset:offset + size].reshape(shape)

    def scratch(self, name, size):
        buf = self._scratch.get(name)
        if buf is None or buf.size < size:
            buf = self._scratch[name] = np.empty(max(int(size), 1), np.float32)
            self._track(buf, buf.nbytes)
        return buf

    # ---- ops: each is the function of the same name in clcnn.cpu ------------------------------------------
    def gemm(self, a, b, c, m, n, k, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, lda=None, ldb=None,
             ldc=None, a_off=0, b_off=0, c_off=0, batch=1, stride_a=0, stride_b=0, stride_c=0, reduce=False,
             bias=None, bias_axis=0, relu=False, relu_mask=None, row_sums=None):
        sums = row_sums_geometry(row_sums, m, k, trans_a, lda, a_off, batch, reduce, bias, relu, relu_mask)
        masked = check_relu_mask(relu_mask, m, n, ldc, c_off, batch, reduce, bias, relu)   # before C is written
        _gemm.gemm(a, b, c, m, n, k, trans_a, trans_b, alpha, beta, lda, ldb, ldc, a_off, b_off, c_off, batch,
                   stride_a, stride_b, stride_c, reduce, bias, bias_axis, relu)
        if masked:
            _act.relu_backward(relu_mask, c, c, m * n)
        if sums is not None and m > 0:
            _bias.bias_grad(a, row_sums, *sums, beta)

    def im2col(self, x, cols, n0, nb, c, h, w, kh, kw, stride, pad):
        _im2col.im2col(x, cols, n0, nb, c, h, w, kh, kw, stride, pad)

    def col2im(self, cols, x, n0, nb, c, h, w, kh, kw, stride, pad):
        _im2col.col2im(cols, x, n0, nb, c, h, w, kh, kw, stride, pad)

    def conv_backward_data(self, weight, dy, dx, dcols, n0, nb, m, c, h, w, kh, kw, stride, pad):
        _im2col.conv_backward_data(weight, dy, dx, dcols, n0, nb, m, c, h, w, kh, kw, stride, pad)

    # ---- conv_forward ---------------------------------------------------------------------------------------
    def conv_forward(self, x, weight, bias, y, argmax, n, c, h, w, m, k, stride, pad, relu=False, pool=1):
        _conv.conv_forward(x, weight, bias, y, argmax, n, c, h, w, m, k, stride, pad, relu, pool)

    # ---- end of conv_forward --------------------------------------------------------------------------------

    # ---- conv_backward --------------------------------------------------------------------------------------
    def conv_backward(self, x, weight, dy, argmax, y, dweight, dbias, dx, n, c, h, w, m, k, stride, pad,
                      relu=False, pool=1, beta=0.0):
        _conv.conv_backward(x, weight, dy, argmax, y, dweight, dbias, dx, n, c, h, w, m, k, stride, pad, relu,
                            pool, beta)

    # ---- end of conv_backward -------------------------------------------------------------------------------

    def implicit_conv_forward(self, x, weight, bias, y, n, c, h, w, m, k, stride, pad, relu=False):
        _implicit.implicit_conv_forward(x, weight, bias, y, n, c, h, w, m, k, stride, pad, relu)

    def implicit_conv_backward_weight(self, x, dy, dweight, n, c, h, w, m, k, stride, pad, beta=0.0):
        _implicit.implicit_conv_backward_weight(x, dy, dweight, n, c, h, w, m, k, stride, pad, beta)

    def implicit_conv_backward_data(self, weight, dy, dx, n, c, h, w, m, k, stride, pad):
        _implicit.implicit_conv_backward_data(weight, dy, dx, n, c, h, w, m, k, stride, pad)

    def maxpool_forward(self, x, y, argmax, n, c, h, w, k, stride):
        _maxpool.maxpool_forward(x, y, argmax, n, c, h, w, k, stride)

    def maxpool_backward(self, dy, argmax, dx, n, c, h, w, k, stride, y=None):
        _maxpool.maxpool_backward(dy, argmax, dx, n, c, h, w, k, stride, y)

    def bias_add(self, y, bias, n, c, inner):
        _bias.bias_add(y, bias, n, c, inner)

    def bias_grad(self, dy, db, n, c, inner, beta=0.0):
        _bias.bias_grad(dy, db, n, c, inner, beta)

    def relu_forward(self, x, y, size):
        _act.relu_forward(x, y, size)

    def relu_backward(self, y, dy, dx, size):
        _act.relu_backward(y, dy, dx, size)

    def sigmoid_forward(self, x, y, size):
        _act.sigmoid_forward(x, y, size)

    def sigmoid_backward(self, y, dy, dx, size):
        _act.sigmoid_backward(y, dy, dx, size)

    def tanh_forward(self, x, y, size):
        _act.tanh_forward(x, y, size)

    def tanh_backward(self, y, dy, dx, size):
        _act.tanh_backward(y, dy, dx, size)

    def add(self, a, b, y, size):
        _act.add(a, b, y, size)

    def batchnorm_forward(self, x, y, weight, bias, running_mean, running_var, save_mean, save_invstd, n, c, inner,
                          eps, momentum, training, relu=False):
        _bn.batchnorm_forward(x, y, weight, bias, running_mean, running_var, save_mean, save_invstd, n, c, inner,
                              eps, momentum, training, relu)

    def batchnorm_backward(self, x, dy, dx, weight, save_mean, save_invstd, dweight, dbias, n, c, inner, training,
                           beta=0.0, y=None):
        _bn.batchnorm_backward(x, dy, dx, weight, save_mean, save_invstd, dweight, dbias, n, c, inner, training,
                               beta, y)

    def batchnorm_fold(self, weight, bias, bn_weight, bn_bias, running_mean, running_var, folded_weight,
                       folded_bias, m, inner, eps):
        _bn.batchnorm_fold(weight, bias, bn_weight, bn_bias, running_mean, running_var, folded_weight, folded_bias,
                           m, inner, eps)

    def dropout_forward(self, x, y, mask, counter, key, stream, threshold, scale, size):
        _dropout.dropout_forward(x, y, mask, counter, key, stream, threshold, scale, size)

    def dropout_backward(self, dy, mask, dx, size):
        _dropout.dropout_backward(dy, mask, dx, size)

    def counter_advance(self, counter):
        _dropout.counter_advance(counter)

    def avgpool_forward(self, x, y, n, c, h, w, kh, kw, stride):
        _avgpool.avgpool_forward(x, y, n, c, h, w, kh, kw, stride)

    def avgpool_backward(self, dy, dx, n, c, h, w, kh, kw, stride):
        _avgpool.avgpool_backward(dy, dx, n, c, h, w, kh, kw, stride)

    def softmax_xent_forward(self, logits, labels, probs, loss, n, c, accumulate=False, label_smoothing=0.0,
                             dlogits=None):
        _loss.softmax_xent_forward(logits, labels, probs, loss, n, c, accumulate, label_smoothing, dlogits)

    def sigmoid_bce_forward(self, logits, labels, probs, loss, n, accumulate=False, dlogits=None):
        _loss.sigmoid_bce_forward(logits, labels, probs, loss, n, accumulate, dlogits)

    def sgd_update(self, param, grad, velocity, hyper, size, nesterov=False):
        _sgd.sgd_update(param, grad, velocity, hyper, size, nesterov)

    def adam_update(self, param, grad, exp_avg, exp_avg_sq, hyper, size, decoupled=False):
        _adam.adam_update(param, grad, exp_avg, exp_avg_sq, hyper, size, decoupled)


_NOT_OPS = {"zeros", "upload", "upload_into", "download", "synchronize", "view", "scratch"}


def _counted(op):
    """``op`` adding one to ``Backend.launches`` per call (the Numba backend's "launch" is one op call)."""
    def counted(self, *args, **kwargs):
        self.launches += 1
        return op(self, *args, **kwargs)
    return functools.wraps(op)(counted)


for _name, _op in list(vars(NumbaBackend).items()):
    if callable(_op) and not _name.startswith("_") and _name not in _NOT_OPS:
        setattr(NumbaBackend, _name, _counted(_op))
