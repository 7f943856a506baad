"""Bias for the Numba backend: bias_add (broadcast over N and the inner axis) and bias_grad (its reduction)."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._arrays import flat


@njit(parallel=True, nogil=True, cache=True, fastmath=False)
def _bias_add(y, bias, n, c, inner):
    # y: (N, C, inner) += bias: (C,)
    for p in prange(n * c):
        b = bias[p % c]
        base = p * inner
        for t in range(inner):
            y[np.uint64(base + t)] += b  # unsigned index: no wraparound branch, vectorizes


@njit(parallel=True, nogil=True, cache=True, fastmath={"reassoc"})
def _bias_grad(dy, db, n, c, inner, beta):
    # dy: (N, C, inner) -> db: (C,) = beta*db + sum over N and inner; one channel per iteration. Each (n, c) row
    # is summed in float32 lanes (reassoc lets the row sum vectorise; a row is short, so its error is small),
    # the row sums in float64 in a fixed order: the same result for any thread count.
    for ci in prange(c):
        s = 0.0
        for nn in range(n):
            base = (nn * c + ci) * inner
            r = np.float32(0.0)
            for t in range(inner):
                r += dy[np.uint64(base + t)]
            s += r
        db[ci] = s if beta == 0.0 else beta * db[ci] + s


@njit(parallel=True, nogil=True, cache=True, fastmath=False)
def _bias_grad_rows(dy, db, n, c, beta):
    # dy: (N, C) -> db: (C,) = beta*db + column sums (a dense layer's); blocks of 64 columns, rows in order
    for blk in prange((c + 63) // 64):
        j0 = blk * 64
        j1 = min(c, j0 + 64)
        acc = np.zeros(j1 - j0)
        for nn in range(n):
            base = nn * c
            for j in range(j0, j1):
                acc[j - j0] += dy[np.uint64(base + j)]
        for j in range(j0, j1):
            db[j] = acc[j - j0] if beta == 0.0 else beta * db[j] + acc[j - j0]


def bias_add(y, bias, n, c, inner) -> None:
    """y: (N, C, inner) += bias: (C,) broadcast."""
    _bias_add(flat(y, n * c * inner, "bias_add y"), flat(bias, c, "bias_add bias"), int(n), int(c), int(inner))


def bias_grad(dy, db, n, c, inner, beta=0.0) -> None:
    """dy: (N, C, inner) -> db: (C,) = beta*db + sum over N and inner (beta == 0 does not read db)."""
    fdy, fdb = flat(dy, n * c * inner, "bias_grad dy"), flat(db, c, "bias_grad db")
    if inner == 1:
        _bias_grad_rows(fdy, fdb, int(n), int(c), float(beta))
    else:
        _bias_grad(fdy, fdb, int(n), int(c), int(inner), float(beta))
