"""Float64 NumPy references for the direct convolution ops (Backend.conv_forward, Backend.conv_backward) and the
batch-norm fold into a convolution (Backend.batchnorm_fold), written
from base.Backend's docstrings: a plain loop over the kernel taps, independent of im2col."""
from __future__ import annotations

import numpy as np


def _out(size, k, stride, pad):
    return (size + 2 * pad - k) // stride + 1


def conv(x, weight, bias, stride, pad) -> np.ndarray:
    """x (N, C, H, W), weight (M, C, k, k), bias (M,) -> (N, M, Ho, Wo) in float64 (PyTorch's conv2d)."""
    x, weight = np.asarray(x, np.float64), np.asarray(weight, np.float64)
    n, c, h, w = x.shape
    m, _, k, _ = weight.shape
    ho, wo = _out(h, k, stride, pad), _out(w, k, stride, pad)
    xp = np.zeros((n, c, h + 2 * pad, w + 2 * pad))
    xp[:, :, pad:pad + h, pad:pad + w] = x
    y = np.zeros((n, m, ho, wo)) + np.asarray(bias, np.float64)[None, :, None, None]
    for i in range(k):
        for j in range(k):
            win = xp[:, :, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
            y += np.einsum("nchw,mc->nmhw", win, weight[:, :, i, j])
    return y


def pool_max(z, p):
    """z (N, M, Ho, Wo) -> (y, argmax) of P x P windows with stride P: first max wins, a NaN beats numbers, the
    last NaN wins (maxpool_forward's rules); argmax = oh*Wo + ow."""
    n, m, ho, wo = z.shape
    hp, wp = (ho - p) // p + 1, (wo - p) // p + 1
    y, arg = np.zeros((n, m, hp, wp)), np.zeros((n, m, hp, wp), np.int32)
    for a in range(hp):
        for b in range(wp):
            best = z[:, :, a * p, b * p].copy()
            idx = np.full((n, m), a * p * wo + b * p, np.int32)
            for i in range(p):
                for j in range(p):
                    v = z[:, :, a * p + i, b * p + j]
                    take = (v > best) | np.isnan(v)
                    best = np.where(take, v, best)
                    idx = np.where(take, (a * p + i) * wo + b * p + j, idx)
            y[:, :, a, b], arg[:, :, a, b] = best, idx
    return y, arg


def conv_forward(x, weight, bias, stride, pad, relu=False, pool=1):
    """(y, argmax or None) of Backend.conv_forward, float64."""
    z = conv(x, weight, bias, stride, pad)
    if relu:
        z = np.where(z < 0, 0.0, z)
    return (z, None) if pool == 1 else pool_max(z, pool)


def conv_output_grad(dy, argmax, y, conv_shape, relu=False, pool=1) -> np.ndarray:
    """g (N, M, Ho, Wo): dy routed to the arg-max of each window (pool > 1), cut where y <= 0 (relu)."""
    dy = np.asarray(dy, np.float64)
    if relu:
        dy = np.where(np.asarray(y, np.float64) <= 0, 0.0, dy)   # NaN <= 0 is False: a NaN output passes
    if pool == 1:
        return dy.copy()
    n, m, ho, wo = conv_shape
    g = np.zeros((n, m, ho * wo))
    np.put_along_axis(g, np.asarray(argmax).reshape(n, m, -1).astype(np.int64), dy.reshape(n, m, -1), axis=2)
    return g.reshape(conv_shape)


def conv_backward(x, weight, dy, argmax, y, stride, pad, relu=False, pool=1):
    """(dweight, dbias, dx) of Backend.conv_backward with beta = 0, float64."""
    x, weight = np.asarray(x, np.float64), np.asarray(weight, np.float64)
    n, c, h, w = x.shape
    m, _, k, _ = weight.shape
    ho, wo = _out(h, k, stride, pad), _out(w, k, stride, pad)
    g = conv_output_grad(dy, argmax, y, (n, m, ho, wo), relu, pool)
    xp = np.zeros((n, c, h + 2 * pad, w + 2 * pad))
    xp[:, :, pad:pad + h, pad:pad + w] = x
    dw, dxp = np.zeros_like(weight), np.zeros_like(xp)
    for i in range(k):
        for j in range(k):
            sl = (slice(None), slice(None), slice(i, i + stride * (ho - 1) + 1, stride),
                  slice(j, j + stride * (wo - 1) + 1, stride))
            dw[:, :, i, j] = np.einsum("nmhw,nchw->mc", g, xp[sl])
            dxp[sl] += np.einsum("nmhw,mc->nchw", g, weight[:, :, i, j])
    return dw, g.sum(axis=(0, 2, 3)), dxp[:, :, pad:pad + h, pad:pad + w].copy()


def batchnorm_fold(weight, bias, bn_weight, bn_bias, running_mean, running_var, eps):
    """(folded_weight, folded_bias) in float64: a batch-norm's eval normalisation of the layer's M outputs
    folded into its weight (M, ...) and bias (M,) (Backend.batchnorm_fold)."""
    f = lambda a: np.asarray(a, np.float64)  # noqa: E731
    s = f(bn_weight) / np.sqrt(f(running_var) + eps)
    weight = f(weight)
    return weight * s.reshape((-1,) + (1,) * (weight.ndim - 1)), (f(bias) - f(running_mean)) * s + f(bn_bias)
