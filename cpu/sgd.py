"""SGD with momentum and weight decay for the Numba backend (PyTorch's rule: dampening 0, no Nesterov)."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .gemm import flat

_NO_VELOCITY = np.zeros(0, np.float32)


@njit(parallel=True, cache=True, fastmath=False)
def _sgd_update(param, grad, velocity, size, lr, momentum, weight_decay):
    # param, grad, velocity: (size,); g = grad + wd*param; v = mu*v + g; param -= lr*v (momentum 0: lr*g)
    for i in prange(size):
        g = grad[i] + weight_decay * param[i]
        if momentum != 0.0:
            v = momentum * velocity[i] + g
            velocity[i] = v
            g = v
        param[i] -= lr * g


def sgd_update(param, grad, velocity, size, lr, momentum, weight_decay) -> None:
    """One SGD step over ``size`` elements; velocity is ignored (may be None) when momentum == 0."""
    vel = _NO_VELOCITY if momentum == 0.0 else flat(velocity, size, "sgd velocity")
    _sgd_update(flat(param, size, "sgd param"), flat(grad, size, "sgd grad"), vel, int(size), float(lr),
                float(momentum), float(weight_decay))
