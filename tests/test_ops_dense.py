"""The dense_backward op (a dense layer's weight, bias and input gradients; OpenCL: both products in one launch of
cl/dense.cl) on every device against tests/reference.py's gemm, and on OpenCL under every vec tile config.
Criterion: see test_ops.py."""
from __future__ import annotations

import numpy as np
import pytest

import reference as ref  # tests/ is on sys.path (conftest.py)
from clcnn.backends.gemm_configs import GEMM_CONFIGS, gemm_geometry
from conftest import deep, open_device
from opcheck import FWD_TOL, check, randn, up
from test_ops_gemm import SWEEP, SWEEP_DEVICES, _cfg_id


def run_dense_backward(dev, n, in_features, out_features, beta=0.0, relu_mask=False, need_dx=True, seed=0):
    """One dense_backward against the reference: beta 0 on NaN-filled gradients (they must not be read), a
    mask (x, a ReLU's output) about half 0 and some -0.0 (a NaN in x would reach grad_weight too: the NaN-passing
    rule of the mask is test_ops_gemm_epilogue's)."""
    rng = np.random.default_rng(seed)
    dy, x, w = randn(rng, n, out_features), randn(rng, n, in_features), randn(rng, out_features, in_features)
    if relu_mask:
        x = np.maximum(x, 0).astype(np.float32)
        x.reshape(-1)[1::11] = -0.0
    gw0 = randn(rng, out_features, in_features) if beta else np.full((out_features, in_features), np.nan, np.float32)
    gb0 = randn(rng, out_features) if beta else np.full(out_features, np.nan, np.float32)
    gw, gb = up(dev, gw0), up(dev, gb0)
    dx = up(dev, np.full((n, in_features), np.nan, np.float32)) if need_dx else None
    dev.dense_backward(up(dev, dy), up(dev, x), up(dev, w), gw, gb, dx, n, in_features, out_features, beta=beta,
                       relu_mask=relu_mask)
    want_gw = ref.gemm(dy, x, gw0 if beta else np.zeros_like(gw0), out_features, in_features, n, trans_a=True,
                       beta=beta)
    check(dev.download(gw), want_gw.reshape(out_features, in_features), FWD_TOL, "grad_weight")
    want_gb = dy.astype(np.float64).sum(0) + (beta * gb0 if beta else 0.0)
    check(dev.download(gb), want_gb, FWD_TOL, "grad_bias")
    if need_dx:
        want = ref.gemm(dy, w, np.zeros((n, in_features)), n, in_features, out_features,
                        relu_mask=x if relu_mask else None)
        check(dev.download(dx), want.reshape(n, in_features), FWD_TOL, "dx")


@pytest.mark.parametrize("n,in_features,out_features", [(37, 84, 10), (64, 400, 120), (1, 3, 5), deep(256, 400, 120)],
                         ids=["fc3", "fc1", "tiny", "fc1_256"])
@pytest.mark.parametrize("beta,relu_mask,need_dx", [(0.0, False, True), (1.0, True, True), (0.5, False, False)],
                         ids=["plain", "accumulate+mask", "no_dx"])
def test_dense_backward(device, small, n, in_features, out_features, beta, relu_mask, need_dx):
    if small:
        n, in_features = min(n, 19), min(in_features, 40)
    run_dense_backward(device, n, in_features, out_features, beta, relu_mask, need_dx)


def test_dense_backward_long_k(device, monkeypatch):
    """A weight gradient over a long mini-batch on a device of few compute units (OpenCL: split over k, so the
    two products run apart, the base's way) gives the same result."""
    if hasattr(device, "_gemm_limits"):
        monkeypatch.setattr(device, "_gemm_limits", device._gemm_limits[:3] + (64,))
        device._dense_plans.clear()
    run_dense_backward(device, 1024, 12, 20, beta=0.5, relu_mask=True, seed=3)
    if hasattr(device, "_dense_plans"):
        assert device._dense_plans[(1024, 12, 20)] is None


def test_dense_backward_is_one_launch(device):
    """On OpenCL the three gradients of a typical dense layer take one launch (cl/dense.cl); Numba's op calls
    are counted per gemm, so there it is the base's two."""
    dev = device
    a = [up(dev, np.ones(s, np.float32)) for s in (64 * 10, 64 * 84, 10 * 84, 10 * 84, 10, 64 * 84)]
    before = dev.launches
    dev.dense_backward(*a, 64, 84, 10)
    dev.synchronize()
    assert dev.launches - before == (1 if hasattr(dev, "_dense_plans") else 2)


def test_dense_backward_checks_sizes(device):
    """An array smaller than its shape is refused, naming it, before anything is written."""
    ok = {s: up(device, np.full(s, 7.0, np.float32)) for s in (6, 12, 8, 3)}
    dy, x, w, gb = ok[6], ok[12], ok[8], ok[3]   # n 3, in 4, out 2
    for name, args in (("dy", (ok[3], x, w, w, up(device, np.zeros(2, np.float32)), x)),
                       ("grad_bias", (dy, x, w, w, up(device, np.zeros(1, np.float32)), x)),
                       ("dx", (dy, x, w, w, gb, up(device, np.zeros(11, np.float32))))):
        with pytest.raises(ValueError, match=f"dense_backward: {name} holds"):
            device.dense_backward(*args, 3, 4, 2)
    assert (device.download(w) == 7.0).all() and (device.download(x) == 7.0).all()


def _vec_params():
    """(device id, config index) of each vec config: SWEEP's on the first sweep device; deep: all, everywhere."""
    out = []
    for d, (pid, dev) in enumerate(SWEEP_DEVICES):
        for i, cfg in enumerate(GEMM_CONFIGS):
            if cfg["variant"] == "vec":
                mark = () if d == 0 and cfg in SWEEP else (pytest.mark.deep,)
                out.append(pytest.param(dev, i, id=f"{pid}-{_cfg_id(cfg)}", marks=mark))
    return out


@pytest.mark.parametrize("dev_id,index", _vec_params())
def test_dense_backward_config(dev_id, index):
    """cl/dense.cl under each vec config, on shapes crossing its tile: the weight gradient two tile rows high
    (out = TM+1), the input gradient TM+3 rows, in = TN+5 columns (partial quads: unaligned loads), then with
    every dimension a multiple of 4 (128-bit loads)."""
    dev, cfg = open_device(dev_id), GEMM_CONFIGS[index]
    if cfg not in dev.gemm_configs:
        pytest.skip(f"does not fit {dev.info.name}")
    tm, tn, _, _ = gemm_geometry(cfg)
    with dev.gemm_forced(cfg):
        assert dev._dense_plan(tm + 3, tn + 5, tm + 1) is not None
        run_dense_backward(dev, tm + 3, tn + 5, tm + 1, beta=0.5, relu_mask=True, seed=index)
        run_dense_backward(dev, tm + 4, tn + 8, tm + 4, seed=index + 1)
