"""The implicit-GEMM convolution ops for the Numba backend: implicit_conv_forward, implicit_conv_backward_weight
and implicit_conv_backward_data (semantics: base.Backend). On a CPU the gathered-operand GEMM of
cl/implicit_conv.cl is the direct convolution's loop nest, so these run cpu/conv.py's kernels with no pool and no
ReLU cut: the same sums, the same order, no unrolled buffer."""
from __future__ import annotations

import numpy as np

from ._arrays import flat
from .conv import _NO_ARGMAX, _conv_forward, _conv_input_grad, _conv_weight_grad


def _geometry(n, c, h, w, m, k, stride, pad):
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    if min(n, c, h, w, m, k, stride, ho, wo) < 1 or pad < 0:
        raise ValueError(f"implicit_conv: bad geometry n={n} c={c} h={h} w={w} m={m} k={k} stride={stride} "
                         f"pad={pad}")
    return tuple(int(v) for v in (n, c, h, w, m, k, stride, pad, ho, wo))


def implicit_conv_forward(x, weight, bias, y, n, c, h, w, m, k, stride, pad, relu):
    n, c, h, w, m, k, stride, pad, ho, wo = _geometry(n, c, h, w, m, k, stride, pad)
    _conv_forward(flat(x, n * c * h * w, "x"), flat(weight, m * c * k * k, "weight"), flat(bias, m, "bias"),
                  flat(y, n * m * ho * wo, "y"), _NO_ARGMAX, bool(relu), n, c, h, w, m, k, stride, pad, ho, wo, 1,
                  ho, wo)


def implicit_conv_backward_weight(x, dy, dweight, n, c, h, w, m, k, stride, pad, beta):
    sizes = _geometry(n, c, h, w, m, k, stride, pad)
    n, c, h, w, m, k = sizes[:6]
    dbias = np.empty(m, np.float32)   # the kernel's bias gradient, not this op's
    _conv_weight_grad(flat(x, n * c * h * w, "x"), flat(dy, n * m * sizes[8] * sizes[9], "dy"),
                      flat(dweight, m * c * k * k, "dweight"), dbias, *sizes, float(beta))


def implicit_conv_backward_data(weight, dy, dx, n, c, h, w, m, k, stride, pad):
    sizes = _geometry(n, c, h, w, m, k, stride, pad)
    n, c, h, w, m, k = sizes[:6]
    _conv_input_grad(flat(dy, n * m * sizes[8] * sizes[9], "dy"), flat(weight, m * c * k * k, "weight"),
                     flat(dx, n * c * h * w, "dx"), *sizes)
