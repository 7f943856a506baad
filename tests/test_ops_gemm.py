"""The gemm op on every device against tests/reference.py: shapes, transposes, alpha/beta, offsets and leading
dimensions, strided batches, batch-reduce (and its split-K), every tile config. Criterion: see test_ops.py."""
from __future__ import annotations

import numpy as np
import pytest

import reference as ref  # tests/ is on sys.path (conftest.py)
from opcheck import FWD_TOL, check, check_exact, randn, up


# ---- gemm ------------------------------------------------------------------------------------------------
def _index(off, rows, cols, ld):
    return (off + np.arange(rows)[:, None] * ld + np.arange(cols)[None, :]).reshape(-1)


def run_gemm(dev, m, n, k, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, pad_ld=(0, 0, 0),
             offs=(0, 0, 0), batch=1, share_a=False, reduce=False, c_nan=False, seed=0):
    """Build padded/offset/batched flat storage, run dev.gemm, compare the WHOLE C storage with the reference
    (the C_b blocks to FWD_TOL, every other entry bit-exact unchanged)."""
    rng = np.random.default_rng(seed)
    ra, ca = (k, m) if trans_a else (m, k)
    rb, cb = (n, k) if trans_b else (k, n)
    lda, ldb, ldc = ca + pad_ld[0], cb + pad_ld[1], n + pad_ld[2]
    stride_a = 0 if share_a else ra * lda + 3
    stride_b, stride_c = rb * ldb + 5, (0 if reduce else m * ldc + 2)
    size_a = offs[0] + (0 if share_a else batch - 1) * stride_a + ra * lda + 1
    size_b = offs[1] + (batch - 1) * stride_b + rb * ldb + 2
    size_c = offs[2] + (0 if reduce else batch - 1) * stride_c + m * ldc + 3
    a, b = randn(rng, size_a), randn(rng, size_b)
    c = np.full(size_c, np.nan, np.float32) if c_nan else randn(rng, size_c)
    kw = dict(trans_a=trans_a, trans_b=trans_b, alpha=alpha, beta=beta, a_off=offs[0], b_off=offs[1],
              c_off=offs[2], batch=batch, stride_a=stride_a, stride_b=stride_b, stride_c=stride_c, reduce=reduce)
    if any(pad_ld):  # otherwise leave the leading dimensions to their dense defaults
        kw.update(lda=lda, ldb=ldb, ldc=ldc)
    dc = up(dev, c)
    dev.gemm(up(dev, a), up(dev, b), dc, m, n, k, **kw)
    got = dev.download(dc)
    want = ref.gemm(a, b, c, m, n, k, **kw)
    touched = np.zeros(size_c, bool)
    for bi in range(1 if reduce else batch):
        touched[_index(offs[2] + bi * stride_c, m, n, ldc)] = True
    check(got[touched], want[touched], FWD_TOL, f"gemm {m}x{n}x{k} C blocks")
    check_exact(got[~touched], c[~touched], "gemm: C storage outside the C blocks")


GEMM_SHAPES = [(37, 29, 53), (1, 1, 1), (3, 1, 131), (1, 7, 5), (16, 16, 16), (65, 67, 129), (130, 9, 70)]
GEMM_SMALL = {(65, 67, 129): (17, 33, 19), (130, 9, 70): (33, 9, 18), (37, 29, 53): (19, 13, 21)}


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (False, True), (True, False), (True, True)],
                         ids=["NN", "NT", "TN", "TT"])
@pytest.mark.parametrize("mnk", GEMM_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_gemm_shapes(device, small, mnk, trans_a, trans_b):
    m, n, k = GEMM_SMALL.get(mnk, mnk) if small else mnk
    run_gemm(device, m, n, k, trans_a=trans_a, trans_b=trans_b)


@pytest.mark.parametrize("alpha,beta", [(0.75, 0.0), (1.0, 1.0), (-0.5, 2.0), (0.0, 0.5)])
def test_gemm_alpha_beta(device, alpha, beta):
    run_gemm(device, 19, 23, 29, alpha=alpha, beta=beta, trans_b=True, seed=2)


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, True)], ids=["NN", "TT"])
def test_gemm_beta0_does_not_read_nan_c(device, trans_a, trans_b):
    run_gemm(device, 21, 18, 13, trans_a=trans_a, trans_b=trans_b, beta=0.0, c_nan=True, seed=3)


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (False, True), (True, False), (True, True)],
                         ids=["NN", "NT", "TN", "TT"])
def test_gemm_offsets_and_lds(device, trans_a, trans_b):
    run_gemm(device, 13, 11, 17, trans_a=trans_a, trans_b=trans_b, pad_ld=(3, 5, 7), offs=(5, 9, 4),
             beta=0.5, seed=4)


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True)], ids=["NN", "TN", "NT"])
@pytest.mark.parametrize("share_a", [False, True], ids=["stride_a", "stride_a0"])
def test_gemm_batched(device, share_a, trans_a, trans_b):
    run_gemm(device, 9, 14, 11, trans_a=trans_a, trans_b=trans_b, batch=3, share_a=share_a,
             pad_ld=(1, 0, 2), offs=(2, 3, 1), alpha=1.5, beta=0.25, seed=5)


@pytest.mark.parametrize("beta", [0.0, 1.0])
@pytest.mark.parametrize("trans_a,trans_b", [(False, True), (True, False)], ids=["NT", "TN"])
def test_gemm_batch_reduce(device, trans_a, trans_b, beta):
    run_gemm(device, 10, 7, 12, trans_a=trans_a, trans_b=trans_b, batch=4, reduce=True, beta=beta,
             offs=(1, 0, 3), c_nan=(beta == 0.0), seed=6)


def test_gemm_batch_reduce_large_k(device, small):
    """Batch-reduce as the conv weight gradient uses it: dW (M, CKK) = sum_n dY_n (M, L) @ cols_n.T."""
    m, n, k, batch = (8, 27, 20, 3) if small else (32, 75, 196, 8)
    run_gemm(device, m, n, k, trans_b=True, batch=batch, reduce=True, seed=7)


@pytest.mark.parametrize("batch", [5, 37, 300])
def test_gemm_batch_reduce_split_k(device, small, batch):
    """Long batch-reduces with tiny outputs: backends may split the batch into partial sums (OpenCL does, into
    ~4 work-groups per compute unit); any split, even or not, must give the same sum."""
    if small and batch > 5:
        pytest.skip("the simulator covers the split with batch 5")
    run_gemm(device, 3, 5, 4, trans_b=True, batch=batch, reduce=True, beta=0.5, alpha=0.75, seed=batch)


def test_gemm_every_tile_config(device, small):
    """Backends with several GEMM tile configs (OpenCL) pick one per shape; force each on edges crossing it."""
    configs = getattr(device, "gemm_configs", None)
    if configs is None:
        pytest.skip("this backend has a single GEMM path (covered by every other gemm test)")
    try:
        for cfg in configs:
            device.gemm_override = cfg
            for ta, tb in ((False, False), (True, True)) if small else ((False, False), (False, True),
                                                                        (True, False), (True, True)):
                run_gemm(device, cfg["TM"] + 3, cfg["TN"] + 5, 19, trans_a=ta, trans_b=tb, beta=0.5, seed=11)
            run_gemm(device, 5, 7, 3, trans_b=True, batch=6, reduce=True, beta=0.5, seed=12)
    finally:
        device.gemm_override = None
