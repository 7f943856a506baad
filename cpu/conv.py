"""The direct convolution for the Numba backend: conv_forward (bias + ReLU + max-pool in the write-out) and
conv_backward (the pool's and ReLU's backward, weight and bias gradients, input gradient). Semantics:
base.Backend.conv_forward / conv_backward."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._arrays import flat


# ---- conv_forward -------------------------------------------------------------------------------------------
@njit(parallel=True, nogil=True, cache=True, fastmath=False)
def _conv_forward(x, weight, bias, y, argmax, relu, n, c, h, w, m, k, stride, pad, ho, wo, pool, hp, wp):
    # x: (N, C, H, W), weight: (M, C, K, K) -> y, argmax: (N, M, Hp, Wp). One iteration per (n, m) plane: the
    # convolution plane z (Ho, Wo) in a per-thread buffer, built tap by tap along whole output rows (the inner
    # loop over ow vectorises), then bias, ReLU and the pool's scan into y.
    for p in prange(n * m):
        nn, mo = p // m, p % m
        z = np.zeros(ho * wo, np.float32)
        xb, wb = nn * c * h * w, mo * c * k * k
        for ci in range(c):
            for i in range(k):
                for j in range(k):
                    wv = weight[np.uint64(wb + (ci * k + i) * k + j)]
                    lo = max(0, -((j - pad) // stride))   # first ow with ow*stride - pad + j >= 0
                    hi = min(wo, (w - 1 - j + pad) // stride + 1)   # ow*stride - pad + j <= w - 1
                    for oh in range(ho):
                        ih = oh * stride - pad + i
                        if ih < 0 or ih >= h:
                            continue
                        row = xb + (ci * h + ih) * w - pad + j
                        for ow in range(lo, hi):
                            z[oh * wo + ow] += wv * x[np.uint64(row + ow * stride)]
        b = bias[mo]
        yb = p * hp * wp
        for ph in range(hp):
            for pw in range(wp):
                best = np.float32(0.0)
                arg = 0
                for a in range(pool):
                    for e in range(pool):
                        q = (ph * pool + a) * wo + pw * pool + e
                        v = z[q] + b
                        if relu and v < 0.0:
                            v = np.float32(0.0)
                        if (a == 0 and e == 0) or v > best or v != v:   # maxpool_forward's rules
                            best, arg = v, q
                y[np.uint64(yb + ph * wp + pw)] = best
                if pool > 1:
                    argmax[np.uint64(yb + ph * wp + pw)] = arg


def conv_geometry(h, w, k, stride, pad, pool):
    """(Ho, Wo, Hp, Wp) of a direct convolution with a pool-window P (1: none); ValueError when empty."""
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    if min(k, stride, pool) < 1 or pad < 0 or ho < pool or wo < pool:
        raise ValueError(f"conv: bad geometry h={h} w={w} k={k} stride={stride} pad={pad} pool={pool}")
    return ho, wo, (ho - pool) // pool + 1, (wo - pool) // pool + 1


def conv_forward(x, weight, bias, y, argmax, n, c, h, w, m, k, stride, pad, relu, pool):
    ho, wo, hp, wp = conv_geometry(h, w, k, stride, pad, pool)
    out = n * m * hp * wp
    arg = flat(argmax, out, "argmax", np.int32) if pool > 1 else np.zeros(1, np.int32)
    _conv_forward(flat(x, n * c * h * w, "x"), flat(weight, m * c * k * k, "weight"), flat(bias, m, "bias"),
                  flat(y, out, "y"), arg, bool(relu), n, c, h, w, m, k, stride, pad, ho, wo, pool, hp, wp)

# ---- end of conv_forward ------------------------------------------------------------------------------------


# ---- conv_backward ------------------------------------------------------------------------------------------
def conv_backward(x, weight, dy, argmax, y, dweight, dbias, dx, n, c, h, w, m, k, stride, pad, relu, pool, beta):
    raise NotImplementedError("conv_backward: being written")

# ---- end of conv_backward -----------------------------------------------------------------------------------
