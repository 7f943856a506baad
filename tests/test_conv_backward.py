"""Backend.conv_backward on every device against the float64 reference in tests/reference_conv.py (validated by a
finite-difference check of the whole conv + ReLU + pool chain). Criterion: opcheck's norm-wise max-abs error
<= GRAD_TOL (1e-4) for dweight, dbias and dx; repeat calls bit-identical. arg-max and y come from the reference
forward (conv_forward is tested on its own). On Oclgrind (``small``) the batch shrinks."""
from __future__ import annotations

import numpy as np
import pytest

import reference_conv as rc  # tests/ is on sys.path (conftest.py)
from conftest import deep, is_simulator, lean_device_params, open_device
from opcheck import GRAD_TOL, check, check_exact, randn, up

# (N, C, H, W, M, k, stride, pad, relu, pool)
CASES = [
    (2, 3, 7, 7, 4, 3, 1, 1, True, 2),     # H = W = 7: the last conv row and column lie in no window
    (2, 2, 8, 6, 3, 3, 2, 1, False, 1),    # stride 2, no pool, no ReLU
    (3, 2, 9, 8, 2, 5, 1, 2, True, 1),     # k 5, pad 2, ReLU without a pool
    (2, 3, 6, 7, 5, 1, 1, 0, False, 2),    # k 1, an odd W under the pool
    (2, 2, 11, 10, 3, 3, 2, 0, True, 2),   # stride 2 and a pool
    (1, 1, 5, 5, 1, 5, 1, 0, False, 1),    # one output pixel
    deep((2, 2, 10, 11, 3, 3, 1, 1, True, 3)),   # pool 3, uncovered rows and columns
    deep((3, 4, 9, 9, 6, 3, 2, 2, True, 3)),
    deep((2, 3, 12, 12, 7, 4, 3, 1, False, 2)),  # stride 3, an even kernel
]
LENET = {"conv1": (4, 1, 28, 28, 6, 5, 1, 2, True, 2), "conv2": (4, 6, 14, 14, 16, 5, 1, 0, True, 2)}


def _case_id(case):
    return "-".join(str(int(v)) for v in case)


def _shrink(case, small):
    return (min(case[0], 2),) + tuple(case[1:]) if small else case


def make_inputs(case, seed=0):
    """Host arrays: x, weight, dy (pooled when pool > 1), argmax (int32 or None), y (float32 or None: only with
    relu), built from the float64 reference forward."""
    n, c, h, w, m, k, stride, pad, relu, pool = case
    rng = np.random.default_rng(seed)
    x, weight, bias = randn(rng, n, c, h, w), randn(rng, m, c, k, k, scale=0.3), randn(rng, m, scale=0.3)
    yf, arg = rc.conv_forward(x, weight, bias, stride, pad, relu, pool)
    dy = randn(rng, *yf.shape)
    return x, weight, dy, arg, (yf.astype(np.float32) if relu else None)


def want(inputs, case, beta=0.0, old=None):
    """(dweight, dbias, dx) in float64: the reference, plus beta times ``old`` = (dweight, dbias)."""
    x, weight, dy, arg, y = inputs
    *_, stride, pad, relu, pool = case
    dw, db, dx = rc.conv_backward(x, weight, dy, arg, y, stride, pad, relu, pool)
    if beta:
        dw, db = dw + beta * old[0], db + beta * old[1]
    return dw, db, dx


def run(dev, inputs, case, beta=0.0, old=None, with_dx=True):
    """conv_backward on ``dev``; dweight/dbias start as ``old`` (NaN when None: beta == 0 must not read them), dx
    as NaN (it is overwritten). Returns the downloaded (dweight, dbias, dx or None)."""
    x, weight, dy, arg, y = inputs
    n, c, h, w, m, k, stride, pad, relu, pool = case
    old = old or (np.full((m, c, k, k), np.nan, np.float32), np.full(m, np.nan, np.float32))
    ddw, ddb = up(dev, old[0]), up(dev, old[1])
    ddx = up(dev, np.full(x.shape, np.nan, np.float32)) if with_dx else None
    dev.conv_backward(up(dev, x), up(dev, weight), up(dev, dy), None if arg is None else up(dev, arg),
                      None if y is None else up(dev, y), ddw, ddb, ddx, n, c, h, w, m, k, stride, pad,
                      relu=relu, pool=pool, beta=beta)
    return dev.download(ddw), dev.download(ddb), None if ddx is None else dev.download(ddx)


def check_all(got, wanted, what):
    for g, wnt, name in zip(got, wanted, ("dweight", "dbias", "dx")):
        if g is not None:
            check(g, wnt, GRAD_TOL, f"{what} {name}")


# ---- the reference itself -----------------------------------------------------------------------------------
@pytest.mark.parametrize("case", [(1, 2, 5, 6, 2, 3, 1, 1, True, 2), (2, 1, 7, 6, 2, 3, 2, 2, True, 1),
                                  (1, 2, 7, 7, 3, 2, 1, 0, False, 3)], ids=_case_id)
def test_reference_finite_differences(case):
    """reference_conv.conv_backward = the gradient of sum(dy * conv_forward(x, weight, bias)) (float64 central
    differences over every entry of x, weight and bias)."""
    n, c, h, w, m, k, stride, pad, relu, pool = case
    rng = np.random.default_rng(3)
    x, weight, bias = (rng.standard_normal(s) for s in ((n, c, h, w), (m, c, k, k), (m,)))
    y, arg = rc.conv_forward(x, weight, bias, stride, pad, relu, pool)
    dy = rng.standard_normal(y.shape)

    def loss(xx, ww, bb):
        return float(np.sum(dy * rc.conv_forward(xx, ww, bb, stride, pad, relu, pool)[0]))

    dw, db, dx = rc.conv_backward(x, weight, dy, arg, y, stride, pad, relu, pool)
    eps = 1e-6
    for which, (arr, grad) in enumerate(((x, dx), (weight, dw), (bias, db))):
        num = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            args = [x.copy(), weight.copy(), bias.copy()]
            args[which][idx] += eps
            up_ = loss(*args)
            args[which][idx] -= 2 * eps
            num[idx] = (up_ - loss(*args)) / (2 * eps)
        np.testing.assert_allclose(grad, num, rtol=1e-5, atol=1e-6, err_msg=("dx", "dweight", "dbias")[which])


def test_reference_uncovered_and_masked():
    """g is 0 on the rows/columns no pool window covers and where the ReLU output y <= 0; a NaN y passes."""
    dy = np.ones((1, 1, 1, 1))
    g = rc.conv_output_grad(dy, np.array([[[[4]]]], np.int32), np.ones((1, 1, 1, 1)), (1, 1, 3, 3), True, 2)
    assert g.reshape(-1).tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 0]
    g = rc.conv_output_grad(dy, np.array([[[[0]]]], np.int32), np.zeros((1, 1, 1, 1)), (1, 1, 3, 3), True, 2)
    assert not g.any()
    g = rc.conv_output_grad(dy, None, np.full((1, 1, 1, 1), np.nan), (1, 1, 1, 1), True, 1)
    assert g.reshape(-1).tolist() == [1.0]


# ---- every device ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_conv_backward(device, small, case):
    case = _shrink(case, small)
    inputs = make_inputs(case)
    check_all(run(device, inputs, case), want(inputs, case), "beta=0")


@pytest.mark.parametrize("case", [CASES[0], CASES[2]], ids=_case_id)
def test_conv_backward_beta1_no_dx(device, case):
    """beta = 1 adds to dweight/dbias; dx None (a first layer) computes no input gradient."""
    n, c, h, w, m, k = case[:6]
    inputs = make_inputs(case, seed=1)
    rng = np.random.default_rng(2)
    old = (randn(rng, m, c, k, k), randn(rng, m))
    got = run(device, inputs, case, beta=1.0, old=old, with_dx=False)
    assert got[2] is None
    check_all(got, want(inputs, case, 1.0, old), "beta=1")


@pytest.mark.parametrize("layer", sorted(LENET))
def test_conv_backward_lenet5(device, small, layer):
    """LeNet-5's two conv layers (ReLU, 2x2 pool) at a small batch; conv1 as a first layer (no dx)."""
    case = _shrink(LENET[layer], small)
    inputs = make_inputs(case, seed=4)
    check_all(run(device, inputs, case, with_dx=layer != "conv1"), want(inputs, case), layer)


def test_conv_backward_deterministic(device, small):
    """Two calls give bit-identical outputs (fixed-order sums, no atomics)."""
    case = _shrink(LENET["conv2"], small)
    inputs = make_inputs(case, seed=5)
    first, second = run(device, inputs, case), run(device, inputs, case)
    for a, b, name in zip(first, second, ("dweight", "dbias", "dx")):
        check_exact(a, b, f"repeat {name}")


def _cl_modes():
    """(device id, mode) for every OpenCL device; the simulator's constants builds (seconds each) and a second
    PoCL build's (lean_device_params) deep only."""
    out = []
    for p in lean_device_params():
        if p.values[0] == "cpu":
            continue
        for mode in ("constants", "direct"):
            marks = [*p.marks] + ([pytest.mark.deep] if "oclgrind" in p.id and mode == "constants" else [])
            out.append(pytest.param((p.values[0], mode), id=f"{p.id}-{mode}", marks=marks))
    return out


@pytest.fixture(params=_cl_modes())
def cl_mode(request):
    """An OpenCL device with conv_backward built with the geometry as -D constants (the GPU path) or forced onto
    the direct kernels (global reads: for images that do not fit in local memory)."""
    device_id, mode = request.param
    dev = open_device(device_id)
    saved = dev.geometry_constants, dev.conv_backward_local
    if mode == "constants":
        dev.geometry_constants = True
    else:
        dev.conv_backward_local = False
    yield dev
    dev.geometry_constants, dev.conv_backward_local = saved


@pytest.mark.parametrize("case", [CASES[0], CASES[4], deep(CASES[2]), deep(LENET["conv2"])], ids=_case_id)
def test_conv_backward_opencl_paths(cl_mode, case):
    case = _shrink(case, is_simulator(cl_mode))
    inputs = make_inputs(case, seed=6)
    check_all(run(cl_mode, inputs, case), want(inputs, case), "beta=0")
    rng = np.random.default_rng(7)
    old = (randn(rng, *inputs[1].shape), randn(rng, case[4]))
    check_all(run(cl_mode, inputs, case, beta=0.5, old=old, with_dx=False), want(inputs, case, 0.5, old), "beta")
