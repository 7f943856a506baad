"""A multi-threaded host memory copy: batches into the pinned staging buffers GPU uploads go through.

One core copies about 8 GB/s into pinned memory (measured on the H200 host: 0.75 ms for a 6.3 MB CIFAR shard),
which made the host, not the GPUs, the limit of a data-parallel step; the copy split over the cores is not.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

BLOCK = 1 << 18   # bytes per parallel piece


@njit(parallel=True, nogil=True, cache=True)
def _copy(dst, src, pieces):
    n = src.size
    for p in prange(pieces):
        a = p * BLOCK
        b = min(n, a + BLOCK)
        dst[a:b] = src[a:b]


def parallel_copy(dst: np.ndarray, src: np.ndarray) -> None:
    """dst[...] = src for two contiguous uint8 arrays of one size, in parallel pieces."""
    _copy(dst, src, -(-src.size // BLOCK))
