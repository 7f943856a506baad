"""Elementwise activations for the Numba backend: relu_forward/backward and sigmoid_forward/backward."""
from __future__ import annotations

import math

from numba import njit, prange

from ._arrays import flat


@njit(parallel=True, nogil=True, cache=True, fastmath=False)
def _relu_forward(x, y, size):
    # x: (size,) -> y: (size,) = 0 where x < 0 else x; NaN and -0.0 pass through (PyTorch's rule)
    for i in prange(size):
        v = x[i]
        y[i] = 0.0 if v < 0.0 else v


@njit(parallel=True, nogil=True, cache=True, fastmath=False)
def _relu_backward(y, dy, dx, size):
    # y, dy: (size,) -> dx: (size,) = 0 where y <= 0 else dy (a NaN output passes dy, as PyTorch's)
    for i in prange(size):
        dx[i] = 0.0 if y[i] <= 0.0 else dy[i]


@njit(parallel=True, nogil=True, cache=True, fastmath=False)
def _sigmoid_forward(x, y, size):
    # x: (size,) -> y: (size,) = 1/(1+exp(-x)); exp only of -|x|, so it never overflows
    for i in prange(size):
        v = float(x[i])
        if v >= 0.0:
            y[i] = 1.0 / (1.0 + math.exp(-v))
        else:
            e = math.exp(v)
            y[i] = e / (1.0 + e)


@njit(parallel=True, nogil=True, cache=True, fastmath=False)
def _sigmoid_backward(y, dy, dx, size):
    # y, dy: (size,) -> dx: (size,) = dy * y * (1 - y)
    for i in prange(size):
        s = y[i]
        dx[i] = dy[i] * s * (1.0 - s)


def relu_forward(x, y, size) -> None:
    """y = 0 where x < 0 else x over ``size`` elements: NaN and -0.0 pass (y may be x)."""
    _relu_forward(flat(x, size, "relu x"), flat(y, size, "relu y"), int(size))


def relu_backward(y, dy, dx, size) -> None:
    """dx = 0 where y <= 0 else dy (y is the forward output, a NaN passes dy; dx may be dy)."""
    _relu_backward(flat(y, size, "relu y"), flat(dy, size, "relu dy"), flat(dx, size, "relu dx"), int(size))


def sigmoid_forward(x, y, size) -> None:
    """y = 1/(1+exp(-x)), stable for large |x| (y may be x)."""
    _sigmoid_forward(flat(x, size, "sigmoid x"), flat(y, size, "sigmoid y"), int(size))


def sigmoid_backward(y, dy, dx, size) -> None:
    """dx = dy * y * (1 - y) (y is the forward output; dx may be dy)."""
    _sigmoid_backward(flat(y, size, "sigmoid y"), flat(dy, size, "sigmoid dy"), flat(dx, size, "sigmoid dx"),
                      int(size))


@njit(parallel=True, nogil=True, cache=True, fastmath=False)
def _tanh_forward(x, y, size):
    # x: (size,) -> y: (size,) = tanh(x) (math.tanh saturates to +-1, never overflows)
    for i in prange(size):
        y[i] = math.tanh(float(x[i]))


@njit(parallel=True, nogil=True, cache=True, fastmath=False)
def _tanh_backward(y, dy, dx, size):
    # y, dy: (size,) -> dx: (size,) = dy * (1 - y^2)
    for i in prange(size):
        t = y[i]
        dx[i] = dy[i] * (1.0 - t * t)


@njit(parallel=True, nogil=True, cache=True, fastmath=False)
def _add(a, b, y, size):
    for i in prange(size):
        y[i] = a[i] + b[i]


def tanh_forward(x, y, size) -> None:
    """y = tanh(x) over ``size`` elements (y may be x)."""
    _tanh_forward(flat(x, size, "tanh x"), flat(y, size, "tanh y"), int(size))


def tanh_backward(y, dy, dx, size) -> None:
    """dx = dy * (1 - y^2) (y is the forward output; dx may be dy)."""
    _tanh_backward(flat(y, size, "tanh y"), flat(dy, size, "tanh dy"), flat(dx, size, "tanh dx"), int(size))


def add(a, b, y, size) -> None:
    """y = a + b over ``size`` elements (y may be a or b): a residual block's sum and its gradient's."""
    _add(flat(a, size, "add a"), flat(b, size, "add b"), flat(y, size, "add y"), int(size))
