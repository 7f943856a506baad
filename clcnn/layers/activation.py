"""Elementwise activations: ReLU, Sigmoid and Tanh (all derivatives are functions of the output, which is kept)."""
from __future__ import annotations

from .base import Layer


class _Activation(Layer):
    op = ""
    fused = False   # ReLU only: the previous layer's GEMM already applied it (Sequential decides)
    backward_in_next = False   # ReLU only: the next layer's backward (a max-pool's) already applied this one's
    backward_in_prev = False   # ReLU only: the previous layer's backward (a batch-norm's) applies this one's

    def __init__(self):
        self.params = {}

    def forward(self, x, train=True):
        # x: any shape -> y: same shape; keeps y.
        if self.fused:
            self.y = x
            return x
        y = self._buffer("y", x.shape)
        getattr(self.backend, f"{self.op}_forward")(x, y, x.size)
        self.y = y
        return y

    def backward(self, dy, need_dx=True):
        # dy: same shape as y -> dx: same shape.
        if not need_dx:
            return None
        if self.backward_in_next or self.backward_in_prev:
            return dy
        dx = self._buffer("dx", dy.shape)
        getattr(self.backend, f"{self.op}_backward")(self.y, dy, dx, dy.size)
        self.y = None
        return dx


class ReLU(_Activation):
    """y = max(x, 0); backward passes dy where y > 0. Shape: any, unchanged."""
    op = "relu"


class Sigmoid(_Activation):
    """y = 1 / (1 + exp(-x)); backward dy * y * (1 - y). Shape: any, unchanged."""
    op = "sigmoid"


class Tanh(_Activation):
    """y = tanh(x); backward dy * (1 - y^2) (PyTorch's nn.Tanh). Shape: any, unchanged."""
    op = "tanh"
