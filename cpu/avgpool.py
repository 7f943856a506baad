"""Average pooling for the Numba backend: avgpool_forward and avgpool_backward (kh x kw windows, no padding).

y[n, c, oh, ow] = sum of the window x[n, c, oh*s : oh*s+kh, ow*s : ow*s+kw] / (kh*kw) (PyTorch's nn.AvgPool2d
with padding 0); backward: each input pixel gathers dy/(kh*kw) of every window that covers it (race-free).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._arrays import flat


@njit(parallel=True, nogil=True, cache=True, fastmath=False)
def _avgpool_forward(x, y, planes, h, w, kh, kw, stride, ho, wo):
    # x: (N*C, H, W) -> y: (N*C, Ho, Wo); the window sum in float64
    inv = 1.0 / (kh * kw)
    for p in prange(planes):
        xb, yb = p * h * w, p * ho * wo
        for oh in range(ho):
            for ow in range(wo):
                s = 0.0
                for i in range(kh):
                    row = xb + (oh * stride + i) * w + ow * stride
                    for j in range(kw):
                        s += x[np.uint64(row + j)]
                y[np.uint64(yb + oh * wo + ow)] = s * inv


@njit(parallel=True, nogil=True, cache=True, fastmath=False)
def _avgpool_backward(dy, dx, planes, h, w, kh, kw, stride, ho, wo):
    # dy: (N*C, Ho, Wo) -> dx: (N*C, H, W) overwritten; pixel (r, q) is in windows oh with
    # oh*stride <= r < oh*stride + kh, i.e. ceil((r-kh+1)/stride) <= oh <= r//stride (clipped to [0, Ho))
    inv = 1.0 / (kh * kw)
    for p in prange(planes):
        xb, yb = p * h * w, p * ho * wo
        for r in range(h):
            oh0 = max(0, (r - kh + stride) // stride)
            oh1 = min(ho - 1, r // stride)
            for q in range(w):
                ow0 = max(0, (q - kw + stride) // stride)
                ow1 = min(wo - 1, q // stride)
                s = 0.0
                for oh in range(oh0, oh1 + 1):
                    for ow in range(ow0, ow1 + 1):
                        s += dy[np.uint64(yb + oh * wo + ow)]
                dx[np.uint64(xb + r * w + q)] = s * inv


def _out(h, w, kh, kw, stride):
    return (h - kh) // stride + 1, (w - kw) // stride + 1


def avgpool_forward(x, y, n, c, h, w, kh, kw, stride) -> None:
    """x: (N, C, H, W) -> y: (N, C, Ho, Wo), Ho = (H - kh)//stride + 1, Wo = (W - kw)//stride + 1."""
    ho, wo = _out(h, w, kh, kw, stride)
    _avgpool_forward(flat(x, n * c * h * w, "avgpool x"), flat(y, n * c * ho * wo, "avgpool y"), int(n * c),
                     int(h), int(w), int(kh), int(kw), int(stride), int(ho), int(wo))


def avgpool_backward(dy, dx, n, c, h, w, kh, kw, stride) -> None:
    """dy: (N, C, Ho, Wo) -> dx: (N, C, H, W), overwritten."""
    ho, wo = _out(h, w, kh, kw, stride)
    _avgpool_backward(flat(dy, n * c * ho * wo, "avgpool dy"), flat(dx, n * c * h * w, "avgpool dx"), int(n * c),
                      int(h), int(w), int(kh), int(kw), int(stride), int(ho), int(wo))
