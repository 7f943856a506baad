"""Inverted dropout for the Numba backend, with the counter-based RNG Philox-4x32-10 (the same integer function
as cl/dropout.cl, so masks are bit-identical on every device).

Philox-4x32-10: Salmon, Moraes, Dror & Shaw, "Parallel random numbers: as easy as 1, 2, 3" (SC 2011); constants
M0 = 0xD2511F53, M1 = 0xCD9E8D57 (multipliers), W0 = 0x9E3779B9, W1 = 0xBB67AE85 (key schedule). One call maps a
128-bit counter and a 64-bit key to four 32-bit words.
Element i of a step: r = philox((i >> 2, step, stream, 0), key)[i & 3]; kept when (r >> 8) >= threshold (a 24-bit
integer comparison: threshold = round(p * 2^24)); y = x * scale where kept, else 0; mask = scale or 0 (kept for
backward), scale = float32(1 / (1 - p)).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._arrays import flat

_M32 = np.uint64(0xFFFFFFFF)
_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
_S32 = np.uint64(32)


@njit(nogil=True, cache=True, inline="always")
def philox4x32(c0, c1, c2, c3, k0, k1):
    """Philox-4x32-10 of counter (c0, c1, c2, c3) under key (k0, k1), all uint64 holding 32-bit values; returns
    the four output words (uint64 holding 32-bit values)."""
    for _ in range(10):
        p0, p1 = _M0 * c0, _M1 * c2
        hi0, lo0, hi1, lo1 = p0 >> _S32, p0 & _M32, p1 >> _S32, p1 & _M32
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + _W0) & _M32, (k1 + _W1) & _M32
    return c0, c1, c2, c3


@njit(parallel=True, nogil=True, cache=True, fastmath=False)
def _dropout_forward(x, y, mask, step, k0, k1, stream, threshold, scale, size):
    # x: (size,) -> y, mask: (size,); four elements per Philox call
    zero = np.float32(0.0)
    for blk in prange((size + 3) // 4):
        r = philox4x32(np.uint64(blk), step, stream, np.uint64(0), k0, k1)
        for j in range(4):
            i = blk * 4 + j
            if i < size:
                keep = (r[j] >> np.uint64(8)) >= threshold
                m = scale if keep else zero
                mask[i] = m
                y[i] = x[i] * scale if keep else zero


@njit(parallel=True, nogil=True, cache=True, fastmath=False)
def _dropout_backward(dy, mask, dx, size):
    for i in prange(size):
        dx[i] = dy[i] * mask[i]


def dropout_forward(x, y, mask, counter, key, stream, threshold, scale, size) -> None:
    """See ``Backend.dropout_forward``; ``counter`` int32 (1,) holds the step (as uint32)."""
    step = np.uint64(int(flat(counter, 1, "dropout counter", np.int32)[0]) & 0xFFFFFFFF)
    _dropout_forward(flat(x, size, "dropout x"), flat(y, size, "dropout y"), flat(mask, size, "dropout mask"),
                     step, np.uint64(int(key[0]) & 0xFFFFFFFF), np.uint64(int(key[1]) & 0xFFFFFFFF),
                     np.uint64(int(stream) & 0xFFFFFFFF), np.uint64(threshold), np.float32(scale), int(size))


def dropout_backward(dy, mask, dx, size) -> None:
    """dx = dy * mask (dx may be dy)."""
    _dropout_backward(flat(dy, size, "dropout dy"), flat(mask, size, "dropout mask"), flat(dx, size, "dropout dx"),
                      int(size))


def counter_advance(counter) -> None:
    """counter[0] += 1 (int32, wrapping as uint32)."""
    c = flat(counter, 1, "counter", np.int32)
    c[0] = np.int32(np.uint32((int(c[0]) + 1) & 0xFFFFFFFF).view(np.int32))
