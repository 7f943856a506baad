"""Bias for the Numba backend: bias_add (broadcast over N and the inner axis) and bias_grad (its reduction)."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .gemm import flat


@njit(parallel=True, cache=True, fastmath=False)
def _bias_add(y, bias, n, c, inner):
    # y: (N, C, inner) += bias: (C,)
    for p in prange(n * c):
        b = bias[p % c]
        base = p * inner
        for t in range(inner):
            y[np.uint64(base + t)] += b  # unsigned index: no wraparound branch, vectorizes


@njit(parallel=True, cache=True, fastmath=False)
def _bias_grad(dy, db, n, c, inner, beta):
    # dy: (N, C, inner) -> db: (C,) = beta*db + sum over N and inner; one channel per iteration
    for ci in prange(c):
        s0 = 0.0
        s1 = 0.0
        for nn in range(n):
            base = (nn * c + ci) * inner
            t = 0
            while t + 1 < inner:  # two float64 chains: shorter dependency chain, same result every run
                s0 += dy[np.uint64(base + t)]
                s1 += dy[np.uint64(base + t + 1)]
                t += 2
            if t < inner:
                s0 += dy[np.uint64(base + t)]
        s = s0 + s1
        db[ci] = s if beta == 0.0 else beta * db[ci] + s


def bias_add(y, bias, n, c, inner) -> None:
    """y: (N, C, inner) += bias: (C,) broadcast."""
    _bias_add(flat(y, n * c * inner, "bias_add y"), flat(bias, c, "bias_add bias"), int(n), int(c), int(inner))


def bias_grad(dy, db, n, c, inner, beta=0.0) -> None:
    """dy: (N, C, inner) -> db: (C,) = beta*db + sum over N and inner (beta == 0 does not read db)."""
    _bias_grad(flat(dy, n * c * inner, "bias_grad dy"), flat(db, c, "bias_grad db"), int(n), int(c), int(inner),
               float(beta))
