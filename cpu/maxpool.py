"""Max pooling for the Numba backend: maxpool_forward (with int32 arg-max) and maxpool_backward.

The 2x2 stride-2 window (every preset's) has its own forward: branch-free selects over the four taps vectorise.
Backward zeroes each plane (vectorised) and scatters into it in cache; a branch-free 2x2 backward that writes
every pixel once measured 3x slower (its stride-2 stores do not vectorise).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._arrays import flat

# Indices are cast to np.uint64 where used, so Numba skips its negative-index wraparound branch (all are >= 0).


@njit(parallel=True, nogil=True, cache=True, fastmath=False)
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
                        if v > best or v != v:   # a NaN wins, the last NaN of the scan (PyTorch)
                            best = v
                            arg = row + j
                o = np.uint64(yb + oh * wo + ow)
                y[o] = best
                argmax[o] = arg


@njit(parallel=True, nogil=True, cache=True, fastmath=False)
def _maxpool2_forward(x, y, argmax, planes, h, w, ho, wo):
    # x: (N*C, H, W) -> y, argmax: (N*C, Ho, Wo) for 2x2 windows, stride 2; taps in scan order, first max wins
    for p in prange(planes):
        for oh in range(ho):
            top = 2 * oh * w
            r0 = p * h * w + top
            r1 = r0 + w
            yo = p * ho * wo + oh * wo
            for ow in range(wo):
                a = x[np.uint64(r0 + 2 * ow)]
                b = x[np.uint64(r0 + 2 * ow + 1)]
                c = x[np.uint64(r1 + 2 * ow)]
                d = x[np.uint64(r1 + 2 * ow + 1)]
                best, arg = a, 0
                best, arg = (b, 1) if b > best or b != b else (best, arg)   # NaN wins, as in PyTorch
                best, arg = (c, w) if c > best or c != c else (best, arg)
                best, arg = (d, w + 1) if d > best or d != d else (best, arg)
                y[np.uint64(yo + ow)] = best
                argmax[np.uint64(yo + ow)] = top + 2 * ow + arg


@njit(parallel=True, nogil=True, cache=True, fastmath=False)
def _maxpool_backward(dy, argmax, dx, y, masked, planes, h, w, ho, wo):
    # dy, argmax: (N*C, Ho, Wo) -> dx: (N*C, H, W); each plane is owned by one iteration, windows summed in order;
    # masked: only windows whose output y > 0 pass (a ReLU before the pool, fused)
    for p in prange(planes):
        xb = p * h * w
        yb = p * ho * wo
        for q in range(h * w):
            dx[np.uint64(xb + q)] = 0.0
        for o in range(ho * wo):
            if not (masked and y[np.uint64(yb + o)] <= 0.0):   # relu_backward's rule: a NaN passes
                dx[np.uint64(xb + argmax[np.uint64(yb + o)])] += dy[np.uint64(yb + o)]


def _out(h, w, k, stride):
    if min(h, w, k, stride) < 1 or k > h or k > w:
        raise ValueError(f"maxpool: bad geometry h={h} w={w} k={k} stride={stride}")
    return (h - k) // stride + 1, (w - k) // stride + 1


def maxpool_forward(x, y, argmax, n, c, h, w, k, stride) -> None:
    """x: (N, C, H, W) -> y: (N, C, Ho, Wo), argmax: int32 (N, C, Ho, Wo) = hi*W + wi of each window's max."""
    ho, wo = _out(h, w, k, stride)
    ny = n * c * ho * wo
    args = (flat(x, n * c * h * w, "maxpool x"), flat(y, ny, "maxpool y"),
            flat(argmax, ny, "maxpool argmax", np.int32), int(n * c), int(h), int(w))
    if k == 2 and stride == 2:
        _maxpool2_forward(*args, ho, wo)
    else:
        _maxpool_forward(*args, int(k), int(stride), ho, wo)


def maxpool_backward(dy, argmax, dx, n, c, h, w, k, stride, y=None) -> None:
    """dy: (N, C, Ho, Wo), argmax -> dx: (N, C, H, W) overwritten; overlapping windows add up. With y (the forward
    output), only windows with y > 0 pass (the fused backward of a ReLU before the pool)."""
    ho, wo = _out(h, w, k, stride)
    ny = n * c * ho * wo
    fdy = flat(dy, ny, "maxpool dy")
    _maxpool_backward(fdy, flat(argmax, ny, "maxpool argmax", np.int32), flat(dx, n * c * h * w, "maxpool dx"),
                      fdy if y is None else flat(y, ny, "maxpool y"), y is not None, int(n * c), int(h), int(w),
                      ho, wo)
