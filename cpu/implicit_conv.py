"""The implicit-GEMM convolution ops for the Numba backend: implicit_conv_forward, implicit_conv_backward_weight
and implicit_conv_backward_data (semantics: base.Backend): im2col's products with no unrolled batch.

On a CPU the gathered operand of cl/implicit_conv.cl is best built in each core's cache, an image at a time, and
multiplied there by OpenBLAS: cpu/_conv_cached.py's kernels with no pool (the direct convolution's, so the two
algorithms differ on a CPU only in the pool and bias gradient they take over). Where NumPy's BLAS is not an
OpenBLAS these can call, the direct convolution's loop nests of cpu/conv.py run instead (no pool, no ReLU cut).
"""
from __future__ import annotations

import numpy as np

from . import _blas as blas
from ._arrays import flat
from ._conv_cached import conv as _cached_conv, conv_grads as _cached_grads
from .conv import _NO_ARGMAX, _conv_forward, _conv_input_grad, _conv_weight_grad


def _geometry(n, c, h, w, m, k, stride, pad):
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    if min(n, c, h, w, m, k, stride, ho, wo) < 1 or pad < 0:
        raise ValueError(f"implicit_conv: bad geometry n={n} c={c} h={h} w={w} m={m} k={k} stride={stride} "
                         f"pad={pad}")
    return tuple(int(v) for v in (n, c, h, w, m, k, stride, pad, ho, wo))


def implicit_conv_forward(x, weight, bias, y, n, c, h, w, m, k, stride, pad, relu):
    sizes = _geometry(n, c, h, w, m, k, stride, pad)
    n, c, h, w, m, k, _, _, ho, wo = sizes
    fx, fw = flat(x, n * c * h * w, "x"), flat(weight, m * c * k * k, "weight")
    fb, fy = flat(bias, m, "bias"), flat(y, n * m * ho * wo, "y")
    sgemm = blas.sgemm()
    if sgemm is not None:
        _cached_conv(sgemm, fx, fw, fb, fy, _NO_ARGMAX, *sizes, bool(relu), 1, ho, wo)
    else:
        _conv_forward(fx, fw, fb, fy, _NO_ARGMAX, bool(relu), *sizes, 1, ho, wo)


def implicit_conv_backward_weight(x, dy, dweight, n, c, h, w, m, k, stride, pad, beta):
    sizes = _geometry(n, c, h, w, m, k, stride, pad)
    n, c, h, w, m, k, _, _, ho, wo = sizes
    fx, fdy = flat(x, n * c * h * w, "x"), flat(dy, n * m * ho * wo, "dy")
    fdw = flat(dweight, m * c * k * k, "dweight")
    sgemm = blas.sgemm()
    if sgemm is not None:
        _cached_grads(sgemm, fx, fx, fdy, _NO_ARGMAX, fdy, fdw, None, None, beta, *sizes, False, 1, ho, wo)
        return
    dbias = np.empty(m, np.float32)   # the kernel's bias gradient, not this op's
    _conv_weight_grad(fx, fdy, fdw, dbias, *sizes, float(beta))


def implicit_conv_backward_data(weight, dy, dx, n, c, h, w, m, k, stride, pad):
    sizes = _geometry(n, c, h, w, m, k, stride, pad)
    n, c, h, w, m, k, _, _, ho, wo = sizes
    fw, fdy = flat(weight, m * c * k * k, "weight"), flat(dy, n * m * ho * wo, "dy")
    fdx = flat(dx, n * c * h * w, "dx")
    sgemm = blas.sgemm()
    if sgemm is not None:
        _cached_grads(sgemm, fdx, fw, fdy, _NO_ARGMAX, fdy, None, None, fdx, 0.0, *sizes, False, 1, ho, wo)
        return
    _conv_input_grad(fdy, fw, fdx, *sizes)
