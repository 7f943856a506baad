"""OpenCLBackend's direct-convolution ops: argument packing and NDRange shapes for cl/conv.cl. See
base.Backend.conv_forward / conv_backward for the semantics."""
from __future__ import annotations

import numpy as np


def _i(v) -> np.int32:
    return np.int32(v)


def _f(v) -> np.float32:
    return np.float32(v)


class OpenCLOpsConv:
    """Mixin of OpenCLOps (so of OpenCLBackend): relies on the backend's ``kernel``, ``_run``, ``_eltwise``,
    ``scratch``, ``reduce_wg``, ``compute_units`` and ``_geometry``."""

    def _conv_rule(self, n, c, h, w, m, k, stride, pad, pool):
        # Untuned rule (H200, 2026-12-02, docs/PERFORMANCE.md): on GPUs the direct forward wins while the
        # reduction C*k*k is small (<= 288: LeNet-5's, CIFAR's first two, fashion's first layer); its backward
        # where an image and its gradient fit in local memory and the batch's weight-gradient work N*M*C*k*k is
        # at most LeNet-5 conv2's at batch 256 (99 us against 117 us; at 1024 323 against 238, conv1 3.5-4.6x
        # faster at both); elsewhere hybrid's backward follows it (the implicit weight gradient, im2col's dx;
        # 2026-12-04: faster and smaller than im2col's backward at both batches). Larger reductions: the implicit
        # GEMM (CIFAR's conv3 at 1024: 2% slower whole steps than im2col, 144 MiB less; at 256 as fast).
        # PoCL: im2col everywhere.
        if self.info.type != "gpu":
            return "im2col"
        if c * k * k > 320:
            return "implicit"
        fits = self._conv_backward_floats(c, h, w, m, k, stride, pad, pool, True) <= self._conv_local_budget()
        return "direct" if fits and n * m * c * k * k <= 256 * 2400 else "hybrid"

    def _conv_local_budget(self) -> int:
        """Floats of local memory conv_backward's pass 1 may stage."""
        return (min(self.device.local_mem_size, 48 << 10) - 1024) // 4

    @staticmethod
    def _conv_backward_floats(c, h, w, m, k, stride, pad, pool, need_dx) -> int:
        """Floats of local memory pass 1 stages per work-group (one image, its gradient and their offsets)."""
        ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
        q = ((ho - pool) // pool + 1) * ((wo - pool) // pool + 1) if pool > 1 else ho * wo
        xsz = c * ((ho - 1) * stride + k) * ((wo - 1) * stride + k)
        return max(xsz + m * q, m * c * k * k + m * ho * wo if need_dx else 0) + m * q

    # ---- conv_forward ---------------------------------------------------------------------------------------
    def conv_forward(self, x, weight, bias, y, argmax, n, c, h, w, m, k, stride, pad, relu=False, pool=1):
        ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
        hp, wp = (ho - pool) // pool + 1, (wo - pool) // pool + 1
        geometry = self._geometry(c=c, h=h, w=w, m=m, k=k, stride=stride, pad=pad, ho=ho, wo=wo, hp=hp, wp=wp)
        # output channels per work-item: 8 where the program is built per geometry (GPUs, CPUs), else 4 (one
        # program per pool window on simulators)
        mb = 8 if geometry and m > 4 else 4
        defines = {**(geometry or {}), "POOL": pool, "MB": mb}
        total = n * -(-m // mb) * hp * wp
        self._eltwise("conv.cl", "conv_forward", total, x.buf, weight.buf, bias.buf, y.buf,
                      (argmax if argmax is not None else y).buf, _i(bool(relu)), _i(c), _i(h), _i(w), _i(m), _i(k),
                      _i(stride), _i(pad), _i(ho), _i(wo), _i(hp), _i(wp), _i(total), defines=defines)

    # ---- end of conv_forward --------------------------------------------------------------------------------

    # ---- conv_backward --------------------------------------------------------------------------------------
    # None: pass 1 stages each image in local memory where it fits (else the direct kernels, global reads);
    # False: always the direct kernels (tests reach them with small shapes this way).
    conv_backward_local: bool | None = None
    conv_backward_groups = 64   # pass 1's work-groups per compute unit (chunks of images x blocks): enough that
                                # each work-group stages one image or few (H200, LeNet-5 conv2 at batch 256:
                                # 192 us at 4, 110 at 16, 99 at 64 and at one image per work-group)

    def conv_backward(self, x, weight, dy, argmax, y, dweight, dbias, dx, n, c, h, w, m, k, stride, pad,
                      relu=False, pool=1, beta=0.0):
        # x: (N, C, H, W), dy/argmax/y: (N, M, Hp, Wp) (pool > 1) or (N, M, Ho, Wo) -> dweight: (M, C, k, k),
        # dbias: (M,), dx: (N, C, H, W) or None. Two launches (three on the direct path with dx): cl/conv.cl.
        import pyopencl as cl   # loaded already by the backend; here for cl.LocalMemory only
        ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
        hp, wp = ((ho - pool) // pool + 1, (wo - pool) // pool + 1) if pool > 1 else (ho, wo)
        if min(n, c, h, w, m, k, stride, pool, ho, wo, hp, wp) < 1 or pad < 0:
            raise ValueError(f"conv_backward: bad geometry n={n} c={c} h={h} w={w} m={m} k={k} stride={stride} "
                             f"pad={pad} pool={pool}")
        wg, mckk, q = self.reduce_wg, m * c * k * k, hp * wp
        outs = mckk + m
        defines = dict(self._geometry(cb_c=c, cb_h=h, cb_w=w, cb_m=m, cb_k=k, cb_s=stride, cb_pad=pad, cb_ho=ho,
                                      cb_wo=wo, cb_p=pool, cb_hp=hp, cb_wp=wp) or {}, CB_WG=wg)
        sizes = tuple(_i(v) for v in (c, h, w, m, k, stride, pad, ho, wo, pool, hp, wp, bool(relu)))
        bufs = (dy.buf, (argmax if pool > 1 else dy).buf, (y if relu else dy).buf)   # unused ones: any buffer
        xsz = c * ((ho - 1) * stride + k) * ((wo - 1) * stride + k)
        floats = max(xsz + m * q, mckk + m * ho * wo if dx is not None else 0)
        fits = self._conv_backward_floats(c, h, w, m, k, stride, pad, pool, dx is not None) <= self._conv_local_budget()
        if self.conv_backward_local is not False and fits:
            slices, wblocks = self._conv_backward_slices(outs, q, xsz + 3 * m * q, wg)
            dblocks = -(-c * h * w // wg) if dx is not None else 0
            groups = self.conv_backward_groups * self.compute_units
            nb = -(-n // max(1, min(n, -(-groups // (wblocks + dblocks)))))
            chunks = -(-n // nb)
            rows = chunks * slices
            part = self.scratch("conv_backward", rows * outs)
            self._run(self.kernel("conv.cl", "conv_backward_partial", defines), ((wblocks + dblocks) * wg, chunks),
                      (wg, 1), x.buf, weight.buf, *bufs, part.buf, (dx if dx is not None else part).buf,
                      cl.LocalMemory(4 * floats), cl.LocalMemory(4 * m * q), _i(n), *sizes,
                      _i(slices), _i(wblocks), _i(nb))
        else:
            nb = -(-n // max(1, min(n, -(-self.conv_backward_groups * self.compute_units * wg // outs))))
            rows = -(-n // nb)
            part = self.scratch("conv_backward", rows * outs)
            self._run(self.kernel("conv.cl", "conv_backward_partial_direct", defines),
                      (-(-outs // wg) * wg, rows), (wg, 1), x.buf, *bufs, part.buf, _i(n), *sizes, _i(nb))
            if dx is not None:
                self._eltwise("conv.cl", "conv_backward_dx_direct", n * c * h * w, weight.buf, *bufs, dx.buf,
                              *sizes, _i(n * c * h * w), defines=defines)
        nrs = min(wg, 1 << max(0, (rows // 4).bit_length() - 1))   # row slices of a reduce work-group
        tout = wg // nrs
        self._run(self.kernel("conv.cl", "conv_backward_reduce", defines), (-(-outs // tout) * wg,), (wg,),
                  part.buf, dweight.buf, dbias.buf, _i(rows), _i(outs), _i(mckk), _i(tout), _f(beta))

    @staticmethod
    def _conv_backward_slices(outs, q, stage, wg):
        """(slices, weight blocks) for pass 1: each of the ``outs`` dot products over ``q`` positions split in
        ``slices``, picked to minimise the blocks' time per image (staging ``stage`` loads / wg each, then
        ceil(q/slices) multiply-adds); every block restages the image."""
        best = None
        for s in range(1, min(q, 64) + 1):
            blocks = -(-outs * s // wg)
            cost = blocks * (stage / wg + -(-q // s))
            if best is None or cost < best[0]:
                best = (cost, s, blocks)
        return best[1], best[2]

    # ---- end of conv_backward -------------------------------------------------------------------------------

    # ---- implicit_conv ------------------------------------------------------------------------------------
    # cl/implicit_conv.cl: cl/gemm_vec.cl's kernel gathering its convolution operand while it loads a slab (no
    # unrolled buffer); the tile config as for the explicit GEMM of the same shape (tuned or the heuristic's).
    def _implicit(self, mode, n, c, h, w, m, k, stride, pad) -> tuple[dict, int]:
        """(the gather defines of cl/implicit_conv.cl, L = Ho*Wo); ValueError for an empty or bad geometry."""
        ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
        if min(n, c, h, w, m, k, stride, ho, wo) < 1 or pad < 0:
            raise ValueError(f"implicit_conv: bad geometry n={n} c={c} h={h} w={w} m={m} k={k} stride={stride} "
                             f"pad={pad}")
        return dict(MODE=mode, CV_C=c, CV_H=h, CV_W=w, CV_HO=ho, CV_WO=wo, CV_K=k, CV_S=stride, CV_P=pad), ho * wo

    def _implicit_kernel(self, gather, gm, gn, gk, trans_b, batch, reduce, vec_a):
        # Capping the heuristic's tiles at gm's rows was measured and dropped (H200, 2026-12-04: the CIFAR CNN's
        # conv2 dx took 1063 us in the 16x128 tile it then chose, 1065 in the 64-row one; docs/PERFORMANCE.md)
        p = self.gemm_config(gm, gn, gk, False, trans_b, batch, reduce)
        if p["variant"] != "vec":   # the gathers live in the vec kernel only
            p = self._gemm_heuristic(gm, gn, batch, reduce, [q for q in self.gemm_configs if q["variant"] == "vec"])
        return self._gemm_kernel(p, False, trans_b, vec_a, False, gather)

    def implicit_conv_forward(self, x, weight, bias, y, n, c, h, w, m, k, stride, pad, relu=False):
        # y[e] (M, L) = weight (M, C*k*k) @ im2col(x[e]) + bias, then ReLU: one launch for the whole batch
        gather, l = self._implicit(1, n, c, h, w, m, k, stride, pad)
        ckk = c * k * k
        self._gemm_launch(self._implicit_kernel(gather, m, l, ckk, False, n, False, ckk % 4 == 0), weight, x, y,
                          m, l, ckk, 1.0, 0.0, (0, ckk, 0), (0, 0, c * h * w), (0, l, m * l), n, False,
                          (bias.buf, _i(1), _i(bool(relu))))

    def implicit_conv_backward_weight(self, x, dy, dweight, n, c, h, w, m, k, stride, pad, beta=0.0):
        # dweight (M, C*k*k) = beta*dweight + sum_e dy[e] (M, L) @ im2col(x[e])^T: a batch-reduce over the images
        gather, l = self._implicit(2, n, c, h, w, m, k, stride, pad)
        ckk = c * k * k
        self._gemm_launch(self._implicit_kernel(gather, m, ckk, l, True, n, True, l % 4 == 0), dy, x, dweight,
                          m, ckk, l, 1.0, beta, (0, l, m * l), (0, 0, c * h * w), (0, ckk, 0), n, True,
                          (self.scratch("gemm_no_bias", 1).buf, _i(0), _i(0)))

    def implicit_conv_backward_data(self, weight, dy, dx, n, c, h, w, m, k, stride, pad):
        # dx[e] (C, H*W) = weight^T gathered (C, M*k*k) @ the adjoint gather of dy[e]: one launch, overwritten
        gather, l = self._implicit(3, n, c, h, w, m, k, stride, pad)
        mkk = m * k * k
        self._gemm_launch(self._implicit_kernel(gather, c, h * w, mkk, False, n, False, False), weight, dy, dx,
                          c, h * w, mkk, 1.0, 0.0, (0, 0, 0), (0, 0, m * l), (0, h * w, c * h * w), n, False,
                          (self.scratch("gemm_no_bias", 1).buf, _i(0), _i(0)))
