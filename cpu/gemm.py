"""Strided-batched GEMM over flat storage for the Numba backend (NumPy's BLAS on bounds-checked strided views).

Also home of ``flat``, the argument check every ``cpu/*`` wrapper uses before calling its kernel.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

_FOLD = 256  # per-entry size below which a batched GEMM is folded into one call (see gemm)


def flat(a, need: int, name: str, dtype=np.float32) -> np.ndarray:
    """``a`` as a 1-D C-contiguous view, after checking its dtype and that it holds at least ``need`` elements.

    Keeping every kernel argument a 1-D contiguous float32/int32 array means each Numba kernel compiles once.
    """
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"{name}: expected {np.dtype(dtype).name}, got {a.dtype.name}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name}: array must be C-contiguous")
    if a.size < need:
        raise ValueError(f"{name}: needs {need} elements, array has {a.size}")
    return a.reshape(-1)


def _matrix(buf, name, off, rows, cols, ld, batch, stride) -> np.ndarray:
    """A (batch, rows, cols) view of flat ``buf`` starting at ``off`` with row stride ``ld`` and batch stride
    ``stride``; raises instead of letting the view reach outside the array."""
    if ld < cols:
        raise ValueError(f"gemm: leading dimension of {name} ({ld}) < its column count ({cols})")
    if off < 0 or stride < 0:
        raise ValueError(f"gemm: negative offset or batch stride for {name}")
    last = off + (batch - 1) * stride + (rows - 1) * ld + cols - 1
    if last >= buf.size:
        raise ValueError(f"gemm: {name} view reaches element {last}, array has {buf.size}")
    it = buf.itemsize
    return as_strided(buf[off:], shape=(batch, rows, cols), strides=(stride * it, ld * it, it))


def gemm(a, b, c, m, n, k, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, lda=None, ldb=None, ldc=None,
         a_off=0, b_off=0, c_off=0, batch=1, stride_a=0, stride_b=0, stride_c=0, reduce=False) -> None:
    """C_b = alpha * op(A_b) @ op(B_b) + beta * C_b for b < batch (reduce: C_0 = alpha * sum_b ... + beta * C_0).

    A_b: (k, m) if trans_a else (m, k), row stride lda; B_b: (n, k) if trans_b else (k, n), ldb; C_b: (m, n), ldc.
    Semantics are those of ``Backend.gemm``; beta == 0 never reads C. Raises ValueError when a view would reach
    outside its array.
    """
    if min(m, n, k, batch) < 1:
        raise ValueError(f"gemm: m, n, k, batch must be >= 1 (got {m}, {n}, {k}, {batch})")
    ra, ca = (k, m) if trans_a else (m, k)
    rb, cb = (n, k) if trans_b else (k, n)
    fa, fb, fc = flat(a, 0, "gemm A"), flat(b, 0, "gemm B"), flat(c, 0, "gemm C")
    ldc = n if ldc is None else ldc
    A = _matrix(fa, "A", a_off, ra, ca, ca if lda is None else lda, batch, stride_a)
    B = _matrix(fb, "B", b_off, rb, cb, cb if ldb is None else ldb, batch, stride_b)
    C = _matrix(fc, "C", c_off, m, n, ldc, 1 if reduce else batch, stride_c)
    if trans_a:
        A = A.transpose(0, 2, 1)
    if trans_b:
        B = B.transpose(0, 2, 1)
    # Small per-entry GEMMs are folded into one BLAS call (fewer calls, larger matrices); large ones go to
    # np.matmul's batch loop, which avoids the copies folding needs. _FOLD was measured on LeNet-5's convolutions.
    if reduce and batch > 1:
        if k >= _FOLD:
            prod = np.matmul(A, B).sum(axis=0)
        else:  # one GEMM of inner size batch*k, computed as (B_cat^T @ A_cat^T)^T (the faster orientation here)
            prod = (B.reshape(batch * k, n).T @ A.transpose(1, 0, 2).reshape(m, batch * k).T).T
        _store(C[0], prod, alpha, beta)
    elif batch > 1 and stride_a == 0 and n < _FOLD:  # shared A (conv forward/backward-data): batch into n
        Bf = B.transpose(1, 0, 2).reshape(k, batch * n)
        if stride_c == n and ldc >= batch * n:  # C_b side by side: C is one (m, batch*n) matrix
            _store(_matrix(fc, "C", c_off, m, batch * n, ldc, 1, 0)[0], A[0], alpha, beta, Bf)
        else:
            _store(C.transpose(1, 0, 2), (A[0] @ Bf).reshape(m, batch, n), alpha, beta)
    elif batch > 1 and stride_b == 0 and m < _FOLD:  # shared B: fold the batch into m
        _store(C, (A.reshape(batch * m, k) @ B[0]).reshape(batch, m, n), alpha, beta)
    else:
        _store(C, A, alpha, beta, B)


def _store(C, X, alpha, beta, Y=None) -> None:
    """C = alpha * P + beta * C with P = X @ Y when Y is given, else P = X; beta == 0 never reads C."""
    if Y is None:
        prod = X
    elif alpha == 1.0 and beta == 0.0:
        np.matmul(X, Y, out=C)
        return
    else:
        prod = np.matmul(X, Y)
    if alpha != 1.0:
        prod = prod * np.float32(alpha)
    if beta == 0.0:
        C[...] = prod
    else:
        if beta != 1.0:
            C *= np.float32(beta)
        C += prod
