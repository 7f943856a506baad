"""The Numba backend's internal paths, each against tests/reference.py or against the general kernel it
specialises: the GEMM's block split, batch-reduce partial sums and NumPy fallback (with the fused epilogue), the
"same"-padding im2col/col2im, the 2x2 max-pool, the dense-layer bias_grad, and the convolutions' two ways (an image
at a time through OpenBLAS, cpu/_conv_cached.py, and the loop nests without it). test_ops*.py and test_conv*.py
cover the public ops."""
from __future__ import annotations

import numpy as np
import pytest

import reference as ref  # tests/ is on sys.path (conftest.py)
from opcheck import FWD_TOL, GRAD_TOL, check, check_exact, randn

numba = pytest.importorskip("numba")
from clcnn.cpu import _blas as blas, bias as cbias, gemm as cgemm, im2col as cim2col, maxpool as cpool  # noqa: E402

# (m, n, k, extra gemm kwargs): the conv and dense shapes of the presets, shrunk, on every dispatch path
GEMM_PATHS = {
    "split_rows": (300, 40, 50, {}),                                    # batch 1, split along m
    "split_cols": (20, 333, 70, dict(trans_b=True)),                    # batch 1, split along n (16-aligned)
    "entries": (12, 49, 27, dict(batch=9)),                             # one task per batch entry
    "few_entries": (70, 64, 33, dict(batch=3, trans_a=True)),          # entries and blocks
    "reduce": (16, 150, 100, dict(batch=7, reduce=True, trans_b=True)),  # partial sums per thread
    "reduce_one": (6, 25, 30, dict(batch=1, reduce=True, beta=1.0)),   # batch 1: the plain path
    "reduce_nt": (6, 25, 130, dict(batch=9, reduce=True, trans_b=True)),  # dot products: 4x4 tiles and edges
    "reduce_nt_rows": (33, 18, 64, dict(batch=20, reduce=True, trans_b=True, beta=0.5)),
    "tiny": (3, 2, 1, dict(alpha=-0.5, beta=0.25)),
}


def _run(m, n, k, kw, bias_axis, relu, seed=0):
    rng = np.random.default_rng(seed)
    batch = kw.get("batch", 1)
    sa = m * k + 4
    a, b = randn(rng, (batch - 1) * sa + m * k + 1), randn(rng, batch * (n * k + 8))
    sc = 0 if kw.get("reduce") else m * n + 2
    c = randn(rng, (batch - 1) * sc + m * n + 3)
    if kw.get("beta", 0.0) == 0.0:
        c[:] = np.nan   # beta == 0 must not read C
    bias = None if bias_axis is None else randn(rng, m if bias_axis == 0 else n)
    args = dict(kw, stride_a=sa, stride_b=n * k + 8, stride_c=sc, bias=bias, bias_axis=bias_axis or 0, relu=relu)
    got = c.copy()
    cgemm.gemm(a, b, got, m, n, k, **args)
    want = ref.gemm(a, b, c, m, n, k, **args)
    nan = np.isnan(want)   # storage outside every C_b, left as it was
    check_exact(np.isnan(got), nan, "gemm: NaN layout")
    check(got[~nan], want[~nan], FWD_TOL, f"gemm {m}x{n}x{k} {kw}")


@pytest.mark.parametrize("epilogue", [(None, False), (0, True), (1, False), (1, True)],
                         ids=["plain", "bias_rows+relu", "bias_cols", "bias_cols+relu"])
@pytest.mark.parametrize("path", GEMM_PATHS)
@pytest.mark.parametrize("blas_path", [True, False], ids=["sgemm", "numpy"])
def test_gemm_paths(monkeypatch, path, epilogue, blas_path):
    if blas_path and blas.sgemm() is None:
        pytest.skip("NumPy's BLAS is not an OpenBLAS with cblas_sgemm here")
    if not blas_path:
        monkeypatch.setattr(cgemm.blas, "sgemm", lambda: None)
    monkeypatch.setattr(cgemm, "_dots_for_reduce", lambda: path.startswith("reduce_nt"))
    m, n, k, kw = GEMM_PATHS[path]
    _run(m, n, k, kw, *epilogue)


def test_gemm_reduce_same_result_for_any_thread_count():
    """Partial sums follow the thread count, but each is summed in a fixed order: a rerun is bit-identical."""
    rng = np.random.default_rng(3)
    a, b = randn(rng, 37 * 8 * 40), randn(rng, 37 * 40 * 9)
    outs = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS, numba.config.NUMBA_NUM_THREADS):
        with_threads = np.zeros(8 * 9, np.float32)
        numba.set_num_threads(threads)
        try:
            cgemm.gemm(a, b, with_threads, 8, 9, 40, batch=37, stride_a=8 * 40, stride_b=40 * 9, reduce=True)
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        outs.append(with_threads)
    check(outs[0], outs[1], FWD_TOL, "1 thread vs all")
    check_exact(outs[1], outs[2], "two runs with the same thread count")


@pytest.mark.parametrize("dots", [True, False], ids=["dots", "sgemm"])
@pytest.mark.parametrize("m,n,k,batch", [(32, 27, 64, 20), (6, 25, 49, 30), (16, 36, 100, 11), (5, 9, 600, 3)])
def test_gemm_reduce_nt_conv_layout(monkeypatch, m, n, k, batch, dots):
    """The conv weight gradient's layout: B = cols (n, batch*k) with the entries side by side (read in place),
    A = dy (batch, m, k) (gathered first, or read per entry when k is long), accumulated into dW with beta = 1."""
    monkeypatch.setattr(cgemm, "_dots_for_reduce", lambda: dots)
    rng = np.random.default_rng(7)
    dy, cols, dw = randn(rng, batch * m * k), randn(rng, n * batch * k), randn(rng, m * n)
    kw = dict(trans_b=True, beta=1.0, ldb=batch * k, batch=batch, stride_a=m * k, stride_b=k, reduce=True)
    got = dw.copy()
    cgemm.gemm(dy, cols, got, m, n, k, **kw)
    check(got, ref.gemm(dy, cols, dw, m, n, k, **kw), FWD_TOL, "conv dW")


def test_blas_reports_its_core():
    assert isinstance(blas.core(), str)


# (N, C, H, W, k, pad, n0, nb): "same" convolutions (stride 1, output H x W), odd and even widths
SAME_CASES = [(2, 3, 8, 8, 3, 1, 0, 2), (3, 2, 7, 9, 5, 2, 1, 2), (2, 4, 16, 16, 3, 1, 1, 1), (1, 1, 4, 5, 1, 0, 0, 1),
              (2, 1, 3, 3, 3, 1, 0, 2)]


@pytest.mark.parametrize("case", SAME_CASES, ids=lambda c: "-".join(map(str, c)))
def test_same_padding_kernels_match_general(case):
    n, c, h, w, k, pad, n0, nb = case
    rng = np.random.default_rng(4)
    x = randn(rng, n, c, h, w).reshape(-1)
    size = c * k * k * nb * h * w
    fast, slow = np.full(size + 5, 7.0, np.float32), np.full(size + 5, 7.0, np.float32)
    cim2col._im2col_same(x, fast, n0, nb, c, h, w, k, k, pad)
    cim2col._im2col(x, slow, n0, nb, c, h, w, k, k, 1, pad, h, w)
    check_exact(fast, slow, "im2col same vs general")
    check_exact(fast[:size], ref.im2col(x, n0, nb, c, h, w, k, k, 1, pad).reshape(-1).astype(np.float32), "im2col")
    cols = randn(rng, size)
    dx_fast = randn(rng, n * c * h * w)
    dx_slow = dx_fast.copy()
    cim2col._col2im_same(cols, dx_fast, n0, nb, c, h, w, k, k, pad)
    cim2col._col2im(cols, dx_slow, n0, nb, c, h, w, k, k, 1, pad, h, w)
    check_exact(dx_fast, dx_slow, "col2im same vs general (the same sums in the same order)")


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 2, 7, 9), (2, 2, 6, 5)])
@pytest.mark.parametrize("kind", ["randn", "ties"])
def test_maxpool2_matches_general(shape, kind):
    rng = np.random.default_rng(5)
    x = (rng.integers(0, 3, shape).astype(np.float32) if kind == "ties" else randn(rng, *shape)).reshape(-1)
    n, c, h, w = shape
    ho, wo = h // 2, w // 2
    y1, y2 = np.empty(n * c * ho * wo, np.float32), np.empty(n * c * ho * wo, np.float32)
    a1, a2 = np.empty(y1.size, np.int32), np.empty(y1.size, np.int32)
    cpool._maxpool2_forward(x, y1, a1, n * c, h, w, ho, wo)
    cpool._maxpool_forward(x, y2, a2, n * c, h, w, 2, 2, ho, wo)
    check_exact(y1, y2, "2x2 max-pool values")
    check_exact(a1, a2, "2x2 max-pool arg-max")


@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_bias_grad_dense_blocks(beta):
    """inner == 1 (a dense layer) sums columns in blocks of 64: cross a block edge."""
    rng = np.random.default_rng(6)
    dy, db0 = randn(rng, 300, 130), randn(rng, 130)
    db = db0.copy()
    cbias.bias_grad(dy, db, 300, 130, 1, beta)
    check(db, ref.bias_grad(dy, db0, 300, 130, 1, beta), GRAD_TOL, "bias_grad dense")


# ---- the convolutions: the loop nests (no OpenBLAS) and the cached path's thread split ------------------------
CONV_FALLBACK = [(2, 3, 7, 7, 4, 3, 1, 1, True, 2), (2, 2, 8, 6, 3, 3, 2, 1, False, 1),
                 (3, 2, 9, 8, 2, 5, 1, 2, True, 1), (2, 2, 10, 11, 3, 3, 1, 1, True, 3)]


@pytest.mark.parametrize("case", CONV_FALLBACK, ids=lambda c: "-".join(str(int(v)) for v in c))
@pytest.mark.parametrize("blas_path", [True, False], ids=["sgemm", "loops"])
def test_conv_ops_both_ways(monkeypatch, case, blas_path):
    """conv_forward, conv_backward and the implicit ops against the float64 reference with OpenBLAS (an image at a
    time in each core's cache) and without it (the loop nests), on one geometry each of stride, pool and ReLU."""
    if blas_path and blas.sgemm() is None:
        pytest.skip("NumPy's BLAS is not an OpenBLAS with cblas_sgemm here")
    if not blas_path:
        monkeypatch.setattr(blas, "sgemm", lambda: None)
    from clcnn.backends import get_backend
    from test_conv_backward import check_all, make_inputs, run, want
    from test_conv_direct import check_conv_forward
    from test_conv_implicit import test_implicit_conv_ops
    dev = get_backend("cpu")
    check_conv_forward(dev, case)
    inputs = make_inputs(case)
    check_all(run(dev, inputs, case), want(inputs, case), "conv_backward")
    test_implicit_conv_ops(dev, case[:8])


def test_conv_cached_any_thread_count():
    """The cached path splits the images over the threads (one partial weight and bias gradient each) and puts
    small planes side by side (groups of 3 images of 9x9, of up to 21 of 4x3, and the remainders): one thread, two
    and every thread Numba has give the reference's outputs and gradients."""
    if blas.sgemm() is None:
        pytest.skip("NumPy's BLAS is not an OpenBLAS with cblas_sgemm here")
    from clcnn.backends import get_backend
    from test_conv_backward import check_all, make_inputs, run, want
    from test_conv_direct import check_conv_forward
    dev = get_backend("cpu")
    saved = numba.get_num_threads()
    try:
        for threads in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS), numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(threads)
            for case in ((5, 3, 9, 9, 5, 3, 1, 1, True, 2), (5, 2, 8, 6, 3, 3, 2, 1, False, 1)):
                check_conv_forward(dev, case)
                inputs = make_inputs(case, seed=3)
                check_all(run(dev, inputs, case), want(inputs, case), f"{threads} threads")
    finally:
        numba.set_num_threads(saved)
