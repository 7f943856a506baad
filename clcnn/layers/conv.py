"""Convolution (im2col + GEMM with the unrolled buffer bounded and reused, or the backend's direct and implicit-GEMM
ops) and max-pooling."""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .base import Layer, Parameter, check_positive, check_weight, he_normal


def _conv_out(size: int, k: int, stride: int, pad: int) -> int:
    """Output length of a convolution or pooling window along one axis: (size + 2*pad - k)//stride + 1."""
    return (size + 2 * pad - k) // stride + 1


class Conv2D(Layer):
    """2-D convolution. The backend's conv_algorithm picks, per geometry, im2col + GEMM (the mini-batch in chunks
    so the unrolled buffer stays bounded), the direct convolution (a max-pool after it fused), the hybrid (the
    direct forward; the implicit weight gradient and im2col's input gradient), or the implicit GEMM (im2col's
    products with no unrolled buffer).

    Args:
        in_channels, out_channels: C and M.
        kernel_size, stride, padding: square kernel k, stride s, zero padding p (ConfigError when k, s < 1 or
            p < 0).
        workspace_bytes: cap of the shared unrolled workspace (default: the backend's ``workspace_bytes``,
            64 MiB on CPUs, more on GPUs with the memory for it); a chunk holds at least one image.
    Shape:
        x: (N, C, H, W) -> y: (N, M, Ho, Wo), Ho = (H + 2p - k)//s + 1. weight: (M, C, k, k), bias: (M,), as
        PyTorch's nn.Conv2d.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, workspace_bytes=None):
        check_positive("Conv2D", in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size,
                       stride=stride)
        if int(padding) != padding or padding < 0:
            raise ConfigError(f"Conv2D: padding must be a non-negative integer (got {padding!r})")
        self.in_channels, self.out_channels, self.kernel_size = int(in_channels), int(out_channels), int(kernel_size)
        self.stride, self.padding = int(stride), int(padding)
        self.workspace_bytes = int(workspace_bytes) if workspace_bytes else None
        m, c, k = self.out_channels, self.in_channels, self.kernel_size
        check_weight("Conv2D", (m, c, k, k))
        self.params = {"weight": Parameter(np.zeros((m, c, k, k))), "bias": Parameter(np.zeros(m))}

    def config(self) -> dict:
        cfg = {"in_channels": self.in_channels, "out_channels": self.out_channels, "kernel_size": self.kernel_size,
               "stride": self.stride, "padding": self.padding}
        if self.workspace_bytes:
            cfg["workspace_bytes"] = self.workspace_bytes
        return cfg

    def init(self, rng):
        fan_in = self.in_channels * self.kernel_size ** 2
        self.params["weight"].host[...] = he_normal(rng, self.params["weight"].shape, fan_in)
        self.params["bias"].host[...] = 0.0

    def output_shape(self, shape):
        k, s, p = self.kernel_size, self.stride, self.padding
        if len(shape) != 4 or shape[1] != self.in_channels:
            self._fail(f"(N, {self.in_channels}, H, W)", shape)
        ho, wo = _conv_out(shape[2], k, s, p), _conv_out(shape[3], k, s, p)
        if ho < 1 or wo < 1:
            self._fail(f"(N, {self.in_channels}, H, W) with H, W + 2*{p} >= {k}", shape)
        return (shape[0], self.out_channels, ho, wo)

    def _chunk(self, n, ckk, l, workspaces=2):
        """Images per chunk: the unrolled (ckk, nb*l) workspaces (im2col's backward: cols and dcols, its forward
        the first; hybrid's backward: dcols alone) together stay within the cap, unless a single image needs
        more."""
        cap = self.workspace_bytes or self.backend.workspace_bytes
        return max(1, min(n, cap // (4 * workspaces * ckk * l)))

    fuse_pool = None   # set by fuse_chain: the MaxPool2D (stride = window) after this layer (and its ReLU)
    fold_bn = None     # set by fuse_chain: the BatchNorm2D after this layer, folded into it in eval forwards
    fold_pool = None   # set by fuse_chain: the MaxPool2D (stride = window) after that batch-norm (and its ReLU)
    algorithm = None   # the backend's conv_algorithm for the last input: one of CONV_ALGORITHMS

    def _direct(self, x, pool_layer):
        """(direct?, pool window or 1) for input x and the MaxPool2D the forward may fuse (or None): the
        backend's choice for this geometry (asked each time the layer's code runs: a recorded step replays its
        kernels without it)."""
        pool = pool_layer.kernel_size if pool_layer is not None else 1
        ho, wo = self.check(x.shape)[2:]   # ShapeError before unpacking: a 3-D input is named, not a ValueError
        n, c, h, w = x.shape
        if pool > min(ho, wo):
            pool = 1
        self.algorithm = self.backend.conv_algorithm(n, c, h, w, self.out_channels, self.kernel_size, self.stride,
                                                     self.padding, pool)
        self._algo_pool = pool
        return self.algorithm in ("direct", "hybrid"), pool

    def forward(self, x, train=True):
        # An eval forward (no backward follows) with a BatchNorm2D after it in eval mode folds the normalisation
        # into the weights and bias (batchnorm_fold), its ReLU into the write-out, and may fuse the pool after.
        bn = self.fold_bn
        folded = bn is not None and not train and not bn.training
        if bn is not None:
            bn.folded_by_conv = folded
        pool_layer = self.fold_pool if folded else self.fuse_pool
        direct, pool = self._direct(x, pool_layer)   # hybrid: the direct forward
        for layer in {self.fuse_pool, self.fold_pool} - {None}:
            layer.pooled_by_conv = layer is pool_layer and direct and pool > 1
        operands = self._folded(bn) if folded else (self.params["weight"].data, self.params["bias"].data,
                                                    self.fuse_relu)
        if direct:
            return self._forward_direct(x, pool, *operands)
        if self.algorithm == "implicit":
            return self._forward_implicit(x, *operands)
        return self._forward_im2col(x, train, *operands)

    def _folded(self, bn):
        """(weight, bias, relu) with batch-norm ``bn``'s eval normalisation folded in, computed on the device
        from the current parameters and running statistics (batchnorm_fold), and ``bn``'s fused ReLU."""
        w, b, m = self.params["weight"], self.params["bias"], self.out_channels
        fw, fb = self._buffer("folded_weight", w.shape), self._buffer("folded_bias", (m,))
        self.backend.batchnorm_fold(w.data, b.data, bn.params["weight"].data, bn.params["bias"].data,
                                    bn.buffers["running_mean"].data, bn.buffers["running_var"].data, fw, fb, m,
                                    self.in_channels * self.kernel_size ** 2, bn.eps)
        return fw, fb, bn.fuse_relu

    def _forward_direct(self, x, pool, weight, bias, relu):
        # x: (N, C, H, W) -> y: (N, M, Ho, Wo), or (N, M, Hp, Wp) pooled when pool > 1 (argmax kept), bias and the
        # ReLU (relu) in the same pass (conv_forward).
        be, k = self.backend, self.kernel_size
        _, m, ho, wo = self.check(x.shape)
        n, c, h, wd = x.shape
        hp, wp = (ho - pool) // pool + 1, (wo - pool) // pool + 1
        y = self._buffer("y", (n, m, hp, wp))
        self.argmax = self._buffer("argmax", (n, m, hp, wp), np.int32) if pool > 1 else None
        be.conv_forward(x, weight, bias, y, self.argmax, n, c, h, wd, m, k, self.stride, self.padding,
                        relu=relu, pool=pool)
        self.x, self.y, self.kept_cols = x, y, None
        return y

    def _forward_implicit(self, x, weight, bias, relu):
        # x: (N, C, H, W) -> y: (N, M, Ho, Wo) in one implicit-GEMM launch, bias and ReLU in its write-out; no
        # unrolled buffer (a MaxPool2D after it runs on its own)
        be = self.backend
        _, m, ho, wo = self.check(x.shape)
        y = self._buffer("y", (x.shape[0], m, ho, wo))
        be.implicit_conv_forward(x, weight, bias, y, *x.shape, m, self.kernel_size, self.stride, self.padding,
                                 relu=relu)
        self.x, self.kept_cols = x, None
        return y

    def _forward_im2col(self, x, train, weight, bias, relu):
        # x: (N, C, H, W) -> y: (N, M, Ho, Wo); per chunk: cols (CKK, nb*L) = im2col(x),
        # y[n] = W @ cols[:, n] + b (then max(., 0) when relu), bias and ReLU in the GEMM's write-out.
        be, k = self.backend, self.kernel_size
        _, m, ho, wo = self.check(x.shape)   # ShapeError before unpacking: a 3-D input is named, not a ValueError
        n, c, h, wd = x.shape
        ckk, l = c * k * k, ho * wo
        y = self._buffer("y", (n, m, ho, wo))
        nb = self._chunk(n, ckk, l)
        # One chunk in training: the layer keeps its unrolled input (<= half the cap) and backward reuses it.
        keep = train and nb >= n
        cols = self._buffer("cols", (ckk * n * l,)) if keep else be.scratch("cols", ckk * nb * l)
        self.kept_cols = cols if keep else None
        for n0 in range(0, n, nb):
            cnt = min(nb, n - n0)
            be.im2col(x, cols, n0, cnt, c, h, wd, k, k, self.stride, self.padding)
            be.gemm(weight, cols, y, m, l, ckk, ldb=cnt * l, c_off=n0 * m * l,
                    batch=cnt, stride_a=0, stride_b=l, stride_c=m * l, bias=bias, bias_axis=0, relu=relu)
        self.x = x
        return y

    def backward(self, dy, need_dx=True):
        if self.algorithm == "direct":
            return self._backward_direct(dy, need_dx)
        if self.algorithm == "implicit":
            return self._backward_implicit(dy, need_dx)
        if self.algorithm == "hybrid":
            if self._algo_pool > 1:   # the pool's (and its ReLU's) backward first
                _, m, ho, wo = self.check(self.x.shape)
                n = self.x.shape[0]
                dconv = self._buffer("dconv", (n, m, ho, wo))
                self.backend.maxpool_backward(dy, self.argmax, dconv, n, m, ho, wo, self._algo_pool,
                                              self._algo_pool, y=self.y if self.fuse_pool.relu_mask else None)
                dy = dconv
            return self._backward_implicit(dy, need_dx, unrolled_dx=True)
        return self._backward_im2col(dy, need_dx)

    def _backward_direct(self, dy, need_dx):
        # dy: forward's output shape (pooled when pool > 1) -> dx: (N, C, H, W); the pool's backward (and the
        # ReLU's, which the pool took over: relu_mask) in conv_backward's read of dy, the bias gradient with dW's.
        be, w, b, x, k = self.backend, self.params["weight"], self.params["bias"], self.x, self.kernel_size
        n, c, h, wd = x.shape
        pool = self._algo_pool
        relu = pool > 1 and self.fuse_pool.relu_mask
        dx = self._buffer("dx", x.shape) if need_dx else None
        be.conv_backward(x, w.data, dy, self.argmax, self.y, w.grad, b.grad, dx, n, c, h, wd, self.out_channels, k,
                         self.stride, self.padding, relu=relu, pool=pool, beta=self.grad_beta)
        self.x = self.y = self.argmax = None
        return dx

    def _backward_implicit(self, dy, need_dx, unrolled_dx=False):
        # dy: (N, M, Ho, Wo) -> dx: (N, C, H, W); the bias gradient, then dW in one implicit-GEMM launch (no
        # unrolled input), dx in one more, or (unrolled_dx: hybrid's) per chunk as the im2col path's
        # conv_backward_data with dcols alone in the workspace: faster where C is small (H200: the CIFAR CNN's
        # conv2 at batch 1024, 539 us against 594-1065, LeNet-5's conv2 131 against 332-397; docs/PERFORMANCE.md)
        be, w, b, x, k = self.backend, self.params["weight"], self.params["bias"], self.x, self.kernel_size
        n, c, h, wd = x.shape
        _, m, ho, wo = dy.shape
        geometry = (n, c, h, wd, m, k, self.stride, self.padding)
        be.bias_grad(dy, b.grad, n, m, ho * wo, beta=self.grad_beta)
        be.implicit_conv_backward_weight(x, dy, w.grad, *geometry, beta=self.grad_beta)
        dx = self._buffer("dx", x.shape) if need_dx else None
        if need_dx and not unrolled_dx:
            be.implicit_conv_backward_data(w.data, dy, dx, *geometry)
        elif need_dx:
            ckk, l = c * k * k, ho * wo
            nb = self._chunk(n, ckk, l, workspaces=1)
            nb = -(-n // -(-n // nb))   # chunks of equal size
            dcols = be.scratch("dcols", ckk * nb * l)
            for n0 in range(0, n, nb):
                be.conv_backward_data(w.data, dy, dx, dcols, n0, min(nb, n - n0), m, c, h, wd, k, k, self.stride,
                                      self.padding)
        self.x = None
        return dx

    def _backward_im2col(self, dy, need_dx):
        # dy: (N, M, Ho, Wo) -> dx: (N, C, H, W); dW = grad_beta*dW + sum_n dy[n] @ cols[:, n].T (cols kept from
        # forward, or unrolled again per chunk); dx[n] = col2im(W.T @ dy[n]) (conv_backward_data, dcols its scratch).
        be, w, b, x, k = self.backend, self.params["weight"], self.params["bias"], self.x, self.kernel_size
        n, c, h, wd = x.shape
        _, m, ho, wo = dy.shape
        ckk, l = c * k * k, ho * wo
        be.bias_grad(dy, b.grad, n, m, l, beta=self.grad_beta)
        dx = self._buffer("dx", x.shape) if need_dx else None
        nb = self._chunk(n, ckk, l)
        cols = self.kept_cols if self.kept_cols is not None else be.scratch("cols", ckk * nb * l)
        dcols = be.scratch("dcols", ckk * nb * l) if need_dx else None
        for n0 in range(0, n, nb):
            cnt = min(nb, n - n0)
            if self.kept_cols is None:
                be.im2col(x, cols, n0, cnt, c, h, wd, k, k, self.stride, self.padding)
            be.gemm(dy, cols, w.grad, m, ckk, l, trans_b=True, beta=self.grad_beta if n0 == 0 else 1.0,
                    a_off=n0 * m * l, ldb=cnt * l, batch=cnt, stride_a=m * l, stride_b=l, reduce=True)
            if need_dx:
                be.conv_backward_data(w.data, dy, dx, dcols, n0, cnt, m, c, h, wd, k, k, self.stride,
                                      self.padding)
        self.x = self.kept_cols = None
        return dx


class MaxPool2D(Layer):
    """Max pooling without padding; the gradient goes to the arg-max kept from forward (PyTorch's nn.MaxPool2d).

    Args:
        kernel_size: window k (>= 1); stride: s (>= 1, default k).
    Shape: x: (N, C, H, W) -> y: (N, C, Ho, Wo), Ho = (H - k)//s + 1.
    """

    relu_mask = False   # set by Sequential when a ReLU precedes: backward also applies the ReLU's backward
    pooled_by_conv = False   # set by the Conv2D before (fuse_pool) each forward: it pooled, forward and backward
                             # pass through (the arg-max and the ReLU's mask live in the convolution's ops)

    def __init__(self, kernel_size, stride=None):
        check_positive("MaxPool2D", kernel_size=kernel_size, stride=kernel_size if stride is None else stride)
        self.kernel_size = int(kernel_size)
        self.stride = int(stride) if stride is not None else self.kernel_size
        self.params = {}

    def config(self) -> dict:
        return {"kernel_size": self.kernel_size, "stride": self.stride}

    def output_shape(self, shape):
        k = self.kernel_size
        if len(shape) != 4 or shape[2] < k or shape[3] < k:
            self._fail(f"(N, C, H, W) with H, W >= {k}", shape)
        return (shape[0], shape[1], _conv_out(shape[2], k, self.stride, 0), _conv_out(shape[3], k, self.stride, 0))

    def forward(self, x, train=True):
        # x: (N, C, H, W) -> y: (N, C, Ho, Wo); keeps the int32 arg-max (N, C, Ho, Wo) for backward.
        if self.pooled_by_conv:
            return x
        oshape = self.check(x.shape)   # ShapeError before unpacking
        n, c, h, w = x.shape
        y, self.argmax = self._buffer("y", oshape), self._buffer("argmax", oshape, np.int32)
        self.backend.maxpool_forward(x, y, self.argmax, n, c, h, w, self.kernel_size, self.stride)
        self.xshape, self.y = x.shape, y
        return y

    def backward(self, dy, need_dx=True):
        # dy: (N, C, Ho, Wo) -> dx: (N, C, H, W), each dy routed to its window's arg-max (only where the pooled
        # value is > 0 when relu_mask: the preceding ReLU's backward, exact since its output at the arg-max is y).
        if not need_dx:
            return None
        if self.pooled_by_conv:
            return dy
        n, c, h, w = self.xshape
        dx = self._buffer("dx", self.xshape)
        self.backend.maxpool_backward(dy, self.argmax, dx, n, c, h, w, self.kernel_size, self.stride,
                                      y=self.y if self.relu_mask else None)
        return dx
