"""SGD with momentum and weight decay for the Numba backend (PyTorch's rule: dampening 0, no Nesterov)."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .gemm import flat

_NO_VELOCITY = np.zeros(0, np.float32)


@njit(parallel=True, nogil=True, cache=True, fastmath=False)
def _sgd_update(param, grad, velocity, size, lr, momentum, weight_decay):
    # param, grad, velocity: (size,); g = grad + wd*param; v = mu*v + g; param -= lr*v (momentum 0: lr*g)
    lr32, mu32, wd32 = np.float32(lr), np.float32(momentum), np.float32(weight_decay)  # float32 maths, as torch
    if momentum == 0.0:
        for i in prange(size):
            param[i] -= lr32 * (grad[i] + wd32 * param[i])
    else:
        for i in prange(size):
            v = mu32 * velocity[i] + (grad[i] + wd32 * param[i])
            velocity[i] = v
            param[i] -= lr32 * v


def sgd_update(param, grad, velocity, size, lr, momentum, weight_decay) -> None:
    """One SGD step over ``size`` elements; velocity is ignored (may be None) when momentum == 0."""
    vel = _NO_VELOCITY if momentum == 0.0 else flat(velocity, size, "sgd velocity")
    _sgd_update(flat(param, size, "sgd param"), flat(grad, size, "sgd grad"), vel, int(size), float(lr),
                float(momentum), float(weight_decay))
