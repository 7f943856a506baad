"""Not an op: the argument checks every Numba op of clcnn.cpu shares (check_view: also OpenCL's gemm)."""
from __future__ import annotations

import numpy as np


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


def check_view(buf, name: str, off: int, rows: int, cols: int, ld: int, batch: int, stride: int) -> None:
    """ValueError unless the (batch, rows, cols) view of ``buf`` (anything with ``.size``) with row stride ``ld``
    and batch stride ``stride``, starting at element ``off``, lies inside it (a gemm operand, Backend.gemm)."""
    if ld < cols:
        raise ValueError(f"gemm: leading dimension of {name} ({ld}) < its column count ({cols})")
    if off < 0 or stride < 0:
        raise ValueError(f"gemm: negative offset or batch stride for {name}")
    last = off + (batch - 1) * stride + (rows - 1) * ld + cols - 1
    if last >= buf.size:
        raise ValueError(f"gemm: {name} view reaches element {last}, array has {buf.size}")
