"""Shared by the op tests: tolerances and comparison helpers (see test_ops.py's docstring for the criterion)."""
from __future__ import annotations

import numpy as np

FWD_TOL = 1e-5
GRAD_TOL = 1e-4

def check(got, want, tol, what="result"):
    """Assert got (float32 from the device) matches want (float64) to max|got-want|/max|want| <= tol."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    bad = ~np.isfinite(got) & np.isfinite(want)
    assert not bad.any(), f"{what}: non-finite at {np.argwhere(bad)[:5].tolist()} (got {got[bad][:5]})"
    if got.size == 0:
        return
    diff = np.abs(got - want)
    scale = max(float(np.max(np.abs(want))), 1e-30)
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape)
    err = float(diff[worst]) / scale
    assert err <= tol, (f"{what}: rel err {err:.3g} > {tol:g} at {tuple(int(i) for i in worst)}: "
                        f"got {got[worst]!r}, want {want[worst]!r} (max|want| {scale:.4g})")


def check_exact(got, want, what="result"):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    bad = ~((got == want) | (np.isnan(got.astype(np.float64)) & np.isnan(want.astype(np.float64))))
    assert not bad.any(), (f"{what}: {int(bad.sum())} entries differ, first at {np.argwhere(bad)[0].tolist()}: "
                           f"got {got[bad][:5]}, want {want[bad][:5]}")


def check_scalar(got, want, tol, what="loss"):
    got = float(np.asarray(got).reshape(-1)[0])
    assert np.isfinite(got), f"{what}: got {got}"
    assert abs(got - want) <= tol * max(abs(want), 1.0), f"{what}: got {got!r}, want {want!r}"


def config_paths(cfg: dict) -> tuple:
    """The code paths of an OpenCL GEMM tile config (see cl/gemm_vec.cl): its variant, whether lanes are arranged
    (WX), register double-buffering (FB), the early stash (ST), the vector width (VW) and whether WM and WN are
    multiples of 4 (float4 local reads) or not."""
    return (cfg["variant"], cfg.get("WX", 0) > 0, cfg.get("FB", 0), cfg.get("ST", 0) > 0, cfg.get("VW", 4),
            cfg.get("WM", 4) % 4 == 0 and cfg.get("WN", 4) % 4 == 0)


def representative_configs(configs) -> list[dict]:
    """For each code path (``config_paths``) among ``configs``, its config with the smallest tile: together they
    run every path of every GEMM kernel variant at a fraction of the builds (a big tile takes PoCL 5-50 s)."""
    best: dict[tuple, dict] = {}
    for cfg in configs:
        area = cfg.get("TM", cfg.get("TS", 0)) * cfg.get("TN", cfg.get("TS", 0))
        key = config_paths(cfg)
        if key not in best or area < best[key][0]:
            best[key] = (area, cfg)
    return [cfg for _, cfg in best.values()]


def randn(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def up(dev, host):
    return dev.upload(np.ascontiguousarray(host))
