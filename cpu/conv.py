"""The direct convolution for the Numba backend: conv_forward (bias + ReLU + max-pool in the write-out) and
conv_backward (the pool's and ReLU's backward, weight and bias gradients, input gradient). Semantics:
base.Backend.conv_forward / conv_backward. Where OpenBLAS can be called they run an image at a time in each core's
cache (cpu/_conv_cached.py); else the loop nests below, which are also cpu/implicit_conv.py's fallback."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import _blas as blas
from ._arrays import flat
from ._conv_cached import conv as _cached_conv, conv_grads as _cached_grads, output_grad_plane, pool_plane


_NO_ARGMAX = np.zeros(1, np.int32)   # argmax's stand-in with pool 1 (one compiled signature)


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
        pool_plane(z, 0, bias[mo], relu, y, p * hp * wp, argmax, pool, wo, hp, wp)


def conv_geometry(h, w, k, stride, pad, pool):
    """(Ho, Wo, Hp, Wp) of a direct convolution with a pool-window P (1: none); ValueError when empty."""
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    if min(k, stride, pool) < 1 or pad < 0 or ho < pool or wo < pool:
        raise ValueError(f"conv: bad geometry h={h} w={w} k={k} stride={stride} pad={pad} pool={pool}")
    return ho, wo, (ho - pool) // pool + 1, (wo - pool) // pool + 1


def conv_forward(x, weight, bias, y, argmax, n, c, h, w, m, k, stride, pad, relu, pool):
    ho, wo, hp, wp = conv_geometry(h, w, k, stride, pad, pool)
    out = n * m * hp * wp
    arg = flat(argmax, out, "argmax", np.int32) if pool > 1 else _NO_ARGMAX
    args = (flat(x, n * c * h * w, "x"), flat(weight, m * c * k * k, "weight"), flat(bias, m, "bias"),
            flat(y, out, "y"), arg)
    sizes = tuple(int(v) for v in (n, c, h, w, m, k, stride, pad, ho, wo))
    sgemm = blas.sgemm()
    if sgemm is not None:   # an image at a time in each core's cache (cpu/_conv_cached.py)
        _cached_conv(sgemm, *args, *sizes, bool(relu), int(pool), hp, wp)
    else:
        _conv_forward(*args[:4], arg, bool(relu), *sizes, int(pool), hp, wp)

# ---- end of conv_forward ------------------------------------------------------------------------------------


# ---- conv_backward ------------------------------------------------------------------------------------------
# g: (N, M, Ho, Wo), the gradient at the convolution's output, is materialised once (dy routed to the pool's
# arg-max, cut by the ReLU); then dweight/dbias in a prange over m (each m sums its images in order: bit-identical
# for any thread count) and dx in a prange over n (each image's planes owned by one iteration). Every inner loop
# runs over ow, elementwise (per-ow partial sums for the weights), so it vectorises without reassociating sums.


@njit(cache=True)
def _cb_spans(k, stride, pad, w, wo):
    """lo[j], hi[j]: the output columns ow whose input column ow*stride - pad + j lies inside [0, w)."""
    lo, hi = np.zeros(k, np.int64), np.zeros(k, np.int64)
    for j in range(k):
        a = 0 if pad <= j else (pad - j + stride - 1) // stride
        b = (w - 1 + pad - j) // stride + 1
        lo[j] = min(a, wo)
        hi[j] = max(lo[j], min(b, wo))
    return lo, hi


@njit(parallel=True, nogil=True, cache=True, fastmath=False)
def _conv_output_grad(dy, argmax, y, g, planes, ho, wo, hp, wp, relu, pool):
    # dy/argmax/y: (N*M, Hp, Wp) (pool > 1) or (N*M, Ho, Wo) -> g: (N*M, Ho, Wo); relu: cut where y <= 0 (a NaN
    # y passes); windows do not overlap (stride = pool), so each arg-max is written once
    L = ho * wo
    for p in prange(planes):
        output_grad_plane(dy, argmax, y, p * hp * wp, g, p * L, L, hp, wp, relu, pool)


@njit(parallel=True, nogil=True, cache=True, fastmath=False)
def _conv_weight_grad(x, g, dweight, dbias, n, c, h, w, m, k, stride, pad, ho, wo, beta):
    # x: (N, C, H, W), g: (N, M, Ho, Wo) -> dweight: (M, C, k, k), dbias: (M,) (= beta*old + sum; beta == 0
    # reads neither); iteration mo owns row mo, with per-ow partial sums buf (C*k*k, Wo) summed in order at the end
    ckk = c * k * k
    lo, hi = _cb_spans(k, stride, pad, w, wo)
    for mo in prange(m):
        buf = np.zeros(ckk * wo, np.float32)
        bb = np.zeros(wo, np.float32)
        for nn in range(n):
            for oh in range(ho):
                gr = ((nn * m + mo) * ho + oh) * wo
                for ow in range(wo):
                    bb[ow] += g[np.uint64(gr + ow)]
                for ci in range(c):
                    for i in range(k):
                        ih = oh * stride - pad + i
                        if ih < 0 or ih >= h:
                            continue
                        for j in range(k):
                            xr = ((nn * c + ci) * h + ih) * w - pad + j
                            br = ((ci * k + i) * k + j) * wo
                            if stride == 1:
                                for ow in range(lo[j], hi[j]):
                                    buf[np.uint64(br + ow)] += g[np.uint64(gr + ow)] * x[np.uint64(xr + ow)]
                            else:
                                for ow in range(lo[j], hi[j]):
                                    buf[np.uint64(br + ow)] += g[np.uint64(gr + ow)] * x[np.uint64(xr + ow * stride)]
        for r in range(ckk):
            s = np.float32(0.0)
            for ow in range(wo):
                s += buf[r * wo + ow]
            o = mo * ckk + r
            dweight[o] = beta * dweight[o] + s if beta != 0.0 else s
        s = np.float32(0.0)
        for ow in range(wo):
            s += bb[ow]
        dbias[mo] = beta * dbias[mo] + s if beta != 0.0 else s


@njit(parallel=True, nogil=True, cache=True, fastmath=False)
def _conv_input_grad(g, weight, dx, n, c, h, w, m, k, stride, pad, ho, wo):
    # g: (N, M, Ho, Wo), weight: (M, C, k, k) -> dx: (N, C, H, W) overwritten; iteration nn owns image nn
    lo, hi = _cb_spans(k, stride, pad, w, wo)
    for nn in prange(n):
        for ci in range(c):
            d0 = (nn * c + ci) * h * w
            for q in range(h * w):
                dx[np.uint64(d0 + q)] = 0.0
            for mo in range(m):
                for i in range(k):
                    for j in range(k):
                        wv = weight[((mo * c + ci) * k + i) * k + j]
                        for oh in range(ho):
                            ih = oh * stride - pad + i
                            if ih < 0 or ih >= h:
                                continue
                            dr = d0 + ih * w - pad + j
                            gr = ((nn * m + mo) * ho + oh) * wo
                            if stride == 1:
                                for ow in range(lo[j], hi[j]):
                                    dx[np.uint64(dr + ow)] += wv * g[np.uint64(gr + ow)]
                            else:
                                for ow in range(lo[j], hi[j]):
                                    dx[np.uint64(dr + ow * stride)] += wv * g[np.uint64(gr + ow)]


def conv_backward(x, weight, dy, argmax, y, dweight, dbias, dx, n, c, h, w, m, k, stride, pad, relu, pool, beta):
    """base.Backend.conv_backward: x: (N, C, H, W), dy (argmax, y): (N, M, Hp, Wp) with pool > 1, else (N, M, Ho,
    Wo) -> dweight: (M, C, k, k), dbias: (M,) (beta*old + sum), dx: (N, C, H, W) (overwritten) unless None."""
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    hp, wp = ((ho - pool) // pool + 1, (wo - pool) // pool + 1) if pool > 1 else (ho, wo)
    if min(n, c, h, w, m, k, stride, pool, ho, wo, hp, wp) < 1 or pad < 0:
        raise ValueError(f"conv_backward: bad geometry n={n} c={c} h={h} w={w} m={m} k={k} stride={stride} "
                         f"pad={pad} pool={pool}")
    nq = n * m * hp * wp
    fdy = flat(dy, nq, "conv_backward dy")
    farg = flat(argmax, nq, "conv_backward argmax", np.int32) if pool > 1 else _NO_ARGMAX
    fy = flat(y, nq, "conv_backward y") if relu else fdy
    fx, fw = flat(x, n * c * h * w, "conv_backward x"), flat(weight, m * c * k * k, "conv_backward weight")
    fdw, fdb = flat(dweight, m * c * k * k, "conv_backward dweight"), flat(dbias, m, "conv_backward dbias")
    fdx = None if dx is None else flat(dx, n * c * h * w, "conv_backward dx")
    sizes = (int(n), int(c), int(h), int(w), int(m), int(k), int(stride), int(pad), ho, wo)
    sgemm = blas.sgemm()
    if sgemm is not None:   # an image at a time in each core's cache (cpu/_conv_cached.py)
        _cached_grads(sgemm, fx, fw, fdy, farg, fy, fdw, fdb, fdx, beta, *sizes, bool(relu), int(pool), hp, wp)
        return
    g = np.empty(n * m * ho * wo, np.float32)
    _conv_output_grad(fdy, farg, fy, g, n * m, ho, wo, hp, wp, bool(relu), int(pool))
    _conv_weight_grad(fx, g, fdw, fdb, *sizes, float(beta))
    if fdx is not None:
        _conv_input_grad(g, fw, fdx, *sizes)

# ---- end of conv_backward -----------------------------------------------------------------------------------
