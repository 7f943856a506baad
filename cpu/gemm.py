"""Strided-batched GEMM with a fused bias + ReLU write-out for the Numba backend: Numba's threads each call
OpenBLAS's sgemm (single-threaded, cpu/_blas.py) on their own blocks of C and apply the epilogue to that block while
it is still in cache; NumPy's matmul where that sgemm is unavailable. A convolution's weight gradient (a long
batch-reduce of A_b @ B_b^T) runs as Numba dot products instead (cpu/gemm_nt.py) unless OpenBLAS has AVX-512.

Also home of ``flat``, the argument check every ``cpu/*`` wrapper uses before calling its kernel.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange
from numpy.lib.stride_tricks import as_strided

from . import _blas as blas, gemm_nt as _gemm_nt
from ._arrays import check_view, flat

_ALIGN = 16          # column blocks start on multiples of 16 floats (one cache line)
_MIN_BLOCK = 32      # a split never makes blocks narrower than this
_NT_MIN_K = 1024     # batch-reduces with batch*k >= this (and m*n >= 16) run as dot products (cpu/gemm_nt.py)
_NT_ENTRY_K = 512    # ... one pass per entry when k >= this, else the entries are gathered side by side first
_AVX512_CORES = ("skylakex", "cooperlake", "sapphirerapids")   # OpenBLAS cores whose sgemm beats the dots
_NO_BIAS = np.zeros(1, np.float32)
_work: dict[str, np.ndarray] = {}


# ---- kernels ------------------------------------------------------------------------------------------------
@njit(cache=True)
def _block(n, parts, p, align):
    """[lo, hi) of block p when n is cut into `parts` blocks whose starts are multiples of `align`."""
    step = -(-n // parts)
    step = -(-step // align) * align
    return min(n, p * step), min(n, (p + 1) * step)


@njit(cache=True)
def _addr(x, off):
    return x.ctypes.data + np.uint64(4 * off)


@njit(cache=True, fastmath=False)
def _epilogue(c, pc, rows, cols, ldc, bias, i0, j0, bias_axis, relu):
    # c[pc + r*ldc + j] for r < rows, j < cols (the C rows i0.., columns j0..) += bias; then max(., 0) if relu
    for r in range(rows):
        base = pc + r * ldc
        if bias_axis == 0:
            bv = bias[i0 + r]
            for j in range(cols):
                v = c[np.uint64(base + j)] + bv
                c[np.uint64(base + j)] = (0.0 if v < 0.0 else v) if relu else v
        elif bias_axis == 1:
            for j in range(cols):
                v = c[np.uint64(base + j)] + bias[np.uint64(j0 + j)]
                c[np.uint64(base + j)] = (0.0 if v < 0.0 else v) if relu else v
        elif relu:
            for j in range(cols):
                v = c[np.uint64(base + j)]
                c[np.uint64(base + j)] = 0.0 if v < 0.0 else v


@njit(parallel=True, nogil=True, cache=True)
def _gemm_blocks(sgemm, a, b, c, bias, dims, alpha, beta, bias_axis, relu):
    # For each entry e < batch and block s < split of C_e (m, n) (split along m if rows else along n):
    # C_e[blk] = alpha * op(A_e)[rows of blk] @ op(B_e)[:, cols of blk] + beta * C_e[blk], then the epilogue.
    m, n, k, ta, tb, lda, ldb, ldc, a_off, b_off, c_off, batch, sa, sb, sc, split, rows = dims
    transa, transb = 112 if ta else 111, 112 if tb else 111
    for t in prange(batch * split):
        e = t // split
        s = t - e * split
        i0, i1, j0, j1 = 0, m, 0, n
        if rows:
            i0, i1 = _block(m, split, s, 1)
        else:
            j0, j1 = _block(n, split, s, _ALIGN)
        if i1 > i0 and j1 > j0:
            pa = a_off + e * sa + (i0 if ta else i0 * lda)
            pb = b_off + e * sb + (j0 * ldb if tb else j0)
            pc = c_off + e * sc + i0 * ldc + j0
            sgemm(101, transa, transb, i1 - i0, j1 - j0, k, np.float32(alpha), _addr(a, pa), lda, _addr(b, pb),
                  ldb, np.float32(beta), _addr(c, pc), ldc)
            if bias_axis >= 0 or relu:
                _epilogue(c, pc, i1 - i0, j1 - j0, ldc, bias, i0, j0, bias_axis, relu)


@njit(parallel=True, nogil=True, cache=True)
def _gemm_partials(sgemm, a, b, dims, work):
    # Part p of `parts` sums its run of entries into work[p] (m, n): P_p = sum_e op(A_e) @ op(B_e)
    m, n, k, ta, tb, lda, ldb, ldc, a_off, b_off, c_off, batch, sa, sb, sc, parts, rows = dims
    transa, transb = 112 if ta else 111, 112 if tb else 111
    for p in prange(parts):
        e0, e1 = _block(batch, parts, p, 1)
        for e in range(e0, e1):
            sgemm(101, transa, transb, m, n, k, np.float32(1.0), _addr(a, a_off + e * sa), lda,
                  _addr(b, b_off + e * sb), ldb, np.float32(0.0 if e == e0 else 1.0), _addr(work, p * m * n), n)


@njit(parallel=True, nogil=True, cache=True)
def _finish(work, parts, c, c_off, m, n, ldc, alpha, beta, bias, bias_axis, relu):
    # C (m, n; row stride ldc, at c_off) = alpha * (P_0 + P_1 + ...) + beta * C (C not read when beta == 0),
    # then the epilogue; P_p = work[p*m*n:] (m, n) summed in a fixed order. Row by row.
    for i in prange(m):
        pc = c_off + i * ldc
        for j in range(n):
            v = work[np.uint64(i * n + j)]
            for p in range(1, parts):
                v += work[np.uint64((p * m + i) * n + j)]
            v *= alpha
            if beta != 0.0:
                v += beta * c[np.uint64(pc + j)]
            c[np.uint64(pc + j)] = v
        if bias_axis >= 0 or relu:
            _epilogue(c, pc, 1, n, ldc, bias, i, 0, bias_axis, relu)


# ---- the public op ------------------------------------------------------------------------------------------
def _dots_for_reduce() -> bool:
    """Conv weight gradients run as dot products unless OpenBLAS has AVX-512 kernels, which are faster still (on
    2 Zen 5 cores, CIFAR dW shapes: dots 200-275 GFLOP/s, OpenBLAS Haswell 130-230, SkylakeX 250-325)."""
    return blas.core().lower() not in _AVX512_CORES


def _scratch(name: str, size: int) -> np.ndarray:
    """A float32 workspace kept between calls (one per name; ops run one at a time)."""
    buf = _work.get(name)
    if buf is None or buf.size < size:
        buf = _work[name] = np.empty(size, np.float32)
    return buf


def _reduce_nt(fa, fb, fc, m, n, k, lda, ldb, ldc, a_off, b_off, c_off, batch, sa, sb, alpha, beta, bias, axis,
               relu) -> None:
    """C_0 = alpha * sum_b A_b (m, k) @ B_b (n, k)^T + beta * C_0 (+ epilogue) as dot products over K = batch*k
    (cpu/gemm_nt.py): one pass per entry when k is long, else over the entries gathered side by side (those whose
    batch stride is not k are copied into a workspace first)."""
    big_k, kc = batch * k, 0
    a, b = fa, fb
    if k < _NT_ENTRY_K:   # short entries: gather them side by side, then passes of kc columns
        if sa != k:
            a = _scratch("nt_a", m * big_k)
            _gemm_nt.gather_rows(fa, a, int(a_off), m, k, lda, batch, int(sa))
            a_off, lda, sa = 0, big_k, k
        if sb != k:
            b = _scratch("nt_b", n * big_k)
            _gemm_nt.gather_rows(fb, b, int(b_off), n, k, ldb, batch, int(sb))
            b_off, ldb, sb = 0, big_k, k
        kc = _gemm_nt.chunk(m)
    work = _scratch("reduce", m * n)
    threads = numba.get_num_threads()
    rsplit = 2 if -(-n // 4) < 8 * threads else 1   # few column tiles: halve the rows too, for balance
    _gemm_nt.gemm_nt_reduce(a, b, work, int(a_off), int(b_off), int(lda), int(ldb), int(sa), int(sb), m, n, k,
                            batch, kc, rsplit, threads)
    _finish(work, 1, fc, int(c_off), m, n, ldc, float(alpha), float(beta), bias, axis, bool(relu))


def gemm(a, b, c, m, n, k, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, lda=None, ldb=None, ldc=None,
         a_off=0, b_off=0, c_off=0, batch=1, stride_a=0, stride_b=0, stride_c=0, reduce=False, bias=None,
         bias_axis=0, relu=False) -> None:
    """C_b = alpha * op(A_b) @ op(B_b) + beta * C_b for b < batch (reduce: C_0 = alpha * sum_b ... + beta * C_0),
    then C += bias (bias_axis 0: bias[i] on row i; 1: bias[j] on column j) and max(C, 0) when relu.

    A_b: (k, m) if trans_a else (m, k), row stride lda; B_b: (n, k) if trans_b else (k, n), ldb; C_b: (m, n), ldc.
    Semantics are those of ``Backend.gemm``; beta == 0 never reads C. Raises ValueError when a view would reach
    outside its array.
    """
    m, n, k, batch = int(m), int(n), int(k), int(batch)
    if min(m, n, k, batch) < 1:
        raise ValueError(f"gemm: m, n, k, batch must be >= 1 (got {m}, {n}, {k}, {batch})")
    if bias_axis not in (0, 1):
        raise ValueError(f"gemm: bias_axis must be 0 or 1, got {bias_axis}")
    ra, ca = (k, m) if trans_a else (m, k)
    rb, cb = (n, k) if trans_b else (k, n)
    lda, ldb, ldc = int(ca if lda is None else lda), int(cb if ldb is None else ldb), int(n if ldc is None else ldc)
    fa, fb, fc = flat(a, 0, "gemm A"), flat(b, 0, "gemm B"), flat(c, 0, "gemm C")
    reduce = bool(reduce) and batch > 1
    check_view(fa, "A", a_off, ra, ca, lda, batch, stride_a)
    check_view(fb, "B", b_off, rb, cb, ldb, batch, stride_b)
    check_view(fc, "C", c_off, m, n, ldc, 1 if reduce else batch, stride_c)
    fbias = _NO_BIAS if bias is None else flat(bias, m if bias_axis == 0 else n, "gemm bias")
    axis = -1 if bias is None else int(bias_axis)
    if reduce and trans_b and not trans_a and batch * k >= _NT_MIN_K and m * n >= 16 and _dots_for_reduce():
        return _reduce_nt(fa, fb, fc, m, n, k, lda, ldb, ldc, a_off, b_off, c_off, batch, stride_a, stride_b,
                          alpha, beta, fbias, axis, relu)
    sgemm = blas.sgemm()
    if sgemm is None:
        return _numpy_gemm(fa, fb, fc, m, n, k, trans_a, trans_b, alpha, beta, lda, ldb, ldc, a_off, b_off, c_off,
                           batch, stride_a, stride_b, stride_c, reduce, fbias, axis, relu)
    threads = numba.get_num_threads()
    if reduce:
        parts = min(threads, batch)
        parts = -(-batch // -(-batch // parts))   # no empty part: each sums >= 1 entry (an empty one is unwritten)
        dims = (m, n, k, bool(trans_a), bool(trans_b), lda, ldb, ldc, int(a_off), int(b_off), int(c_off), batch,
                int(stride_a), int(stride_b), 0, parts, True)
        work = _scratch("reduce", parts * m * n)
        _gemm_partials(sgemm, fa, fb, dims, work)
        _finish(work, parts, fc, int(c_off), m, n, ldc, float(alpha), float(beta), fbias, axis, bool(relu))
        return
    rows = m >= n   # split C along its longer side: each block's sgemm then still has a wide loop
    split = 1 if batch >= 2 * threads or m * n * k < 1 << 15 else -(-2 * threads // batch)
    split = max(1, min(split, (m if rows else n) // _MIN_BLOCK))
    dims = (m, n, k, bool(trans_a), bool(trans_b), lda, ldb, ldc, int(a_off), int(b_off), int(c_off), batch,
            int(stride_a), int(stride_b), int(stride_c), split, rows)
    _gemm_blocks(sgemm, fa, fb, fc, fbias, dims, float(alpha), float(beta), axis, bool(relu))


def _numpy_gemm(fa, fb, fc, m, n, k, ta, tb, alpha, beta, lda, ldb, ldc, a_off, b_off, c_off, batch, sa, sb, sc,
                reduce, bias, axis, relu) -> None:
    """The same op on NumPy's matmul (strided views; the epilogue as a NumPy pass over each C_b)."""
    def view(buf, off, rows, cols, ld, cnt, stride):
        it = buf.itemsize
        return as_strided(buf[off:], shape=(cnt, rows, cols), strides=(stride * it, ld * it, it))
    A = view(fa, a_off, *((k, m) if ta else (m, k)), lda, batch, sa)
    B = view(fb, b_off, *((n, k) if tb else (k, n)), ldb, batch, sb)
    C = view(fc, c_off, m, n, ldc, 1 if reduce else batch, sc)
    A = A.transpose(0, 2, 1) if ta else A
    B = B.transpose(0, 2, 1) if tb else B
    prod = np.matmul(A, B)
    if reduce:
        prod = prod.sum(axis=0, keepdims=True)
    if alpha != 1.0:
        prod *= np.float32(alpha)
    if beta != 0.0:
        prod += np.float32(beta) * C
    if axis == 0:
        prod += bias[:m].reshape(m, 1)
    elif axis == 1:
        prod += bias[:n]
    if relu:
        prod[prod < 0] = 0   # relu_forward's rule: NaN and -0.0 pass (np.maximum makes -0.0 +0.0)
    C[...] = prod
