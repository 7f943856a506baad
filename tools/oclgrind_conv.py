"""tools/oclgrind_ops.py's convolution and pooling families: im2col/col2im, conv_backward_data, maxpool,
conv_backward (local-memory and direct paths), the implicit-GEMM convolution, and (--deep) the same built with the
sizes as constants. Each checks its results against tests/reference.py or tests/reference_conv.py."""
from __future__ import annotations

import numpy as np

import reference as ref  # tests/ is on sys.path (set by tools/oclgrind_ops.py)
import reference_conv as rconv
from oclgrind_check import compare, rnd


def conv_cases(dev, rng):
    for (n, c, h, w, kh, kw, s, p, n0, nb) in [(2, 2, 5, 6, 3, 3, 1, 1, 1, 1), (2, 2, 7, 5, 3, 2, 2, 2, 0, 2),
                                               (1, 1, 4, 4, 1, 1, 2, 0, 0, 1)]:
        x = rnd(rng, n, c, h, w)
        ho, wo = ref.out_size(h, kh, s, p), ref.out_size(w, kw, s, p)
        rows, cols_n = c * kh * kw, nb * ho * wo
        cols = dev.upload(np.zeros(rows * cols_n + 5, np.float32))
        tag = f"{c}x{h}x{w} k{kh}x{kw} s{s} p{p} n0={n0}"
        dev.im2col(dev.upload(x), cols, n0, nb, c, h, w, kh, kw, s, p)
        want = ref.im2col(x, n0, nb, c, h, w, kh, kw, s, p)
        compare(f"im2col {tag}", dev.download(cols)[:rows * cols_n].reshape(rows, cols_n), want, 0.0)
        cm, x0 = rnd(rng, rows * cols_n), rnd(rng, n, c, h, w)
        dx = dev.upload(x0)
        dev.col2im(dev.upload(cm), dx, n0, nb, c, h, w, kh, kw, s, p)
        compare(f"col2im {tag}", dev.download(dx), ref.col2im(cm, x0, n0, nb, c, h, w, kh, kw, s, p), 1e-4)
    for (n, c, h, w, m, k, s, p, n0, nb) in [(3, 2, 6, 5, 3, 3, 2, 1, 1, 2), (2, 2, 6, 6, 3, 5, 1, 2, 0, 2)]:
        ho, wo = ref.out_size(h, k, s, p), ref.out_size(w, k, s, p)
        wt, dy, x0 = rnd(rng, m, c * k * k), rnd(rng, n, m, ho * wo), rnd(rng, n, c, h, w)
        dx, dcols = dev.upload(x0), dev.scratch(f"oclgrind_dcols_{k}", c * k * k * nb * ho * wo)   # never written
        dev.conv_backward_data(dev.upload(wt), dev.upload(dy), dx, dcols, n0, nb, m, c, h, w, k, k, s, p)
        compare(f"conv_backward_data {c}x{h}x{w} m{m} k{k} s{s} p{p} n0={n0}", dev.download(dx),
                ref.conv_backward_data(wt, dy, x0, n0, nb, m, c, h, w, k, k, s, p), 1e-4)


def pool_cases(dev, rng):
    for (n, c, h, w, k, s, ties) in [(1, 2, 5, 7, 2, 2, False), (2, 1, 7, 7, 3, 2, True), (1, 1, 4, 4, 2, 1, True),
                                     (2, 2, 4, 6, 2, 2, True)]:   # last: windows tile the input (scatter)
        x = rng.integers(0, 3, (n, c, h, w)).astype(np.float32) if ties else rnd(rng, n, c, h, w)
        ho, wo = (h - k) // s + 1, (w - k) // s + 1
        y, arg = dev.zeros((n, c, ho, wo)), dev.zeros((n, c, ho, wo), np.int32)
        dev.maxpool_forward(dev.upload(x), y, arg, n, c, h, w, k, s)
        wy, warg = ref.maxpool_forward(x, n, c, h, w, k, s)
        tag = f"{h}x{w} k{k} s{s}{' ties' if ties else ''}"
        compare(f"maxpool_forward {tag}", dev.download(y), wy, 0.0)
        compare(f"maxpool_forward argmax {tag}", dev.download(arg), warg, 0.0)
        dy, dx = rnd(rng, n, c, ho, wo), dev.upload(rnd(rng, n, c, h, w))
        dev.maxpool_backward(dev.upload(dy), dev.upload(warg), dx, n, c, h, w, k, s)
        compare(f"maxpool_backward {tag}", dev.download(dx), ref.maxpool_backward(dy, warg, n, c, h, w, k, s), 1e-4)
        ym = wy.astype(np.float32) - np.float32(np.median(wy))
        dev.maxpool_backward(dev.upload(dy), dev.upload(warg), dx, n, c, h, w, k, s, y=dev.upload(ym))
        compare(f"maxpool_backward masked {tag}", dev.download(dx),
                ref.maxpool_backward(dy, warg, n, c, h, w, k, s, y=ym), 1e-4)


def conv_backward_cases(dev, rng):
    """conv_backward staged in local memory and on its direct kernels (dweight/dbias a never-written scratch with
    beta 0), with pools 1-3, stride 2, padding, dx or None."""
    cases = [(2, 2, 7, 7, 3, 3, 1, 1, True, 2, True), (2, 1, 8, 6, 2, 3, 2, 2, False, 1, False),
             (1, 2, 8, 7, 2, 2, 1, 0, True, 3, True)]
    for local in (None, False):
        dev.conv_backward_local = local
        for (n, c, h, w, m, k, s, p, relu, pool, with_dx) in cases:
            x, wt, b = rnd(rng, n, c, h, w), rnd(rng, m, c, k, k), rnd(rng, m)
            yf, arg = rconv.conv_forward(x, wt, b, s, p, relu, pool)
            dy, y = rnd(rng, *yf.shape), yf.astype(np.float32)
            dw, db = dev.scratch(f"oclgrind_dw_{k}", m * c * k * k), dev.scratch(f"oclgrind_db_{m}", m)
            dx = dev.upload(rnd(rng, n, c, h, w)) if with_dx else None
            darg = None if arg is None else dev.upload(arg)
            dev.conv_backward(dev.upload(x), dev.upload(wt), dev.upload(dy), darg, dev.upload(y) if relu else None,
                              dw, db, dx, n, c, h, w, m, k, s, p, relu, pool)
            wdw, wdb, wdx = rconv.conv_backward(x, wt, dy, arg, y, s, p, relu, pool)
            tag = (f"{c}x{h}x{w} m{m} k{k} s{s} p{p} relu={relu} pool={pool} "
                   f"{'local' if local is None else 'direct'}")
            compare(f"conv_backward dweight {tag}", dev.download(dw)[:wdw.size].reshape(wdw.shape), wdw, 1e-4)
            compare(f"conv_backward dbias {tag}", dev.download(db)[:m], wdb, 1e-4)
            if with_dx:
                compare(f"conv_backward dx {tag}", dev.download(dx), wdx, 1e-4)
    dev.conv_backward_local = None


def implicit_cases(dev, rng):
    """The implicit-GEMM convolution both ways (dweight a never-written scratch at beta 0): strides 1-2, padding
    0-2, kernels 1-5, odd planes."""
    for (n, c, h, w, m, k, s, p) in [(2, 3, 7, 6, 5, 3, 1, 1), (2, 2, 9, 8, 3, 5, 2, 2), (1, 4, 5, 5, 6, 1, 1, 0)]:
        x, wt, b = rnd(rng, n, c, h, w), rnd(rng, m, c, k, k), rnd(rng, m)
        yf = rconv.conv(x, wt, b, s, p)
        dy, tag = rnd(rng, *yf.shape), f"{c}x{h}x{w} m{m} k{k} s{s} p{p}"
        dx_, dwt, ddy, y, dx = dev.upload(x), dev.upload(wt), dev.upload(dy), dev.zeros(yf.shape), dev.zeros(x.shape)
        dev.implicit_conv_forward(dx_, dwt, dev.upload(b), y, n, c, h, w, m, k, s, p, relu=True)
        compare(f"implicit_conv_forward {tag}", dev.download(y), np.maximum(yf, 0.0), 1e-4)
        wdw, _, wdx = rconv.conv_backward(x, wt, dy, None, None, s, p)
        dw = dev.scratch(f"oclgrind_idw_{m}_{c}_{k}", m * c * k * k)
        dev.implicit_conv_backward_weight(dx_, ddy, dw, n, c, h, w, m, k, s, p)
        compare(f"implicit_conv_backward_weight {tag}", dev.download(dw)[:wdw.size].reshape(wdw.shape), wdw, 1e-4)
        dev.implicit_conv_backward_data(dwt, ddy, dx, n, c, h, w, m, k, s, p)
        compare(f"implicit_conv_backward_data {tag}", dev.download(dx), wdx, 1e-4)


def geometry_constant_cases(dev, rng):
    """conv_cases and pool_cases with the sizes as build constants (one program per geometry, as on GPUs)."""
    dev.geometry_constants = True
    try:
        conv_cases(dev, rng)
        pool_cases(dev, rng)
        conv_backward_cases(dev, rng)
    finally:
        dev.geometry_constants = None
