"""Scratch check of the Numba backend: every op against a float64 NumPy reference, plus compile/run timings.

    .venv/bin/python tools/check_numba.py          # correctness (prints first-call times = compile + run)
    .venv/bin/python tools/check_numba.py --bench=32  # also LeNet-5 op timings, batch 256, conv chunks of 32
    .venv/bin/python tools/check_numba.py --bench --torch  # and PyTorch's LeNet-5 train step beside it
"""
import sys
import time

from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout
T0 = time.perf_counter()
from clcnn.backends import NUMBA_INFO  # noqa: E402
from clcnn.backends.numba import NumbaBackend  # noqa: E402

IMPORT_S = time.perf_counter() - T0
rng = np.random.default_rng(1)
be = NumbaBackend(NUMBA_INFO)
FAILS = []
FIRST = {}


def rel(got, ref):
    ref = np.asarray(ref, np.float64)
    return float(np.max(np.abs(np.asarray(got, np.float64) - ref)) / max(np.max(np.abs(ref)), 1e-30))


def check(name, got, ref, tol=1e-5):
    e = rel(got, ref)
    ok = e <= tol and np.all(np.isfinite(got))
    if not ok:
        FAILS.append(name)
    print(f"{'ok ' if ok else 'BAD'} {name:48s} rel err {e:.2e}")


def timed(name, fn, *a, **kw):
    t = time.perf_counter()
    fn(*a, **kw)
    FIRST.setdefault(name, time.perf_counter() - t)


def f32(*shape):
    return rng.standard_normal(shape).astype(np.float32)


# ---- gemm ---------------------------------------------------------------------------------------------------
def gather(buf, off, rows, cols, ld):
    return buf.astype(np.float64)[off + np.arange(rows)[:, None] * ld + np.arange(cols)[None, :]]


def gemm_case(ta, tb, batch, reduce, alpha, beta, pad, layout="", mnk=(37, 29, 53)):
    """layout: "" (separate matrices), "A" / "B" (that operand shared, batch stride 0), "A-side" (shared A and
    the C_b side by side in one (m, batch*n) matrix, as conv backward-data writes its columns)."""
    m, n, k = mnk
    ra, ca = (k, m) if ta else (m, k)
    rb, cb = (n, k) if tb else (k, n)
    lda, ldb, ldc = ca + pad, cb + pad, n + pad
    offa, offb, offc = (5, 7, 11) if pad else (0, 0, 0)
    sa, sb, sc = ra * lda + 3 * pad, rb * ldb + pad, m * ldc + 2 * pad
    if layout.startswith("A"):
        sa = 0
    if layout == "B":
        sb = 0
    if layout == "A-side":
        ldc, sc = batch * n + pad, n
    a = f32(offa + batch * sa + ra * lda)
    b = f32(offb + batch * sb + rb * ldb)
    c = f32(offc + batch * sc + m * ldc)
    if beta == 0:
        c[:] = np.nan
    c0 = c.copy()
    kw = dict(trans_a=ta, trans_b=tb, alpha=alpha, beta=beta, a_off=offa, b_off=offb, c_off=offc, batch=batch,
              stride_a=sa, stride_b=sb, stride_c=sc, reduce=reduce)
    if pad or layout:
        kw.update(lda=lda, ldb=ldb, ldc=ldc)
    be.gemm(a, b, c, m, n, k, **kw)
    ref = c0.astype(np.float64)
    prods = []
    for i in range(batch):
        A = gather(a, offa + i * sa, ra, ca, lda)
        B = gather(b, offb + i * sb, rb, cb, ldb)
        prods.append((A.T if ta else A) @ (B.T if tb else B))
    outs = [sum(prods)] if reduce else prods
    idx = []
    for i, p in enumerate(outs):
        ix = offc + i * sc + np.arange(m)[:, None] * ldc + np.arange(n)[None, :]
        old = np.nan_to_num(ref[ix]) if beta == 0 else ref[ix]
        ref[ix] = alpha * p + beta * old
        idx.append(ix.ravel())
    idx = np.concatenate(idx)
    untouched = np.setdiff1d(np.arange(c.size), idx)
    same = np.array_equal(c[untouched], c0[untouched], equal_nan=True)
    check(f"gemm {mnk} ta={ta:d} tb={tb:d} b={batch} red={reduce:d} a={alpha} b={beta} pad={pad} {layout}"
          + ("" if same else " (WROTE OUTSIDE C)"), c[idx] if same else c, ref[idx] if same else ref)


def check_gemm():  # NumPy BLAS: nothing to compile
    for ta in (False, True):
        for tb in (False, True):
            gemm_case(ta, tb, 1, False, 1.0, 0.0, 0)
            gemm_case(ta, tb, 3, False, 1.5, 0.5, 3)
            gemm_case(ta, tb, 3, True, 0.7, 0.0, 3)
            gemm_case(ta, tb, 3, True, 1.0, 1.0, 2)
            for layout in ("A", "B", "A-side"):
                gemm_case(ta, tb, 3, False, 1.0, 0.0, 2, layout)
                gemm_case(ta, tb, 3, False, 0.5, 2.0, 0, layout)
    gemm_case(False, False, 3, False, 1.0, 0.0, 1)
    for ta, tb in ((False, False), (True, True)):  # sizes past gemm's fold threshold (the other code paths)
        for layout in ("A", "B", "A-side", ""):
            gemm_case(ta, tb, 3, False, 1.5, 0.5, 1, layout, (300, 270, 7))
        gemm_case(ta, tb, 3, True, 1.5, 0.5, 1, "", (7, 9, 300))
    try:  # a view reaching past the end must raise
        be.gemm(f32(10), f32(10), f32(10), 3, 3, 4)
        FAILS.append("gemm bounds")
        print("BAD gemm out-of-bounds view not detected")
    except ValueError as e:
        print(f"ok  gemm out-of-bounds view raises: {e}")


# ---- im2col / col2im ----------------------------------------------------------------------------------------
def ref_im2col(x, n0, nb, kh, kw, s, p):
    N, C, H, W = x.shape
    Ho, Wo = (H + 2 * p - kh) // s + 1, (W + 2 * p - kw) // s + 1
    xp = np.pad(x[n0:n0 + nb].astype(np.float64), ((0, 0), (0, 0), (p, p), (p, p)))
    cols = np.empty((C, kh, kw, nb, Ho, Wo))
    for i in range(kh):
        for j in range(kw):
            cols[:, i, j] = xp[:, :, i:i + s * Ho:s, j:j + s * Wo:s].transpose(1, 0, 2, 3)
    return cols.reshape(C * kh * kw, nb * Ho * Wo)


def check_im2col(N, C, H, W, kh, kw, s, p, n0, nb):
    Ho, Wo = (H + 2 * p - kh) // s + 1, (W + 2 * p - kw) // s + 1
    x = f32(N, C, H, W)
    cols = np.full(C * kh * kw * nb * Ho * Wo + 17, np.nan, np.float32)  # larger than needed
    timed("im2col", be.im2col, x, cols, n0, nb, C, H, W, kh, kw, s, p)
    tag = f"N={N} C={C} {H}x{W} k={kh}x{kw} s={s} p={p} n0={n0} nb={nb}"
    ref = ref_im2col(x, n0, nb, kh, kw, s, p)
    check(f"im2col {tag}", cols[:ref.size], ref.ravel(), 0)
    c = f32(ref.size)
    dx = np.full_like(x, np.nan)
    timed("col2im", be.col2im, c, dx, n0, nb, C, H, W, kh, kw, s, p)
    lhs = float(ref.ravel() @ c.astype(np.float64))       # <im2col(x), c>
    rhs = float(x[n0:n0 + nb].astype(np.float64).ravel() @ dx[n0:n0 + nb].astype(np.float64).ravel())
    ok = abs(lhs - rhs) <= 1e-5 * max(abs(lhs), 1.0) and np.isnan(dx[:n0]).all() and np.isnan(dx[n0 + nb:]).all()
    print(f"{'ok ' if ok else 'BAD'} col2im adjoint {tag:40s} <im2col x,c>={lhs:.6f} <x,col2im c>={rhs:.6f}")
    if not ok:
        FAILS.append("col2im " + tag)
    # explicit scatter reference for col2im
    refx = np.zeros((nb, C, H + 2 * p, W + 2 * p))
    c6 = c.astype(np.float64).reshape(C, kh, kw, nb, Ho, Wo)
    for i in range(kh):
        for j in range(kw):
            refx[:, :, i:i + s * Ho:s, j:j + s * Wo:s] += c6[:, i, j].transpose(1, 0, 2, 3)
    check(f"col2im {tag}", dx[n0:n0 + nb], refx[:, :, p:p + H, p:p + W])


# ---- pooling ------------------------------------------------------------------------------------------------
def check_pool(N, C, H, W, k, s, ties=False):
    Ho, Wo = (H - k) // s + 1, (W - k) // s + 1
    x = f32(N, C, H, W)
    if ties:
        x = np.round(x).astype(np.float32)
    y, am = np.empty((N, C, Ho, Wo), np.float32), np.empty((N, C, Ho, Wo), np.int32)
    timed("maxpool_forward", be.maxpool_forward, x, y, am, N, C, H, W, k, s)
    ry, ra = np.empty_like(y, np.float64), np.empty_like(am)
    for oh in range(Ho):
        for ow in range(Wo):
            win = x[:, :, oh * s:oh * s + k, ow * s:ow * s + k].reshape(N, C, k * k)
            a = win.argmax(-1)  # first max wins
            ry[:, :, oh, ow] = win.max(-1)
            ra[:, :, oh, ow] = (oh * s + a // k) * W + ow * s + a % k
    tag = f"N={N} C={C} {H}x{W} k={k} s={s}{' ties' if ties else ''}"
    check(f"maxpool_forward {tag}", y, ry, 0)
    ok = np.array_equal(am, ra)
    print(f"{'ok ' if ok else 'BAD'} maxpool argmax {tag}")
    if not ok:
        FAILS.append("argmax " + tag)
    dy = f32(N, C, Ho, Wo)
    dx = np.full_like(x, np.nan)
    timed("maxpool_backward", be.maxpool_backward, dy, am, dx, N, C, H, W, k, s)
    rdx = np.zeros((N * C, H * W))
    np.add.at(rdx, (np.arange(N * C)[:, None], ra.reshape(N * C, -1)), dy.reshape(N * C, -1).astype(np.float64))
    check(f"maxpool_backward {tag}", dx, rdx.reshape(x.shape))


# ---- bias, activations, losses, sgd -------------------------------------------------------------------------
def check_misc():
    N, C, inner = 7, 5, 13
    y, b = f32(N, C, inner), f32(C)
    y0 = y.astype(np.float64)
    timed("bias_add", be.bias_add, y, b, N, C, inner)
    check("bias_add", y, y0 + b[None, :, None])
    dy, db = f32(N, C, inner), f32(C)
    db0 = db.astype(np.float64)
    timed("bias_grad", be.bias_grad, dy, db, N, C, inner, 0.5)
    check("bias_grad beta=0.5", db, 0.5 * db0 + dy.astype(np.float64).sum((0, 2)))
    db[:] = np.nan
    be.bias_grad(dy, db, N, C, 1 * inner)
    check("bias_grad beta=0 (db NaN before)", db, dy.astype(np.float64).sum((0, 2)))
    be.bias_grad(dy, db, N * C * inner, 1, 1)  # odd inner=1 path, channel count 1
    x = (f32(1001) * 30).astype(np.float32)
    x64 = x.astype(np.float64)
    out = np.empty_like(x)
    timed("relu_forward", be.relu_forward, x, out, x.size)
    check("relu_forward", out, np.maximum(x64, 0), 0)
    g = f32(1001)
    dx = np.empty_like(x)
    timed("relu_backward", be.relu_backward, out, g, dx, x.size)
    check("relu_backward", dx, np.where(out > 0, g, 0), 0)
    timed("sigmoid_forward", be.sigmoid_forward, x, out, x.size)
    check("sigmoid_forward |x| up to ~100", out, 1 / (1 + np.exp(-x64)))
    timed("sigmoid_backward", be.sigmoid_backward, out, g, dx, x.size)
    o64 = out.astype(np.float64)
    check("sigmoid_backward", dx, g * o64 * (1 - o64))
    z = x.copy()
    be.relu_forward(z, z, z.size)
    check("relu_forward in place", z, np.maximum(x64, 0), 0)
    # softmax cross-entropy
    N, C = 33, 10
    logits = (f32(N, C) * 5).astype(np.float32)
    logits[0, 3] = 80.0  # large logits must not overflow
    lab = rng.integers(0, C, N).astype(np.int32)
    probs, loss = np.empty_like(logits), np.array([np.nan], np.float32)
    timed("softmax_xent_forward", be.softmax_xent_forward, logits, lab, probs, loss, N, C)
    l64 = logits.astype(np.float64)
    lse = l64.max(1) + np.log(np.exp(l64 - l64.max(1, keepdims=True)).sum(1))
    rp = np.exp(l64 - lse[:, None])
    rl = np.mean(lse - l64[np.arange(N), lab])
    check("softmax_xent_forward probs", probs, rp)
    check("softmax_xent_forward loss", loss, [rl])
    be.softmax_xent_forward(logits, lab, probs, loss, N, C, accumulate=True)
    check("softmax_xent_forward accumulate", loss, [2 * rl])
    dl = np.empty_like(logits)
    timed("softmax_xent_backward", be.softmax_xent_backward, probs, lab, dl, N, C)
    oh = np.eye(C)[lab]
    check("softmax_xent_backward", dl, (rp - oh) / N)
    # sigmoid BCE
    zl = (f32(N, 1) * 10).astype(np.float32)
    zl[0, 0], zl[1, 0] = 90.0, -90.0
    yl = rng.integers(0, 2, N).astype(np.int32)
    pb, lb = np.empty_like(zl), np.zeros(1, np.float32)
    timed("sigmoid_bce_forward", be.sigmoid_bce_forward, zl, yl, pb, lb, N)
    z64 = zl[:, 0].astype(np.float64)
    check("sigmoid_bce_forward probs", pb[:, 0], 1 / (1 + np.exp(-z64)))
    rb = np.mean(np.logaddexp(0, z64) - yl * z64)
    check("sigmoid_bce_forward loss", lb, [rb])
    be.sigmoid_bce_forward(zl, yl, pb, lb, N, accumulate=True)
    check("sigmoid_bce_forward accumulate", lb, [2 * rb])
    dz = np.empty_like(zl)
    timed("sigmoid_bce_backward", be.sigmoid_bce_backward, pb, yl, dz, N)
    check("sigmoid_bce_backward", dz[:, 0], (1 / (1 + np.exp(-z64)) - yl) / N)
    # sgd, 3 steps against float64 PyTorch rule
    for mu, wd in ((0.9, 1e-2), (0.0, 5e-4), (0.0, 0.0)):
        p, v = f32(517), np.zeros(517, np.float32)
        p64, v64 = p.astype(np.float64), np.zeros(517)
        for _ in range(3):
            gr = f32(517)
            timed("sgd_update", be.sgd_update, p, gr, v if mu else None, p.size, 0.1, mu, wd)
            g64 = gr + wd * p64
            if mu:
                v64 = mu * v64 + g64
                g64 = v64
            p64 = p64 - 0.1 * g64
        check(f"sgd_update mu={mu} wd={wd}", p, p64)


# ---- LeNet-5 sized benchmark (batch 256) --------------------------------------------------------------------
def conv_steps(tag, x, nb, c, h, m, k, p, chunk):
    """Forward+backward steps of conv(k, pad p) + bias + relu through the backend: im2col and batched gemm over
    chunks of ``chunk`` images (cols then fit in cache)."""
    ho = h + 2 * p - k + 1
    L, ckk = ho * ho, c * k * k
    w, b, dw, db = f32(m, ckk), f32(m), f32(m, ckk), f32(m)
    cols, dcols = np.empty(ckk * chunk * L, np.float32), np.empty(ckk * chunk * L, np.float32)
    y, dx = np.empty((nb, m, ho, ho), np.float32), np.empty_like(x)

    def each(fn):
        return lambda: [fn(n0, min(chunk, nb - n0)) for n0 in range(0, nb, chunk)]
    return y, [  # im2col is listed once but a chunked layer runs it twice (forward and weight gradient)
        (f"{tag} im2col", each(lambda n0, q: be.im2col(x, cols, n0, q, c, h, h, k, k, 1, p))),
        (f"{tag} gemm fwd", each(lambda n0, q: be.gemm(w, cols, y, m, L, ckk, ldb=q * L, batch=q, stride_b=L,
                                                       stride_c=m * L, c_off=n0 * m * L))),
        (f"{tag} bias_add", lambda: be.bias_add(y, b, nb, m, L)),
        (f"{tag} relu_forward", lambda: be.relu_forward(y, y, y.size)),
        (f"{tag} relu_backward", lambda: be.relu_backward(y, y, y, y.size)),
        (f"{tag} bias_grad", lambda: be.bias_grad(y, db, nb, m, L)),
        (f"{tag} gemm dW", each(lambda n0, q: be.gemm(
            y, cols, dw, m, ckk, L, trans_b=True, ldb=q * L, batch=q, a_off=n0 * m * L, stride_a=m * L,
            stride_b=L, reduce=True, beta=1.0 if n0 else 0.0))),
        (f"{tag} gemm dcols", each(lambda n0, q: be.gemm(w, y, dcols, ckk, L, m, trans_a=True, ldc=q * L, batch=q,
                                                         b_off=n0 * m * L, stride_b=m * L, stride_c=L))),
        (f"{tag} col2im", each(lambda n0, q: be.col2im(dcols, dx, n0, q, c, h, h, k, k, 1, p)))]


def pool_steps(tag, x, nb, c, h):
    y, am = np.empty((nb, c, h // 2, h // 2), np.float32), np.empty((nb, c, h // 2, h // 2), np.int32)
    return y, [(f"{tag} maxpool_forward", lambda: be.maxpool_forward(x, y, am, nb, c, h, h, 2, 2)),
               (f"{tag} maxpool_backward", lambda: be.maxpool_backward(y, am, x, nb, c, h, h, 2, 2))]


def dense_steps(tag, x, nb, i, o):
    w, b, dw, db, wp = f32(o, i), f32(o), f32(o, i), f32(o), f32(o, i)  # wp: updated, not used (stays finite)
    y, dx = np.empty((nb, o), np.float32), np.empty((nb, i), np.float32)
    return y, [(f"{tag} gemm fwd", lambda: be.gemm(x, w, y, nb, o, i, trans_b=True)),
               (f"{tag} bias_add", lambda: be.bias_add(y, b, nb, o, 1)),
               (f"{tag} gemm dW", lambda: be.gemm(y, x, dw, o, i, nb, trans_a=True)),
               (f"{tag} gemm dx", lambda: be.gemm(y, w, dx, nb, i, o)),
               (f"{tag} bias_grad", lambda: be.bias_grad(y, db, nb, o, 1)),
               (f"{tag} sgd_update", lambda: be.sgd_update(wp, dw, dw, w.size, 1e-9, 0.0, 5e-4))]


def bench(chunk, reps=20):
    nb = 256
    y, s1 = conv_steps("conv1", f32(nb, 1, 28, 28), nb, 1, 28, 6, 5, 2, chunk)
    y, s2 = pool_steps("pool1", y, nb, 6, 28)
    y, s3 = conv_steps("conv2", y, nb, 6, 14, 16, 5, 0, chunk)
    y, s4 = pool_steps("pool2", y, nb, 16, 10)
    y, s5 = dense_steps("fc1", y.reshape(nb, 400), nb, 400, 120)
    y, s6 = dense_steps("fc2", y, nb, 120, 84)
    y, s7 = dense_steps("fc3", y, nb, 84, 10)
    lab, probs, loss = rng.integers(0, 10, nb).astype(np.int32), np.empty((nb, 10), np.float32), np.zeros(1, np.float32)
    s8 = [("loss softmax_xent_forward", lambda: be.softmax_xent_forward(y, lab, probs, loss, nb, 10)),
          ("loss softmax_xent_backward", lambda: be.softmax_xent_backward(probs, lab, y, nb, 10))]
    steps = s1 + s2 + s3 + s4 + s5 + s6 + s7 + s8
    best = {name: 1e9 for name, _ in steps}
    whole = 1e9
    for _ in range(reps):
        t_all = time.perf_counter()
        for name, fn in steps:
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
        whole = min(whole, time.perf_counter() - t_all)
    for name, sec in sorted(best.items(), key=lambda kv: -kv[1])[:16]:
        print(f"  {name:30s} {sec * 1e3:8.3f} ms")
    print(f"  LeNet-5 op sequence (conv chunk {chunk}): sum of per-op minima {sum(best.values()) * 1e3:.2f} ms, "
          f"best whole step {whole * 1e3:.2f} ms per batch of {nb} -> {nb / whole:.0f} img/s")


def bench_torch(reps=20):
    """PyTorch CPU LeNet-5 train step (fwd + bwd + SGD) at batch 256, for comparison."""
    import torch
    from torch import nn
    net = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                        nn.Linear(84, 10))
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(256, 1, 28, 28), torch.randint(0, 10, (256,))
    best = 1e9
    for _ in range(reps):
        t0 = time.perf_counter()
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        best = min(best, time.perf_counter() - t0)
    print(f"  PyTorch {torch.__version__} ({torch.get_num_threads()} threads) LeNet-5 train step: {best * 1e3:.2f} ms "
          f"-> {256 / best:.0f} img/s")


if __name__ == "__main__":
    check_gemm()
    for args in [(3, 2, 7, 9, 3, 3, 2, 1, 1, 2), (2, 3, 5, 6, 5, 5, 1, 2, 0, 2), (4, 1, 11, 8, 2, 3, 3, 0, 3, 1),
                 (2, 2, 4, 4, 5, 5, 1, 2, 0, 2), (2, 2, 3, 3, 3, 3, 4, 1, 0, 2)]:
        check_im2col(*args)
    check_pool(3, 2, 9, 11, 3, 2)
    check_pool(3, 2, 8, 10, 2, 2)
    check_pool(2, 3, 7, 7, 3, 2, ties=True)
    check_misc()
    be.self_test()
    print(f"\nimport of clcnn.backends.numba: {IMPORT_S:.2f} s")
    print("first call per Numba op (compile or cache load + run): " +
          ", ".join(f"{k} {v:.2f}s" for k, v in FIRST.items()) + f"; sum {sum(FIRST.values()):.2f} s")
    for arg in sys.argv[1:]:
        if arg.startswith("--bench"):  # --bench or --bench=CHUNK (images per im2col/gemm chunk)
            bench(int(arg.partition("=")[2] or 256))
    if "--torch" in sys.argv:
        bench_torch()
    print("FAILED: " + ", ".join(FAILS) if FAILS else "ALL OK")
    sys.exit(1 if FAILS else 0)
