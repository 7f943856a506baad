"""The direct convolution for the Numba backend: conv_forward (bias + ReLU + max-pool in the write-out) and
conv_backward (the pool's and ReLU's backward, weight and bias gradients, input gradient). Semantics:
base.Backend.conv_forward / conv_backward."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._arrays import flat


# ---- conv_forward -------------------------------------------------------------------------------------------
def conv_forward(x, weight, bias, y, argmax, n, c, h, w, m, k, stride, pad, relu, pool):
    raise NotImplementedError("conv_forward: being written")

# ---- end of conv_forward ------------------------------------------------------------------------------------


# ---- conv_backward ------------------------------------------------------------------------------------------
def conv_backward(x, weight, dy, argmax, y, dweight, dbias, dx, n, c, h, w, m, k, stride, pad, relu, pool, beta):
    raise NotImplementedError("conv_backward: being written")

# ---- end of conv_backward -----------------------------------------------------------------------------------
