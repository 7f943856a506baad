"""The gemm op's write-out options on every device against tests/reference.py: the fused bias + ReLU epilogue
(plain, batched, batch-reduce and its split-K), relu_mask (a ReLU's backward in the product's write-out) and
row_sums (op(A)'s row sums beside the product: a dense layer's bias gradient). Criterion: see test_ops.py."""
from __future__ import annotations

import numpy as np
import pytest

import reference as ref  # tests/ is on sys.path (conftest.py)
from opcheck import FWD_TOL, check, randn, up
from test_ops_gemm import run_gemm


EPILOGUE_CASES = {"plain": dict(beta=0.5, trans_b=True), "batched": dict(batch=3, beta=1.0, trans_a=True),
                  "reduce": dict(batch=4, reduce=True, c_nan=True), "split_k": dict(batch=37, reduce=True, beta=1.0)}


@pytest.mark.parametrize("case", EPILOGUE_CASES)
@pytest.mark.parametrize("bias_axis,relu", [(0, False), (1, False), (None, True), (0, True), (1, True)],
                         ids=["bias_rows", "bias_cols", "relu", "bias_rows+relu", "bias_cols+relu"])
def test_gemm_epilogue(device, small, case, bias_axis, relu):
    """bias per row (a conv's channels) or per column (a dense layer's features), then ReLU, on every write path:
    plain, strided batch, batch-reduce, and the split-K reduce (OpenCL: applied once, in gemm_reduce)."""
    kw = dict(EPILOGUE_CASES[case])
    if small and case == "split_k":
        kw["batch"] = 5
    m, n, k = (9, 11, 7) if small else (37, 29, 23)
    run_gemm(device, m, n, k, bias_axis=bias_axis, relu=relu, seed=13, **kw)


@pytest.mark.parametrize("m,n,k,trans_b", [(37, 29, 23, False), (8, 12, 2048, True), (1, 5, 3, False)],
                         ids=["plain", "long_k", "one_row"])
def test_gemm_relu_mask(device, small, m, n, k, trans_b):
    """relu_mask: C cut to 0 where the mask (a ReLU's output) is <= 0, a NaN mask passing (relu_backward's rule),
    on the plain and the split-K write paths (a long k over few tiles)."""
    if small:
        k = min(k, 96)
    rng = np.random.default_rng(5)
    a, b = randn(rng, m, k), randn(rng, *((n, k) if trans_b else (k, n)))
    mask = np.maximum(randn(rng, m, n), 0).astype(np.float32)   # about half exactly 0
    mask.reshape(-1)[::7] = np.nan
    mask.reshape(-1)[1::11] = -0.0
    dc = up(device, np.full((m, n), np.nan, np.float32))
    device.gemm(up(device, a), up(device, b), dc, m, n, k, trans_b=trans_b, relu_mask=up(device, mask))
    want = ref.gemm(a, b, np.zeros((m, n)), m, n, k, trans_b=trans_b, relu_mask=mask)
    got = device.download(dc)
    assert (got[(mask <= 0)] == 0).all()
    check(got, want, FWD_TOL, "gemm with relu_mask")


def test_gemm_relu_mask_needs_a_dense_c(device):
    a = up(device, np.ones(4, np.float32))
    for bad in (dict(batch=2), dict(c_off=1), dict(relu=True), dict(bias=a), dict(ldc=3)):
        with pytest.raises(ValueError, match="relu_mask"):
            device.gemm(a, a, up(device, np.zeros(8, np.float32)), 2, 2, 1, relu_mask=a, **bad)


@pytest.mark.parametrize("m,n,k", [(37, 29, 53), (130, 9, 70), (1, 5, 3)])
@pytest.mark.parametrize("trans_a", [True, False], ids=["TN", "NN"])
def test_gemm_row_sums(device, small, monkeypatch, m, n, k, trans_a):
    """row_sums: op(A)'s row sums beside the product (a dense layer's bias gradient: dy.T's rows), beta 0 not
    reading them, beta 0.5 accumulating; then on the split-K path (a long k over few tiles: bias_grad after it)."""
    if small and m > 64:
        m, n, k = 33, 9, 18
    run_gemm(device, m, n, k, trans_a=trans_a, beta=0.0, c_nan=True, row_sums=True)
    run_gemm(device, m, n, k, trans_a=trans_a, beta=0.5, alpha=0.75, row_sums=True, seed=1)
    if hasattr(device, "_gemm_limits"):
        monkeypatch.setattr(device, "_gemm_limits", device._gemm_limits[:3] + (64,))
    run_gemm(device, 20, 12, 256 if small else 1024, trans_a=trans_a, beta=0.5, row_sums=True, seed=2)


def test_gemm_row_sums_needs_a_dense_single_a(device):
    a = up(device, np.ones(8, np.float32))
    for bad in (dict(batch=2), dict(a_off=1), dict(lda=3), dict(relu=True), dict(bias=a), dict(reduce=True)):
        with pytest.raises(ValueError, match="row_sums"):
            device.gemm(a, a, up(device, np.zeros(8, np.float32)), 2, 2, 1, row_sums=a, **bad)
    c = up(device, np.full(4, 7.0, np.float32))
    with pytest.raises(ValueError, match="row_sums needs 3 elements"):   # before anything is written
        device.gemm(a, a, c, 3, 1, 1, row_sums=up(device, np.zeros(2, np.float32)))
    assert (device.download(c) == 7.0).all()


def test_gemm_bad_bias_axis(device):
    a = up(device, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="bias_axis"):
        device.gemm(a, a, up(device, np.zeros(4, np.float32)), 2, 2, 1, bias=a, bias_axis=2)


def test_gemm_refuses_views_outside_their_buffers(device):
    """A, B or C too short for its view, a bias shorter than the rows it is added to, or a relu_mask shorter than C:
    ValueError before anything is written (OpenCL's kernels would write past the end of C)."""
    a, b = up(device, np.ones(12, np.float32)), up(device, np.ones(20, np.float32))   # m 3, n 5, k 4
    c = up(device, np.full(15, 7.0, np.float32))
    short = up(device, np.ones(2, np.float32))
    for what, args, kw in (("A view", (short, b, c), {}), ("B view", (a, short, c), {}),
                           ("C view", (a, b, up(device, np.zeros(14, np.float32))), {}),
                           ("C view", (a, b, c), dict(ldc=6)), ("bias", (a, b, c), dict(bias=short)),
                           ("relu_mask", (a, b, c), dict(relu_mask=up(device, np.ones(14, np.float32))))):
        with pytest.raises(ValueError, match=what):
            device.gemm(*args, 3, 5, 4, **kw)
    assert (device.download(c) == 7.0).all()
