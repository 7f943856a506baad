"""The direct convolution: Backend.conv_forward (bias + ReLU + max-pool in its write-out) on every device
against the float64 reference of tests/reference_conv.py, and Conv2D's two algorithms (direct, im2col) giving the
same network outputs. Tolerances: test_ops.py's (FWD_TOL on values; the arg-max bit-exact where no two window
values are within rounding of each other)."""
from __future__ import annotations

import numpy as np
import pytest

import reference_conv as rc
from conftest import deep
from opcheck import FWD_TOL, check, check_exact, randn, up

# (N, C, H, W, M, k, stride, pad, relu, pool)
CASES = [
    (2, 3, 9, 9, 4, 3, 1, 1, True, 2),
    (2, 1, 28, 28, 6, 5, 1, 2, True, 2),       # LeNet-5 conv1
    (3, 6, 14, 14, 16, 5, 1, 0, True, 2),      # LeNet-5 conv2
    (2, 2, 8, 7, 3, 3, 2, 1, False, 1),        # stride 2, no pool, odd width
    (1, 2, 11, 11, 2, 3, 1, 0, True, 3),       # 9x9 output, 3x3 windows
    (2, 3, 7, 6, 5, 1, 1, 0, False, 2),        # 1x1 kernel; 7 rows: the last row no window covers
    deep((2, 4, 16, 16, 8, 3, 1, 1, True, 4)),
    deep((1, 3, 12, 10, 4, 4, 2, 2, False, 2)),
]


def _id(case):
    n, c, h, w, m, k, s, p, relu, pool = case
    return f"n{n}c{c}h{h}w{w}m{m}k{k}s{s}p{p}{'r' if relu else ''}P{pool}"


def run_conv_forward(device, case, seed=0, x=None):
    n, c, h, w, m, k, s, p, relu, pool = case
    rng = np.random.default_rng(seed)
    x = randn(rng, n, c, h, w) if x is None else x
    wt, b = randn(rng, m, c, k, k), randn(rng, m)
    want, warg = rc.conv_forward(x, wt, b, s, p, relu, pool)
    y = up(device, np.full(want.shape, np.nan, np.float32))
    arg = up(device, np.full(want.shape, -7, np.int32)) if pool > 1 else None
    device.conv_forward(up(device, x), up(device, wt), up(device, b), y, arg, n, c, h, w, m, k, s, p, relu, pool)
    return device.download(y), (device.download(arg) if pool > 1 else None), want, warg


def check_conv_forward(device, case):
    got, arg, want, warg = run_conv_forward(device, case)
    check(got, want, FWD_TOL, "conv_forward y")
    if arg is not None:
        check_exact(arg, warg, "conv_forward argmax")


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_conv_forward(device, case):
    check_conv_forward(device, case)


@pytest.mark.parametrize("case", [CASES[1], CASES[5]], ids=_id)
def test_conv_forward_geometry_constants(geometry_device, case):
    check_conv_forward(geometry_device, case)


def test_conv_forward_special_values(device):
    """NaN in the input propagates to the windows that read it and wins their pool (maxpool_forward's rule);
    the ReLU keeps NaN and turns negatives into 0."""
    case = (1, 1, 6, 6, 2, 3, 1, 1, True, 2)
    x = randn(np.random.default_rng(3), 1, 1, 6, 6)
    x[0, 0, 0, 0] = np.nan
    got, arg, want, warg = run_conv_forward(device, case, x=x)
    assert np.isnan(got[:, :, 0, 0]).all() and not np.isnan(got[:, :, 2:, 2:]).any()
    check_exact(np.isnan(got), np.isnan(want), "NaN positions")
    fin = ~np.isnan(want)
    check(got[fin], want[fin], FWD_TOL, "finite outputs")
    assert (got[fin] >= 0).all()
    check_exact(arg, warg, "argmax with NaN")


def per_algorithm(device, spec, shape, seed, run) -> dict:
    """{algorithm: run(model, algorithm)} for the model ``spec`` built fresh on ``device`` with every convolution
    forced to each of the algorithms (CONV_ALGORITHMS)."""
    from clcnn.backends.capabilities import CONV_ALGORITHMS
    from clcnn.models import get_model
    out, saved = {}, device.conv_algo
    try:
        for algo in CONV_ALGORITHMS:
            device.conv_algo = algo
            out[algo] = run(get_model(spec, input_shape=shape, num_classes=10, seed=seed).to(device), algo)
    finally:
        device.conv_algo = saved
    return out


# LeNet-5's shape of network (direct, pool and ReLU fused) and a stride-2 convolution with a 3x3 pool and no ReLU in
# the default run; a ReLU without a pool and a batch-norm between convolution and pool in the deep grid (each
# spec builds its kernels three times on every device)
# (max-pools right after a convolution and its ReLU, max-pools after a convolution's batch-norm and ReLU)
FUSED_POOLS = {"c6k5p2-relu-mp2-c16k5-relu-mp2-fc": (2, 0), "c4k3s2p1-mp3-fc": (1, 0), "c5k3-relu-fc": (0, 0),
               "c4k3p1-bn-relu-mp2-fc": (0, 1)}
AGREEMENT_SPECS = ["c6k5p2-relu-mp2-c16k5-relu-mp2-fc", "c4k3s2p1-mp3-fc", deep("c5k3-relu-fc", id="c5k3-relu-fc"),
                   deep("c4k3p1-bn-relu-mp2-fc", id="c4k3p1-bn-relu-mp2-fc")]


@pytest.mark.parametrize("spec", AGREEMENT_SPECS)
def test_conv2d_algorithms_agree(lean_device, spec):
    """One training step's loss and every parameter gradient, then the eval logits, agree between the direct
    convolution (pool, ReLU and their backward fused into conv_forward/conv_backward), the hybrid (the direct
    forward, the im2col path's backward), the implicit GEMM and im2col + GEMM with separate layers; a MaxPool2D (stride = window)
    right after a convolution (and its ReLU), or after its batch-norm folded in the eval forward, reports
    pooled_by_conv exactly when the convolution pooled in the last (eval) forward."""
    rng = np.random.default_rng(6)
    x, y = randn(rng, 4, 1, 20, 20), rng.integers(0, 10, 4).astype(np.int32)

    def run(model, algo):
        grads = model.gradients(x, y)
        logits = model.eval().predict(x)
        pools = [layer for layer in model.layers if type(layer).__name__ == "MaxPool2D"]
        fused = {id(layer.fuse_pool) for layer in model.layers if getattr(layer, "fuse_pool", None) is not None}
        folded = {id(layer.fold_pool) for layer in model.layers if getattr(layer, "fold_pool", None) is not None}
        assert (len(fused), len(folded)) == FUSED_POOLS[spec]
        # the last forward was predict's (eval): a pool after a folded batch-norm is the convolution's there too
        assert all(p.pooled_by_conv == (algo in ("direct", "hybrid") and id(p) in fused | folded) for p in pools)
        return grads, logits
    got = per_algorithm(lean_device, spec, (1, 20, 20), 2, run)
    ref_grads, ref_logits = got["im2col"]
    scale = max(float(np.abs(g).max()) for g in ref_grads[1].values())   # a conv bias before a batch-norm has
    for algo in ("direct", "hybrid", "implicit"):                       # a gradient of ~0 (rounding)
        (loss, grads), logits = got[algo]
        assert abs(loss - ref_grads[0]) <= 1e-5 * max(1.0, abs(ref_grads[0]))
        for name, g in ref_grads[1].items():
            err = float(np.abs(grads[name] - g).max())
            assert err <= 1e-4 * max(float(np.abs(g).max()), 1e-3 * scale), f"{spec} {algo}: d{name}: {err:.3g}"
        check(logits, ref_logits, 1e-5, f"{spec}: {algo} vs im2col logits")


def test_conv_algorithm_rules(device):
    """A forced algorithm must be one of CONV_ALGORITHMS (ConfigError naming them); a tuned entry applies to its
    geometry at the nearest tuned batch size, and an untuned geometry falls back to the backend's rule."""
    from clcnn.errors import ConfigError
    saved_algo, saved_tuned = device.conv_algo, device.conv_tuned
    geometry = (1, 28, 28, 6, 5, 1, 2, 2)
    try:
        device.conv_algo = "Direct"
        with pytest.raises(ConfigError, match="im2col, direct, hybrid"):
            device.conv_algorithm(8, *geometry)
        device.conv_algo = None
        device.conv_tuned = {"conv n8 c1 h28 w28 m6 k5 s1 p2 pool2": "hybrid",
                             "conv n256 c1 h28 w28 m6 k5 s1 p2 pool2": "direct"}
        assert device.conv_algorithm(8, *geometry) == "hybrid"
        assert device.conv_algorithm(5, *geometry) == "hybrid"      # nearest: 8
        assert device.conv_algorithm(1000, *geometry) == "direct"   # nearest: 256
        assert device.conv_algorithm(8, 1, 28, 28, 7, 5, 1, 2, 2) == device._conv_rule(8, 1, 28, 28, 7, 5, 1, 2, 2)
    finally:
        device.conv_algo, device.conv_tuned = saved_algo, saved_tuned
