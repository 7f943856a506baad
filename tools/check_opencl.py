"""Scratch check of the OpenCL backend against float64 NumPy (not a test suite; see tests/ for that).

    python tools/check_opencl.py --device cl:1            # all ops, normal sizes
    python tools/check_opencl.py --device cl:0 --tiny     # tiny sizes (Oclgrind)
    python tools/check_opencl.py --oclgrind               # re-run --tiny on Oclgrind with race/API checks
    python tools/check_opencl.py --device cl:1 --bench    # 512^3 gemm timing
    python tools/check_opencl.py --device cl:1 --cache    # two fresh processes share the disk binary cache
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

FAILS: list[str] = []


def check(name, got, want, tol=1e-5):
    want = np.asarray(want, np.float64)
    got = np.asarray(got, np.float64)
    err = np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30) if want.size else 0.0
    ok = got.shape == want.shape and err <= tol and np.all(np.isfinite(got))
    print(f"{'ok  ' if ok else 'FAIL'} {name:40s} rel err {err:.2e}")
    if not ok:
        FAILS.append(name)


def gemm_ref(A, B, C, m, n, k, ta, tb, alpha, beta, lda, ldb, ldc, ao, bo, co, batch, sa, sb, sc, reduce):
    A, B, C = A.astype(np.float64), B.astype(np.float64), C.astype(np.float64).copy()
    acc = np.zeros((m, n))
    for z in range(batch):
        a = np.lib.stride_tricks.as_strided(A[ao + z * sa:], ((k, m) if ta else (m, k)), (lda * 8, 8))
        b = np.lib.stride_tricks.as_strided(B[bo + z * sb:], ((n, k) if tb else (k, n)), (ldb * 8, 8))
        prod = (a.T if ta else a) @ (b.T if tb else b)
        if reduce:
            acc += prod
            continue
        cz = np.lib.stride_tricks.as_strided(C[co + z * sc:], (m, n), (ldc * 8, 8))
        cz[...] = alpha * prod + (beta * cz if beta else 0)
    if reduce:
        cz = np.lib.stride_tricks.as_strided(C[co:], (m, n), (ldc * 8, 8))
        cz[...] = alpha * acc + (beta * cz if beta else 0)
    return C


def check_gemm(be, rng, m, n, k, batch):
    for ta in (False, True):
        for tb in (False, True):
            for reduce, beta in ((False, 0.0), (False, 0.5), (True, 0.0), (True, 0.75)):
                lda, ldb, ldc = (m if ta else k) + 3, (k if tb else n) + 2, n + 1
                ao, bo, co = 5, 7, 3
                sa, sb, sc = lda * (k if ta else m) + 4, ldb * (n if tb else k) + 1, ldc * m + 2
                A = rng.standard_normal(ao + sa * batch).astype(np.float32)
                B = rng.standard_normal(bo + sb * batch).astype(np.float32)
                C = rng.standard_normal(co + sc * batch).astype(np.float32)
                if beta == 0:
                    C[:] = np.nan   # beta == 0 must not read C; entries outside the C views stay NaN on both sides
                dc = be.upload(C)
                be.gemm(be.upload(A), be.upload(B), dc, m, n, k, trans_a=ta, trans_b=tb, alpha=1.5, beta=beta,
                        lda=lda, ldb=ldb, ldc=ldc, a_off=ao, b_off=bo, c_off=co, batch=batch, stride_a=sa,
                        stride_b=sb, stride_c=sc, reduce=reduce)
                want = gemm_ref(A, B, C, m, n, k, ta, tb, 1.5, beta, lda, ldb, ldc, ao, bo, co, batch, sa, sb,
                                sc, reduce)
                got, mask = be.download(dc), ~np.isnan(want)
                same_nan = np.array_equal(np.isnan(got), ~mask)
                check(f"gemm {m}x{n}x{k} ta={ta:d} tb={tb:d} b={batch} red={reduce:d} beta={beta}",
                      got[mask] if same_nan else got, want[mask] if same_nan else want)
    a, b = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
    dc = be.zeros((m, n))
    be.gemm(be.upload(a), be.upload(b), dc, m, n, k)   # all defaults
    check(f"gemm {m}x{n}x{k} defaults", be.download(dc), a.astype(np.float64) @ b)


def im2col_ref(x, n0, nb, kh, kw, s, p):
    N, C, H, W = x.shape
    ho, wo = (H + 2 * p - kh) // s + 1, (W + 2 * p - kw) // s + 1
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (p, p), (p, p)))
    cols = np.zeros((C, kh, kw, nb, ho, wo))
    for i in range(kh):
        for j in range(kw):
            cols[:, i, j] = xp[n0:n0 + nb, :, i:i + s * ho:s, j:j + s * wo:s].transpose(1, 0, 2, 3)
    return cols.reshape(C * kh * kw, nb * ho * wo), ho, wo


def col2im_ref(cols, shape, n0, nb, kh, kw, s, p, ho, wo):
    N, C, H, W = shape
    xp = np.zeros((nb, C, H + 2 * p, W + 2 * p))
    c6 = cols.astype(np.float64).reshape(C, kh, kw, nb, ho, wo)
    for i in range(kh):
        for j in range(kw):
            xp[:, :, i:i + s * ho:s, j:j + s * wo:s] += c6[:, i, j].transpose(1, 0, 2, 3)
    return xp[:, :, p:p + H, p:p + W]


def check_im2col(be, rng, N, C, H, W, k, s, p, n0, nb):
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    want, ho, wo = im2col_ref(x, n0, nb, k, k, s, p)
    cols = be.zeros(want.size + 7)
    be.im2col(be.upload(x), cols, n0, nb, C, H, W, k, k, s, p)
    check(f"im2col {x.shape} k{k} s{s} p{p} n0={n0}", be.download(cols)[:want.size].reshape(want.shape), want)
    g = rng.standard_normal(want.shape).astype(np.float32)
    dx = be.upload(np.full(x.shape, 9.0, np.float32))
    be.col2im(be.upload(g), dx, n0, nb, C, H, W, k, k, s, p)
    full = np.full(x.shape, 9.0)
    full[n0:n0 + nb] = col2im_ref(g, x.shape, n0, nb, k, k, s, p, ho, wo)
    check(f"col2im {x.shape} k{k} s{s} p{p} n0={n0}", be.download(dx), full)


def check_pool(be, rng, N, C, H, W, k, s, ties=False):
    x = (rng.integers(0, 3, (N, C, H, W)) if ties else rng.standard_normal((N, C, H, W))).astype(np.float32)
    ho, wo = (H - k) // s + 1, (W - k) // s + 1
    y, am = np.zeros((N, C, ho, wo)), np.zeros((N, C, ho, wo), np.int32)
    dy = rng.standard_normal((N, C, ho, wo)).astype(np.float32)
    dx = np.zeros((N, C, H * W))
    for oh in range(ho):
        for ow in range(wo):
            win = x[:, :, oh * s:oh * s + k, ow * s:ow * s + k].reshape(N, C, k * k)
            a = win.argmax(-1)   # first max wins
            y[:, :, oh, ow] = win.max(-1)
            am[:, :, oh, ow] = (oh * s + a // k) * W + ow * s + a % k
    for ni in range(N):
        for ci in range(C):
            np.add.at(dx[ni, ci], am[ni, ci].ravel(), dy[ni, ci].ravel().astype(np.float64))
    dy_, dam, ddx = be.zeros(y.shape), be.zeros(y.shape, np.int32), be.upload(np.full(x.shape, 5.0, np.float32))
    be.maxpool_forward(be.upload(x), dy_, dam, N, C, H, W, k, s)
    tag = f"maxpool {x.shape} k{k} s{s}{' ties' if ties else ''}"
    check(tag + " fwd", be.download(dy_), y)
    ok = np.array_equal(be.download(dam), am)
    print(f"{'ok  ' if ok else 'FAIL'} {tag} argmax")
    ok or FAILS.append(tag + " argmax")
    be.maxpool_backward(be.upload(dy), be.upload(am), ddx, N, C, H, W, k, s)
    check(tag + " bwd", be.download(ddx), dx.reshape(x.shape))


def check_misc(be, rng, N, C, inner):
    y = rng.standard_normal((N, C, inner)).astype(np.float32)
    bias = rng.standard_normal(C).astype(np.float32)
    dy = be.upload(y)
    be.bias_add(dy, be.upload(bias), N, C, inner)
    check(f"bias_add {y.shape}", be.download(dy), y.astype(np.float64) + bias[None, :, None])
    db0 = rng.standard_normal(C).astype(np.float32)
    for beta in (0.0, 0.5):
        db = be.upload(np.full(C, np.nan, np.float32) if beta == 0 else db0)
        be.bias_grad(be.upload(y), db, N, C, inner, beta=beta)
        check(f"bias_grad {y.shape} beta={beta}", be.download(db),
              y.astype(np.float64).sum((0, 2)) + (beta * db0 if beta else 0))
    x = (rng.standard_normal(N * C * inner) * 30).astype(np.float32)
    x[:4] = [-1e4, 1e4, -100.0, 100.0]
    x64, g = x.astype(np.float64), rng.standard_normal(x.size).astype(np.float32)
    sig = np.where(x64 >= 0, 1 / (1 + np.exp(-np.abs(x64))), np.exp(-np.abs(x64)) / (1 + np.exp(-np.abs(x64))))
    for name, want in (("relu_forward", np.maximum(x64, 0)), ("sigmoid_forward", sig)):
        d = be.upload(x)
        getattr(be, name)(d, d, x.size)   # in place
        check(name, be.download(d), want)
    ys = be.upload(sig.astype(np.float32))
    d = be.upload(g)
    be.relu_backward(be.upload(x), d, d, x.size)
    check("relu_backward", be.download(d), np.where(x64 > 0, g, 0))
    d = be.upload(g)
    be.sigmoid_backward(ys, d, d, x.size)
    s32 = sig.astype(np.float32).astype(np.float64)
    check("sigmoid_backward", be.download(d), g * s32 * (1 - s32))


def check_loss(be, rng, n, c):
    z = (rng.standard_normal((n, c)) * 5).astype(np.float32)
    z[0, 0] = 80.0
    lab = rng.integers(0, c, n).astype(np.int32)
    z64 = z.astype(np.float64)
    lse = np.log(np.exp(z64 - z64.max(1, keepdims=True)).sum(1)) + z64.max(1)
    probs, loss = np.exp(z64 - lse[:, None]), np.mean(lse - z64[np.arange(n), lab])
    dp, dl, dlab = be.zeros((n, c)), be.upload(np.array([2.0], np.float32)), be.upload(lab)
    be.softmax_xent_forward(be.upload(z), dlab, dp, dl, n, c, accumulate=True)
    check(f"softmax_xent_forward {n}x{c} probs", be.download(dp), probs)
    check(f"softmax_xent_forward {n}x{c} loss+=", be.download(dl), [2.0 + loss])
    be.softmax_xent_forward(be.upload(z), dlab, dp, dl, n, c)
    check(f"softmax_xent_forward {n}x{c} loss", be.download(dl), [loss])
    dd = be.zeros((n, c))
    be.softmax_xent_backward(dp, dlab, dd, n, c)
    check("softmax_xent_backward", be.download(dd), (probs - np.eye(c)[lab]) / n)
    z1 = (rng.standard_normal((n, 1)) * 10).astype(np.float32)
    z1[0], z1[-1] = 200.0, -200.0
    y1 = rng.integers(0, 2, n).astype(np.int32)
    zz = z1[:, 0].astype(np.float64)
    p1 = 1 / (1 + np.exp(-zz))
    l1 = np.mean(np.maximum(zz, 0) - y1 * zz + np.log1p(np.exp(-np.abs(zz))))
    dp1, dl1, dy1 = be.zeros((n, 1)), be.upload(np.array([1.0], np.float32)), be.upload(y1)
    be.sigmoid_bce_forward(be.upload(z1), dy1, dp1, dl1, n, accumulate=True)
    check(f"sigmoid_bce_forward {n} probs", be.download(dp1)[:, 0], p1)
    check(f"sigmoid_bce_forward {n} loss+=", be.download(dl1), [1.0 + l1])
    be.sigmoid_bce_forward(be.upload(z1), dy1, dp1, dl1, n)
    check(f"sigmoid_bce_forward {n} loss", be.download(dl1), [l1])
    dd1 = be.zeros((n, 1))
    be.sigmoid_bce_backward(dp1, dy1, dd1, n)
    check("sigmoid_bce_backward", be.download(dd1)[:, 0], (p1.astype(np.float32) - y1) / n)


def check_memory_sgd(be, rng, size):
    p, g, v = (rng.standard_normal(size).astype(np.float32) for _ in range(3))
    dp, dv = be.upload(p), be.upload(v)
    be.sgd_update(dp, be.upload(g), dv, size, 0.1, 0.9, 1e-2)
    gg = g.astype(np.float64) + 1e-2 * p
    vv = 0.9 * v + gg
    check("sgd_update momentum", be.download(dp), p - 0.1 * vv)
    check("sgd_update velocity", be.download(dv), vv)
    dp = be.upload(p)
    be.sgd_update(dp, be.upload(g), None, size, 0.1, 0.0, 1e-2)
    check("sgd_update no momentum", be.download(dp), p - 0.1 * gg)
    a = be.zeros((3, size))
    be.fill(a, 2.5)
    b = be.zeros(3 * size)
    be.copy(a, b)
    check("fill+copy", be.download(b.reshape(3, -1)), np.full((3, size), 2.5))
    ai = be.zeros(7, np.int32)
    be.fill(ai, 3)
    print("ok  " if be.download(ai).tolist() == [3] * 7 else "FAIL", "fill int32")
    host = rng.standard_normal((3, size)).astype(np.float32)
    be.upload_into(a, host)
    be.synchronize()
    check("upload_into", be.download(a), host)
    s1 = be.scratch("t", 10)
    s2 = be.scratch("t", 5)
    s3 = be.scratch("t", 100)
    print("ok  " if s1.buf is s2.buf and s3.size >= 100 and s3.shape == (s3.size,) else "FAIL", "scratch")


def run_checks(device, tiny):
    from clcnn.backends import get_backend
    be = get_backend(device)
    print(f"device {be.info} gemm {be.gemm_params}")
    rng = np.random.default_rng(1)
    be.self_test()
    if tiny:
        check_gemm(be, rng, 131, 9, 19, 2)
        check_im2col(be, rng, 3, 2, 5, 7, 3, 2, 1, 1, 2)
        check_pool(be, rng, 1, 2, 7, 7, 3, 2)
        check_pool(be, rng, 1, 2, 6, 6, 2, 2, ties=True)
        check_misc(be, rng, 2, 3, 5)
        check_loss(be, rng, 5, 4)
        check_memory_sgd(be, rng, 37)
    else:
        check_gemm(be, rng, 37, 29, 53, 3)
        check_gemm(be, rng, 260, 140, 40, 2)
        check_im2col(be, rng, 4, 3, 11, 9, 3, 2, 1, 1, 2)
        check_im2col(be, rng, 2, 2, 8, 8, 5, 1, 2, 0, 2)
        check_pool(be, rng, 2, 3, 11, 9, 3, 2)
        check_pool(be, rng, 2, 3, 10, 8, 2, 2)
        check_pool(be, rng, 2, 3, 9, 9, 3, 2, ties=True)
        check_misc(be, rng, 5, 7, 33)
        check_misc(be, rng, 700, 3, 1)
        check_loss(be, rng, 300, 10)
        check_loss(be, rng, 7, 3)
        check_memory_sgd(be, rng, 1001)
    from clcnn.backends.opencl import GEMM_CONFIGS
    default = be.gemm_params
    for params in GEMM_CONFIGS:   # the fallback tile configs (and a later autotuner's) must be right too
        if params != default and be._gemm_fits(params):
            be.gemm_params = params
            print("gemm config", params)
            check_gemm(be, rng, 37, 20, 19, 2)
    be.gemm_params = default
    print("FAILED:", FAILS if FAILS else "none")
    return 1 if FAILS else 0


def bench(device, size=512, reps=10):
    from clcnn.backends import get_backend
    from clcnn.backends.opencl import GEMM_CONFIGS
    be = get_backend(device)
    rng = np.random.default_rng(0)
    a, b = (be.upload(rng.standard_normal((size, size)).astype(np.float32)) for _ in range(2))
    c = be.zeros((size, size))
    default = be.gemm_params
    for params in GEMM_CONFIGS:
        be.gemm_params = params
        be.gemm(a, b, c, size, size, size)
        be.synchronize()
        t = time.perf_counter()
        for _ in range(reps):
            be.gemm(a, b, c, size, size, size)
        be.synchronize()
        dt = (time.perf_counter() - t) / reps
        print(f"gemm {size}^3 on {be.info.name} {params}{' (default)' if params == default else ''}: "
              f"{dt * 1e3:.2f} ms, {2 * size ** 3 / dt / 1e9:.1f} GFLOP/s")
    be.gemm_params = default


KERNELS = (("im2col.cl", ("im2col", "col2im"), {}), ("pool.cl", ("maxpool_forward", "maxpool_backward"), {}),
           ("activation.cl", ("relu_forward", "relu_backward", "sigmoid_forward", "sigmoid_backward"), {}),
           ("sgd.cl", ("sgd_update",), {}), ("bias.cl", ("bias_add", "bias_grad"), "WG"),
           ("loss.cl", ("softmax_xent_forward", "softmax_xent_backward", "sigmoid_bce_forward",
                        "sigmoid_bce_backward"), "WG"))


def load_all_kernels(device):
    """Fetch every kernel (all 4 gemm variants); prints the seconds it took."""
    from clcnn.backends import get_backend
    t = time.perf_counter()
    be = get_backend(device)
    for ta in (0, 1):
        for tb in (0, 1):
            be.kernel("gemm.cl", "gemm", dict(be.gemm_params, TRANS_A=ta, TRANS_B=tb))
    for file, names, wg in KERNELS:
        for name in names:
            be.kernel(file, name, {"WG": be.reduce_wg} if wg else {})
    be.self_test()
    print(f"{time.perf_counter() - t:.2f}")


def cache_test(device):
    env = dict(os.environ, CLCNN_CACHE_DIR=tempfile.mkdtemp(prefix="clcnn-cache-"), CLCNN_DEBUG="1")
    for label in ("cold", "warm", "warm"):
        out = subprocess.run([sys.executable, __file__, "--device", device, "--load-all"], env=env,
                             capture_output=True, text=True, check=True)
        print(f"{label} process: open device + fetch all kernels + self-test: {out.stdout.strip()} s"
              f"{' stderr: ' + out.stderr.strip() if out.stderr.strip() else ''}")
    print("cache files:", len(os.listdir(env["CLCNN_CACHE_DIR"])), env["CLCNN_CACHE_DIR"])


def oclgrind():
    env = dict(os.environ, OCLGRIND_DATA_RACES="1", OCLGRIND_CHECK_API="1")
    from clcnn.backends.opencl import list_cl_devices
    dev = next(d.id for d in list_cl_devices() if "Oclgrind" in d.platform)
    out = subprocess.run([sys.executable, __file__, "--device", dev, "--tiny"], env=env, capture_output=True,
                         text=True)
    print(out.stdout)
    # pyopencl's own source-build probe asks every device for an NVIDIA-only attribute (has_src_build_cache ->
    # nv_compute_capability); OCLGRIND_CHECK_API reports that as a 4-line clGetDeviceInfo block: not ours.
    probe = "Oclgrind - OpenCL runtime error detected\n\tFunction: clGetDeviceInfo\n\tError:    CL_INVALID_VALUE\n" \
            "\tFor argument 'param_name'\n"
    stderr = out.stderr.replace(probe, "")
    print(f"oclgrind stderr: {out.stderr.count(probe)} known pyopencl clGetDeviceInfo probe block(s) dropped")
    bad = [ln for ln in stderr.splitlines() if ln.strip()]
    print("oclgrind stderr:", "\n".join(bad[:60]) if bad else "(empty)")
    return out.returncode or (1 if bad else 0)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cl:1")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--cache", action="store_true")
    ap.add_argument("--oclgrind", action="store_true")
    ap.add_argument("--load-all", action="store_true")
    args = ap.parse_args()
    if args.oclgrind:
        sys.exit(oclgrind())
    if args.bench:
        bench(args.device)
    elif args.load_all:
        load_all_kernels(args.device)
    elif args.cache:
        cache_test(args.device)
    else:
        sys.exit(run_checks(args.device, args.tiny))
