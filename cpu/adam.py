"""Adam and AdamW for the Numba backend (torch.optim.Adam / AdamW's rule, amsgrad off): one fused pass."""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._arrays import flat


@njit(parallel=True, nogil=True, cache=True, fastmath=False)
def _adam_update(param, grad, exp_avg, exp_avg_sq, hyper, size, decoupled):
    # param, grad, exp_avg, exp_avg_sq: (size,); hyper: (10,) = [lr, beta1, beta2, eps, weight_decay, step,
    # step_size, bias_correction2_sqrt, 1 - beta1, 1 - beta2] (float32 maths, as torch)
    lr, beta2, eps, wd = hyper[0], hyper[2], hyper[3], hyper[4]
    step_size, bc2_sqrt, one_minus_beta1, one_minus_beta2 = hyper[6], hyper[7], hyper[8], hyper[9]
    scale = np.float32(1.0) - lr * wd
    for i in prange(size):
        p, g = param[i], grad[i]
        if decoupled:
            p = p * scale
        else:
            g = g + wd * p
        m = exp_avg[i] + one_minus_beta1 * (g - exp_avg[i])
        v = beta2 * exp_avg_sq[i] + one_minus_beta2 * g * g
        exp_avg[i] = m
        exp_avg_sq[i] = v
        param[i] = p - step_size * (m / (np.float32(math.sqrt(v)) / bc2_sqrt + eps))


def adam_update(param, grad, exp_avg, exp_avg_sq, hyper, size, decoupled=False) -> None:
    """One Adam (``decoupled``: AdamW) step over ``size`` elements; see Backend.adam_update for the formula."""
    _adam_update(flat(param, size, "adam param"), flat(grad, size, "adam grad"),
                 flat(exp_avg, size, "adam exp_avg"), flat(exp_avg_sq, size, "adam exp_avg_sq"),
                 flat(hyper, 10, "adam hyper"), int(size), bool(decoupled))
