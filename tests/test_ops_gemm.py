"""The gemm op on every device against tests/reference.py: shapes, transposes, alpha/beta, offsets and leading
dimensions, strided batches, batch-reduce (and its split-K; the write-out options in test_ops_gemm_epilogue.py),
and (OpenCL) every
kernel variant and tile config, on aligned (128-bit load) and unaligned storage. Criterion: see test_ops.py.
Each tile config x transposes x alignment is an OpenCL build of seconds (a big tile: 5-50 s on PoCL): the default
run sweeps one small config per kernel code path on one PoCL device (tools/oclgrind_ops.py runs one config of
every code path under Oclgrind); the deep grid (CLCNN_TEST_DEEP=1) every config on every device."""
from __future__ import annotations

import numpy as np
import pytest

import reference as ref  # tests/ is on sys.path (conftest.py)
from clcnn.backends.gemm_configs import GEMM_CONFIGS, gemm_geometry, gemm_key
from conftest import deep, device_params, open_device
from opcheck import FWD_TOL, check, check_exact, randn, representative_configs, up


# ---- gemm ------------------------------------------------------------------------------------------------
def _index(off, rows, cols, ld):
    return (off + np.arange(rows)[:, None] * ld + np.arange(cols)[None, :]).reshape(-1)


def run_gemm(dev, m, n, k, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, pad_ld=(0, 0, 0),
             offs=(0, 0, 0), batch=1, share_a=False, reduce=False, c_nan=False, bias_axis=None, relu=False,
             seed=0, row_sums=False):
    """Build padded/offset/batched flat storage, run dev.gemm, compare the WHOLE C storage with the reference
    (the C_b blocks to FWD_TOL, every other entry bit-exact unchanged). bias_axis 0 / 1 adds a bias per row /
    column (None: no bias); batch strides are multiples of 4 when pad_ld and offs are (128-bit loads).
    row_sums: also op(A)'s row sums into an (m,) vector (NaN before when beta == 0: it must not be read)."""
    rng = np.random.default_rng(seed)
    ra, ca = (k, m) if trans_a else (m, k)
    rb, cb = (n, k) if trans_b else (k, n)
    lda, ldb, ldc = ca + pad_ld[0], cb + pad_ld[1], n + pad_ld[2]
    stride_a = 0 if share_a else ra * lda + 4
    stride_b, stride_c = rb * ldb + 8, (0 if reduce else m * ldc + 2)
    size_a = offs[0] + (0 if share_a else batch - 1) * stride_a + ra * lda + 1
    size_b = offs[1] + (batch - 1) * stride_b + rb * ldb + 2
    size_c = offs[2] + (0 if reduce else batch - 1) * stride_c + m * ldc + 3
    a, b = randn(rng, size_a), randn(rng, size_b)
    c = np.full(size_c, np.nan, np.float32) if c_nan else randn(rng, size_c)
    kw = dict(trans_a=trans_a, trans_b=trans_b, alpha=alpha, beta=beta, a_off=offs[0], b_off=offs[1],
              c_off=offs[2], batch=batch, stride_a=stride_a, stride_b=stride_b, stride_c=stride_c, reduce=reduce,
              relu=relu)
    if any(pad_ld):  # otherwise leave the leading dimensions to their dense defaults
        kw.update(lda=lda, ldb=ldb, ldc=ldc)
    bias = None if bias_axis is None else randn(rng, m if bias_axis == 0 else n)
    dc = up(dev, c)
    rs = (np.full(m, np.nan, np.float32) if beta == 0 else randn(rng, m)) if row_sums else None
    drs = up(dev, rs) if row_sums else None
    dev.gemm(up(dev, a), up(dev, b), dc, m, n, k, **kw,
             **({} if bias is None else dict(bias=up(dev, bias), bias_axis=bias_axis)),
             **({} if drs is None else dict(row_sums=drs)))
    got = dev.download(dc)
    if row_sums:
        op_a = a[offs[0]:offs[0] + ra * lda].astype(np.float64).reshape(ra, lda)[:, :ca]
        want_rs = (op_a.T if trans_a else op_a).sum(axis=1) + (beta * rs.astype(np.float64) if beta else 0.0)
        check(dev.download(drs), want_rs, FWD_TOL, f"gemm {m}x{n}x{k} row_sums")
    want = ref.gemm(a, b, c, m, n, k, **kw, bias=bias, bias_axis=0 if bias_axis is None else bias_axis)
    touched = np.zeros(size_c, bool)
    for bi in range(1 if reduce else batch):
        touched[_index(offs[2] + bi * stride_c, m, n, ldc)] = True
    check(got[touched], want[touched], FWD_TOL, f"gemm {m}x{n}x{k} C blocks")
    check_exact(got[~touched], c[~touched], "gemm: C storage outside the C blocks")


GEMM_SHAPES = [(37, 29, 53), (1, 1, 1), (3, 1, 131), (1, 7, 5), (16, 16, 16), (65, 67, 129), (130, 9, 70)]
GEMM_SMALL = {(65, 67, 129): (17, 33, 19), (130, 9, 70): (33, 9, 18), (37, 29, 53): (19, 13, 21)}


def _deep_shape(mnk, trans):
    """(16, 16, 16) and (130, 9, 70) pick other tiles (more builds); 65x67x129 runs TRANS_A and TRANS_B in NN and
    TT (and 37x29x53 in every transpose), its NT and TN are deep."""
    return mnk in ((16, 16, 16), (130, 9, 70)) or (mnk == (65, 67, 129) and trans in ("NT", "TN"))


SHAPE_PARAMS = [pytest.param(mnk, t[0] == "T", t[1] == "T", id=f"{'x'.join(map(str, mnk))}-{t}",
                             marks=(pytest.mark.deep,) if _deep_shape(mnk, t) else ())
                for mnk in GEMM_SHAPES for t in ("NN", "NT", "TN", "TT")]


@pytest.mark.parametrize("mnk,trans_a,trans_b", SHAPE_PARAMS)
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


# ---- OpenCL: every kernel variant and tile config ----------------------------------------------------------
@pytest.fixture(scope="module", params=[p for p in device_params() if p.values[0] != "cpu"])
def cl_device(request):
    return open_device(request.param)


# the tile-config sweeps run on the non-simulator OpenCL devices (the simulator's is tools/oclgrind_ops.py, under
# its checkers): (pytest id, device id)
SWEEP_DEVICES = [(p.id, p.values[0]) for p in device_params() if p.values[0] != "cpu" and "oclgrind" not in p.id]


def _cfg_id(cfg):
    return "-".join(str(v) for v in cfg.values())


TRANSPOSES = ((False, False), (False, True), (True, False), (True, True))


def aligned_pads(m, n, k, trans_a, trans_b):
    """pad_ld for run_gemm making every leading dimension a multiple of 4 (and at least 4 larger)."""
    cols = (m if trans_a else k, k if trans_b else n, n)
    return tuple(-c % 4 + 4 for c in cols)


# SWEEP: for each code path its smallest config, if that is at most 64 x 64 (FB, ST and VW=1 exist only in big
# tiles: tools/oclgrind_ops.py runs those on the simulator)
SWEEP = [c for c in representative_configs(GEMM_CONFIGS) if gemm_geometry(c)[0] * gemm_geometry(c)[1] <= 64 * 64]


def _config_params():
    """(device id, config index): SWEEP on the first sweep device by default; deep: every config there and SWEEP
    on the other devices (every config on each would take PoCL's LLVM 14 about 20 minutes more per device)."""
    out = []
    for d, (pid, dev) in enumerate(SWEEP_DEVICES):
        for i, cfg in enumerate(GEMM_CONFIGS):
            if d == 0 or cfg in SWEEP:
                mark = () if d == 0 and cfg in SWEEP else (pytest.mark.deep,)
                out.append(pytest.param(dev, i, id=f"{pid}-{_cfg_id(cfg)}", marks=mark))
    return out


@pytest.mark.parametrize("dev_id,index", _config_params())
def test_gemm_config(dev_id, index):
    """Each config forced on edges crossing its tile (m = TM+3, n = TN+5, k = 21: partial quads and slabs):
    once on 16-byte aligned storage (128-bit loads where the config uses them), once unaligned, once as a
    batch-reduce whose split-K slices span several entries; with beta, bias and ReLU. The transposes rotate over
    the configs (two builds per config: PoCL takes seconds per build)."""
    dev, cfg = open_device(dev_id), GEMM_CONFIGS[index]
    if cfg not in dev.gemm_configs:
        pytest.skip(f"does not fit {dev.info.name}")
    tm, tn, _, _ = gemm_geometry(cfg)
    (ta, tb), (ua, ub) = TRANSPOSES[index % 4], TRANSPOSES[(index + 2) % 4]
    try:
        dev.gemm_override = cfg
        run_gemm(dev, tm + 3, tn + 5, 21, trans_a=ta, trans_b=tb, beta=0.5, offs=(4, 8, 0),
                 pad_ld=aligned_pads(tm + 3, tn + 5, 21, ta, tb), bias_axis=index % 2, relu=True, seed=index)
        run_gemm(dev, tm + 3, tn + 5, 21, trans_a=ua, trans_b=ub, alpha=0.75, pad_ld=(1, 3, 2), offs=(1, 3, 2),
                 bias_axis=1 - index % 2, seed=index)
        run_gemm(dev, 9, 7, 21, trans_a=ua, trans_b=ub, batch=10, reduce=True, beta=0.5, relu=True, seed=12)
        run_gemm(dev, tm + 3, tn + 5, 21, trans_a=ta, trans_b=ub, beta=index % 2 * 0.5, row_sums=True, seed=index)
    finally:
        dev.gemm_override = None


@pytest.mark.parametrize("dev_id,trans_a,trans_b", [
    pytest.param(dev, ta, tb, id=f"{pid}-{name}", marks=() if d == 0 and name in ("NT", "TN") else (pytest.mark.deep,))
    for d, (pid, dev) in enumerate(SWEEP_DEVICES) for (ta, tb), name in zip(TRANSPOSES, ("NN", "NT", "TN", "TT"))])
def test_gemm_default_big_tile(dev_id, trans_a, trans_b):
    """The device's big-GEMM tile (vec 128x128 where it fits), aligned and unaligned. By default NT and TN on the
    first sweep device (together every load path of A and B, normal and transposed); deep: every transpose on
    every sweep device."""
    dev = open_device(dev_id)
    tm, tn, _, _ = gemm_geometry(dev.gemm_params)
    try:
        dev.gemm_override = dev.gemm_params
        run_gemm(dev, 2 * tm + 1, tn + 7, 45, trans_a=trans_a, trans_b=trans_b, offs=(4, 4, 4), beta=1.0,
                 pad_ld=aligned_pads(2 * tm + 1, tn + 7, 45, trans_a, trans_b), bias_axis=0, seed=21)
        run_gemm(dev, tm - 1, 2 * tn - 3, 33, trans_a=trans_a, trans_b=trans_b, pad_ld=(1, 0, 0), seed=22)
    finally:
        dev.gemm_override = None


def test_gemm_config_choice(cl_device):
    """gemm_override > gemm_tuned[gemm_key(...)] > heuristic; candidates cover every variant and fit."""
    dev = cl_device
    cands = dev.gemm_candidates(4096, 4096, 4096)
    assert {p["variant"] for p in cands} == {"naive", "local", "blocked", "vec"}
    assert all(p in dev.gemm_configs for p in cands)
    assert not dev._gemm_usable({"variant": "vec", "TM": 3}) and not dev._gemm_usable({"variant": "warp"})
    assert dev.gemm_config(4096, 4096, 4096)["variant"] == "vec"
    assert gemm_geometry(dev.gemm_config(6, 4096, 75))[0] <= 16   # few rows: a flat tile
    tuned, saved = next(p for p in dev.gemm_configs if p["variant"] == "local"), dev.gemm_tuned
    dev.gemm_tuned = {}
    try:
        dev.gemm_tuned[gemm_key(19, 23, 29, False, True, 1, False)] = tuned
        assert dev.gemm_config(19, 23, 29, False, True) is tuned
        assert dev.gemm_config(19, 23, 29, True, True) is not tuned
        run_gemm(dev, 19, 23, 29, trans_b=True, bias_axis=1, seed=2)
        assert dev.gemm_config(19, 23, 29, False, True, tuned=False) is not tuned
        with dev.gemm_forced(dev.gemm_configs[-1]):
            assert dev.gemm_config(19, 23, 29, False, True) is dev.gemm_configs[-1]
        assert dev.gemm_override is None
    finally:
        dev.gemm_tuned = saved
        dev.gemm_override = None


def test_numba_batch_reduce_with_many_threads():
    """The Numba batch-reduce cuts the batch into one part per thread; with more threads than this machine has
    cores (a 16-core CI host), no part may be left empty and unwritten (regression: batch 37 on 16 threads)."""
    import subprocess
    import sys
    code = ("import numpy as np, clcnn, sys; sys.path.insert(0, 'tests'); import reference as ref;"
            "be = clcnn.get_backend('cpu'); r = np.random.default_rng(0);"
            "a = r.standard_normal(37*3*4).astype(np.float32); b = r.standard_normal(37*5*4).astype(np.float32);"
            "c = np.zeros(15, np.float32);"
            "be.gemm(a, b, c, 3, 5, 4, trans_b=True, batch=37, stride_a=12, stride_b=20, reduce=True);"
            "want = ref.gemm(a, b, np.zeros(15), 3, 5, 4, trans_b=True, batch=37, stride_a=12, stride_b=20,"
            " reduce=True);"
            "print(float(np.abs(c - want).max() / np.abs(want).max()))")
    env = {**__import__("os").environ, "NUMBA_NUM_THREADS": "16"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert float(res.stdout.strip().splitlines()[-1]) < 1e-5


@pytest.mark.parametrize("trans", ["NN", deep("NT"), deep("TN"), "TT"])   # NN and TT take every stride branch
def test_gemm_k_split_of_a_single_product(device, small, monkeypatch, trans):
    """A single GEMM with few output tiles and a long k (a dense layer's forward) may be cut into k-chunks summed
    like a batch-reduce; the device is made to look large so the split happens even on a small CPU device."""
    if hasattr(device, "_gemm_limits"):
        limits = device._gemm_limits
        monkeypatch.setattr(device, "_gemm_limits", limits[:3] + (64,))
        assert device._k_chunks(20, 12, 1024, device.gemm_config(20, 12, 1024)) > 1
    k = 256 if small else 1024
    run_gemm(device, 20, 12, k, trans_a=trans[0] == "T", trans_b=trans[1] == "T", beta=0.5, alpha=0.5,
             pad_ld=(4, 0, 4), offs=(4, 8, 4), bias_axis=1, relu=True, seed=k)
