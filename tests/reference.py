"""Slow, plain float64 NumPy references for every Backend op (the ground truth the op tests compare against).

Each function takes host arrays (any float dtype; they are promoted to float64) and returns NEW float64 arrays;
inputs are never modified. Semantics follow the docstrings of ``clcnn/backends/base.py`` word for word.
"""
from __future__ import annotations

import numpy as np


def f64(a) -> np.ndarray:
    """A float64 copy of ``a``."""
    return np.array(a, dtype=np.float64, copy=True)


# ---- gemm ------------------------------------------------------------------------------------------------
def strided_view(flat: np.ndarray, off: int, rows: int, cols: int, ld: int) -> np.ndarray:
    """flat[off:] viewed as a (rows, cols) matrix with row stride ld (a gathered float64 copy)."""
    idx = off + np.arange(rows)[:, None] * ld + np.arange(cols)[None, :]
    return f64(flat.reshape(-1)[idx])


def gemm(a, b, c, m, n, k, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, lda=None, ldb=None, ldc=None,
         a_off=0, b_off=0, c_off=0, batch=1, stride_a=0, stride_b=0, stride_c=0, reduce=False, bias=None,
         bias_axis=0, relu=False, relu_mask=None) -> np.ndarray:
    """The whole flat storage of ``c`` after Backend.gemm (entries outside every C_b are unchanged).

    a: flat, A_b = (k, m) if trans_a else (m, k) at a_off + b*stride_a, row stride lda; b likewise (n, k)/(k, n);
    C_b = (m, n) at c_off + b*stride_c, row stride ldc. beta == 0 never reads C. Epilogue on each written C_b:
    + bias[i] (bias_axis 0) or bias[j] (bias_axis 1) when bias is given, then max(., 0) when relu.
    """
    a, b = f64(a).reshape(-1), f64(b).reshape(-1)
    out = f64(c).reshape(-1)
    lda = lda if lda is not None else (m if trans_a else k)
    ldb = ldb if ldb is not None else (k if trans_b else n)
    ldc = ldc if ldc is not None else n
    a_rows, a_cols = (k, m) if trans_a else (m, k)
    b_rows, b_cols = (n, k) if trans_b else (k, n)
    epilogue = (None if bias is None else f64(bias).reshape(-1), bias_axis, relu)
    total = np.zeros((m, n))
    for bi in range(batch):
        A = strided_view(a, a_off + bi * stride_a, a_rows, a_cols, lda)
        B = strided_view(b, b_off + bi * stride_b, b_rows, b_cols, ldb)
        prod = (A.T if trans_a else A) @ (B.T if trans_b else B)
        if reduce:
            total += prod
            continue
        _store(out, c_off + bi * stride_c, m, n, ldc, alpha * prod, beta, *epilogue)
    if reduce:
        _store(out, c_off, m, n, ldc, alpha * total, beta, *epilogue)
    if relu_mask is not None:   # a dense single C: cut where the ReLU's output is <= 0 (a NaN passes)
        out[:m * n] = np.where(f64(relu_mask).reshape(-1)[:m * n] <= 0, 0.0, out[:m * n])
    return out.reshape(np.shape(c))


def _store(out, off, m, n, ldc, value, beta, bias=None, bias_axis=0, relu=False):
    idx = off + np.arange(m)[:, None] * ldc + np.arange(n)[None, :]
    value = value if beta == 0 else value + beta * out[idx]
    if bias is not None:
        value = value + (bias[:m, None] if bias_axis == 0 else bias[None, :n])
    out[idx] = relu_forward(value) if relu else value


# ---- im2col / col2im -------------------------------------------------------------------------------------
def out_size(h, k, stride, pad):
    return (h + 2 * pad - k) // stride + 1


def im2col(x, n0, nb, c, h, w, kh, kw, stride, pad) -> np.ndarray:
    """x: (N, C, H, W) -> cols: (C*kh*kw, nb*Ho*Wo) (dense, just the written part)."""
    x = f64(x).reshape(-1, c, h, w)
    ho, wo = out_size(h, kh, stride, pad), out_size(w, kw, stride, pad)
    cols = np.zeros((c * kh * kw, nb * ho * wo))
    for ci in range(c):
        for i in range(kh):
            for j in range(kw):
                row = (ci * kh + i) * kw + j
                for n in range(nb):
                    for oh in range(ho):
                        for ow in range(wo):
                            y, xx = oh * stride - pad + i, ow * stride - pad + j
                            if 0 <= y < h and 0 <= xx < w:
                                cols[row, n * ho * wo + oh * wo + ow] = x[n0 + n, ci, y, xx]
    return cols


def col2im(cols, x, n0, nb, c, h, w, kh, kw, stride, pad) -> np.ndarray:
    """The new x (N, C, H, W): images n0..n0+nb-1 replaced by the adjoint of im2col, the others unchanged."""
    out = f64(x).reshape(-1, c, h, w)
    ho, wo = out_size(h, kh, stride, pad), out_size(w, kw, stride, pad)
    cols = f64(cols).reshape(-1)[: c * kh * kw * nb * ho * wo].reshape(c * kh * kw, nb * ho * wo)
    out[n0:n0 + nb] = 0.0
    for ci in range(c):
        for i in range(kh):
            for j in range(kw):
                row = (ci * kh + i) * kw + j
                for n in range(nb):
                    for oh in range(ho):
                        for ow in range(wo):
                            y, xx = oh * stride - pad + i, ow * stride - pad + j
                            if 0 <= y < h and 0 <= xx < w:
                                out[n0 + n, ci, y, xx] += cols[row, n * ho * wo + oh * wo + ow]
    return out.reshape(np.shape(x))


def conv_backward_data(weight, dy, x, n0, nb, m, c, h, w, kh, kw, stride, pad) -> np.ndarray:
    """The new x (N, C, H, W): images n0..n0+nb-1 replaced by col2im(weight.T @ dy[n]), the others unchanged.
    weight: (M, C*kh*kw), dy: (N, M, Ho*Wo); composed from gemm (dcols (C*kh*kw, nb*L)) and col2im."""
    ho, wo = out_size(h, kh, stride, pad), out_size(w, kw, stride, pad)
    ckk, l = c * kh * kw, ho * wo
    dcols = gemm(weight, dy, np.zeros(ckk * nb * l), ckk, l, m, trans_a=True, b_off=n0 * m * l, ldc=nb * l,
                 batch=nb, stride_a=0, stride_b=m * l, stride_c=l)
    return col2im(dcols, x, n0, nb, c, h, w, kh, kw, stride, pad)


# ---- max pooling -----------------------------------------------------------------------------------------
def maxpool_forward(x, n, c, h, w, k, stride):
    """x: (N, C, H, W) -> (y: (N, C, Ho, Wo) float64, argmax: int32 hi*W + wi, first max in scan order)."""
    x = f64(x).reshape(n, c, h, w)
    ho, wo = (h - k) // stride + 1, (w - k) // stride + 1
    y = np.zeros((n, c, ho, wo))
    arg = np.zeros((n, c, ho, wo), np.int32)
    for ni in range(n):
        for ci in range(c):
            for oh in range(ho):
                for ow in range(wo):
                    best, best_at = -np.inf, -1
                    for i in range(k):
                        for j in range(k):
                            hi, wi = oh * stride + i, ow * stride + j
                            v = x[ni, ci, hi, wi]   # strict: the first max wins on ties; a NaN wins, the last
                            if v > best or np.isnan(v) or best_at < 0:   # NaN of the scan (PyTorch's rule)
                                best, best_at = v, hi * w + wi
                    y[ni, ci, oh, ow], arg[ni, ci, oh, ow] = best, best_at
    return y, arg


def maxpool_backward(dy, argmax, n, c, h, w, k, stride, y=None) -> np.ndarray:
    """dy, argmax: (N, C, Ho, Wo) -> dx: (N, C, H, W), each dy added to the pixel its window picked (only
    windows with y > 0 when the forward output y is given)."""
    dy = f64(dy).reshape(n, c, -1)
    if y is not None:
        dy = np.where(f64(y).reshape(n, c, -1) <= 0, 0.0, dy)   # relu_backward's rule: a NaN passes
    arg = np.asarray(argmax).reshape(n, c, -1)
    dx = np.zeros((n, c, h * w))
    for ni in range(n):
        for ci in range(c):
            for o in range(dy.shape[2]):
                dx[ni, ci, arg[ni, ci, o]] += dy[ni, ci, o]
    return dx.reshape(n, c, h, w)


# ---- bias ------------------------------------------------------------------------------------------------
def bias_add(y, bias, n, c, inner) -> np.ndarray:
    return (f64(y).reshape(n, c, inner) + f64(bias).reshape(1, c, 1)).reshape(np.shape(y))


def bias_grad(dy, db, n, c, inner, beta=0.0) -> np.ndarray:
    total = f64(dy).reshape(n, c, inner).sum(axis=(0, 2))
    return total if beta == 0 else beta * f64(db) + total


# ---- activations -----------------------------------------------------------------------------------------
def relu_forward(x) -> np.ndarray:
    """0 where x < 0 else x: NaN and -0.0 pass through (PyTorch's torch.relu on the CPU)."""
    x = f64(x)
    return np.where(x < 0, 0.0, x)


def relu_backward(y, dy) -> np.ndarray:
    """0 where y <= 0 else dy: a NaN output passes dy (PyTorch's threshold_backward)."""
    return np.where(f64(y) <= 0, 0.0, f64(dy))


def sigmoid(x) -> np.ndarray:
    """1/(1+exp(-x)) without overflow: exp of a non-positive number only."""
    x = f64(x)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def sigmoid_forward(x) -> np.ndarray:
    return sigmoid(x)


def sigmoid_backward(y, dy) -> np.ndarray:
    y = f64(y)
    return f64(dy) * y * (1.0 - y)


# ---- losses ----------------------------------------------------------------------------------------------
def softmax_xent_forward(logits, labels, n, c, loss_before=0.0, accumulate=False, label_smoothing=0.0):
    """-> (probs (N, C), loss scalar) with loss = mean(logsumexp - (1-eps)*logit[label] - eps*mean_j logit[j])
    (+ loss_before if accumulate), eps = label_smoothing (torch.nn.CrossEntropyLoss's)."""
    z = f64(logits).reshape(n, c)
    zmax = z.max(axis=1, keepdims=True)
    e = np.exp(z - zmax)
    s = e.sum(axis=1, keepdims=True)
    lse = (zmax + np.log(s))[:, 0]
    eps = float(label_smoothing)
    loss = float(np.mean(lse - (1.0 - eps) * z[np.arange(n), np.asarray(labels)] - eps * z.mean(axis=1)))
    return e / s, (float(loss_before) + loss if accumulate else loss)


def softmax_xent_backward(probs, labels, n, c, label_smoothing=0.0) -> np.ndarray:
    """(probs - y) / N with y = (1-eps)*onehot(labels) + eps/C."""
    eps = float(label_smoothing)
    d = f64(probs).reshape(n, c) - eps / c
    d[np.arange(n), np.asarray(labels)] -= 1.0 - eps
    return d / n


def softplus(z) -> np.ndarray:
    z = f64(z)
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def sigmoid_bce_forward(logits, labels, n, loss_before=0.0, accumulate=False):
    """-> (probs (N, 1), loss scalar) with loss = mean(softplus(z) - y*z) (+ loss_before if accumulate)."""
    z = f64(logits).reshape(n)
    y = np.asarray(labels, np.float64).reshape(n)
    loss = float(np.mean(softplus(z) - y * z))
    return sigmoid(z).reshape(n, 1), (float(loss_before) + loss if accumulate else loss)


def sigmoid_bce_backward(probs, labels, n) -> np.ndarray:
    return ((f64(probs).reshape(n) - np.asarray(labels, np.float64).reshape(n)) / n).reshape(n, 1)


# ---- optimizer -------------------------------------------------------------------------------------------
def sgd_update(param, grad, velocity, lr, momentum, weight_decay, nesterov=False):
    """One PyTorch SGD step -> (new param, new velocity or None when momentum == 0)."""
    p, g = f64(param), f64(grad) + weight_decay * f64(param)
    if momentum == 0:
        return p - lr * g, None
    v = momentum * f64(velocity) + g
    return p - lr * (g + momentum * v if nesterov else v), v


def adam_update(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, decoupled=False):
    """Step number ``step`` (from 1) of torch.optim.Adam (decoupled: AdamW), as its documentation writes the
    algorithm -> (new param, new exp_avg, new exp_avg_sq)."""
    p, g = f64(param), f64(grad)
    if decoupled:
        p = p * (1.0 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    m = beta1 * f64(exp_avg) + (1.0 - beta1) * g
    v = beta2 * f64(exp_avg_sq) + (1.0 - beta2) * g * g
    m_hat, v_hat = m / (1.0 - beta1 ** step), v / (1.0 - beta2 ** step)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


# ---- issue 13 layers: batch-norm, dropout (Philox-4x32-10), average pooling, tanh, add ----------------------
def batchnorm_forward(x, weight, bias, running_mean, running_var, eps, momentum, training):
    """x: (N, C, inner) -> (y, new running_mean, new running_var, mean, invstd) as torch.nn.BatchNorm: the batch's
    mean and biased variance normalise in training, the running ones update with the unbiased variance."""
    x = f64(x)
    if training:
        m = x.shape[0] * x.shape[2]
        mean, var = x.mean(axis=(0, 2)), x.var(axis=(0, 2))
        rm = (1 - momentum) * f64(running_mean) + momentum * mean
        rv = (1 - momentum) * f64(running_var) + momentum * var * m / (m - 1)
    else:
        mean, var, rm, rv = f64(running_mean), f64(running_var), f64(running_mean), f64(running_var)
    invstd = 1.0 / np.sqrt(var + eps)
    y = (x - mean[None, :, None]) * (invstd * f64(weight))[None, :, None] + f64(bias)[None, :, None]
    return y, rm, rv, mean, invstd


def batchnorm_backward(x, dy, weight, mean, invstd, training):
    """-> (dx, dweight, dbias): the gradient of batchnorm_forward (x: (N, C, inner)); in training the batch
    statistics are functions of x, in eval they are constants."""
    x, dy = f64(x), f64(dy)
    xhat = (x - f64(mean)[None, :, None]) * f64(invstd)[None, :, None]
    db, dw = dy.sum(axis=(0, 2)), (dy * xhat).sum(axis=(0, 2))
    k = (f64(weight) * f64(invstd))[None, :, None]
    if not training:
        return k * dy, dw, db
    m = x.shape[0] * x.shape[2]
    return k * (dy - (db[None, :, None] + xhat * dw[None, :, None]) / m), dw, db


_MASK32 = 0xFFFFFFFF


def philox4x32_10(ctr, key):
    """Philox-4x32-10 (Salmon et al., SC 2011) on Python ints: counter (4 words), key (2 words) -> 4 words."""
    c0, c1, c2, c3 = ctr
    k0, k1 = key
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ k0) & _MASK32, p1 & _MASK32, ((p0 >> 32) ^ c3 ^ k1) & _MASK32, p0 & _MASK32
        k0, k1 = (k0 + 0x9E3779B9) & _MASK32, (k1 + 0xBB67AE85) & _MASK32
    return c0, c1, c2, c3


def dropout_mask(size, key, step, stream, p):
    """The keep mask (bool (size,)) of Backend.dropout_forward: element i kept when
    philox((i >> 2, step, stream, 0), key)[i & 3] >> 8 >= round(p * 2^24)."""
    threshold = int(round(p * (1 << 24)))
    words = [w for blk in range((size + 3) // 4) for w in philox4x32_10((blk, step, stream, 0), key)]
    return np.array([(w >> 8) >= threshold for w in words[:size]], dtype=bool)


def avgpool_forward(x, kh, kw, stride):
    """x: (N, C, H, W) -> window means (N, C, Ho, Wo), no padding."""
    x = f64(x)
    n, c, h, w = x.shape
    ho, wo = (h - kh) // stride + 1, (w - kw) // stride + 1
    y = np.zeros((n, c, ho, wo))
    for i in range(ho):
        for j in range(wo):
            y[:, :, i, j] = x[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw].mean(axis=(2, 3))
    return y


def avgpool_backward(dy, h, w, kh, kw, stride):
    """dy: (N, C, Ho, Wo) -> dx: (N, C, H, W), each window's dy/(kh*kw) spread over it."""
    dy = f64(dy)
    n, c, ho, wo = dy.shape
    dx = np.zeros((n, c, h, w))
    for i in range(ho):
        for j in range(wo):
            dx[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw] += dy[:, :, i:i + 1, j:j + 1] / (kh * kw)
    return dx


def tanh_forward(x) -> np.ndarray:
    return np.tanh(f64(x))


def tanh_backward(y, dy) -> np.ndarray:
    return f64(dy) * (1.0 - f64(y) ** 2)
