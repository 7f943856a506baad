"""OpenCLBackend's ops for the issue-13 layers (batch-norm, dropout, average pooling, tanh, add): argument packing
and NDRange shapes for cl/batchnorm.cl, cl/dropout.cl, cl/avgpool.cl and cl/activation.cl. See base.Backend's
docstrings for the semantics."""
from __future__ import annotations

import numpy as np


def _i(v) -> np.int32:
    return np.int32(v)


def _u(v) -> np.uint32:
    return np.uint32(int(v) & 0xFFFFFFFF)


def _f(v) -> np.float32:
    return np.float32(v)


class OpenCLOpsNorm:
    """Mixin of OpenCLOps (so of OpenCLBackend): relies on the backend's ``kernel``, ``_run``, ``_eltwise``,
    ``scratch``, ``reduce_wg`` and ``compute_units``."""

    # ---- batch normalisation ----------------------------------------------------------------------------
    # Per-channel reductions: one work-group per channel, or, where that leaves the device idle (few channels
    # over a big batch, as on GPUs), S work-groups per channel whose partials a second launch combines in order.
    batchnorm_splits: int | None = None   # S forced (tests); None: ~4 work-groups per compute unit in all

    def _bn_splits(self, count: int, c: int) -> tuple[int, int]:
        """(S, chunk): S work-groups per channel, each over ``chunk`` of the channel's ``count`` values."""
        wg = self.reduce_wg
        S = self.batchnorm_splits or max(1, min(-(-count // (4 * wg)), -(-4 * self.compute_units // c), 1024))
        chunk = -(-count // S)
        return max(1, -(-count // chunk)), chunk

    def _rows(self, name, rows, inner, *args):
        """Launch the elementwise batch-norm kernel ``name`` over (rows, inner) with ``args``: work-groups of
        64 work-items (fewer where the device allows fewer), along a row up to all of them (the power of two >=
        inner when a row is shorter) times as many rows as fill the rest."""
        if rows * inner > 0:
            size = min(64, self.eltwise_wg)
            lw = min(size, 1 << max(0, inner - 1).bit_length())
            lr = max(1, size // lw)
            self._run(self.kernel("batchnorm.cl", name, {"WG": self.reduce_wg}),
                      (-(-inner // lw) * lw, -(-rows // lr) * lr), (lw, lr), *args)

    def batchnorm_forward(self, x, y, weight, bias, running_mean, running_var, save_mean, save_invstd, n, c, inner,
                          eps, momentum, training, relu=False):
        wg = self.reduce_wg
        if c <= 0:
            return
        S, chunk = self._bn_splits(n * inner, c) if training else (1, 0)
        if S == 1:
            self._run(self.kernel("batchnorm.cl", "batchnorm_stats", {"WG": wg}), (c * wg,), (wg,), x.buf,
                      running_mean.buf, running_var.buf, save_mean.buf, save_invstd.buf, _i(n), _i(c), _i(inner),
                      _f(eps), _f(momentum), _i(bool(training)))
        else:
            part = self.scratch("batchnorm_part", 3 * c * S)
            self._run(self.kernel("batchnorm.cl", "batchnorm_stats_partial", {"WG": wg}), (S * wg, c), (wg, 1),
                      x.buf, part.buf, _i(n), _i(c), _i(inner), _i(chunk))
            self._eltwise("batchnorm.cl", "batchnorm_stats_final", c, part.buf, running_mean.buf, running_var.buf,
                          save_mean.buf, save_invstd.buf, _i(c), _i(S), _f(eps), _f(momentum), defines={"WG": wg})
        self._rows("batchnorm_apply", n * c, inner, x.buf, y.buf, weight.buf, bias.buf, save_mean.buf,
                   save_invstd.buf, _i(c), _i(inner), _i(n * c), _i(bool(relu)))

    def batchnorm_backward(self, x, dy, dx, weight, save_mean, save_invstd, dweight, dbias, n, c, inner, training,
                           beta=0.0, y=None):
        wg = self.reduce_wg
        if c <= 0:
            return
        sums = self.scratch("batchnorm_sums", 2 * c)
        yb, masked = (dy.buf, _i(0)) if y is None else (y.buf, _i(1))
        S, chunk = self._bn_splits(n * inner, c)
        if S == 1:
            self._run(self.kernel("batchnorm.cl", "batchnorm_backward_reduce", {"WG": wg}), (c * wg,), (wg,),
                      x.buf, dy.buf, yb, save_mean.buf, save_invstd.buf, sums.buf, dweight.buf, dbias.buf, _i(n),
                      _i(c), _i(inner), _f(beta), masked)
        else:
            part = self.scratch("batchnorm_part", 2 * c * S)
            self._run(self.kernel("batchnorm.cl", "batchnorm_backward_partial", {"WG": wg}), (S * wg, c), (wg, 1),
                      x.buf, dy.buf, yb, save_mean.buf, save_invstd.buf, part.buf, _i(n), _i(c), _i(inner),
                      _i(chunk), masked)
            self._eltwise("batchnorm.cl", "batchnorm_backward_final", c, part.buf, sums.buf, dweight.buf,
                          dbias.buf, _i(c), _i(S), _f(beta), defines={"WG": wg})
        if dx is not None:
            self._rows("batchnorm_backward_data", n * c, inner, x.buf, dy.buf, yb, dx.buf, weight.buf,
                       save_mean.buf, save_invstd.buf, sums.buf, _i(c), _i(inner), _i(n * c), _i(n * inner),
                       _i(bool(training)), masked)

    def batchnorm_fold(self, weight, bias, bn_weight, bn_bias, running_mean, running_var, folded_weight,
                       folded_bias, m, inner, eps):
        if m * inner > 0:
            self._eltwise("batchnorm.cl", "batchnorm_fold", m * inner, weight.buf, bias.buf, bn_weight.buf,
                          bn_bias.buf, running_mean.buf, running_var.buf, folded_weight.buf, folded_bias.buf,
                          _i(inner), _i(m * inner), _f(eps), defines={"WG": self.reduce_wg})

    # ---- dropout ----------------------------------------------------------------------------------------
    def dropout_forward(self, x, y, mask, counter, key, stream, threshold, scale, size):
        self._eltwise("dropout.cl", "dropout_forward", -(-size // 4), x.buf, y.buf, mask.buf, counter.buf,
                      _u(key[0]), _u(key[1]), _u(stream), _u(threshold), _f(scale), _i(size))

    def dropout_backward(self, dy, mask, dx, size):
        self._eltwise("dropout.cl", "dropout_backward", size, dy.buf, mask.buf, dx.buf, _i(size))

    def counter_advance(self, counter):
        self._eltwise("dropout.cl", "counter_advance", 1, counter.buf)

    # ---- average pooling --------------------------------------------------------------------------------
    def avgpool_forward(self, x, y, n, c, h, w, kh, kw, stride):
        ho, wo = (h - kh) // stride + 1, (w - kw) // stride + 1
        total = n * c * ho * wo
        self._eltwise("avgpool.cl", "avgpool_forward", total, x.buf, y.buf, _i(h), _i(w), _i(kh), _i(kw),
                      _i(stride), _i(ho), _i(wo), _i(total))

    def avgpool_backward(self, dy, dx, n, c, h, w, kh, kw, stride):
        ho, wo = (h - kh) // stride + 1, (w - kw) // stride + 1
        total = n * c * h * w
        self._eltwise("avgpool.cl", "avgpool_backward", total, dy.buf, dx.buf, _i(h), _i(w), _i(kh), _i(kw),
                      _i(stride), _i(ho), _i(wo), _i(total))

    # ---- elementwise ------------------------------------------------------------------------------------
    def tanh_forward(self, x, y, size):
        self._eltwise("activation.cl", "tanh_forward", size, x.buf, y.buf, _i(size))

    def tanh_backward(self, y, dy, dx, size):
        self._eltwise("activation.cl", "tanh_backward", size, y.buf, dy.buf, dx.buf, _i(size))

    def add(self, a, b, y, size):
        self._eltwise("activation.cl", "add", size, a.buf, b.buf, y.buf, _i(size))
