"""Max pooling for the Numba backend: maxpool_forward (with int32 arg-max) and maxpool_backward."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .gemm import flat

# Indices are cast to np.uint64 where used, so Numba skips its negative-index wraparound branch (all are >= 0).


@njit(parallel=True, cache=True, fastmath=False)
def _maxpool_forward(x, y, argmax, planes, h, w, k, stride, ho, wo):
    # x: (N*C, H, W) -> y, argmax: (N*C, Ho, Wo); argmax = hi*W + wi inside the plane, first max wins
    for p in prange(planes):
        xb = p * h * w
        yb = p * ho * wo
        for oh in range(ho):
            for ow in range(wo):
                top = oh * stride * w + ow * stride
                best = x[np.uint64(xb + top)]
                arg = top
                for i in range(k):
                    row = top + i * w
                    for j in range(k):
                        v = x[np.uint64(xb + row + j)]
                        if v > best:
                            best = v
                            arg = row + j
                o = np.uint64(yb + oh * wo + ow)
                y[o] = best
                argmax[o] = arg


@njit(parallel=True, cache=True, fastmath=False)
def _maxpool_backward(dy, argmax, dx, planes, h, w, ho, wo):
    # dy, argmax: (N*C, Ho, Wo) -> dx: (N*C, H, W); each plane is owned by one iteration, windows summed in order
    for p in prange(planes):
        xb = p * h * w
        yb = p * ho * wo
        for q in range(h * w):
            dx[np.uint64(xb + q)] = 0.0
        for o in range(ho * wo):
            dx[np.uint64(xb + argmax[np.uint64(yb + o)])] += dy[np.uint64(yb + o)]


def _out(h, w, k, stride):
    if min(h, w, k, stride) < 1 or k > h or k > w:
        raise ValueError(f"maxpool: bad geometry h={h} w={w} k={k} stride={stride}")
    return (h - k) // stride + 1, (w - k) // stride + 1


def maxpool_forward(x, y, argmax, n, c, h, w, k, stride) -> None:
    """x: (N, C, H, W) -> y: (N, C, Ho, Wo), argmax: int32 (N, C, Ho, Wo) = hi*W + wi of each window's max."""
    ho, wo = _out(h, w, k, stride)
    ny = n * c * ho * wo
    _maxpool_forward(flat(x, n * c * h * w, "maxpool x"), flat(y, ny, "maxpool y"),
                     flat(argmax, ny, "maxpool argmax", np.int32), int(n * c), int(h), int(w), int(k),
                     int(stride), ho, wo)


def maxpool_backward(dy, argmax, dx, n, c, h, w, k, stride) -> None:
    """dy: (N, C, Ho, Wo), argmax -> dx: (N, C, H, W) overwritten; overlapping windows add up."""
    ho, wo = _out(h, w, k, stride)
    ny = n * c * ho * wo
    _maxpool_backward(flat(dy, ny, "maxpool dy"), flat(argmax, ny, "maxpool argmax", np.int32),
                      flat(dx, n * c * h * w, "maxpool dx"), int(n * c), int(h), int(w), ho, wo)
