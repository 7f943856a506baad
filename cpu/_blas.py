"""Not an op (a helper of cpu/gemm.py and cpu/im2col.py): NumPy's OpenBLAS as the Numba kernels use it: cblas_sgemm as a callable for nopython code, one BLAS thread.

Numba's threads call ``sgemm`` on their own blocks (``cpu/gemm.py``), so every BLAS call must run in the thread
that makes it: the process's BLAS is limited to one thread while the backend exists. (A threaded OpenBLAS also
spin-waits between calls and starves Numba's threads: a LeNet-5 step at batch 64 on 2 cores took 82 ms with
OpenBLAS threads, 4.5 ms without.) ``sgemm()`` is None where NumPy's BLAS is not an OpenBLAS this module can open; the
callers then fall back to NumPy's matmul.

The OpenBLAS core (AVX2 "Haswell", AVX-512 "SkylakeX", ...) is OpenBLAS's own choice, or OPENBLAS_CORETYPE's:
``core()`` names the one in use (benchmarks print it).
"""
from __future__ import annotations

import ctypes
import os

import numpy as np

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112   # the CBLAS enum values
_SYMBOLS = (("scipy_cblas_sgemm64_", ctypes.c_int64), ("cblas_sgemm64_", ctypes.c_int64),
            ("scipy_cblas_sgemm", ctypes.c_int32), ("cblas_sgemm", ctypes.c_int32))
_state: dict = {}


def _openblas_info():
    """threadpoolctl's entry for NumPy's OpenBLAS (or None)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    libs = [i for i in threadpool_info() if i.get("internal_api") == "openblas"]
    numpy_dir = os.path.dirname(os.path.dirname(np.__file__))
    mine = [i for i in libs if os.path.dirname(i["filepath"]).startswith(os.path.join(numpy_dir, "numpy"))]
    return (mine or libs or [None])[0]


def _load_sgemm(lib):
    """The cblas_sgemm of ``lib`` as a ctypes function Numba can call (pointers passed as uint64 addresses)."""
    for name, blasint in _SYMBOLS:
        fn = getattr(lib, name, None)
        if fn is None:
            continue
        i32, f32, ptr = ctypes.c_int, ctypes.c_float, ctypes.c_uint64
        # (order, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)
        fn.argtypes = [i32, i32, i32, blasint, blasint, blasint, f32, ptr, blasint, ptr, blasint, f32, ptr, blasint]
        fn.restype = None
        return fn
    return None


def _corename(lib) -> str:
    for name in ("gotoblas_corename", "scipy_openblas_get_corename64_", "openblas_get_corename"):
        fn = getattr(lib, name, None)
        if fn is not None:
            fn.restype = ctypes.c_char_p
            return (fn() or b"").decode()
    return ""


def setup() -> None:
    """Once per process: one BLAS thread, and the sgemm handle and core name (see ``sgemm``, ``core``)."""
    if "sgemm" in _state:
        return
    _state["sgemm"] = None
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=1, user_api="blas")
    except ImportError:   # without the limit, a threaded BLAS inside Numba's threads would oversubscribe
        return
    info = _openblas_info()
    if info is None:
        return
    try:
        lib = ctypes.CDLL(info["filepath"])
    except OSError:
        return
    _state["core"] = _corename(lib)
    _state["sgemm"] = _load_sgemm(lib)


def sgemm():
    """NumPy's cblas_sgemm as a ctypes function (pass it to a Numba kernel), or None (use NumPy's matmul)."""
    setup()
    return _state["sgemm"]


def core() -> str:
    """The OpenBLAS core whose kernels ``sgemm`` runs ("" when unknown or not OpenBLAS)."""
    setup()
    return _state.get("core", "")
