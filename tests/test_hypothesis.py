"""A seeded, bounded randomized differential test (Hypothesis): random layer stacks (convolutions with any stride
and padding, pools with odd windows and strides, activations), batch sizes from 1, inputs holding NaN, +-inf,
-0.0 and denormals, run on every device and compared with a float64 model composed of tests/reference.py's ops,
and with PyTorch (float32, same weights) when torch is importable.

    make test                                       # lean: 10 examples on cpu and the PoCL devices (~5 s warm)
    CLCNN_HYPOTHESIS_EXAMPLES=500 pytest tests/test_hypothesis.py       # deeper: more examples
    CLCNN_HYPOTHESIS_OCLGRIND=1 ...                 # Oclgrind (cl:0) too: every kernel's accesses checked
    CLCNN_TEST_DEEP=1 ...                           # the deep grid: 200 examples, Oclgrind included

The examples are derandomized (the same ones every run, no example database), so a failure reproduces; a failing
example it finds is written down below as a plain regression test. Special values must agree with the rule in
clcnn/backends/base.py: where the float64 reference holds NaN (or +-inf), every device holds NaN (or the same inf).
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import reference as ref
from conftest import DEEP, _device_params, open_device

from clcnn.errors import ShapeError
from clcnn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sigmoid
from clcnn.model import Sequential

EXAMPLES = int(os.environ.get("CLCNN_HYPOTHESIS_EXAMPLES", 200 if DEEP else 10))
OCLGRIND = DEEP or os.environ.get("CLCNN_HYPOTHESIS_OCLGRIND") == "1"
DEVICES = [p.values[0] for p in _device_params() if (OCLGRIND or not p.id.endswith("-oclgrind"))
           and (DEEP or not p.marks)]   # a lean run: the devices of the lean grid
SPECIALS = [np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-45, -1e-45]
RTOL, ATOL = 2e-4, 2e-5   # float32 sums of at most a few hundred products against float64


@st.composite
def cases(draw):
    """(layers, input batch, labels, whether the stack should fit): a random stack ending Flatten -> Dense."""
    n, c = draw(st.sampled_from([1, 1, 2, 3, 5])), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    layers, shape, fits = [], (n, c, h, w), True
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["conv", "conv", "relu", "sigmoid", "pool"]))
        if kind == "conv":
            k = draw(st.integers(1, 4))
            layer = Conv2D(shape[1], draw(st.integers(1, 4)), k, stride=draw(st.integers(1, 3)),
                           padding=draw(st.integers(0, k + 1)))   # stride and padding past the kernel included
        elif kind == "pool":
            layer = MaxPool2D(draw(st.integers(1, 3)), stride=draw(st.integers(1, 3)))
        else:
            layer = ReLU() if kind == "relu" else Sigmoid()
        layers.append(layer)
        try:
            shape = layer.output_shape(shape)
        except ShapeError:
            fits = False   # the model must refuse the stack before any kernel runs
            break
    features = int(np.prod(shape[1:]))
    wrong = draw(st.integers(0, 9)) == 0   # now and then a Dense that does not fit
    classes = draw(st.integers(2, 4))
    layers += [Flatten()]
    if draw(st.booleans()):   # a hidden Dense with its activation (a ReLU fuses into the GEMM's write-out)
        hidden = draw(st.integers(1, 6))
        layers += [Dense(features + 1 if wrong else features, hidden), draw(st.sampled_from([ReLU, Sigmoid]))()]
        features = hidden
    else:
        features += 1 if wrong else 0
    layers += [Dense(features, classes)]
    x = draw(st.sampled_from([0.5, 1.0, 3.0])) * np.random.default_rng(draw(st.integers(0, 2**16))).standard_normal(
        (n, c, h, w)).astype(np.float32)
    for _ in range(draw(st.sampled_from([0, 0, 1, 3]))):   # special values at random places
        x.reshape(-1)[draw(st.integers(0, x.size - 1))] = draw(st.sampled_from(SPECIALS))
    y = np.array([draw(st.integers(0, classes - 1)) for _ in range(n)], np.int32)
    return layers, x, y, fits and not wrong


@np.errstate(all="ignore")
def reference_model(layers, params, x, y):
    """(logits, loss, {name: gradient}) in float64 from tests/reference.py's ops, PyTorch's semantics."""
    acts, a, pool_args = [], ref.f64(x), {}
    for i, layer in enumerate(layers):
        acts.append(a)
        n = a.shape[0]
        if isinstance(layer, Conv2D):
            k, s, p, m = layer.kernel_size, layer.stride, layer.padding, layer.out_channels
            _, c, h, w = a.shape
            ho, wo = ref.out_size(h, k, s, p), ref.out_size(w, k, s, p)
            cols = ref.im2col(a, 0, n, c, h, w, k, k, s, p)
            out = params[f"{i}.weight"].reshape(m, -1) @ cols
            a = out.reshape(m, n, ho, wo).transpose(1, 0, 2, 3) + params[f"{i}.bias"].reshape(1, m, 1, 1)
        elif isinstance(layer, MaxPool2D):
            _, c, h, w = a.shape
            a, pool_args[i] = ref.maxpool_forward(a, n, c, h, w, layer.kernel_size, layer.stride)
        elif isinstance(layer, ReLU):
            a = ref.relu_forward(a)
        elif isinstance(layer, Sigmoid):
            a = ref.sigmoid_forward(a)
        elif isinstance(layer, Flatten):
            a = a.reshape(n, -1)
        else:
            a = a @ params[f"{i}.weight"].T + params[f"{i}.bias"]
    n, classes = a.shape
    probs, loss = ref.softmax_xent_forward(a, y, n, classes)
    g, grads = ref.softmax_xent_backward(probs, y, n, classes), {}
    for i in range(len(layers) - 1, -1, -1):
        layer, inp = layers[i], acts[i]
        if isinstance(layer, Dense):
            grads[f"{i}.weight"], grads[f"{i}.bias"] = g.T @ inp, g.sum(axis=0)
            g = g @ params[f"{i}.weight"]
        elif isinstance(layer, Flatten):
            g = g.reshape(inp.shape)
        elif isinstance(layer, ReLU):
            g = ref.relu_backward(ref.relu_forward(inp), g)
        elif isinstance(layer, Sigmoid):
            g = ref.sigmoid_backward(ref.sigmoid_forward(inp), g)
        elif isinstance(layer, MaxPool2D):
            nb, c, h, w = inp.shape
            g = ref.maxpool_backward(g, pool_args[i], nb, c, h, w, layer.kernel_size, layer.stride)
        else:
            k, s, p, m = layer.kernel_size, layer.stride, layer.padding, layer.out_channels
            nb, c, h, w = inp.shape
            cols = ref.im2col(inp, 0, nb, c, h, w, k, k, s, p)
            gm = g.transpose(1, 0, 2, 3).reshape(m, -1)
            grads[f"{i}.weight"] = (gm @ cols.T).reshape(m, c, k, k)
            grads[f"{i}.bias"] = gm.sum(axis=1)
            dcols = params[f"{i}.weight"].reshape(m, -1).T @ gm
            g = ref.col2im(dcols, np.zeros(inp.shape), 0, nb, c, h, w, k, k, s, p)
    return a, loss, grads


def torch_model(layers, params, x):
    """The same stack in PyTorch (float32), or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    mods = []
    for layer in layers:
        if isinstance(layer, Conv2D):
            mods.append(torch.nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                                        layer.padding))
        elif isinstance(layer, MaxPool2D):
            mods.append(torch.nn.MaxPool2d(layer.kernel_size, layer.stride))
        elif isinstance(layer, Dense):
            mods.append(torch.nn.Linear(layer.in_features, layer.out_features))
        else:
            mods.append({ReLU: torch.nn.ReLU, Sigmoid: torch.nn.Sigmoid, Flatten: torch.nn.Flatten}[type(layer)]())
    net = torch.nn.Sequential(*mods)
    net.load_state_dict({k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in params.items()})
    with torch.no_grad():
        return net(torch.from_numpy(x)).double().numpy()


def same_values(got, want, what):
    """NaN where ``want`` is NaN, the same infinities, the finite entries within RTOL/ATOL of the largest."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{what}: NaN positions")
    fin = np.isfinite(want)
    np.testing.assert_array_equal(got[~fin & ~np.isnan(want)], want[~fin & ~np.isnan(want)], err_msg=what)
    if fin.any():
        scale = max(1.0, float(np.abs(want[fin]).max()))
        np.testing.assert_allclose(got[fin], want[fin], rtol=RTOL, atol=ATOL * scale, err_msg=what)


def check_case(layers, x, y, fits, devices=DEVICES):
    """Build the stack; a stack that does not fit must be refused at construction (no kernel ever runs); else
    compare logits, loss and every gradient on each device with the float64 reference (and torch's logits)."""
    event("refused" if not fits else "special values" if not np.isfinite(x).all() else "finite")
    if not fits:
        with pytest.raises(ShapeError, match="layer"):
            Sequential(layers, seed=0, input_shape=x.shape[1:])
        return
    model = Sequential(layers, seed=0, input_shape=x.shape[1:])
    params = {k: ref.f64(v) for k, v in model.state_dict().items()}
    want, want_loss, want_grads = reference_model(layers, params, x, y)
    oracle = torch_model(layers, params, x)
    if oracle is not None:
        same_values(oracle, want, "torch vs the float64 reference")
    for dev in devices:
        model.to(open_device(dev))
        same_values(model.predict(x), want, f"{dev} logits")
        loss, grads = model.gradients(x, y)
        same_values(loss, want_loss, f"{dev} loss")
        for name, g in want_grads.items():
            same_values(grads[name], g, f"{dev} {name}")


@settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(case=cases())
def test_random_stacks_agree_with_reference_on_every_device(case, capfd):
    check_case(*case)
    if OCLGRIND:   # Oclgrind reports an invalid access on stderr and carries on: read what it said
        from test_oclgrind import oclgrind_reports
        assert oclgrind_reports(capfd.readouterr().err) == []


# ---- regression tests: examples Hypothesis found, written down ---------------------------------------------
