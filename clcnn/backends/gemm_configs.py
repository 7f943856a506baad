"""The GEMM kernels' variants and tile configs (cl/gemm.cl, cl/gemm_vec.cl) and the pure functions over a config:
its tuning-cache key, launch geometry, local memory and well-formedness. opencl_gemm.py chooses among them."""
from __future__ import annotations


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


def row_sums_geometry(row_sums, m, k, trans_a, lda, a_off, batch, reduce, bias, relu, relu_mask):
    """(n, c, inner) of the bias_grad call that gives a gemm's ``row_sums`` (A read as (N, C, inner) = (k, m, 1)
    when trans_a, else (1, m, k)), or None without row_sums; ValueError where A is not the dense single one."""
    if row_sums is None:
        return None
    dense = (m if trans_a else k) if lda is None else lda
    if batch != 1 or reduce or a_off or dense != (m if trans_a else k) or bias is not None or relu \
            or relu_mask is not None:
        raise ValueError("gemm: row_sums needs a dense single A at offset 0, with no bias, relu or relu_mask")
    if int(row_sums.size) < m:
        raise ValueError(f"gemm: row_sums needs {m} elements (one per row of C), got {int(row_sums.size)}")
    return (k, m, 1) if trans_a else (1, m, k)


def check_relu_mask(relu_mask, m, n, ldc, c_off, batch, reduce, bias, relu) -> bool:
    """Whether a gemm call has a ``relu_mask``; ValueError when its C is not the dense single one it needs or the
    mask is smaller than C."""
    if relu_mask is None:
        return False
    if batch != 1 or reduce or c_off or (n if ldc is None else ldc) != n or bias is not None or relu:
        raise ValueError("gemm: relu_mask needs a dense single C at offset 0, with no bias and no relu")
    if int(relu_mask.size) < m * n:
        raise ValueError(f"gemm: relu_mask needs {m * n} elements (one per element of C), got {int(relu_mask.size)}")
    return True
