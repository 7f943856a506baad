"""Not an op: the argument check every Numba op of clcnn.cpu shares."""
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
