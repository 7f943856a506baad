"""OpenCLBackend's compute ops: argument packing and NDRange shapes for the kernels in cl/*.cl."""
from __future__ import annotations

import numpy as np

from .opencl_ops_conv import OpenCLOpsConv
from .opencl_ops_norm import OpenCLOpsNorm


def _i(v) -> np.int32:
    return np.int32(v)


def _f(v) -> np.float32:
    return np.float32(v)


def _roundup(x: int, m: int) -> int:
    return (x + m - 1) // m * m


class OpenCLOps(OpenCLOpsNorm, OpenCLOpsConv):
    """Mixin for OpenCLBackend: every compute op of base.Backend but gemm (opencl_gemm.py); see base.Backend's
    docstrings for the semantics. Relies on the backend's ``kernel``, ``_run``, ``_eltwise``, ``reduce_wg``,
    ``compute_units`` and ``info``."""

    # Whether cl/im2col.cl and cl/maxpool.cl get the layer's sizes as build constants (one program per layer
    # geometry) or as arguments only (one program for every geometry). None: constants on GPUs and CPUs, where
    # they make the kernels 1.2-3x faster (H200, LeNet-5 and CIFAR layers at batch 256 and 1024: im2col 2.1-2.6x,
    # col2im 2.6-3.0x, maxpool 1.1-2.1x; PoCL on 2 cores, whole training step at batch 64: LeNet-5 1.52x, CIFAR
    # 1.39x); arguments on simulators (Oclgrind), where each build costs seconds and speed does not matter.
    geometry_constants: bool | None = None

    def _geometry(self, **sizes) -> dict | None:
        """The ``-D`` defines for a geometry kernel (upper-cased ``sizes``), or None: see ``geometry_constants``."""
        on = self.geometry_constants
        if on is None:
            on = self.info.type in ("gpu", "cpu")
        return {k.upper(): v for k, v in sizes.items()} if on else None

    # ---- convolution unrolling ---------------------------------------------------------------------------
    def _unroll_args(self, src, dst, n0, nb, c, h, w, kh, kw, stride, pad, total):
        ho, wo = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
        geometry = self._geometry(c=c, h=h, w=w, kh=kh, kw=kw, stride=stride, pad=pad, ho=ho, wo=wo)
        args = (src.buf, dst.buf, _i(n0), _i(nb), _i(c), _i(h), _i(w), _i(kh), _i(kw), _i(stride), _i(pad),
                _i(ho), _i(wo), _i(total(ho * wo)))
        return geometry, ho * wo, args

    def im2col(self, x, cols, n0, nb, c, h, w, kh, kw, stride, pad):
        # 2-D range (columns, rows): no division by the runtime column count
        geometry, l, args = self._unroll_args(x, cols, n0, nb, c, h, w, kh, kw, stride, pad,
                                              lambda L: c * kh * kw * nb * L)
        if nb * l > 0:
            wg = self.eltwise_wg
            self._run(self.kernel("im2col.cl", "im2col", geometry), (_roundup(nb * l, wg), c * kh * kw), (wg, 1),
                      *args)

    def col2im(self, cols, x, n0, nb, c, h, w, kh, kw, stride, pad):
        geometry, _, args = self._unroll_args(cols, x, n0, nb, c, h, w, kh, kw, stride, pad,
                                              lambda L: nb * c * h * w)
        self._eltwise("im2col.cl", "col2im", nb * c * h * w, *args, defines=geometry)

    def conv_backward_data(self, weight, dy, dx, dcols, n0, nb, m, c, h, w, kh, kw, stride, pad):
        # No kernel of its own: it composes two launches, the batched gemm dcols (C*kh*kw, nb*L) = W^T @ dy[n]
        # (image n in columns n*L ..) and col2im (dcols -> dx). (On the CPU backend it is one fused pass per image.)
        ckk, l = c * kh * kw, ((h + 2 * pad - kh) // stride + 1) * ((w + 2 * pad - kw) // stride + 1)
        self.gemm(weight, dy, dcols, ckk, l, m, trans_a=True, b_off=n0 * m * l, ldc=nb * l, batch=nb, stride_a=0,
                  stride_b=m * l, stride_c=l)
        self.col2im(dcols, dx, n0, nb, c, h, w, kh, kw, stride, pad)

    # ---- pooling ------------------------------------------------------------------------------------------
    def _pool_geometry(self, h, w, k, stride):
        ho, wo = (h - k) // stride + 1, (w - k) // stride + 1
        return ho, wo, self._geometry(h=h, w=w, k=k, stride=stride, ho=ho, wo=wo)

    def maxpool_forward(self, x, y, argmax, n, c, h, w, k, stride):
        ho, wo, geometry = self._pool_geometry(h, w, k, stride)
        total = n * c * ho * wo
        self._eltwise("maxpool.cl", "maxpool_forward", total, x.buf, y.buf, argmax.buf, _i(h), _i(w), _i(k),
                      _i(stride), _i(ho), _i(wo), _i(total), defines=geometry)

    def maxpool_backward(self, dy, argmax, dx, n, c, h, w, k, stride, y=None):
        ho, wo, geometry = self._pool_geometry(h, w, k, stride)
        tiled = stride == k and h % k == 0 and w % k == 0   # windows cover the input exactly: scatter per window
        total = n * c * (ho * wo if tiled else h * w)
        self._eltwise("maxpool.cl", "maxpool_backward_tiled" if tiled else "maxpool_backward", total, dy.buf,
                      argmax.buf, dx.buf, (y if y is not None else dy).buf, _i(y is not None), _i(h), _i(w), _i(k),
                      _i(stride), _i(ho), _i(wo), _i(total), defines=geometry)

    # ---- bias ---------------------------------------------------------------------------------------------
    def bias_add(self, y, bias, n, c, inner):
        wg = {"WG": self.reduce_wg}
        self._eltwise("bias.cl", "bias_add", n * c * inner, y.buf, bias.buf, _i(c), _i(inner), _i(n * c * inner),
                      defines=wg)

    def bias_grad(self, dy, db, n, c, inner, beta=0.0):
        # Two passes so a few channels over a big batch still fill the device: (C, S) partial sums of ~4
        # work-groups per compute unit in all, then one ordered sum per channel.
        wg, count = self.reduce_wg, n * inner
        if c <= 0:
            return
        S = max(1, min(-(-count // (4 * wg)), -(-4 * self.compute_units // c), 1024))
        chunk = -(-count // S)
        S = max(1, -(-count // chunk))
        part = db if S == 1 else self.scratch("bias_grad", c * S)
        self._run(self.kernel("bias.cl", "bias_grad_partial", {"WG": wg}), (S * wg, c), (wg, 1),
                  dy.buf, part.buf, _i(n), _i(c), _i(inner), _i(chunk), _i(S == 1), _f(beta))
        if S > 1:
            self._eltwise("bias.cl", "bias_grad", c, part.buf, db.buf, _i(c), _i(S), _f(beta), defines={"WG": wg})

    # ---- activations --------------------------------------------------------------------------------------
    def relu_forward(self, x, y, size):
        self._eltwise("activation.cl", "relu_forward", size, x.buf, y.buf, _i(size))

    def relu_backward(self, y, dy, dx, size):
        self._eltwise("activation.cl", "relu_backward", size, y.buf, dy.buf, dx.buf, _i(size))

    def sigmoid_forward(self, x, y, size):
        self._eltwise("activation.cl", "sigmoid_forward", size, x.buf, y.buf, _i(size))

    def sigmoid_backward(self, y, dy, dx, size):
        self._eltwise("activation.cl", "sigmoid_backward", size, y.buf, dy.buf, dx.buf, _i(size))

    # ---- losses -------------------------------------------------------------------------------------------
    def _loss_forward(self, name, *args):
        wg = self.reduce_wg
        self._run(self.kernel("loss.cl", name, {"WG": wg}), (wg,), (wg,), *args)

    def softmax_xent_forward(self, logits, labels, probs, loss, n, c, accumulate=False, label_smoothing=0.0,
                             dlogits=None):
        self._loss_forward("softmax_xent_forward", logits.buf, labels.buf, probs.buf, loss.buf,
                           (probs if dlogits is None else dlogits).buf, _i(dlogits is not None), _i(n), _i(c),
                           _i(bool(accumulate)), _f(label_smoothing))

    def sigmoid_bce_forward(self, logits, labels, probs, loss, n, accumulate=False, dlogits=None):
        self._loss_forward("sigmoid_bce_forward", logits.buf, labels.buf, probs.buf, loss.buf,
                           (probs if dlogits is None else dlogits).buf, _i(dlogits is not None), _i(n),
                           _i(bool(accumulate)))

    # ---- optimizer ----------------------------------------------------------------------------------------
    def sgd_update(self, param, grad, velocity, hyper, size, nesterov=False):
        vel = param.buf if velocity is None else velocity.buf   # unused while momentum == 0
        self._eltwise("sgd.cl", "sgd_update", size, param.buf, grad.buf, vel, hyper.buf, _i(size),
                      _i(bool(nesterov)))

    def adam_update(self, param, grad, exp_avg, exp_avg_sq, hyper, size, decoupled=False):
        self._eltwise("adam.cl", "adam_update", size, param.buf, grad.buf, exp_avg.buf, exp_avg_sq.buf, hyper.buf,
                      _i(size), _i(bool(decoupled)))
