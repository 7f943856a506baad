"""Batch-norm folded into the convolution before it in eval forwards: the batchnorm_fold op on every device against
tests/reference_conv.py, and eval forwards of conv-BN(-ReLU)(-pool) chains, under every convolution algorithm,
against a float64 NumPy chain; training around eval forwards is unchanged. Criterion: see test_ops.py."""
from __future__ import annotations

import numpy as np
import pytest

import reference_conv as refc  # tests/ is on sys.path (conftest.py)
from clcnn.backends.capabilities import CONV_ALGORITHMS
from clcnn.layers import BatchNorm2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU
from clcnn.model import Sequential
from clcnn.optim import SGD
from opcheck import FWD_TOL, check, check_exact, randn, up


def test_batchnorm_fold_op(device):
    rng = np.random.default_rng(0)
    m, c, k = 5, 3, 3
    w, b = randn(rng, m, c, k, k), randn(rng, m)
    g, beta, mean = randn(rng, m) + 1.0, randn(rng, m), randn(rng, m)
    var = (np.abs(randn(rng, m)) + 0.1).astype(np.float32)
    fw, fb = up(device, np.full((m, c, k, k), np.nan, np.float32)), up(device, np.full(m, np.nan, np.float32))
    device.batchnorm_fold(*(up(device, a) for a in (w, b, g, beta, mean, var)), fw, fb, m, c * k * k, 1e-5)
    want_w, want_b = refc.batchnorm_fold(w, b, g, beta, mean, var, 1e-5)
    check(device.download(fw), want_w, FWD_TOL, "folded_weight")
    check(device.download(fb), want_b, FWD_TOL, "folded_bias")


def _block(relu: bool, pool: bool, seed: int = 0) -> Sequential:
    """conv(2 -> 4, 3x3, pad 1)-BN[-ReLU][-maxpool 2]-flatten on 2 x 6 x 6 images, with non-trivial BN parameters
    and running statistics."""
    layers = [Conv2D(2, 4, 3, padding=1), BatchNorm2D(4)] + ([ReLU()] if relu else []) + \
        ([MaxPool2D(2)] if pool else []) + [Flatten()]
    model = Sequential(layers, input_shape=(2, 6, 6), seed=seed)
    rng = np.random.default_rng(seed + 1)
    bn = model.layers[1]
    bn.params["weight"].host[...] = rng.uniform(0.5, 2.0, 4)
    bn.params["bias"].host[...] = rng.standard_normal(4)
    bn.buffers["running_mean"].host[...] = rng.standard_normal(4)
    bn.buffers["running_var"].host[...] = rng.uniform(0.2, 3.0, 4)
    model.layers[0].params["bias"].host[...] = rng.standard_normal(4)
    return model


def _reference(model, x, relu, pool) -> np.ndarray:
    conv, bn = model.layers[0], model.layers[1]
    y = refc.conv(x, conv.params["weight"].host, conv.params["bias"].host, 1, 1)
    mean, var = (np.asarray(bn.buffers[k].host, np.float64)[None, :, None, None]
                 for k in ("running_mean", "running_var"))
    y = (y - mean) / np.sqrt(var + bn.eps) * np.asarray(bn.params["weight"].host)[None, :, None, None] \
        + np.asarray(bn.params["bias"].host)[None, :, None, None]
    if relu:
        y = np.maximum(y, 0)
    if pool:
        n, c, h, w = y.shape
        y = y.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))
    return y.reshape(len(y), -1)


@pytest.mark.parametrize("algo", CONV_ALGORITHMS)
@pytest.mark.parametrize("relu,pool", [(True, True), (True, False), (False, False)],
                         ids=["bn-relu-pool", "bn-relu", "bn"])
def test_eval_forward_folds_batchnorm(device, algo, relu, pool):
    """An eval forward (no backward follows, batch-norm in eval mode) runs the folded convolution, with the ReLU
    and the pool in its ops where the algorithm allows, and matches the float64 conv-BN-ReLU-pool chain; the
    batch-norm's launch is replaced by the fold's, and the direct forward pools too (a forward that keeps things
    for a backward does not fold)."""
    model = _block(relu, pool).to(device)
    model.eval()
    x = randn(np.random.default_rng(5), 3, 2, 6, 6)
    saved, device.conv_algo = device.conv_algo, algo
    try:
        dx = up(device, x)
        before = device.launches
        y_unfolded = device.download(model.forward(dx, train=True))
        unfolded = device.launches - before
        assert not model.layers[1].folded_by_conv
        before = device.launches
        y = device.download(model.forward(dx, train=False))
        folded = device.launches - before
    finally:
        device.conv_algo = saved
    assert model.layers[1].folded_by_conv
    want = _reference(model, x, relu, pool)
    check(y, want, FWD_TOL, f"folded eval forward ({algo})")
    check(y_unfolded, want, FWD_TOL, f"unfolded eval forward ({algo})")
    # the fold's launch replaces the batch-norm's; the direct forward (hybrid's too) also takes over the pool's
    assert folded <= unfolded - (algo in ("direct", "hybrid") and pool), f"{algo}: {folded} launches, {unfolded}"


def _net(seed=3) -> Sequential:
    return Sequential([Conv2D(1, 4, 3, padding=1), BatchNorm2D(4), ReLU(), MaxPool2D(2), Flatten(), Dense(36, 3)],
                      input_shape=(1, 6, 6), seed=seed)


def test_training_around_eval_forwards_is_unchanged(device):
    """predict (folded eval forwards) between training steps changes nothing the steps compute: the folded
    batch-norm and the fused pool pass their flags back to the training path."""
    rng = np.random.default_rng(0)
    x, y = randn(rng, 8, 1, 6, 6), rng.integers(0, 3, 8).astype(np.int32)
    a, b = _net().to(device), _net().to(device)
    opt_a, opt_b = SGD(a, lr=0.1, momentum=0.9), SGD(b, lr=0.1, momentum=0.9)
    for step in range(3):
        a.train_step(x, y, opt_a)
        b.train_step(x, y, opt_b)
        logits = a.predict(x)
        assert a.layers[1].folded_by_conv and np.isfinite(logits).all()
    for name, p in a.state_dict().items():
        check_exact(np.asarray(p), np.asarray(b.state_dict()[name]), name)
    b.eval()
    check(logits, b.predict(x), FWD_TOL, "predict after the same steps")
