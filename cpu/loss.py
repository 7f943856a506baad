"""Losses for the Numba backend: softmax cross-entropy and sigmoid binary cross-entropy, each forward with its
gradient in the same pass (when asked)."""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._arrays import flat

_NO_GRAD = np.zeros(1, np.float32)   # the dlogits argument when no gradient is asked (never written)


@njit(parallel=True, nogil=True, cache=True, fastmath=False)
def _softmax_xent_forward(logits, labels, probs, loss, dlogits, grad, n, c, accumulate, eps):
    # logits: (N, C), labels: (N,) -> probs: (N, C), loss: (1,) = mean_n(logsumexp - (1-eps)*logit[label]
    # - eps*mean_j logit[j]) (eps: label smoothing, as torch.nn.CrossEntropyLoss); grad: dlogits (N, C) =
    # (probs - y) / N, y = (1-eps)*onehot(labels) + eps/C
    rows = np.empty(n)
    rn, off = 1.0 / n, eps / c
    for r in prange(n):
        base = r * c
        m = logits[base]
        for j in range(1, c):
            v = logits[base + j]
            if v > m or v != v:   # a NaN max makes the row NaN, as in PyTorch
                m = v
        s, sz = 0.0, 0.0
        for j in range(c):
            s += math.exp(logits[base + j] - m)
            sz += logits[base + j] - m
        inv = 1.0 / s
        for j in range(c):
            probs[base + j] = math.exp(logits[base + j] - m) * inv
        if grad:
            for j in range(c):
                dlogits[base + j] = (probs[base + j] - off) * rn
            dlogits[base + labels[r]] = (probs[base + labels[r]] - (1.0 - eps) - off) * rn
        # the smoothing term only when eps != 0: 0 * (a -inf logit) would be NaN
        rows[r] = math.log(s) - (1.0 - eps) * (logits[base + labels[r]] - m) - (eps * (sz / c) if eps != 0.0 else 0.0)
    total = 0.0
    for r in range(n):  # fixed order: the same loss for any thread count
        total += rows[r]
    loss[0] = total / n + (loss[0] if accumulate else 0.0)


@njit(parallel=True, nogil=True, cache=True, fastmath=False)
def _sigmoid_bce_forward(logits, labels, probs, loss, dlogits, grad, n, accumulate):
    # logits: (N,), labels: (N,) in {0,1} -> probs: (N,), loss: (1,) = mean(softplus(z) - y*z); grad: dlogits
    # (N,) = (probs - labels) / N
    rows = np.empty(n)
    inv = 1.0 / n
    for r in prange(n):
        z = float(logits[r])
        e = math.exp(-abs(z))
        probs[r] = 1.0 / (1.0 + e) if z >= 0.0 else e / (1.0 + e)
        if grad:
            dlogits[r] = (probs[r] - labels[r]) * inv
        rows[r] = max(z, 0.0) + math.log1p(e) - labels[r] * z
    total = 0.0
    for r in range(n):
        total += rows[r]
    loss[0] = total / n + (loss[0] if accumulate else 0.0)


def softmax_xent_forward(logits, labels, probs, loss, n, c, accumulate=False, label_smoothing=0.0,
                         dlogits=None) -> None:
    """logits: (N, C), labels: int32 (N,) -> probs: (N, C), loss: (1,) = (+=) mean cross-entropy (with
    ``label_smoothing``, torch.nn.CrossEntropyLoss's); dlogits (optional): (probs - y) / N."""
    grad = dlogits is not None
    _softmax_xent_forward(flat(logits, n * c, "softmax logits"), flat(labels, n, "softmax labels", np.int32),
                          flat(probs, n * c, "softmax probs"), flat(loss, 1, "softmax loss"),
                          flat(dlogits, n * c, "softmax dlogits") if grad else _NO_GRAD, grad, int(n), int(c),
                          bool(accumulate), float(label_smoothing))


def sigmoid_bce_forward(logits, labels, probs, loss, n, accumulate=False, dlogits=None) -> None:
    """logits: (N, 1), labels: int32 (N,) -> probs = sigmoid(logits), loss: (1,) = (+=) mean BCE; dlogits
    (optional): (probs - labels) / N."""
    grad = dlogits is not None
    _sigmoid_bce_forward(flat(logits, n, "bce logits"), flat(labels, n, "bce labels", np.int32),
                         flat(probs, n, "bce probs"), flat(loss, 1, "bce loss"),
                         flat(dlogits, n, "bce dlogits") if grad else _NO_GRAD, grad, int(n), bool(accumulate))
