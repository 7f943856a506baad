"""Every layer's backward against central finite differences of its own forward, on every device.

The probe loss is L = sum(forward(x) * r) for a fixed random r, so dL/dy = r. Differences are taken in float32
with a step of 1e-2 on a handful of coordinates; inputs keep clear of ReLU kinks and max-pool ties so the
function is smooth within the step. Tolerance: |fd - analytic| <= 2e-2 * max(1, |analytic|) per coordinate
(float32 rounding over a 1e-2 step) — a wrong index or a missing term is off by O(1).
"""
import numpy as np
import pytest

from clcnn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sigmoid
from conftest import is_simulator

EPS, TOL, PROBES = 1e-2, 2e-2, 6


def _smooth_input(rng, shape, gap=0.05):
    """Values with pairwise gaps and distance from 0 larger than the FD step (no kinks, no ties)."""
    n = int(np.prod(shape))
    vals = (np.arange(n) - n / 2 + 0.5) * gap
    return rng.permutation(vals).reshape(shape).astype(np.float32)


def _loss(layer, be, x, r):
    y = be.download(layer.forward(be.upload(x))).astype(np.float64)
    return float((y * r).sum())


def _check_layer(be, layer, x, seed=0):
    probes = 2 if is_simulator(be) else PROBES  # Oclgrind simulates every work-item: keep it to a few probes
    rng = np.random.default_rng(seed)
    layer.init(rng)
    layer.to(be)
    yshape = layer.output_shape(x.shape)
    r = rng.standard_normal(yshape).astype(np.float32)
    for p in layer.params.values():
        be.fill(p.grad, 0.0)
    layer.forward(be.upload(x))
    dx = be.download(layer.backward(be.upload(r))).reshape(x.shape)
    grads = {k: be.download(p.grad).reshape(p.shape) for k, p in layer.params.items()}
    # d/dx at a few coordinates
    for idx in map(tuple, rng.integers(0, x.shape, size=(probes, x.ndim))):
        xp, xm = x.copy(), x.copy()
        xp[idx] += EPS
        xm[idx] -= EPS
        fd = (_loss(layer, be, xp, r) - _loss(layer, be, xm, r)) / (2 * EPS)
        assert abs(fd - dx[idx]) <= TOL * max(1.0, abs(dx[idx])), f"dx{idx}: fd {fd} vs {dx[idx]}"
    # d/dparam at a few coordinates (perturb the device copy through load/upload of the host value)
    for name, p in layer.params.items():
        base = be.download(p.data).reshape(p.shape).copy()
        for idx in map(tuple, rng.integers(0, p.shape, size=(probes, len(p.shape)))):
            vals = []
            for sign in (1, -1):
                w = base.copy()
                w[idx] += sign * EPS
                be.upload_into(p.data, w)
                vals.append(_loss(layer, be, x, r))
            be.upload_into(p.data, base)
            be.synchronize()
            fd = (vals[0] - vals[1]) / (2 * EPS)
            g = grads[name][idx]
            assert abs(fd - g) <= TOL * max(1.0, abs(g)), f"{name}{idx}: fd {fd} vs {g}"


CASES = {
    "dense": (lambda: Dense(7, 5), (3, 7)),
    "conv_pad1_s1": (lambda: Conv2D(2, 3, 3, stride=1, padding=1), (2, 2, 5, 6)),
    "conv_s2_pad2": (lambda: Conv2D(2, 3, 3, stride=2, padding=2), (2, 2, 7, 5)),
    "conv_chunked": (lambda: Conv2D(1, 2, 3, padding=1, workspace_bytes=1), (3, 1, 4, 4)),
    "maxpool_k2": (lambda: MaxPool2D(2), (2, 2, 4, 6)),
    "maxpool_k3s2": (lambda: MaxPool2D(3, 2), (1, 2, 7, 7)),
    "relu": (lambda: ReLU(), (3, 10)),
    "sigmoid": (lambda: Sigmoid(), (3, 10)),
    "flatten": (lambda: Flatten(), (2, 3, 2, 2)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_backward_matches_finite_differences(device, case):
    make, shape = CASES[case]
    x = _smooth_input(np.random.default_rng(1), shape, gap=0.05 if case != "sigmoid" else 0.3)
    _check_layer(device, make(), x)


def test_conv_chunking_does_not_change_results(device):
    """A 1-byte workspace cap forces one image per chunk; outputs and gradients match the unchunked layer."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 2, 6, 6)).astype(np.float32)
    dy = rng.standard_normal((5, 4, 3, 3)).astype(np.float32)
    results = []
    for cap in (None, 1):
        layer = Conv2D(2, 4, 3, stride=2, padding=1, workspace_bytes=cap)
        layer.init(np.random.default_rng(0))
        layer.to(device)
        for p in layer.params.values():
            device.fill(p.grad, 0.0)
        y = device.download(layer.forward(device.upload(x)))
        dx = device.download(layer.backward(device.upload(dy)))
        results.append([y, dx] + [device.download(p.grad) for p in layer.params.values()])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("algorithm", ["im2col", "hybrid"])
def test_conv_workspace_stays_under_the_cap(device, monkeypatch, algorithm):
    """The unrolled buffers a chunked conv asks for (im2col: cols + dcols; hybrid's backward: dcols alone) never
    exceed workspace_bytes (64 KiB here). The algorithm is forced: a GPU's own choice here is direct (none)."""
    monkeypatch.setattr(device, "conv_algo", algorithm)
    cap, asked = 64 << 10, {}
    real = device.scratch

    def recording(name, size):
        asked[name] = max(asked.get(name, 0), size)
        return real(name, size)
    monkeypatch.setattr(device, "scratch", recording)
    layer = Conv2D(3, 4, 3, padding=1, workspace_bytes=cap)
    layer.init(np.random.default_rng(0))
    layer.to(device)
    x = np.random.default_rng(1).standard_normal((16, 3, 12, 12)).astype(np.float32)  # 1 image: 15.6 KiB unrolled
    y = layer.forward(device.upload(x))
    layer.backward(device.upload(np.ones(tuple(y.shape), np.float32)))
    names = ("cols", "dcols") if algorithm == "im2col" else ("dcols",)
    used = 4 * sum(asked[name] for name in names)
    assert len(names) * 27 * 144 * 4 <= used <= cap, asked
    assert algorithm == "im2col" or "cols" not in asked   # the hybrid's weight gradient unrolls nothing
