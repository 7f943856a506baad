"""weighted_sum for the Numba backend: combining data-parallel shard gradients (same maths as cl/combine.cl)."""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, nogil=True, cache=True, fastmath=False)
def _weighted_sum(out, a0, a1, a2, a3, w0, w1, w2, w3, count, acc, size):
    # out[i] = (acc ? out[i] : 0) + w0*a0[i] + ... (first `count` terms), products rounded to float32 and added left
    # to right (no fastmath: no fused multiply-add), so it matches the OpenCL kernel bit for bit
    for i in prange(size):
        s = out[i] if acc else np.float32(0.0)
        s = s + w0 * a0[i]
        if count > 1:
            s = s + w1 * a1[i]
        if count > 2:
            s = s + w2 * a2[i]
        if count > 3:
            s = s + w3 * a3[i]
        out[i] = s


def weighted_sum(out, parts, weights, acc, size) -> None:
    """out[:size] = (acc ? out : 0) + sum of weights[j] * parts[j] over up to four parts, in order."""
    a = [p.reshape(-1) for p in parts] + [parts[0].reshape(-1)] * (4 - len(parts))
    w = [np.float32(v) for v in weights] + [np.float32(0.0)] * (4 - len(weights))
    _weighted_sum(out.reshape(-1), a[0], a[1], a[2], a[3], w[0], w[1], w[2], w[3], len(parts), bool(acc), int(size))
