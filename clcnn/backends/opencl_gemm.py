"""OpenCLBackend's GEMM: the kernel variants and tile configs of cl/gemm.cl and cl/gemm_vec.cl, the config choice
per shape (override > autotuned > heuristic) and the gemm op with its fused bias + ReLU epilogue."""
from __future__ import annotations

import contextlib
import math

from ..cpu._arrays import check_view
from ..errors import ConfigError
from .opencl_ops import _f, _i

from .gemm_configs import (GEMM_CONFIGS, GEMM_DEFAULT_POOL, VARIANT_SOURCES, VEC_CONFIGS, _well_formed, check_relu_mask,
                           row_sums_geometry,
                           gemm_geometry, gemm_key, gemm_local_bytes)


class OpenCLGemm:
    """Mixin for OpenCLBackend: the gemm op (see base.Backend.gemm) and its config choice.
    Relies on the backend's ``device``, ``kernel``, ``_run``, ``_eltwise`` and ``scratch``."""

    def _gemm_init(self) -> None:
        dev = self.device
        self._gemm_limits = (dev.max_work_group_size, tuple(dev.max_work_item_sizes), dev.local_mem_size,
                             dev.max_compute_units)
        self.gemm_configs = [p for p in GEMM_CONFIGS if self._gemm_fits(p)]   # what tests / tools iterate
        self.gemm_params = next((p for p in self.gemm_configs if p["variant"] == "vec"), None)   # big tile
        self.gemm_override: dict | None = None   # one config for every GEMM (tools, tests, tuning)
        from .opencl_tune import load_tuning
        self.gemm_tuned: dict[str, dict] = {   # gemm_key(...) -> config, saved by `clcnn tune`
            key: p for key, p in load_tuning(self.info).get("gemm", {}).items() if self._gemm_usable(p)}
        self._gemm_choice: dict[tuple, dict] = {}
        self._gemm_kernels: dict[tuple, tuple] = {}
        self._dense_plans: dict[tuple, tuple | None] = {}

    def _gemm_fits(self, p: dict) -> bool:
        """Whether config ``p`` is well formed and fits this device's work-group and local-memory limits."""
        maxwg, maxitems, local, _ = self._gemm_limits
        _, _, lx, ly = gemm_geometry(p)
        return (_well_formed(p) and lx * ly <= maxwg and lx <= maxitems[0] and ly <= maxitems[1]
                and gemm_local_bytes(p) <= local)

    def _gemm_usable(self, p) -> bool:
        """Whether ``p`` (e.g. read from a tuning file) is a config this device can build and run."""
        try:
            return p["variant"] in VARIANT_SOURCES and self._gemm_fits(p)
        except (KeyError, TypeError, ZeroDivisionError):
            return False

    def gemm_candidates(self, m: int, n: int, k: int, trans_a: bool = False, trans_b: bool = False) -> list[dict]:
        """Every config that fits this device, minus those of a variant whose tile pads this (m, n) output to
        more than 4x the area its best tile does (hopeless here). Every config is correct for any shape."""
        def area(p):
            tm, tn, _, _ = gemm_geometry(p)
            return -(-m // tm) * tm * -(-n // tn) * tn
        best = {}
        for p in self.gemm_configs:
            best[p["variant"]] = min(best.get(p["variant"], math.inf), area(p))
        return [p for p in self.gemm_configs if area(p) <= 4 * best[p["variant"]]]

    gemm_key = staticmethod(gemm_key)

    def gemm_config(self, m: int, n: int, k: int, trans_a: bool = False, trans_b: bool = False, batch: int = 1,
                    reduce: bool = False, tuned: bool = True) -> dict:
        """The config for this GEMM: ``gemm_override`` if set, else ``gemm_tuned[gemm_key(...)]`` if present (and
        ``tuned``), else the heuristic (memoized per shape)."""
        if self.gemm_override is not None:
            return self.gemm_override
        if tuned and self.gemm_tuned:
            hit = self.gemm_tuned.get(gemm_key(m, n, k, trans_a, trans_b, batch, reduce))
            if hit is not None:
                return hit
        key = (m, n, k, bool(trans_a), bool(trans_b), batch, bool(reduce))
        p = self._gemm_choice.get(key)
        if p is None:
            p = self._gemm_choice[key] = self._gemm_heuristic(m, n, batch, reduce, k=k)
        return p

    @contextlib.contextmanager
    def gemm_forced(self, config):
        """Inside: every GEMM uses ``config`` (None: the usual choice)."""
        saved, self.gemm_override = self.gemm_override, config
        try:
            yield
        finally:
            self.gemm_override = saved

    def gemm_variants(self, m: int, n: int, k: int, variant: str | None = None) -> list[tuple[str, object]]:
        """(name, config) pairs for ``clcnn bench gemm``: "auto" (the usual choice), or per kernel variant its
        heuristically best tile for this shape ("all": auto and every variant; "sweep": auto and every candidate
        config, named like "vec-TM128-TN128-TK8-WM8-WN8-WX8"). ConfigError for an unknown variant."""
        names = list(VARIANT_SOURCES)
        if variant == "sweep":
            return [("auto", None)] + [("-".join(f"{key}{v}" if key != "variant" else v for key, v in p.items()), p)
                                       for p in self.gemm_candidates(m, n, k)]
        if variant not in (None, "auto", "all", *names):
            raise ConfigError(f"{self.info.id} has no GEMM variant {variant!r} "
                              f"(it has: auto, all, sweep, {', '.join(names)})")
        picked = names if variant == "all" else [] if variant in (None, "auto") else [variant]
        out = [("auto", None)] if variant in (None, "auto", "all") else []
        for name in picked:
            pool = [p for p in self.gemm_configs if p["variant"] == name]
            if pool:
                out.append((name, self._gemm_heuristic(m, n, 1, False, pool)))
        return out

    def _default_pool(self) -> tuple[dict, ...]:   # CPUs: no 128x256 tile (19-55 s to build on PoCL, no faster)
        return GEMM_DEFAULT_POOL if self.info.type == "gpu" else VEC_CONFIGS

    # work-items a GEMM launch should bring to each compute unit to hide its latencies (the fill targets below)
    ITEMS_PER_CU = 256

    def _gemm_heuristic(self, m: int, n: int, batch: int, reduce: bool, pool=None, k: int | None = None) -> dict:
        """Least modelled time among the default vec tiles (or ``pool``): padded output area, times a per-output
        overhead that falls with the outputs per work-item (local-memory traffic per FMA), over the fraction of
        the device the launch fills, counted in work-items (want ITEMS_PER_CU per compute unit) over the
        work-groups it really runs: output tiles times the batch, the split of a batch-reduce, or the k-chunks
        of a single product with few tiles (``k`` given)."""
        pool = pool or [p for p in self._default_pool() if self._gemm_fits(p)] or self.gemm_configs
        cus = self._gemm_limits[3]

        def cost(p):
            tm, tn, lx, ly = gemm_geometry(p)
            tiles = -(-m // tm) * -(-n // tn)
            if reduce:
                groups = tiles * self._gemm_splits(tiles, batch)
            elif batch == 1 and k is not None:
                groups = tiles * self._k_chunks(m, n, k, p)
            else:
                groups = tiles * batch
            fill = min(1.0, groups * lx * ly / (self.ITEMS_PER_CU * cus))
            return tiles * tm * tn * (1 + 32 / (p.get("WM", 1) * p.get("WN", 1))) / fill
        return min(pool, key=cost)

    def _gemm_splits(self, groups: int, batch: int) -> int:
        """How many slices a batch-reduce GEMM of ``groups`` output tiles is split into so the device has ~4
        work-groups per compute unit (a 6x25 conv weight gradient is otherwise one work-group looping over the
        whole mini-batch). Counting work-items instead (more, shorter slices for small tiles) was measured slower
        on the CIFAR CNN's conv2/conv3 weight gradients (H200: the partial sums' extra traffic)."""
        want = 4 * self._gemm_limits[3]
        return max(1, min(batch, -(-want // groups), 256))

    def _k_chunks(self, m: int, n: int, k: int, p: dict) -> int:
        """k-chunks a single GEMM is cut into when its output has too few tiles to fill the device (a 512x256
        dense layer over k = 2048: 32 work-groups on 132 compute units): 1, or a power of two <= 16 dividing k
        with chunks of >= 256 that are multiples of 4 (128-bit loads stay aligned; shorter chunks were measured
        slower than none on the H200: k = 256 cut in two for the CIFAR dense layer's dx, 33 -> 54 us)."""
        tm, tn, lx, ly = gemm_geometry(p)
        items = -(-m // tm) * -(-n // tn) * lx * ly
        target = self.ITEMS_PER_CU * self._gemm_limits[3]
        if items >= target or k < 512:
            return 1
        want = min(16, -(-target // items))
        chunks = 1
        while chunks * 2 <= want and k % (8 * chunks) == 0 and k // (2 * chunks) >= 256:
            chunks *= 2
        return chunks

    def _gemm_kernel(self, p: dict, trans_a: bool, trans_b: bool, vec_a: bool, vec_b: bool, gather=None,
                     sum_a: bool = False):
        """(kernel, (TM, TN, wg x, wg y)) for config p; vec_a / vec_b: 128-bit loads of A / B are aligned;
        gather: None, or the MODE and geometry defines of cl/implicit_conv.cl; sum_a: cl/gemm_vec.cl's SUM_A
        (both for a "vec" config only)."""
        key = (tuple(p.items()), trans_a, trans_b, vec_a, vec_b, tuple(sorted((gather or {}).items())), sum_a)
        hit = self._gemm_kernels.get(key)
        if hit is None:
            file, variant = VARIANT_SOURCES[p["variant"]]
            defines = {k: v for k, v in p.items() if k not in ("variant", "VW")}
            defines.update(TRANS_A=int(trans_a), TRANS_B=int(trans_b))
            if variant is None:   # vec
                wide = p.get("VW", 4) == 4
                defines.update(VEC_A=int(wide and vec_a), VEC_B=int(wide and vec_b))
            else:
                defines["VARIANT"] = variant
            if gather:
                file = "implicit_conv.cl"
                defines.update(gather)
            if sum_a:
                defines["SUM_A"] = 1
            hit = self._gemm_kernels[key] = (self.kernel(file, "gemm", defines), gemm_geometry(p))
        return hit

    def gemm(self, a, b, c, m, n, k, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, lda=None, ldb=None,
             ldc=None, a_off=0, b_off=0, c_off=0, batch=1, stride_a=0, stride_b=0, stride_c=0, reduce=False,
             bias=None, bias_axis=0, relu=False, relu_mask=None, row_sums=None):
        if bias_axis not in (0, 1):
            raise ValueError(f"gemm: bias_axis must be 0 (per row) or 1 (per column), got {bias_axis}")
        check_relu_mask(relu_mask, m, n, ldc, c_off, batch, reduce, bias, relu)
        sums = row_sums_geometry(row_sums, m, k, trans_a, lda, a_off, batch, reduce, bias, relu, relu_mask)
        if m <= 0 or n <= 0 or batch <= 0:
            return
        trans_a, trans_b = bool(trans_a), bool(trans_b)
        lda = (m if trans_a else k) if lda is None else lda
        ldb = (k if trans_b else n) if ldb is None else ldb
        ldc = n if ldc is None else ldc
        _check_views(a, b, c, m, n, k, trans_a, trans_b, lda, ldb, ldc, a_off, b_off, c_off, batch, stride_a,
                     stride_b, stride_c, reduce, bias, bias_axis)
        p = self.gemm_config(m, n, k, trans_a, trans_b, batch, reduce)
        if batch == 1 and not reduce:
            chunks = self._k_chunks(m, n, k, p)
            if chunks > 1:   # few output tiles, long k: split-K as a batch-reduce over k-chunks
                kc = k // chunks
                stride_a = kc * lda if trans_a else kc
                stride_b = kc if trans_b else kc * ldb
                k, batch, reduce = kc, chunks, True
        vec_a = lda % 4 == 0 and a_off % 4 == 0 and (batch == 1 or stride_a % 4 == 0)
        vec_b = ldb % 4 == 0 and b_off % 4 == 0 and (batch == 1 or stride_b % 4 == 0)
        fused_sums = sums is not None and p["variant"] == "vec" and not reduce   # else bias_grad after it
        if relu_mask is not None:   # write_c's relu == 2: the bias argument carries the mask
            epilogue = (relu_mask.buf, _i(0), _i(2))
        elif fused_sums:            # SUM_A: the bias argument receives the row sums
            epilogue = (row_sums.buf, _i(0), _i(0))
        else:
            epilogue = ((bias if bias is not None else self.scratch("gemm_no_bias", 1)).buf,
                        _i(0 if bias is None else 1 + bias_axis), _i(bool(relu)))
        self._gemm_launch(self._gemm_kernel(p, trans_a, trans_b, vec_a, vec_b, sum_a=fused_sums), a, b, c, m, n,
                          k, alpha, beta, (a_off, lda, stride_a), (b_off, ldb, stride_b), (c_off, ldc, stride_c),
                          batch, reduce, epilogue)
        if sums is not None and not fused_sums:
            self.bias_grad(a, row_sums, *sums, beta=beta)

    def _gemm_launch(self, kernel, a, b, c, m, n, k, alpha, beta, a_args, b_args, c_args, batch, reduce, epilogue):
        """Enqueue one gemm-signature kernel (``kernel``: _gemm_kernel's pair): a batch-reduce split over the batch
        with the partial products in scratch, then gemm_reduce; else one launch. *_args: (offset, ld, stride)."""
        knl, (tm, tn, lx, ly) = kernel
        (a_off, lda, stride_a), (b_off, ldb, stride_b), (c_off, ldc, stride_c) = a_args, b_args, c_args
        xy = (-(-n // tn) * lx, -(-m // tm) * ly)
        tiles = -(-n // tn) * -(-m // tm)
        splits = self._gemm_splits(tiles, batch) if reduce else 1
        if splits > 1:   # split-K over the batch: partial products in scratch, then one deterministic sum
            nloop = -(-batch // splits)
            splits = -(-batch // nloop)
            part = self.scratch("gemm_splitk", splits * m * n)
            self._run(knl, xy + (splits,), (lx, ly, 1), _i(m), _i(n), _i(k), _f(1.0), _f(0.0),
                      a.buf, _i(a_off), _i(lda), _i(stride_a), b.buf, _i(b_off), _i(ldb), _i(stride_b),
                      part.buf, _i(0), _i(n), _i(m * n), _i(nloop), _i(batch), epilogue[0], _i(0), _i(0))
            self._eltwise("gemm.cl", "gemm_reduce", m * n, _i(m), _i(n), _i(splits), _f(alpha), _f(beta),
                          part.buf, c.buf, _i(c_off), _i(ldc), *epilogue, defines={"VARIANT": -1})
            return
        nloop = batch if reduce else 1
        self._run(knl, xy + (1 if reduce else batch,), (lx, ly, 1), _i(m), _i(n), _i(k), _f(alpha), _f(beta),
                  a.buf, _i(a_off), _i(lda), _i(stride_a), b.buf, _i(b_off), _i(ldb), _i(stride_b),
                  c.buf, _i(c_off), _i(ldc), _i(stride_c), _i(nloop), _i(batch), *epilogue)

    def _dense_backward(self, dy, x, weight, grad_weight, grad_bias, dx, n, in_features, out_features, beta,
                        relu_mask):   # base.dense_backward, in one launch of cl/dense.cl where _dense_plan allows
        plan = self._dense_plan(n, in_features, out_features) if dx is not None and n > 0 else None
        if plan is None:   # the base's two gemm calls
            return super()._dense_backward(dy, x, weight, grad_weight, grad_bias, dx, n, in_features,
                                           out_features, beta, relu_mask)
        knl, (tm, tn, lx, ly) = plan
        tiles1 = -(-out_features // tm)
        self._run(knl, (-(-in_features // tn) * lx, (tiles1 + -(-n // tm)) * ly, 1), (lx, ly, 1), _i(n),
                  _i(in_features), _i(out_features), _f(beta), dy.buf, x.buf, weight.buf, grad_weight.buf,
                  grad_bias.buf, dx.buf, _i(bool(relu_mask)), _i(tiles1))

    def _dense_plan(self, n: int, in_features: int, out_features: int):
        """cl/dense.cl's (kernel, geometry) for this shape, or None where its two products run better apart: the
        input gradient's config is not a vec one, or either product would be split over k (_k_chunks: few output
        tiles and a long k, as the weight gradient at batch 1024). Memoized, except under gemm_forced."""
        key = (n, in_features, out_features)
        if self.gemm_override is None and key in self._dense_plans:
            return self._dense_plans[key]
        p = self.gemm_config(n, in_features, out_features)
        plan = None
        if (p["variant"] == "vec" and self._k_chunks(n, in_features, out_features, p) == 1
                and self._k_chunks(out_features, in_features, n, p) == 1):
            defines = {k: v for k, v in p.items() if k not in ("variant", "VW")}
            wide = p.get("VW", 4) == 4
            defines.update(TRANS_B=0, VEC_A=int(wide and out_features % 4 == 0),
                           VEC_B=int(wide and in_features % 4 == 0))
            plan = (self.kernel("dense.cl", "dense_backward", defines), gemm_geometry(p))
        if self.gemm_override is None:
            self._dense_plans[key] = plan
        return plan


def _check_views(a, b, c, m, n, k, trans_a, trans_b, lda, ldb, ldc, a_off, b_off, c_off, batch, stride_a, stride_b,
                 stride_c, reduce, bias, bias_axis) -> None:
    """ValueError before anything is enqueued where an operand's view reaches outside its buffer (the kernels
    would read or write past its end) or the bias is shorter than the rows / columns it is added to."""
    check_view(a, "A", a_off, *((k, m) if trans_a else (m, k)), lda, batch, stride_a)
    check_view(b, "B", b_off, *((n, k) if trans_b else (k, n)), ldb, batch, stride_b)
    check_view(c, "C", c_off, m, n, ldc, 1 if reduce and batch > 1 else batch, stride_c)
    need = m if bias_axis == 0 else n
    if bias is not None and int(bias.size) < need:
        raise ValueError(f"gemm: bias needs {need} elements, got {int(bias.size)}")
