"""SGD with momentum, Nesterov and weight decay for the Numba backend (torch.optim.SGD's rule, dampening 0)."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .gemm import flat

_NO_VELOCITY = np.zeros(0, np.float32)


@njit(parallel=True, nogil=True, cache=True, fastmath=False)
def _sgd_update(param, grad, velocity, hyper, size, nesterov):
    # param, grad, velocity: (size,); hyper: (3,) = [lr, momentum, weight_decay] (float32 maths, as torch);
    # g = grad + wd*param; v = mu*v + g; g = v (nesterov: g + mu*v); param -= lr*g
    # (momentum 0: param -= lr*g, velocity untouched)
    lr32, mu32, wd32 = hyper[0], hyper[1], hyper[2]
    if mu32 == 0.0:
        for i in prange(size):
            param[i] -= lr32 * (grad[i] + wd32 * param[i])
    else:
        for i in prange(size):
            g = grad[i] + wd32 * param[i]
            v = mu32 * velocity[i] + g
            velocity[i] = v
            param[i] -= lr32 * (g + mu32 * v if nesterov else v)


def sgd_update(param, grad, velocity, hyper, size, nesterov=False) -> None:
    """One SGD step over ``size`` elements with hyper = [lr, momentum, weight_decay] (float32 (3,));
    velocity may be None only while momentum == 0; ``nesterov``: Nesterov momentum."""
    hyper = flat(hyper, 3, "sgd hyper")
    if velocity is None and hyper[1] != 0.0:
        raise ValueError("sgd_update: momentum != 0 needs a velocity buffer")
    vel = _NO_VELOCITY if velocity is None else flat(velocity, size, "sgd velocity")
    _sgd_update(flat(param, size, "sgd param"), flat(grad, size, "sgd grad"), vel, hyper, int(size),
                bool(nesterov))
