"""The issue-13 ops and layers: BatchNorm2D/1D, Dropout, AvgPool2D, GlobalAvgPool2D, Tanh, Residual.

Each op on every device against the float64 references (tests/reference.py; opcheck's criterion: forward
FWD_TOL, gradients GRAD_TOL, dropout's mask bit-exact), each layer's backward against finite differences
(test_layers.py's probe), the ops under Oclgrind's checkers (one small case each, in a subprocess: ``python
tests/test_layers_new.py --oclgrind``), configs, modes and recorded steps. Whole networks against PyTorch and
under data parallelism: tests/test_layers_new_models.py. Oclgrind as an in-process device and the PoCL devices
after the first are in the deep grid (the same checks again).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference as ref  # noqa: E402
from opcheck import FWD_TOL, GRAD_TOL, check, check_exact, randn  # noqa: E402

from clcnn.layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten,  # noqa: E402
                          GlobalAvgPool2D, LAYERS, ReLU, Residual, Tanh, from_config, layer_config)


def _lean_params(opencl_lean: int = 1):
    """Every device; Oclgrind in-process and the OpenCL devices after the first ``opencl_lean`` in the deep grid
    (0: only cpu in the lean default, for whole-network tests whose PoCL GEMM builds cost 5-25 s cold)."""
    from conftest import device_params
    out, pocl = [], 0
    for p in device_params():
        extra = []
        if "oclgrind" in p.id:
            extra = [pytest.mark.deep]
        elif p.id != "cpu":
            pocl += 1
            extra = [pytest.mark.deep] if pocl > opencl_lean else []
        out.append(pytest.param(*p.values, id=p.id, marks=[*p.marks, *extra]))
    return out


@pytest.fixture(scope="module", params=_lean_params())
def dev(request):
    from conftest import open_device
    return open_device(request.param)


@pytest.fixture(scope="module", params=_lean_params(0))
def net_dev(request):
    """As ``dev``, for whole networks: every OpenCL device in the deep grid."""
    from conftest import open_device
    return open_device(request.param)


# ---- ops against the float64 references --------------------------------------------------------------------
def run_batchnorm(be, rng, n, c, inner, training, beta, with_dx=True, relu=False):
    """batchnorm_forward + batchnorm_backward on ``be`` vs the reference; returns a list of (what, err) fails."""
    x = randn(rng, n, c, inner, scale=2.0) + 0.5
    w, b = randn(rng, c) + 1.0, randn(rng, c)
    rm, rv = randn(rng, c), np.abs(randn(rng, c)) + 0.5
    dy, dw0, db0 = randn(rng, n, c, inner), randn(rng, c), randn(rng, c)
    d = {k: be.upload(v) for k, v in dict(x=x, w=w, b=b, rm=rm, rv=rv, dy=dy, dw=dw0, db=db0).items()}
    y, sm, si, dx = be.zeros((n, c, inner)), be.zeros((c,)), be.zeros((c,)), be.zeros((n, c, inner))
    be.batchnorm_forward(d["x"], y, d["w"], d["b"], d["rm"], d["rv"], sm, si, n, c, inner, 1e-5, 0.1, training,
                         relu=relu)
    be.batchnorm_backward(d["x"], d["dy"], dx if with_dx else None, d["w"], sm, si, d["dw"], d["db"], n, c, inner,
                          training, beta=beta, y=y if relu else None)   # relu: the fused ReLU's backward too
    wy, wrm, wrv, wmean, winv = ref.batchnorm_forward(x, w, b, rm, rv, 1e-5, 0.1, training)
    cut = np.where(be.download(y) <= 0, 0, dy) if relu else dy   # the device's own y decides the ReLU mask
    wdx, wdw, wdb = ref.batchnorm_backward(x, cut, w, wmean, winv, training)
    out = [("y", be.download(y), np.maximum(wy, 0) if relu else wy, FWD_TOL),
           ("running_mean", be.download(d["rm"]), wrm, FWD_TOL),
           ("running_var", be.download(d["rv"]), wrv, FWD_TOL), ("save_invstd", be.download(si), winv, FWD_TOL),
           ("dweight", be.download(d["dw"]), beta * dw0 + wdw, GRAD_TOL),
           ("dbias", be.download(d["db"]), beta * db0 + wdb, GRAD_TOL)]
    if with_dx:
        out.append(("dx", be.download(dx), wdx, GRAD_TOL))
    return out


BN_CASES = [(4, 3, 6, True, 0.0), (5, 4, 1, True, 1.0), (3, 2, 5, False, 0.0), (2, 3, 1, False, 1.0),
            (1, 2, 3, True, 0.0)]


@pytest.mark.parametrize("case", BN_CASES + [pytest.param((16, 5, 300, True, 0.0), marks=pytest.mark.deep)],
                         ids=str)
def test_batchnorm_ops(dev, case):
    n, c, inner, training, beta = case
    for what, got, want, tol in run_batchnorm(dev, np.random.default_rng(n + inner), n, c, inner, training, beta,
                                              with_dx=case != BN_CASES[1], relu=case == BN_CASES[2]):
        check(got, want, tol, f"batchnorm {what}")


@pytest.fixture(scope="module", params=[p for p in _lean_params() if p.id != "cpu"])
def cl_dev(request):
    from conftest import open_device
    return open_device(request.param)


@pytest.mark.parametrize("splits", [2, 3])
def test_batchnorm_split_reductions(cl_dev, splits, monkeypatch):
    # the OpenCL kernels' form for GPUs: S work-groups per channel (Chan's pairwise combination of (count, mean,
    # M2) partials in the forward, ordered partial sums in the backward), forced here on any OpenCL device
    dev = cl_dev
    monkeypatch.setattr(dev, "batchnorm_splits", splits)
    for case in [(3, 2, 7, True, 1.0), (2, 3, 5, True, 0.0)]:
        for what, got, want, tol in run_batchnorm(dev, np.random.default_rng(splits), *case, relu=case[4] == 0.0):
            check(got, want, tol, f"batchnorm {what} (S={splits}, case {case})")


def run_avgpool(be, rng, n, c, h, w, kh, kw, stride):
    ho, wo = (h - kh) // stride + 1, (w - kw) // stride + 1
    x, dy = randn(rng, n, c, h, w), randn(rng, n, c, ho, wo)
    y, dx = be.zeros((n, c, ho, wo)), be.upload(np.full((n, c, h, w), np.nan, np.float32))   # dx overwritten
    be.avgpool_forward(be.upload(x), y, n, c, h, w, kh, kw, stride)
    be.avgpool_backward(be.upload(dy), dx, n, c, h, w, kh, kw, stride)
    return [("y", be.download(y), ref.avgpool_forward(x, kh, kw, stride), FWD_TOL),
            ("dx", be.download(dx), ref.avgpool_backward(dy, h, w, kh, kw, stride), GRAD_TOL)]


POOL_CASES = [(2, 3, 6, 7, 2, 2, 2), (1, 2, 7, 7, 3, 3, 2), (2, 3, 5, 4, 5, 4, 1), (1, 1, 4, 4, 2, 2, 1)]


@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_avgpool_ops(dev, case):
    for what, got, want, tol in run_avgpool(dev, np.random.default_rng(3), *case):
        check(got, want, tol, f"avgpool {what}")


def run_eltwise(be, rng, size):
    x, dy, b = randn(rng, size, scale=3.0), randn(rng, size), randn(rng, size)
    y, dx, s = be.zeros((size,)), be.zeros((size,)), be.zeros((size,))
    be.tanh_forward(be.upload(x), y, size)
    be.tanh_backward(y, be.upload(dy), dx, size)
    be.add(be.upload(x), be.upload(b), s, size)
    yt = be.download(y)
    return [("tanh", yt, ref.tanh_forward(x), FWD_TOL), ("tanh_backward", be.download(dx),
            ref.tanh_backward(yt, dy), GRAD_TOL), ("add", be.download(s), x.astype(np.float64) + b, FWD_TOL)]


def test_tanh_and_add_ops(dev):
    for what, got, want, tol in run_eltwise(dev, np.random.default_rng(4), 1001):
        check(got, want, tol, what)


def run_dropout(be, rng, size, p, key, stream, steps=2):
    """Two steps of dropout_forward (+ counter_advance) and a backward; every output is bit-exact or it fails."""
    x, dy = randn(rng, size), randn(rng, size)
    counter = be.upload(np.array([7], np.int32))
    y, mask, dx = be.zeros((size,)), be.zeros((size,)), be.zeros((size,))
    scale, threshold = np.float32(1 / (1 - p)), int(round(p * (1 << 24)))
    masks = []
    for step in range(7, 7 + steps):
        be.dropout_forward(be.upload(x), y, mask, counter, key, stream, threshold, float(scale), size)
        be.counter_advance(counter)
        keep = ref.dropout_mask(size, key, step, stream, p)
        check_exact(be.download(mask), np.where(keep, scale, np.float32(0)), f"dropout mask, step {step}")
        check_exact(be.download(y), np.where(keep, x * scale, np.float32(0)), f"dropout y, step {step}")
        masks.append(keep)
    be.dropout_backward(be.upload(dy), mask, dx, size)
    check_exact(be.download(dx), dy * np.where(masks[-1], scale, np.float32(0)), "dropout dx")
    check_exact(be.download(counter), np.array([7 + steps], np.int32), "dropout counter")
    return masks


def test_dropout_masks_are_the_reference_bits(dev):
    masks = run_dropout(dev, np.random.default_rng(5), 1003, 0.3, (0x12345678, 0x9ABCDEF0), 2)
    assert (masks[0] != masks[1]).mean() > 0.3, "two steps drew (nearly) the same mask"
    assert abs(masks[0].mean() - 0.7) < 0.05, masks[0].mean()


def test_philox_known_answers():
    # Random123's kat_vectors for philox4x32_10, checked against both implementations (reference and Numba)
    from clcnn.cpu.dropout import philox4x32
    kat = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
           ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
           ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]
    for ctr, key, want in kat:
        assert ref.philox4x32_10(ctr, key) == want
        assert tuple(int(v) for v in philox4x32(*(np.uint64(v) for v in (*ctr, *key)))) == want


# ---- layers: finite differences, configs, shapes, modes -----------------------------------------------------
def _residual_projection():
    # Tanh, not ReLU, between the convolutions: smooth within the finite-difference step
    return Residual([Conv2D(2, 3, 3, stride=2, padding=1), BatchNorm2D(3), Tanh(), Conv2D(3, 3, 3, padding=1)],
                    shortcut=[Conv2D(2, 3, 1, stride=2), BatchNorm2D(3)])


FD_CASES = {
    "batchnorm2d": (lambda: BatchNorm2D(3), (4, 3, 2, 3)),
    "batchnorm1d": (lambda: BatchNorm1D(5), (6, 5)),
    "batchnorm2d_eval": (lambda: BatchNorm2D(2).eval(), (2, 2, 3, 3)),
    "avgpool_k3s2": (lambda: AvgPool2D(3, 2), (1, 2, 7, 6)),
    "global_avgpool": (lambda: GlobalAvgPool2D(), (2, 3, 3, 4)),
    "tanh": (lambda: Tanh(), (3, 10)),
    "residual_projection": (_residual_projection, (3, 2, 5, 5)),
}


@pytest.mark.parametrize("case", sorted(FD_CASES))
def test_layer_backward_matches_finite_differences(dev, case):
    from test_layers import _check_layer, _smooth_input
    make, shape = FD_CASES[case]
    x = _smooth_input(np.random.default_rng(1), shape, gap=0.05 if "batchnorm" not in case else 0.3)
    _check_layer(dev, make(), x)


def test_residual_identity_backward_matches_finite_differences(net_dev):
    # OpenCL in the deep grid: residual_projection above covers the block there in the lean default
    from test_layers import _check_layer, _smooth_input
    x = _smooth_input(np.random.default_rng(1), (2, 2, 4, 4))
    _check_layer(net_dev, Residual([Conv2D(2, 2, 3, padding=1), Tanh()]), x)


def test_dropout_backward_matches_finite_differences(dev):
    # the counter is reset before every forward, so each one draws the same mask (a smooth, piecewise-linear map)
    layer = Dropout(0.4)
    layer.init(np.random.default_rng(0))
    layer.to(dev)
    x, r = randn(np.random.default_rng(1), 3, 17), randn(np.random.default_rng(2), 3, 17)

    def loss(v):
        dev.upload_into(layer.counter, np.zeros(1, np.int32))
        return float((dev.download(layer.forward(dev.upload(v))).astype(np.float64) * r).sum())
    loss(x)
    dx = dev.download(layer.backward(dev.upload(r)))
    for idx in [(0, 0), (1, 5), (2, 16), (2, 3)]:
        xp, xm = x.copy(), x.copy()
        xp[idx] += 1e-2
        xm[idx] -= 1e-2
        fd = (loss(xp) - loss(xm)) / 2e-2
        assert abs(fd - dx[idx]) <= 2e-2 * max(1.0, abs(dx[idx])), f"dx{idx}: fd {fd} vs {dx[idx]}"


def _nested():
    return Residual([Residual([Conv2D(4, 4, 3, padding=1), BatchNorm2D(4, momentum=0.2)]), Dropout(0.25)],
                    shortcut=[AvgPool2D(1)])


def test_configs_round_trip_and_are_registered():
    layers = [BatchNorm2D(3, eps=1e-3), BatchNorm1D(7), Dropout(0.2), AvgPool2D(3, 2), GlobalAvgPool2D(), Tanh(),
              _residual_projection(), _nested()]
    for layer in layers:
        cfg = layer_config(layer)
        assert LAYERS[cfg["type"]] is type(layer)
        twin = from_config(cfg)
        assert layer_config(twin) == cfg and repr(twin) == repr(layer)
    assert layer_config(layers[-1])["layers"][0]["layers"][1] == {"type": "BatchNorm2D", "num_features": 4,
                                                                  "eps": 1e-5, "momentum": 0.2}
    assert sorted(_nested().params) == ["layers.0.layers.0.bias", "layers.0.layers.0.weight",
                                        "layers.0.layers.1.bias", "layers.0.layers.1.weight"]


def test_bad_arguments_and_shapes_are_one_line_errors():
    from clcnn.errors import ConfigError, ShapeError
    from clcnn.model import Sequential
    for make in (lambda: BatchNorm2D(0), lambda: BatchNorm2D(3, eps=0), lambda: BatchNorm1D(3, momentum=2),
                 lambda: Dropout(1.0), lambda: Dropout(-0.1), lambda: AvgPool2D(0), lambda: Residual([]),
                 lambda: Residual([3]), lambda: from_config({"type": "Residual", "layers": [{"type": "Nope"}]})):
        with pytest.raises(ConfigError):
            make()
    with pytest.raises(ShapeError, match="shortcut"):
        Sequential([Residual([Conv2D(1, 2, 3, padding=1)])], input_shape=(1, 4, 4))
    with pytest.raises(ShapeError, match=r"layer 0 \(BatchNorm2D"):
        Sequential([BatchNorm2D(3)], input_shape=(2, 4, 4))
    m = Sequential([Flatten(), BatchNorm1D(4), Dense(4, 2)], input_shape=(4,)).to("cpu")
    with pytest.raises(ShapeError, match="more than one value per channel"):
        m.train_step(np.ones((1, 4), np.float32), np.zeros(1, np.int32), _sgd(m))


def _sgd(model, lr=0.1, momentum=0.0):
    from clcnn.optim import SGD
    return SGD(model, lr=lr, momentum=momentum)


def test_train_eval_reach_nested_layers_and_dropout_is_identity_in_eval(net_dev):
    dev = net_dev
    from clcnn.model import Sequential
    m = Sequential([Conv2D(1, 4, 3, padding=1), _nested(), Dropout(0.5), Flatten(), Dense(64, 3)],
                   input_shape=(1, 4, 4), seed=2).to(dev)
    m.eval()
    assert all(not layer.training for layer in (m.layers[1].layers[0].layers[1], m.layers[1].layers[1], m.layers[2]))
    x = randn(np.random.default_rng(0), 5, 1, 4, 4)
    a = m.predict(x)
    b = dev.download(m.forward(dev.upload(x), train=False))
    check_exact(a, b, "eval forward twice")
    m.train()
    assert m.layers[1].layers[0].layers[1].training and m.layers[2].training
    y1, y2 = (dev.download(m.forward(dev.upload(x))) for _ in range(2))
    assert not np.array_equal(y1, y2), "two training forwards drew the same dropout masks"


def test_replayed_steps_draw_fresh_masks_and_count_batches(dev):
    # train_step records the step on its second run and replays it after: the masks must still change every
    # step (the device counter), and num_batches_tracked count every step (host_step)
    from clcnn.model import Sequential
    m = Sequential([Flatten(), Dense(12, 16), BatchNorm1D(16), ReLU(), Dropout(0.5), Dense(16, 3)],
                   input_shape=(12,), seed=1).to(dev)
    opt, x, y = _sgd(m), randn(np.random.default_rng(1), 8, 12), np.arange(8) % 3
    masks = []
    for _ in range(5):
        m.train_step(x, y, opt)
        masks.append(dev.download(m.layers[4].mask).copy())
    assert all(not np.array_equal(a, b) for i, a in enumerate(masks) for b in masks[i + 1:])
    assert m.layers[4].step == 5 and int(m.state_dict()["2.num_batches_tracked"]) == 5
    state = m.layers[4].state_dict()
    assert state == {"step": 5, "key": list(m.layers[4].key)}
    m.layers[4].load_state_dict({**state, "step": 2})   # as a resumed run: the replayed step draws step 2's mask
    m.train_step(x, y, opt)
    check_exact(dev.download(m.layers[4].mask), masks[2], "the mask of a restored step")
    if dev.info.backend == "opencl":
        assert m._steps.recordings >= 1, "the step was never recorded: replay untested"


# ---- Oclgrind: the ops under its checkers, in a subprocess ---------------------------------------------------
def _oclgrind_main() -> int:
    import clcnn
    devs = [d for d in clcnn.list_devices() if "oclgrind" in d.platform.lower()]
    if not devs:
        return 2
    be, rng, fails = clcnn.get_backend(devs[0].id), np.random.default_rng(0), []
    results = run_batchnorm(be, rng, 3, 2, 5, True, 1.0) + run_batchnorm(be, rng, 2, 2, 1, False, 0.0)
    be.batchnorm_splits = 3
    results += run_batchnorm(be, rng, 3, 2, 5, True, 0.0, relu=True)
    be.batchnorm_splits = None
    results += run_avgpool(be, rng, 1, 2, 5, 5, 3, 3, 2) + run_avgpool(be, rng, 2, 1, 3, 2, 3, 2, 1)
    results += run_eltwise(be, rng, 37)
    for what, got, want, tol in results:
        try:
            check(got, want, tol, what)
        except AssertionError as exc:
            fails.append(str(exc))
    try:
        run_dropout(be, rng, 21, 0.5, (1, 2), 3)
    except AssertionError as exc:
        fails.append(str(exc))
    print("\n".join(fails) or "all ok", flush=True)
    return 1 if fails else 0


@pytest.mark.oclgrind
def test_new_ops_clean_under_oclgrind(tmp_path):
    from test_oclgrind import _require_oclgrind, oclgrind_env, oclgrind_reports
    _require_oclgrind()
    proc = subprocess.run([sys.executable, __file__, "--oclgrind"], env=oclgrind_env(tmp_path), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"rc {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert oclgrind_reports(proc.stderr) == []


if __name__ == "__main__" and sys.argv[1:] == ["--oclgrind"]:
    sys.exit(_oclgrind_main())
