"""Batch normalisation: BatchNorm2D over (N, C, H, W) and BatchNorm1D over (N, C) or (N, C, L), PyTorch's
nn.BatchNorm2d / nn.BatchNorm1d (affine, track_running_stats).

Training mode normalises with the batch's statistics (biased variance) and updates ``running_mean`` /
``running_var`` (unbiased variance) with ``momentum``; evaluation mode normalises with the running statistics
(Ioffe & Szegedy 2015, "Batch Normalization"; the update rule as documented for torch.nn.BatchNorm2d).
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError, ShapeError
from .base import Buffer, Layer, Parameter, check_positive


class _BatchNorm(Layer):
    dims: tuple = ()   # the input ranks accepted
    relu_mask = False   # set by fuse_chain when the fused ReLU's backward is done here (dy cut where y <= 0)
    folded_by_conv = False   # set by the Conv2D before (fold_bn) each forward: it applied this eval-mode
                             # normalisation (and the fused ReLU) through its folded weights; forward passes through

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        check_positive(type(self).__name__, num_features=num_features)
        if not (isinstance(eps, (int, float)) and eps > 0):
            raise ConfigError(f"{type(self).__name__}: eps must be a positive number (got {eps!r})")
        if not (isinstance(momentum, (int, float)) and 0 <= momentum <= 1):
            raise ConfigError(f"{type(self).__name__}: momentum must be in [0, 1] (got {momentum!r})")
        self.num_features, self.eps, self.momentum = int(num_features), float(eps), float(momentum)
        c = self.num_features
        self.params = {"weight": Parameter(np.ones(c)), "bias": Parameter(np.zeros(c))}
        self.buffers = {"running_mean": Buffer(np.zeros(c, np.float32)), "running_var": Buffer(np.ones(c, np.float32)),
                        "num_batches_tracked": Buffer(np.zeros((), np.int64))}

    def config(self) -> dict:
        return {"num_features": self.num_features, "eps": self.eps, "momentum": self.momentum}

    def init(self, rng):
        self.params["weight"].host[...] = 1.0
        self.params["bias"].host[...] = 0.0

    def output_shape(self, shape):
        if len(shape) not in self.dims or shape[1] != self.num_features:
            self._fail(self.expects, shape)
        return tuple(shape)

    def _geometry(self, shape):
        n, c = shape[0], shape[1]
        return n, c, int(np.prod(shape[2:], dtype=np.int64))

    def host_step(self) -> None:
        """The host's part of one training forward (also run for a replayed step): num_batches_tracked += 1."""
        self.buffers["num_batches_tracked"].host[...] += 1

    def forward(self, x, train=True):
        # x: (N, C, *) -> y: same shape; keeps x and the per-channel mean and invstd for backward.
        self.check(x.shape)
        if self.folded_by_conv:
            return x
        n, c, inner = self._geometry(x.shape)
        if self.training and n * inner < 2:
            raise ShapeError(f"layer {self.name or repr(self)} ({type(self).__name__}) needs more than one value "
                             f"per channel in training mode, got input {tuple(x.shape)}")
        b, be = self.buffers, self.backend
        y = self._buffer("y", x.shape)
        self.save_mean, self.save_invstd = self._buffer("save_mean", (c,)), self._buffer("save_invstd", (c,))
        be.batchnorm_forward(x, y, self.params["weight"].data, self.params["bias"].data, b["running_mean"].data,
                             b["running_var"].data, self.save_mean, self.save_invstd, n, c, inner, self.eps,
                             self.momentum, self.training, relu=self.fuse_relu)
        if self.training:
            self.host_step()
        self.x, self.y, self.used_batch_stats = x, y, self.training
        return y

    def backward(self, dy, need_dx=True):
        # dy: (N, C, *) -> dx: same; dweight, dbias: (C,) (grad_beta accumulation).
        n, c, inner = self._geometry(dy.shape)
        w, b = self.params["weight"], self.params["bias"]
        dx = self._buffer("dx", dy.shape) if need_dx else None
        self.backend.batchnorm_backward(self.x, dy, dx, w.data, self.save_mean, self.save_invstd, w.grad, b.grad,
                                        n, c, inner, self.used_batch_stats, beta=self.grad_beta,
                                        y=self.y if self.relu_mask else None)
        self.x = None
        return dx


class BatchNorm2D(_BatchNorm):
    """Batch normalisation of each channel of images (PyTorch's nn.BatchNorm2d, affine, track_running_stats).

    Args:
        num_features: C (positive); eps: added to the variance (default 1e-5); momentum: of the running
            statistics' update, r = (1 - momentum)*r + momentum*batch (default 0.1). ConfigError when out of range.
    Shape: x: (N, C, H, W) -> y: same. Parameters weight (C,) = 1, bias (C,) = 0; buffers running_mean (C,) = 0,
        running_var (C,) = 1, num_batches_tracked () int64 -- the state_dict names of nn.BatchNorm2d.
    Raises ShapeError in training mode when N*H*W < 2 (no variance).
    """
    dims = (4,)
    expects = property(lambda self: f"(N, {self.num_features}, H, W)")


class BatchNorm1D(_BatchNorm):
    """Batch normalisation of features (PyTorch's nn.BatchNorm1d): as BatchNorm2D over (N, C) or (N, C, L).

    Args and state: as BatchNorm2D. Shape: x: (N, C) or (N, C, L) -> y: same.
    """
    dims = (2, 3)
    expects = property(lambda self: f"(N, {self.num_features}) or (N, {self.num_features}, L)")
