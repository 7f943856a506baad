"""Every Backend op but gemm (test_ops_gemm.py) on every device against the float64 references in tests/reference.py.

Accuracy criterion (float32 results vs float64 truth), "norm-wise max-abs":
    err = max|got - ref| / max|ref|        (scaled by the largest reference magnitude of that output)
    forward ops  : err <= FWD_TOL  = 1e-5
    gradient ops : err <= GRAD_TOL = 1e-4  (col2im, conv_backward_data, maxpool_backward, bias_grad, *_backward,
                                            sgd_update)
Pure data movement (im2col, relu, maxpool forward values/arg-max, memory ops) must be bit-exact.
Scalar losses: |got - ref| <= FWD_TOL * max(|ref|, 1).
On the Oclgrind simulator (fixture ``small``) the shapes shrink so the suite stays fast. OpenCL builds one
program per op family for every size (sizes are kernel arguments), except im2col/col2im/maxpool on GPUs and CPUs,
which get each layer's sizes as build constants: conftest.open_device makes CPU devices take the arguments path in
the tests, and test_*_geometry_constants runs the constants path on them.
"""
from __future__ import annotations

import numpy as np
import pytest

import reference as ref  # tests/ is on sys.path (conftest.py)
from conftest import deep
from opcheck import FWD_TOL, GRAD_TOL, check, check_exact, check_scalar, randn, up


# ---- memory ops ------------------------------------------------------------------------------------------
def test_memory_ops(device):
    rng = np.random.default_rng(1)
    x = randn(rng, 3, 5)
    d = up(device, x)
    assert d.shape == (3, 5) and d.dtype == np.float32 and d.size == 15
    check_exact(device.download(d), x, "upload/download")
    lab = rng.integers(0, 9, 11).astype(np.int32)
    dl = up(device, lab)
    assert device.download(dl).dtype == np.int32
    check_exact(device.download(dl), lab, "int32 round trip")
    z = device.zeros((4, 3))
    check_exact(device.download(z), np.zeros((4, 3), np.float32), "zeros")
    zi = device.zeros((7,), np.int32)
    assert device.download(zi).dtype == np.int32
    device.fill(z, 2.5)
    check_exact(device.download(z), np.full((4, 3), 2.5, np.float32), "fill")
    y = randn(rng, 4, 3)
    device.upload_into(z, y)
    check_exact(device.download(z), y, "upload_into")
    dst = device.zeros((15,))
    device.copy(d, dst)
    check_exact(device.download(dst), x.reshape(-1), "copy")
    view = d.reshape((15,))
    assert view.shape == (15,)
    device.fill(view, -1.0)  # a view shares storage with its base
    check_exact(device.download(d), np.full((3, 5), -1.0, np.float32), "fill through a reshape view")
    s = device.scratch("test_memory_ops", 100)
    assert len(s.shape) == 1 and s.size >= 100 and s.dtype == np.float32
    assert device.scratch("test_memory_ops", 10).size >= 10
    assert device.scratch("test_memory_ops", 1000).size >= 1000

# ---- im2col / col2im -------------------------------------------------------------------------------------
# (N, C, H, W, kh, kw, stride, pad, n0, nb)
CONV_CASES = [
    (2, 3, 7, 7, 3, 3, 1, 1, 0, 2),
    (3, 2, 9, 8, 3, 3, 2, 1, 1, 2),     # stride 2, n0 > 0
    (2, 3, 11, 9, 5, 5, 2, 2, 0, 2),    # pad 2
    (2, 2, 6, 7, 2, 3, 1, 0, 1, 1),     # non-square kernel, last image only
    (4, 3, 13, 10, 3, 1, 2, 0, 2, 2),   # 3x1 kernel, chunk in the middle
    (1, 1, 5, 5, 5, 5, 1, 0, 0, 1),     # one output pixel
    (2, 1, 4, 5, 1, 1, 2, 0, 0, 2),     # 1x1 stride 2
    (1, 2, 5, 6, 3, 3, 1, 2, 0, 1),     # pad 2, stride 1: outputs larger than the input
    (3, 2, 8, 9, 4, 2, 2, 1, 1, 1),     # even kernel with stride 2 and pad 1
]
CONV_BIG = (5, 8, 17, 15, 3, 3, 1, 1, 1, 3)


def _conv_case(case, small):
    return case if case != "big" else ((3, 2, 9, 7, 3, 3, 1, 1, 1, 2) if small else CONV_BIG)


def _ho_wo(h, w, kh, kw, stride, pad):
    return ref.out_size(h, kh, stride, pad), ref.out_size(w, kw, stride, pad)


def _case_id(case):
    return "-".join(map(str, case)) if isinstance(case, tuple) else case


@pytest.mark.parametrize("case", CONV_CASES + ["big"], ids=_case_id)
def test_im2col(device, small, case):
    check_im2col(device, _conv_case(case, small))


@pytest.mark.parametrize("case", CONV_CASES + ["big"], ids=_case_id)
def test_col2im(device, small, case):
    check_col2im(device, _conv_case(case, small))


# one program per geometry: two in the default run (stride 2 with n0 > 0; an even kernel), the rest deep
GEOMETRY_CONV_CASES = [CONV_CASES[1], CONV_CASES[8]] + [deep(c) for i, c in enumerate(CONV_CASES) if i not in (1, 8)]


@pytest.mark.parametrize("case", GEOMETRY_CONV_CASES, ids=_case_id)
def test_unrolling_geometry_constants(geometry_device, case):
    check_im2col(geometry_device, case)
    check_col2im(geometry_device, case)


def check_im2col(device, case):
    n, c, h, w, kh, kw, stride, pad, n0, nb = case
    rng = np.random.default_rng(10)
    x = randn(rng, n, c, h, w)
    ho, wo = _ho_wo(h, w, kh, kw, stride, pad)
    used = c * kh * kw * nb * ho * wo
    cols = up(device, np.full(used + 37, 12345.0, np.float32))  # larger than needed: the tail must survive
    device.im2col(up(device, x), cols, n0, nb, c, h, w, kh, kw, stride, pad)
    got = device.download(cols)
    want = ref.im2col(x, n0, nb, c, h, w, kh, kw, stride, pad)
    check_exact(got[:used].reshape(want.shape), want.astype(np.float32), "im2col")
    check_exact(got[used:], np.full(37, 12345.0, np.float32), "im2col wrote past C*kh*kw*nb*L")


def check_col2im(device, case):
    n, c, h, w, kh, kw, stride, pad, n0, nb = case
    rng = np.random.default_rng(11)
    ho, wo = _ho_wo(h, w, kh, kw, stride, pad)
    used = c * kh * kw * nb * ho * wo
    cols = np.concatenate([randn(rng, used), np.full(13, np.nan, np.float32)])  # the tail must not be read
    x0 = randn(rng, n, c, h, w)  # garbage in the target images must be overwritten, the others kept
    dx = up(device, x0)
    device.col2im(up(device, cols), dx, n0, nb, c, h, w, kh, kw, stride, pad)
    got = device.download(dx)
    want = ref.col2im(cols, x0, n0, nb, c, h, w, kh, kw, stride, pad)
    check(got[n0:n0 + nb], want[n0:n0 + nb], GRAD_TOL, "col2im")
    keep = np.ones(n, bool)
    keep[n0:n0 + nb] = False
    check_exact(got[keep], x0[keep], "col2im touched images outside n0..n0+nb-1")


@pytest.mark.parametrize("case", [CONV_CASES[1], CONV_CASES[2], CONV_CASES[8]], ids=["s2p1", "k5s2p2", "k4x2"])
def test_im2col_col2im_adjoint(device, case):
    """<im2col(x), C> == <x, col2im(C)> over all images (the identity backprop relies on)."""
    n, c, h, w, kh, kw, stride, pad, _, _ = case
    rng = np.random.default_rng(12)
    ho, wo = _ho_wo(h, w, kh, kw, stride, pad)
    x, cm = randn(rng, n, c, h, w), randn(rng, c * kh * kw, n * ho * wo)
    cols, xt = device.zeros((c * kh * kw, n * ho * wo)), device.zeros((n, c, h, w))
    device.im2col(up(device, x), cols, 0, n, c, h, w, kh, kw, stride, pad)
    device.col2im(up(device, cm), xt, 0, n, c, h, w, kh, kw, stride, pad)
    ax, at = device.download(cols).astype(np.float64), device.download(xt).astype(np.float64)
    lhs, rhs = float(np.sum(ax * cm)), float(np.sum(x * at))
    scale = float(np.sum(np.abs(ax * cm)))
    assert abs(lhs - rhs) <= GRAD_TOL * scale, f"<im2col x, C> = {lhs} but <x, col2im C> = {rhs}"


# (N, C, H, W, M, k, stride, pad, n0, nb); each shape may pick its own GEMM tile (an OpenCL build each)
CONV_BWD_CASES = [
    (4, 3, 8, 8, 5, 3, 1, 1, 0, 4),      # 3x3 "same" padding: the CPU fast path, every image
    (5, 3, 9, 8, 4, 3, 2, 1, 1, 3),      # stride 2, n0 > 0, nb < N
    deep((3, 2, 11, 9, 3, 5, 1, 2, 1, 2)),    # 5x5 "same" padding (pad 2), last images
    deep((4, 2, 14, 14, 6, 5, 1, 0, 1, 2)),   # 5x5 no padding (LeNet's second conv), images in the middle
    (3, 3, 7, 7, 4, 3, 1, 1, 1, 1),      # one image (fewer than the CPU's threads: gemm then col2im there)
    (3, 4, 13, 10, 7, 5, 2, 2, 0, 2),    # 5x5 stride 2 pad 2
]


@pytest.mark.parametrize("case", CONV_BWD_CASES, ids=_case_id)
def test_conv_backward_data(device, case):
    n, c, h, w, m, k, stride, pad, n0, nb = case
    rng = np.random.default_rng(13)
    ho, wo = _ho_wo(h, w, k, k, stride, pad)
    ckk, l = c * k * k, ho * wo
    weight, dy = randn(rng, m, ckk), randn(rng, n, m, l)
    x0 = randn(rng, n, c, h, w)   # garbage in the target images must be overwritten, the others kept
    dx = up(device, x0)
    dcols = up(device, np.full(ckk * nb * l, np.nan, np.float32))   # scratch: whatever it holds must not matter
    device.conv_backward_data(up(device, weight), up(device, dy), dx, dcols, n0, nb, m, c, h, w, k, k, stride, pad)
    got = device.download(dx)
    want = ref.conv_backward_data(weight, dy, x0, n0, nb, m, c, h, w, k, k, stride, pad)
    check(got[n0:n0 + nb], want[n0:n0 + nb], GRAD_TOL, "conv_backward_data")
    keep = np.ones(n, bool)
    keep[n0:n0 + nb] = False
    check_exact(got[keep], x0[keep], "conv_backward_data touched images outside n0..n0+nb-1")


# ---- max pooling -----------------------------------------------------------------------------------------
# (N, C, H, W, k, stride, kind of input)
POOL_CASES = [
    (2, 3, 8, 8, 2, 2, "randn"),
    (2, 3, 9, 7, 3, 2, "randn"),      # overlapping windows
    (1, 2, 7, 9, 2, 2, "randn"),      # odd sizes: the last row/column is dropped
    (2, 2, 6, 5, 3, 1, "randn"),      # heavy overlap
    (1, 1, 3, 3, 3, 3, "randn"),      # one global window
    (2, 3, 8, 8, 2, 2, "ties"),       # values from {0, 1, 2}: first max must win
    (2, 2, 9, 9, 3, 2, "ties"),
    (1, 2, 6, 6, 2, 2, "const"),      # every window all-equal
    (2, 2, 7, 7, 3, 2, "negative"),   # all < 0: the running max must not start at 0
    (3, 16, 32, 32, 2, 2, "big"),
]


def _pool_input(rng, kind, shape):
    if kind == "ties":
        return rng.integers(0, 3, shape).astype(np.float32)
    if kind == "const":
        return np.full(shape, 0.5, np.float32)
    if kind == "negative":
        return -np.abs(randn(rng, *shape)) - 1.0
    return randn(rng, *shape)


@pytest.mark.parametrize("case", POOL_CASES, ids=_case_id)
def test_maxpool(device, small, case):
    n, c, h, w, k, stride, kind = case
    check_maxpool(device, (1, 2, 10, 10, k, stride, kind) if small and kind == "big" else case)


# one program per geometry: overlapping windows and exactly tiling ones in the default run, the rest deep
GEOMETRY_POOL_CASES = [POOL_CASES[1], POOL_CASES[5]] + [deep(c) for i, c in enumerate(POOL_CASES) if i not in (1, 5)]


@pytest.mark.parametrize("case", GEOMETRY_POOL_CASES, ids=_case_id)
def test_maxpool_geometry_constants(geometry_device, case):
    check_maxpool(geometry_device, case)


def check_maxpool(device, case):
    n, c, h, w, k, stride, kind = case
    rng = np.random.default_rng(20)
    x = _pool_input(rng, kind, (n, c, h, w))
    ho, wo = (h - k) // stride + 1, (w - k) // stride + 1
    y, arg = up(device, np.full((n, c, ho, wo), np.nan, np.float32)), device.zeros((n, c, ho, wo), np.int32)
    device.maxpool_forward(up(device, x), y, arg, n, c, h, w, k, stride)
    want_y, want_arg = ref.maxpool_forward(x, n, c, h, w, k, stride)
    check_exact(device.download(y), want_y.astype(np.float32), "maxpool_forward y")
    check_exact(device.download(arg), want_arg, "maxpool_forward argmax")
    # backward from the reference arg-max so a forward bug does not mask a backward one
    dy = randn(rng, n, c, ho, wo)
    dx = up(device, np.full((n, c, h, w), np.nan, np.float32))
    device.maxpool_backward(up(device, dy), up(device, want_arg), dx, n, c, h, w, k, stride)
    check(device.download(dx), ref.maxpool_backward(dy, want_arg, n, c, h, w, k, stride), GRAD_TOL,
          "maxpool_backward")
    # with the fused ReLU mask: windows whose pooled value is <= 0 pass nothing (a mixed-sign y)
    ymask = want_y.astype(np.float32) - np.float32(np.median(want_y))
    device.maxpool_backward(up(device, dy), up(device, want_arg), dx, n, c, h, w, k, stride, y=up(device, ymask))
    check(device.download(dx), ref.maxpool_backward(dy, want_arg, n, c, h, w, k, stride, y=ymask), GRAD_TOL,
          "maxpool_backward masked")


# ---- bias ------------------------------------------------------------------------------------------------
BIAS_SHAPES = [(3, 5, 7), (4, 10, 1), (1, 1, 1), (2, 16, 64), (8, 32, 1024), (8, 2, 1024)]   # last: 2-pass


@pytest.mark.parametrize("shape", BIAS_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_bias_add(device, small, shape):
    n, c, inner = (2, 3, 40) if small and shape[2] > 64 else shape
    rng = np.random.default_rng(30)
    y0, bias = randn(rng, n, c, inner), randn(rng, c)
    y = up(device, y0)
    device.bias_add(y, up(device, bias), n, c, inner)
    check(device.download(y), ref.bias_add(y0, bias, n, c, inner), FWD_TOL, "bias_add")


@pytest.mark.parametrize("beta", [0.0, 1.0, 0.5])
@pytest.mark.parametrize("shape", BIAS_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_bias_grad(device, small, shape, beta):
    n, c, inner = (2, 3, 40) if small and shape[2] > 64 else shape
    rng = np.random.default_rng(31)
    dy, db0 = randn(rng, n, c, inner), randn(rng, c, scale=5.0)
    db = up(device, db0)  # beta == 0 overwrites whatever db held
    device.bias_grad(up(device, dy), db, n, c, inner, beta=beta)
    check(device.download(db), ref.bias_grad(dy, db0, n, c, inner, beta), GRAD_TOL, "bias_grad")


# ---- activations -----------------------------------------------------------------------------------------
def _act_input(rng, size):
    x = randn(rng, size, scale=3.0)
    special = np.array([-1000.0, 1000.0, 0.0, -0.0, 1e-30, -1e-30, 20.0, -20.0, 88.0, -88.0, 89.0, -89.0,
                        100.0, -100.0, 3e38, -3e38], np.float32)
    m = min(size, special.size)
    x[:m] = special[:m]
    return x


@pytest.mark.parametrize("size", [1, 1001, 65536 + 3])
@pytest.mark.parametrize("inplace", [False, True], ids=["outofplace", "inplace"])
def test_relu(device, small, size, inplace):
    size = min(size, 2000) if small else size
    rng = np.random.default_rng(40)
    x, dy = _act_input(rng, size), randn(rng, size)
    xd, dy_ = up(device, x), up(device, dy)
    y_ = xd if inplace else up(device, np.full(size, np.nan, np.float32))
    device.relu_forward(xd, y_, size)
    yv = device.download(y_)
    check_exact(yv, ref.relu_forward(x).astype(np.float32), "relu_forward")
    dx_out = dy_ if inplace else up(device, np.full(size, np.nan, np.float32))
    device.relu_backward(y_, dy_, dx_out, size)
    check_exact(device.download(dx_out), ref.relu_backward(yv, dy).astype(np.float32), "relu_backward")


@pytest.mark.parametrize("size", [1, 1001, 65536 + 3])
@pytest.mark.parametrize("inplace", [False, True], ids=["outofplace", "inplace"])
def test_sigmoid(device, small, size, inplace):
    size = min(size, 2000) if small else size
    rng = np.random.default_rng(41)
    x, dy = _act_input(rng, size), randn(rng, size)
    xd, dy_ = up(device, x), up(device, dy)
    y_ = xd if inplace else up(device, np.full(size, np.nan, np.float32))
    device.sigmoid_forward(xd, y_, size)
    yv = device.download(y_)
    check(yv, ref.sigmoid_forward(x), FWD_TOL, "sigmoid_forward")
    assert np.all((yv >= 0) & (yv <= 1)), "sigmoid outside [0, 1]"
    dx_out = dy_ if inplace else up(device, np.full(size, np.nan, np.float32))
    device.sigmoid_backward(y_, dy_, dx_out, size)
    check(device.download(dx_out), ref.sigmoid_backward(yv, dy), GRAD_TOL, "sigmoid_backward")


# ---- losses ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,c,scale", [(8, 10, 1.0), (5, 3, 1.0), (1, 1, 1.0), (33, 100, 4.0),
                                       (16, 10, 1000.0), (4, 1000, 1.0)])
@pytest.mark.parametrize("accumulate", [False, True], ids=["set", "accumulate"])
def test_softmax_xent(device, small, n, c, scale, accumulate):
    if small and n * c > 2000:
        n, c = 3, 700
    rng = np.random.default_rng(50)
    logits = randn(rng, n, c, scale=scale) + np.float32(50.0 if scale > 100 else 0.0)
    labels = rng.integers(0, c, n).astype(np.int32)
    before = 1.25 if accumulate else np.nan  # accumulate adds to it; otherwise it must be overwritten
    probs, loss = up(device, np.full((n, c), np.nan, np.float32)), up(device, np.array([before], np.float32))
    dlab, dl = up(device, labels), up(device, np.full((n, c), np.nan, np.float32))
    device.softmax_xent_forward(up(device, logits), dlab, probs, loss, n, c, accumulate=accumulate, dlogits=dl)
    want_p, want_loss = ref.softmax_xent_forward(logits, labels, n, c, 1.25, accumulate)
    pv = device.download(probs)
    check(pv, want_p, FWD_TOL, "softmax probs")
    check_scalar(device.download(loss), want_loss, FWD_TOL, "softmax_xent loss")
    check(device.download(dl), ref.softmax_xent_backward(pv, labels, n, c), GRAD_TOL, "softmax_xent gradient")
    kept = device.download(dl)
    device.softmax_xent_forward(up(device, logits), dlab, probs, loss, n, c)   # no gradient: dlogits untouched
    check_exact(device.download(dl), kept, "dlogits without a gradient asked")


@pytest.mark.parametrize("n,scale", [(1, 1.0), (37, 3.0), (64, 1000.0)])
@pytest.mark.parametrize("accumulate", [False, True], ids=["set", "accumulate"])
def test_sigmoid_bce(device, n, scale, accumulate):
    rng = np.random.default_rng(51)
    logits = randn(rng, n, 1, scale=scale)
    labels = rng.integers(0, 2, n).astype(np.int32)
    before = -0.5 if accumulate else np.nan
    probs, loss = up(device, np.full((n, 1), np.nan, np.float32)), up(device, np.array([before], np.float32))
    dlab, dl = up(device, labels), up(device, np.full((n, 1), np.nan, np.float32))
    device.sigmoid_bce_forward(up(device, logits), dlab, probs, loss, n, accumulate=accumulate, dlogits=dl)
    want_p, want_loss = ref.sigmoid_bce_forward(logits, labels, n, -0.5, accumulate)
    pv = device.download(probs)
    check(pv, want_p, FWD_TOL, "bce probs")
    check_scalar(device.download(loss), want_loss, FWD_TOL, "sigmoid_bce loss")
    check(device.download(dl), ref.sigmoid_bce_backward(pv, labels, n), GRAD_TOL, "sigmoid_bce gradient")


# ---- optimizer -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("momentum,weight_decay", [(0.0, 0.0), (0.0, 5e-4), (0.9, 0.0), (0.9, 1e-2)])
def test_sgd_update_three_steps(device, momentum, weight_decay):
    size, lr = 1003, 0.1
    rng = np.random.default_rng(60)
    p = randn(rng, size)
    grads = [randn(rng, size) for _ in range(3)]
    dp = up(device, p)
    dv = device.zeros((size,)) if momentum else None
    dgs = [up(device, g) for g in grads]  # keep every gradient alive: ops only enqueue
    want_p, want_v = p.astype(np.float64), np.zeros(size)
    hyper = up(device, np.array([lr, momentum, weight_decay], np.float32))   # [lr, momentum, weight_decay]
    for dg, g in zip(dgs, grads):
        device.sgd_update(dp, dg, dv, hyper, size)
        want_p, want_v = ref.sgd_update(want_p, g, want_v, lr, momentum, weight_decay)
    check(device.download(dp), want_p, GRAD_TOL, "sgd param")
    if momentum:
        check(device.download(dv), want_v, GRAD_TOL, "sgd velocity")
