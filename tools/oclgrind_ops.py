"""Run every Backend op with tiny shapes on the Oclgrind simulator (for its memory and race checkers).

Usage:  OCLGRIND_DATA_RACES=1 OCLGRIND_CHECK_API=1 python tools/oclgrind_ops.py [--deep]
(not OCLGRIND_UNINITIALIZED=1: this Oclgrind build aborts kernels under it, "Unsupported instruction: freeze";
see tests/test_oclgrind.py)
Covers (families in this file and tools/oclgrind_conv.py) gemm (all transposes, edge tiles, alpha/beta, beta=0 over an uninitialized C, offsets/lds, batch with
stride_a=0, batch-reduce and its split-K, the bias + ReLU epilogue; every code path of every kernel variant in its
smallest tile config, with --deep every tile config that fits, on aligned and unaligned storage), im2col/col2im
and maxpool (with --deep also built with the sizes as constants, as on GPUs), conv_backward_data (over a
never-written scratch), conv_backward (local-memory and direct paths; with --deep also as constants), the
implicit-GEMM convolution, gemm's row_sums, dense_backward (cl/dense.cl), batchnorm_fold, bias,
activations, losses and sgd, and checks each result against tests/reference.py (reference_conv.py for conv_backward).
Exit status: 0 all ok, 1 a result mismatch, 2 no Oclgrind device.
Oclgrind prints its reports (invalid access, data race, ...) to stderr; tests/test_oclgrind.py scans them.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import clcnn  # noqa: E402
from clcnn.backends.gemm_configs import gemm_geometry  # noqa: E402
import reference as ref  # noqa: E402
from opcheck import representative_configs  # noqa: E402
from oclgrind_check import FAILURES, compare, rnd  # noqa: E402
from oclgrind_conv import (conv_backward_cases, conv_cases, geometry_constant_cases, implicit_cases,  # noqa: E402
                           pool_cases)

DEEP = False   # --deep: every GEMM tile config and the geometry-constant builds (see main)


def run_gemm(dev, rng, name, m, n, k, ta=False, tb=False, alpha=1.0, beta=0.0, pad=0, offs=0, batch=1,
             share_a=False, reduce=False, uninit_c=False, align=False, bias_axis=None, relu=False):
    """One gemm against the reference. align: leading dimensions, offsets and batch strides multiples of 4 (the
    vec kernel's 128-bit loads); bias_axis 0 / 1: a bias per row / column (None: none); relu: the fused ReLU."""
    ra, ca = (k, m) if ta else (m, k)
    rb, cb = (n, k) if tb else (k, n)
    lda, ldb, ldc = ((c + -c % 4 + 4 for c in (ca, cb, n)) if align else (ca + pad, cb + pad, n + pad))
    offs = 4 if align else offs
    sa = 0 if share_a else ra * lda + (4 if align else 1)
    sb, sc = rb * ldb + (8 if align else 2), (0 if reduce else m * ldc + 1)
    a = rnd(rng, offs + max(batch - 1, 0) * sa + ra * lda)
    b = rnd(rng, offs + (batch - 1) * sb + rb * ldb)
    csize = offs + (0 if reduce else batch - 1) * sc + m * ldc
    kw = dict(trans_a=ta, trans_b=tb, alpha=alpha, beta=beta, a_off=offs, b_off=offs, c_off=offs, batch=batch,
              stride_a=sa, stride_b=sb, stride_c=sc, reduce=reduce, relu=relu)
    if pad or align:
        kw.update(lda=lda, ldb=ldb, ldc=ldc)
    if uninit_c:  # never written: Oclgrind flags any use of it (beta == 0 must not read C)
        dc = dev.scratch(f"oclgrind_uninit_c_{name}", csize)
        c = np.zeros(dc.size, np.float32)
    else:
        c = rnd(rng, csize)
        dc = dev.upload(c)
    bias = None if bias_axis is None else rnd(rng, m if bias_axis == 0 else n)
    dev.gemm(dev.upload(a), dev.upload(b), dc, m, n, k, **kw,
             **({} if bias is None else dict(bias=dev.upload(bias), bias_axis=bias_axis)))
    got = dev.download(dc)
    want = ref.gemm(a, b, c, m, n, k, **kw, bias=bias, bias_axis=bias_axis or 0)
    mask = np.zeros(got.size, bool)
    for bi in range(1 if reduce else batch):
        mask[offs + bi * sc + (np.arange(m)[:, None] * ldc + np.arange(n)[None, :]).reshape(-1)] = True
    compare(f"gemm {name} {m}x{n}x{k} {'T' if ta else 'N'}{'T' if tb else 'N'}", got[mask], want[mask], 1e-5)


def run_row_sums(dev, rng, name, m, n, k, ta):
    """gemm with row_sums into a never-written vector at beta 0 (Oclgrind flags a read of it)."""
    a, b = rnd(rng, *((k, m) if ta else (m, k))), rnd(rng, k, n)
    rows, dc = dev.scratch(f"oclgrind_rows_{name}", m), dev.zeros((m, n))
    dev.gemm(dev.upload(a), dev.upload(b), dc, m, n, k, trans_a=ta, row_sums=rows)
    op_a = (a.T if ta else a).astype(np.float64)
    compare(f"gemm {name} row_sums", dev.download(rows)[:m], op_a.sum(axis=1), 1e-5)
    compare(f"gemm {name} beside row_sums", dev.download(dc), op_a @ b, 1e-5)


def run_dense_backward(dev, rng, name, n, i, o):
    """dense_backward (cl/dense.cl where the config allows) into never-written gradients at beta 0 (Oclgrind flags
    a read of them), the input gradient cut by the ReLU mask x <= 0."""
    dy, x, w = rnd(rng, n, o), np.maximum(rnd(rng, n, i), 0), rnd(rng, o, i)
    gw, gb, dx = (dev.scratch(f"oclgrind_dense_{t}_{name}", size)
                  for t, size in (("gw", o * i), ("gb", o), ("dx", n * i)))
    dev.dense_backward(dev.upload(dy), dev.upload(x), dev.upload(w), gw, gb, dx, n, i, o, relu_mask=True)
    d64 = dy.astype(np.float64)
    compare(f"dense_backward {name} grad_weight", dev.download(gw)[:o * i], (d64.T @ x).reshape(-1), 1e-5)
    compare(f"dense_backward {name} grad_bias", dev.download(gb)[:o], d64.sum(0), 1e-5)
    compare(f"dense_backward {name} dx", dev.download(dx)[:n * i], np.where(x > 0, d64 @ w, 0).reshape(-1), 1e-5)


def fold_cases(dev, rng):
    """batchnorm_fold into never-written outputs, the channel count not dividing the work-group."""
    import reference_conv as refc
    m, inner = 5, 2 * 3 * 3
    w, b, g, beta, mean = rnd(rng, m, inner), rnd(rng, m), rnd(rng, m), rnd(rng, m), rnd(rng, m)
    var = np.abs(rnd(rng, m)) + 0.1
    fw, fb = dev.scratch("oclgrind_fold_w", m * inner), dev.scratch("oclgrind_fold_b", m)
    dev.batchnorm_fold(*(dev.upload(a.astype(np.float32)) for a in (w, b, g, beta, mean, var)), fw, fb, m, inner,
                       1e-5)
    want_w, want_b = refc.batchnorm_fold(w, b, g, beta, mean, var, 1e-5)
    compare("batchnorm_fold weight", dev.download(fw)[:m * inner], want_w.reshape(-1), 1e-5)
    compare("batchnorm_fold bias", dev.download(fb)[:m], want_b, 1e-5)


def gemm_cases(dev, rng):
    for ta in (False, True):
        for tb in (False, True):
            run_gemm(dev, rng, "edge", 65, 67, 17, ta, tb)     # crosses 64-wide tiles and a 16-deep k-slab
            run_gemm(dev, rng, "tiny", 1, 1, 1, ta, tb)
            run_gemm(dev, rng, "oddk", 5, 3, 33, ta, tb, alpha=0.5, beta=1.5)
    run_gemm(dev, rng, "beta0-uninit", 7, 9, 5, beta=0.0, uninit_c=True)
    run_gemm(dev, rng, "beta0-uninit", 7, 9, 5, True, True, beta=0.0, uninit_c=True)
    run_gemm(dev, rng, "ld+off", 6, 5, 7, True, False, beta=0.5, pad=3, offs=4)
    run_gemm(dev, rng, "batch", 5, 6, 7, False, True, batch=3, pad=1, offs=2, alpha=2.0, beta=0.5)
    run_gemm(dev, rng, "batch-stride_a0", 5, 6, 7, True, False, batch=3, share_a=True)
    run_gemm(dev, rng, "reduce", 4, 9, 6, False, True, batch=3, reduce=True)
    run_gemm(dev, rng, "reduce-beta1", 4, 9, 6, True, False, batch=3, reduce=True, beta=1.0, offs=3)
    run_gemm(dev, rng, "epilogue-bias-rows", 7, 9, 5, beta=0.0, uninit_c=True, bias_axis=0, relu=True)
    run_gemm(dev, rng, "epilogue-split-k", 4, 9, 6, False, True, batch=7, reduce=True, bias_axis=1, relu=True)
    transposes = ((False, False), (False, True), (True, False), (True, True))
    configs = dev.gemm_configs if DEEP else representative_configs(dev.gemm_configs)
    for i, cfg in enumerate(configs):   # every code path (or config) of every variant, on edges crossing its tile
        dev.gemm_override = cfg
        tag = "-".join(str(v) for v in cfg.values())
        tm, tn, _, _ = gemm_geometry(cfg)
        (ta, tb), (ua, ub) = transposes[i % 4], transposes[(i + 2) % 4]
        run_gemm(dev, rng, f"{tag} aligned", tm + 3, tn + 5, 21, ta, tb, beta=0.5, align=True, bias_axis=i % 2,
                 relu=True)
        run_gemm(dev, rng, f"{tag} unaligned", tm + 3, tn + 5, 19, ua, ub, alpha=0.5, pad=1, offs=3,
                 bias_axis=1 - i % 2)
        run_gemm(dev, rng, f"{tag} reduce", 5, 7, 19, ua, ub, batch=5, reduce=True, beta=0.5, relu=True)
        run_row_sums(dev, rng, tag, tm + 3, tn + 5, 21, ta)
        if cfg["variant"] == "vec":
            run_dense_backward(dev, rng, tag, tm + 3, tn + 5, tm + 1)
    dev.gemm_override = None
    run_dense_backward(dev, rng, "fc3", 9, 84, 10)


def bias_cases(dev, rng):
    for (n, c, inner) in [(2, 3, 5), (3, 4, 1), (2, 2, 300), (4, 1, 600)]:   # last: bias_grad in 2 passes
        y0, b = rnd(rng, n, c, inner), rnd(rng, c)
        y = dev.upload(y0)
        dev.bias_add(y, dev.upload(b), n, c, inner)
        compare(f"bias_add {n}x{c}x{inner}", dev.download(y), ref.bias_add(y0, b, n, c, inner), 1e-5)
        for beta in (0.0, 0.5):
            db0 = rnd(rng, c)
            db = dev.upload(db0)
            dev.bias_grad(dev.upload(y0), db, n, c, inner, beta=beta)
            compare(f"bias_grad {n}x{c}x{inner} beta={beta}", dev.download(db),
                    ref.bias_grad(y0, db0, n, c, inner, beta), 1e-4)


def activation_cases(dev, rng):
    size = 300  # more than one 256-wide work-group, not a multiple of it
    x = rnd(rng, size) * 10
    x[:4] = [1000.0, -1000.0, 0.0, 88.5]
    dy = rnd(rng, size)
    for fwd, bwd, rfwd, rbwd in [("relu_forward", "relu_backward", ref.relu_forward, ref.relu_backward),
                                 ("sigmoid_forward", "sigmoid_backward", ref.sigmoid_forward, ref.sigmoid_backward)]:
        y = dev.zeros((size,))
        getattr(dev, fwd)(dev.upload(x), y, size)
        yv = dev.download(y)
        compare(fwd, yv, rfwd(x), 1e-5)
        dx = dev.zeros((size,))
        getattr(dev, bwd)(y, dev.upload(dy), dx, size)
        compare(bwd, dev.download(dx), rbwd(yv, dy), 1e-4)
        xi = dev.upload(x)  # in place: y is x, dx is dy
        getattr(dev, fwd)(xi, xi, size)
        ddy = dev.upload(dy)
        getattr(dev, bwd)(xi, ddy, ddy, size)
        compare(f"{bwd} in place", dev.download(ddy), rbwd(dev.download(xi), dy), 1e-4)


def loss_cases(dev, rng):
    for (n, c, acc) in [(3, 5, False), (2, 300, True), (1, 1, False)]:
        z, lab = rnd(rng, n, c) * 20, rng.integers(0, c, n).astype(np.int32)
        probs, loss, dlab = dev.zeros((n, c)), dev.upload(np.array([0.75], np.float32)), dev.upload(lab)
        dl = dev.zeros((n, c))
        dev.softmax_xent_forward(dev.upload(z), dlab, probs, loss, n, c, accumulate=acc, dlogits=dl)
        wp, wl = ref.softmax_xent_forward(z, lab, n, c, 0.75, acc)
        pv = dev.download(probs)
        compare(f"softmax_xent_forward {n}x{c} acc={acc}", pv, wp, 1e-5)
        compare(f"softmax_xent loss {n}x{c} acc={acc}", dev.download(loss), [wl], 1e-5)
        compare(f"softmax_xent gradient {n}x{c}", dev.download(dl), ref.softmax_xent_backward(pv, lab, n, c), 1e-4)
    for (n, acc) in [(300, False), (3, True)]:
        z, lab = rnd(rng, n, 1) * 20, rng.integers(0, 2, n).astype(np.int32)
        probs, loss, dlab = dev.zeros((n, 1)), dev.upload(np.array([0.75], np.float32)), dev.upload(lab)
        dl = dev.zeros((n, 1))
        dev.sigmoid_bce_forward(dev.upload(z), dlab, probs, loss, n, accumulate=acc, dlogits=dl)
        wp, wl = ref.sigmoid_bce_forward(z, lab, n, 0.75, acc)
        pv = dev.download(probs)
        compare(f"sigmoid_bce_forward n={n} acc={acc}", pv, wp, 1e-5)
        compare(f"sigmoid_bce loss n={n} acc={acc}", dev.download(loss), [wl], 1e-5)
        compare(f"sigmoid_bce gradient n={n}", dev.download(dl), ref.sigmoid_bce_backward(pv, lab, n), 1e-4)


def sgd_and_memory_cases(dev, rng):
    size = 300
    for momentum, wd in [(0.0, 1e-3), (0.9, 1e-3)]:
        p, g = rnd(rng, size), rnd(rng, size)
        dp, dv = dev.upload(p), (dev.zeros((size,)) if momentum else None)
        dg = dev.upload(g)
        wp, wv = p, np.zeros(size)
        hyper = dev.upload(np.array([0.1, momentum, wd], np.float32))
        for _ in range(2):
            dev.sgd_update(dp, dg, dv, hyper, size)
            wp, wv = ref.sgd_update(wp, g, wv, 0.1, momentum, wd)
        compare(f"sgd_update momentum={momentum}", dev.download(dp), wp, 1e-4)
    a = dev.zeros((3, 7))
    dev.fill(a, 1.5)
    b = dev.zeros((21,))
    dev.copy(a, b)
    compare("fill+copy", dev.download(b), np.full(21, 1.5), 0.0)
    h = rnd(rng, 3, 7)
    dev.upload_into(a, h)
    compare("upload_into", dev.download(a), h, 0.0)


def main() -> int:
    """--deep: every GEMM tile config, and im2col/col2im/maxpool also built with their sizes as constants (the
    GPU path); otherwise one config per GEMM code path and the sizes as arguments (what a CPU device runs)."""
    global DEEP
    DEEP = "--deep" in sys.argv[1:]
    devs = [d for d in clcnn.list_devices() if "oclgrind" in d.platform.lower()]
    if not devs:
        print("no Oclgrind OpenCL device found", file=sys.stderr)
        return 2
    dev = clcnn.get_backend(devs[0].id)
    print(f"device: {dev.info}", flush=True)
    rng = np.random.default_rng(0)
    families = [gemm_cases, conv_cases, pool_cases, conv_backward_cases, implicit_cases, fold_cases, bias_cases,
                activation_cases, loss_cases, sgd_and_memory_cases]
    for family in families + ([geometry_constant_cases] if DEEP else []):
        t0 = time.perf_counter()
        try:
            family(dev, rng)
        except Exception as exc:  # keep going: one broken op must not hide the others' reports
            FAILURES.append(f"{family.__name__}: {type(exc).__name__}: {exc}")
            print(f"FAIL {family.__name__} raised {type(exc).__name__}: {str(exc)[:2000]}", flush=True)
        dev.synchronize()
        print(f"-- {family.__name__} {time.perf_counter() - t0:.1f}s", flush=True)
    if FAILURES:
        print("FAILED:\n  " + "\n  ".join(FAILURES), flush=True)
        return 1
    print("ALL OK", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
