"""Dense (fully connected) and Flatten layers."""
from __future__ import annotations

import numpy as np

from .base import Layer, Parameter, check_positive, check_weight, he_normal


class Dense(Layer):
    """Fully connected layer, y = x @ W.T + b, one GEMM over the mini-batch (PyTorch's nn.Linear).

    Args:
        in_features, out_features: sizes of the input and output vectors (positive; ConfigError otherwise).
    Shape:
        x: (N, in_features) -> y: (N, out_features). weight: (out, in), bias: (out,).
    """

    relu_mask = False   # set by fuse_chain when a ReLU precedes: backward applies the ReLU's backward to dx

    def __init__(self, in_features: int, out_features: int):
        check_positive("Dense", in_features=in_features, out_features=out_features)
        self.in_features, self.out_features = int(in_features), int(out_features)
        check_weight("Dense", (self.out_features, self.in_features))
        self.params = {"weight": Parameter(np.zeros((self.out_features, self.in_features))),
                       "bias": Parameter(np.zeros(self.out_features))}

    def config(self) -> dict:
        return {"in_features": self.in_features, "out_features": self.out_features}

    def init(self, rng):
        self.params["weight"].host[...] = he_normal(rng, self.params["weight"].shape, self.in_features)
        self.params["bias"].host[...] = 0.0

    def output_shape(self, shape):
        if len(shape) != 2 or shape[1] != self.in_features:
            self._fail(f"(N, {self.in_features})", shape)
        return (shape[0], self.out_features)

    def forward(self, x, train=True):
        # x: (N, in) -> y: (N, out) (max(y, 0) when fuse_relu); keeps x for the weight gradient.
        self.check(x.shape)
        be, w, b = self.backend, self.params["weight"], self.params["bias"]
        n = x.shape[0]
        y = self._buffer("y", (n, self.out_features))
        be.gemm(x, w.data, y, n, self.out_features, self.in_features, trans_b=True, bias=b.data, bias_axis=1,
                relu=self.fuse_relu)
        self.x = x
        return y

    def backward(self, dy, need_dx=True):
        # dy: (N, out) -> dx: (N, in); dW = grad_beta*dW + dy.T @ x, db likewise with sum_n dy; with relu_mask
        # (a ReLU before: x is its output) dx is cut where x <= 0 in the product's write-out.
        be, w, b = self.backend, self.params["weight"], self.params["bias"]
        n = dy.shape[0]
        dx = self._buffer("dx", (n, self.in_features)) if need_dx else None
        be.dense_backward(dy, self.x, w.data, w.grad, b.grad, dx, n, self.in_features, self.out_features,
                          beta=self.grad_beta, relu_mask=self.relu_mask)
        self.x = None
        return dx


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W), a view (PyTorch's nn.Flatten with start_dim 1)."""

    def __init__(self):
        self.params = {}

    def output_shape(self, shape):
        if len(shape) < 2:
            self._fail("(N, ...) with at least 2 dimensions", shape)
        return (shape[0], int(np.prod(shape[1:])))

    def forward(self, x, train=True):
        # x: (N, C, H, W) -> (N, C*H*W), a view of the same storage.
        self.xshape = x.shape
        return x.reshape(self.check(x.shape))

    def backward(self, dy, need_dx=True):
        return dy.reshape(self.xshape) if need_dx else None
