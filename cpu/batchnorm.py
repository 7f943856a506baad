"""Batch normalisation for the Numba backend: batchnorm_forward and batchnorm_backward over (N, C, inner).

Formulas (Ioffe & Szegedy 2015; PyTorch's nn.BatchNorm semantics), M = N*inner values per channel:
    training: mean = sum(x)/M, var = sum((x - mean)^2)/M (biased, two passes), invstd = 1/sqrt(var + eps);
              running_mean = (1-momentum)*running_mean + momentum*mean,
              running_var  = (1-momentum)*running_var  + momentum*var*M/(M-1)   (unbiased)
    eval:     mean = running_mean, invstd = 1/sqrt(running_var + eps)
    y = (x - mean)*invstd*weight + bias; mean and invstd are saved for backward.
Channel sums: float32 per (n, c) row, the row sums in float64 in a fixed order (the same result for any
thread count).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._arrays import flat


@njit(parallel=True, nogil=True, cache=True, fastmath={"reassoc"})
def _bn_forward(x, y, w, b, rmean, rvar, smean, sinv, n, c, inner, eps, momentum, training, relu):
    # x, y: (N, C, inner); w, b, rmean, rvar, smean, sinv: (C,); one channel per iteration. Each (n, c) row is
    # summed in float32 lanes (reassoc lets it vectorise; a row is short), the row sums in float64 in order.
    count = n * inner
    for ci in prange(c):
        if training:
            s = 0.0
            for nn in range(n):
                base = (nn * c + ci) * inner
                r = np.float32(0.0)
                for t in range(inner):
                    r += x[np.uint64(base + t)]
                s += r
            mean = s / count
            m32 = np.float32(mean)
            q = 0.0
            for nn in range(n):
                base = (nn * c + ci) * inner
                r = np.float32(0.0)
                for t in range(inner):
                    d = x[np.uint64(base + t)] - m32
                    r += d * d
                q += r
            var = q / count
            rmean[ci] = (1.0 - momentum) * rmean[ci] + momentum * mean
            rvar[ci] = (1.0 - momentum) * rvar[ci] + momentum * (q / (count - 1) if count > 1 else var)
        else:
            mean = float(rmean[ci])
            var = float(rvar[ci])
        inv = 1.0 / math.sqrt(var + eps)
        smean[ci] = mean
        sinv[ci] = inv
        m32, scale, shift = np.float32(mean), np.float32(inv * w[ci]), b[ci]
        for nn in range(n):
            base = (nn * c + ci) * inner
            if relu:   # max(v, 0) keeping NaN and -0.0, as relu_forward
                for t in range(inner):
                    v = (x[np.uint64(base + t)] - m32) * scale + shift
                    y[np.uint64(base + t)] = np.float32(0.0) if v < 0.0 else v
            else:
                for t in range(inner):
                    y[np.uint64(base + t)] = (x[np.uint64(base + t)] - m32) * scale + shift


@njit(parallel=True, nogil=True, cache=True, fastmath={"reassoc"})
def _bn_backward(x, dy, dx, w, smean, sinv, dw, db, y, n, c, inner, training, beta, need_dx, masked):
    # x, dy, dx: (N, C, inner); dw, db: (C,) = beta*(.) + sum(dy*xhat), sum(dy);
    # dx = w*invstd*(dy - (sum(dy) + xhat*sum(dy*xhat))/M) in training, w*invstd*dy in eval (rows as forward's);
    # masked: dy is first cut to 0 where the fused ReLU's output y <= 0 (relu_backward's rule)
    count = n * inner
    for ci in prange(c):
        mean, inv = smean[ci], sinv[ci]
        sdy, sdyx = 0.0, 0.0
        for nn in range(n):
            base = (nn * c + ci) * inner
            ra, rb = np.float32(0.0), np.float32(0.0)
            for t in range(inner):
                g = dy[np.uint64(base + t)]
                if masked and y[np.uint64(base + t)] <= 0.0:
                    g = np.float32(0.0)
                ra += g
                rb += g * (x[np.uint64(base + t)] - mean)
            sdy += ra
            sdyx += rb
        sdyx *= float(inv)
        dw[ci] = sdyx if beta == 0.0 else beta * dw[ci] + sdyx
        db[ci] = sdy if beta == 0.0 else beta * db[ci] + sdy
        if need_dx:
            k = w[ci] * inv
            a = np.float32(sdy / count) if training else np.float32(0.0)
            bb = np.float32(sdyx / count * inv) if training else np.float32(0.0)
            for nn in range(n):
                base = (nn * c + ci) * inner
                for t in range(inner):
                    i = np.uint64(base + t)
                    g = np.float32(0.0) if masked and y[i] <= 0.0 else dy[i]
                    dx[i] = k * (g - a - (x[i] - mean) * bb)


def batchnorm_forward(x, y, weight, bias, running_mean, running_var, save_mean, save_invstd, n, c, inner, eps,
                      momentum, training, relu=False) -> None:
    """See ``Backend.batchnorm_forward`` (the module docstring has the formulas); relu: then max(y, 0)."""
    size = n * c * inner
    _bn_forward(flat(x, size, "batchnorm x"), flat(y, size, "batchnorm y"), flat(weight, c, "batchnorm weight"),
                flat(bias, c, "batchnorm bias"), flat(running_mean, c, "batchnorm running_mean"),
                flat(running_var, c, "batchnorm running_var"), flat(save_mean, c, "batchnorm save_mean"),
                flat(save_invstd, c, "batchnorm save_invstd"), int(n), int(c), int(inner), float(eps),
                float(momentum), bool(training), bool(relu))


def batchnorm_backward(x, dy, dx, weight, save_mean, save_invstd, dweight, dbias, n, c, inner, training,
                       beta=0.0, y=None) -> None:
    """See ``Backend.batchnorm_backward``; dx None: only the parameter gradients; y: the fused ReLU's output."""
    size = n * c * inner
    fx, fdy = flat(x, size, "batchnorm x"), flat(dy, size, "batchnorm dy")
    fdx = fdy if dx is None else flat(dx, size, "batchnorm dx")
    _bn_backward(fx, fdy, fdx, flat(weight, c, "batchnorm weight"), flat(save_mean, c, "batchnorm save_mean"),
                 flat(save_invstd, c, "batchnorm save_invstd"), flat(dweight, c, "batchnorm dweight"),
                 flat(dbias, c, "batchnorm dbias"), fdy if y is None else flat(y, size, "batchnorm y"), int(n),
                 int(c), int(inner), bool(training), float(beta), dx is not None, y is not None)


@njit(parallel=True, nogil=True, cache=True)
def _bn_fold(weight, bias, w, b, rmean, rvar, fweight, fbias, m, inner, eps):
    for o in prange(m):
        s = (np.float32(1.0) / np.sqrt(rvar[o] + np.float32(eps))) * w[o]
        for t in range(inner):
            fweight[o * inner + t] = weight[o * inner + t] * s
        fbias[o] = (bias[o] - rmean[o]) * s + b[o]


def batchnorm_fold(weight, bias, bn_weight, bn_bias, running_mean, running_var, folded_weight, folded_bias, m,
                   inner, eps) -> None:
    """See ``Backend.batchnorm_fold``: the running statistics' normalisation folded into the layer before it."""
    size = m * inner
    _bn_fold(flat(weight, size, "batchnorm_fold weight"), flat(bias, m, "batchnorm_fold bias"),
             flat(bn_weight, m, "batchnorm_fold bn_weight"), flat(bn_bias, m, "batchnorm_fold bn_bias"),
             flat(running_mean, m, "batchnorm_fold running_mean"), flat(running_var, m, "batchnorm_fold running_var"),
             flat(folded_weight, size, "batchnorm_fold folded_weight"),
             flat(folded_bias, m, "batchnorm_fold folded_bias"), int(m), int(inner), np.float32(eps))
