"""OpenCLBackend's direct-convolution ops: argument packing and NDRange shapes for cl/conv.cl. See
base.Backend.conv_forward / conv_backward for the semantics."""
from __future__ import annotations

import numpy as np


def _i(v) -> np.int32:
    return np.int32(v)


def _f(v) -> np.float32:
    return np.float32(v)


class OpenCLOpsConv:
    """Mixin of OpenCLOps (so of OpenCLBackend): relies on the backend's ``kernel``, ``_run``, ``_eltwise``,
    ``scratch``, ``reduce_wg``, ``compute_units`` and ``_geometry``."""

    def _conv_direct(self, n, c, h, w, m, k, stride, pad, pool):
        # Untuned rule (H200, 2026-12-02, docs/PERFORMANCE.md): on GPUs the direct kernels win while the reduction
        # C*k*k is small (LeNet-5's, CIFAR's first two, fashion's first layer) and the im2col + GEMM path above
        # (CIFAR conv3, fashion conv2: C*k*k = 576); CPU OpenCL (PoCL) keeps im2col + GEMM everywhere.
        return self.info.type == "gpu" and c * k * k <= 320

    # ---- conv_forward ---------------------------------------------------------------------------------------
    def conv_forward(self, x, weight, bias, y, argmax, n, c, h, w, m, k, stride, pad, relu=False, pool=1):
        ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
        hp, wp = (ho - pool) // pool + 1, (wo - pool) // pool + 1
        mb = 4 if m <= 4 else 8   # output channels per work-item: 2 register sizes, so few programs per pool
        defines = {**(self._geometry(c=c, h=h, w=w, m=m, k=k, stride=stride, pad=pad, ho=ho, wo=wo, hp=hp, wp=wp)
                      or {}), "POOL": pool, "MB": mb}
        total = n * -(-m // mb) * hp * wp
        self._eltwise("conv.cl", "conv_forward", total, x.buf, weight.buf, bias.buf, y.buf,
                      (argmax if argmax is not None else y).buf, _i(bool(relu)), _i(c), _i(h), _i(w), _i(m), _i(k),
                      _i(stride), _i(pad), _i(ho), _i(wo), _i(hp), _i(wp), _i(total), defines=defines)

    # ---- end of conv_forward --------------------------------------------------------------------------------

    # ---- conv_backward --------------------------------------------------------------------------------------
    def conv_backward(self, x, weight, dy, argmax, y, dweight, dbias, dx, n, c, h, w, m, k, stride, pad,
                      relu=False, pool=1, beta=0.0):
        raise NotImplementedError("conv_backward: being written")

    # ---- end of conv_backward -------------------------------------------------------------------------------
