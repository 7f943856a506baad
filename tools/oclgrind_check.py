"""tools/oclgrind_ops.py's result check, shared with tools/oclgrind_conv.py: mismatches are recorded, not raised."""
from __future__ import annotations

import numpy as np

FAILURES: list[str] = []


def compare(name, got, want, tol):
    """Record a mismatch (max|got-want| / max|want| > tol, or NaN) instead of stopping at the first."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    err = float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-30)) if want.size else 0.0
    ok = got.shape == want.shape and np.isfinite(err) and err <= tol
    print(f"{'ok  ' if ok else 'FAIL'} {name}: rel err {err:.2e}", flush=True)
    if not ok:
        FAILURES.append(f"{name}: rel err {err:.3g} > {tol:g}")


def rnd(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)
