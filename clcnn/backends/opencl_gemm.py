"""OpenCLBackend's GEMM: the kernel variants and tile configs of cl/gemm.cl and cl/gemm_vec.cl, the config choice
per shape (override > autotuned > heuristic) and the gemm op with its fused bias + ReLU epilogue."""
from __future__ import annotations

import contextlib
import math

from ..errors import ConfigError
from .opencl_ops import _f, _i

# variant -> (file, VARIANT constant); every file's kernel is called `gemm` and has the same arguments
VARIANT_SOURCES = {"naive": ("gemm.cl", 0), "local": ("gemm.cl", 1), "blocked": ("gemm.cl", 2),
                   "vec": ("gemm_vec.cl", None)}


def _configs(variant: str, keys: str, rows) -> tuple[dict, ...]:
    return tuple({"variant": variant, **dict(zip(keys.split(), row))} for row in rows)


# The search space of an autotuner; the heuristic default picks among GEMM_DEFAULT_POOL.
# vec: TM x TN C tile, TK k-slab, WM x WN outputs per work-item, WX warp arrangement (0 = plain order); optional
# FB, ST: see cl/gemm_vec.cl (absent = 0).
VEC_CONFIGS = _configs("vec", "TM TN TK WM WN WX", (
    (128, 128, 8, 8, 8, 8),      # 256 work-items, 17 KiB local (two slab buffers); ptxas sm_90: 127 registers, 2/SM
    (128, 128, 16, 8, 8, 8),     # 256, 33 KiB; sm_90: 165 registers (1 work-group per SM), half the barriers
    (128, 64, 16, 8, 8, 8),      # 128
    (64, 128, 16, 8, 8, 8),      # 128
    (64, 64, 16, 4, 4, 8),       # 256
    (64, 64, 16, 8, 8, 8),       # 64
    (32, 32, 16, 4, 4, 8),       # 64
    (16, 16, 16, 4, 4, 0),       # 16
    (16, 128, 16, 4, 8, 8),      # 64: few rows (a conv forward's output channels)
    (32, 128, 16, 4, 8, 8),      # 128
    (128, 16, 16, 8, 4, 4),      # 64: few columns
    (128, 32, 16, 8, 4, 8),      # 128
    (16, 64, 16, 2, 4, 0),       # 128: strided (non-float4) local reads of A
    (64, 16, 16, 4, 2, 0)))      # 128: strided local reads of B
# Only searched: the big tile with 128 accumulators per work-item, and ablations of the default big tile (plain
# work-item order; VW=1: no 128-bit global loads) that show what each feature is worth.
VEC_BIG = _configs("vec", "TM TN TK WM WN WX", ((128, 256, 8, 8, 16, 8),))   # best at 2048-4096 on an H200
VEC_EXTRA = VEC_BIG + (_configs("vec", "TM TN TK WM WN WX", ((256, 128, 8, 16, 8, 8), (128, 128, 8, 8, 8, 0)))
                       + ({**VEC_CONFIGS[0], "VW": 1},)
                       # small tiles with many work-items: latency-bound skinny products (a split-K slice of a
                       # conv weight gradient, a 32x27 output over 1024 pixels) get more threads per tile
                       + _configs("vec", "TM TN TK WM WN WX", ((32, 32, 16, 2, 2, 0), (32, 64, 16, 2, 4, 0),
                                                               (64, 32, 16, 4, 2, 0), (16, 32, 16, 2, 2, 0)))
                       # the best 4096^3 tiles with FB=1 (register double-buffered k-step fragments) and / or ST=s
                       # (the prefetched slab stashed to local memory after s of the TK k-steps, not after all);
                       # clang-15 -> ptxas sm_90 registers in the comments (the same tiles without: 167, 127, 225,
                       # 218, 165)
                       + _configs("vec", "TM TN TK WM WN WX FB", ((128, 64, 16, 8, 8, 8, 1),     # 163
                                                                  (128, 128, 8, 8, 8, 0, 1),     # 128: 2 per SM
                                                                  (128, 128, 8, 8, 8, 8, 1),     # 128
                                                                  (128, 128, 16, 8, 8, 8, 1),    # 159
                                                                  (256, 128, 8, 16, 8, 8, 1),    # 229
                                                                  (128, 256, 8, 8, 16, 8, 1)))   # 219
                       + _configs("vec", "TM TN TK WM WN WX FB ST", ((128, 64, 16, 8, 8, 8, 1, 8),   # 211
                                                                     (128, 128, 8, 8, 8, 0, 1, 4),   # 128
                                                                     (128, 128, 8, 8, 8, 0, 0, 4))))   # 128
BLOCKED_CONFIGS = _configs("blocked", "TM TN TK WM WN", (
    (128, 128, 16, 8, 8), (64, 64, 16, 4, 4), (32, 32, 16, 4, 4), (16, 16, 16, 4, 4), (16, 128, 16, 2, 8),
    (128, 16, 16, 8, 2)))
LOCAL_CONFIGS = _configs("local", "TS", ((16,), (8,), (32,)))
NAIVE_CONFIGS = _configs("naive", "TM TN", ((16, 16), (8, 32)))
GEMM_CONFIGS = VEC_CONFIGS + VEC_EXTRA + BLOCKED_CONFIGS + LOCAL_CONFIGS + NAIVE_CONFIGS
GEMM_DEFAULT_POOL = VEC_CONFIGS + VEC_BIG


def gemm_key(m: int, n: int, k: int, trans_a: bool = False, trans_b: bool = False, batch: int = 1,
             reduce: bool = False) -> str:
    """The key of one GEMM problem in ``gemm_tuned``, e.g. "4096x4096x4096:NT:b1" ("...:b8r" for a batch-reduce)."""
    return f"{m}x{n}x{k}:{'T' if trans_a else 'N'}{'T' if trans_b else 'N'}:b{batch}{'r' if reduce else ''}"


def gemm_geometry(cfg: dict) -> tuple[int, int, int, int]:
    """(TM, TN, work-group x, work-group y): the C tile of one work-group and its shape in work-items."""
    if cfg["variant"] == "local":
        return (cfg["TS"],) * 4
    if cfg["variant"] == "naive":
        return cfg["TM"], cfg["TN"], cfg["TN"], cfg["TM"]
    return cfg["TM"], cfg["TN"], cfg["TN"] // cfg["WN"], cfg["TM"] // cfg["WM"]


def gemm_local_bytes(cfg: dict) -> int:
    v = cfg["variant"]
    if v == "naive":
        return 0
    if v == "local":
        return 8 * cfg["TS"] * (cfg["TS"] + 1)
    if v == "blocked":
        return 4 * cfg["TK"] * (cfg["TM"] + cfg["TN"] + 2)
    return 8 * cfg["TK"] * (cfg["TM"] + cfg["TN"] + 8)


def _well_formed(cfg: dict) -> bool:
    """The divisibility rules of the kernels (a malformed config would compute garbage, not fail)."""
    if cfg["variant"] not in ("blocked", "vec"):
        return True
    tm, tn, lx, ly = gemm_geometry(cfg)
    if tm % cfg["WM"] or tn % cfg["WN"]:
        return False
    if cfg["variant"] == "blocked":
        return True
    wx = cfg["WX"]
    lanes_ok = wx == 0 or ((lx * ly) % 32 == 0 and 32 % wx == 0 and lx % wx == 0 and ly % (32 // wx) == 0)
    options_ok = cfg.get("FB", 0) in (0, 1) and 0 <= cfg.get("ST", 0) < cfg["TK"]
    return tm % 4 == 0 and tn % 4 == 0 and cfg["TK"] % 4 == 0 and lanes_ok and options_ok


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

    def _gemm_kernel(self, p: dict, trans_a: bool, trans_b: bool, vec_a: bool, vec_b: bool):
        """(kernel, (TM, TN, wg x, wg y)) for config p; vec_a / vec_b: 128-bit loads of A / B are aligned."""
        key = (tuple(p.items()), trans_a, trans_b, vec_a, vec_b)
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
            hit = self._gemm_kernels[key] = (self.kernel(file, "gemm", defines), gemm_geometry(p))
        return hit

    def gemm(self, a, b, c, m, n, k, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, lda=None, ldb=None,
             ldc=None, a_off=0, b_off=0, c_off=0, batch=1, stride_a=0, stride_b=0, stride_c=0, reduce=False,
             bias=None, bias_axis=0, relu=False):
        if bias_axis not in (0, 1):
            raise ValueError(f"gemm: bias_axis must be 0 (per row) or 1 (per column), got {bias_axis}")
        if m <= 0 or n <= 0 or batch <= 0:
            return
        trans_a, trans_b = bool(trans_a), bool(trans_b)
        lda = (m if trans_a else k) if lda is None else lda
        ldb = (k if trans_b else n) if ldb is None else ldb
        ldc = n if ldc is None else ldc
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
        knl, (tm, tn, lx, ly) = self._gemm_kernel(p, trans_a, trans_b, vec_a, vec_b)
        epilogue = ((bias if bias is not None else self.scratch("gemm_no_bias", 1)).buf,
                    _i(0 if bias is None else 1 + bias_axis), _i(bool(relu)))
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
