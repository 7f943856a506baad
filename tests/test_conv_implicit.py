"""The implicit-GEMM convolution (Backend.implicit_conv_forward / _backward_weight / _backward_data) on every device
against the float64 reference of tests/reference_conv.py (its backward validated there by finite differences).
Tolerances: test_ops.py's (FWD_TOL for y, GRAD_TOL for the gradients). The cases cross the kernel's edges: output
planes and reductions that are not multiples of 4 or of a tile, strides 1-3, padding 0-2, kernels 1-5, and a
batch-reduce over the images split in slices (gemm_reduce)."""
from __future__ import annotations

import numpy as np
import pytest

import reference_conv as rc
from conftest import deep
from opcheck import FWD_TOL, GRAD_TOL, check, randn, up

# (N, C, H, W, M, k, stride, pad)
CASES = [
    (3, 3, 9, 7, 5, 3, 1, 1),       # odd planes: Ho*Wo = 63, C*k*k = 27
    (2, 2, 11, 10, 3, 5, 2, 2),     # stride 2, k 5
    (2, 6, 14, 14, 16, 5, 1, 0),    # LeNet-5's conv2 (C*k*k = 150, M = 16)
    deep((2, 1, 8, 8, 7, 1, 1, 0)),      # a 1x1 kernel
    deep((1, 4, 12, 13, 6, 4, 3, 2)),    # stride 3, an even kernel
    deep((5, 17, 10, 10, 33, 3, 1, 1)),  # more than one tile each way
]


def _id(case):
    return "n{}c{}h{}w{}m{}k{}s{}p{}".format(*case)


def _inputs(case, seed=0):
    n, c, h, w, m, k, s, p = case
    rng = np.random.default_rng(seed)
    x, wt, b = randn(rng, n, c, h, w), randn(rng, m, c, k, k, scale=0.3), randn(rng, m, scale=0.3)
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    return x, wt, b, randn(rng, n, m, ho, wo)


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_implicit_conv_ops(device, case):
    """Forward (with and without the ReLU), the weight gradient (beta = 0 with a NaN start: not read; beta = 0.5
    adds to it) and the input gradient (NaN start: overwritten) against the reference."""
    n, c, h, w, m, k, s, p = case
    x, wt, b, dy = _inputs(case)
    want_y = rc.conv(x, wt, b, s, p)
    want_dw, _, want_dx = rc.conv_backward(x, wt, dy, None, None, s, p)
    dx_, dwt, dy_ = up(device, x), up(device, wt), up(device, dy)
    for relu in (False, True):
        y = up(device, np.full(want_y.shape, np.nan, np.float32))
        device.implicit_conv_forward(dx_, dwt, up(device, b), y, n, c, h, w, m, k, s, p, relu=relu)
        check(device.download(y), np.where(want_y < 0, 0.0, want_y) if relu else want_y, FWD_TOL,
              f"implicit_conv_forward relu={relu}")
    dw = up(device, np.full(wt.shape, np.nan, np.float32))
    device.implicit_conv_backward_weight(dx_, dy_, dw, n, c, h, w, m, k, s, p)
    check(device.download(dw), want_dw, GRAD_TOL, "implicit_conv_backward_weight")
    old = randn(np.random.default_rng(1), *wt.shape)
    dw = up(device, old)
    device.implicit_conv_backward_weight(dx_, dy_, dw, n, c, h, w, m, k, s, p, beta=0.5)
    check(device.download(dw), want_dw + 0.5 * old, GRAD_TOL, "implicit_conv_backward_weight beta=0.5")
    dx = up(device, np.full(x.shape, np.nan, np.float32))
    device.implicit_conv_backward_data(dwt, dy_, dx, n, c, h, w, m, k, s, p)
    check(device.download(dx), want_dx, GRAD_TOL, "implicit_conv_backward_data")


def test_implicit_conv_bad_geometry(device):
    """An empty output is a ValueError before any kernel runs."""
    a = up(device, np.zeros(64, np.float32))
    with pytest.raises(ValueError, match="bad geometry"):
        device.implicit_conv_forward(a, a, a, a, 1, 1, 2, 2, 1, 5, 1, 0)
