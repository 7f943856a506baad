"""Whole-model tests: state_dict layout, cross-device agreement, PyTorch CPU as an oracle, overfitting a batch."""
import numpy as np
import pytest

import clcnn
from clcnn import Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sequential, Sigmoid
from clcnn.optim import SGD
from conftest import _device_params, open_device, usable_device_ids

DEVICE_PARAMS = _device_params()
FAST_PARAMS = [p for p in DEVICE_PARAMS if "oclgrind" not in p.id]


@pytest.fixture(params=DEVICE_PARAMS)
def device_id(request):
    open_device(request.param)  # skips a device whose driver cannot build kernels here, with the reason
    return request.param


@pytest.fixture(params=FAST_PARAMS)
def fast_device_id(request):
    """Every device except simulators (for tests too big for Oclgrind)."""
    open_device(request.param)
    return request.param


@pytest.fixture
def all_device_ids():
    return usable_device_ids()

# Cross-device tolerances: float32 kernels that sum in different orders.
RTOL, ATOL = 1e-4, 1e-5


def small_cnn(classes=5, seed=0, loss="cross_entropy"):
    """A LeNet-shaped net small enough for Oclgrind: (N, 1, 8, 8) -> (N, classes)."""
    return Sequential([
        Conv2D(1, 3, 3, padding=1), ReLU(), MaxPool2D(2),
        Conv2D(3, 4, 3, stride=1), ReLU(),
        Flatten(), Dense(4 * 2 * 2, 6), Sigmoid(), Dense(6, classes),
    ], loss=loss, seed=seed)


def _batch(n=4, classes=5, hw=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, hw, hw)).astype(np.float32), rng.integers(0, classes, n).astype(np.int32)


def run_on(device_id, model_fn, x, y, steps=3, lr=0.1, momentum=0.9, wd=1e-3):
    """Logits, loss+gradients, and weights after `steps` SGD-with-momentum steps on one device."""
    model = model_fn().to(device_id)
    logits = model.predict(x)
    loss, grads = model.gradients(x, y)
    opt = SGD(model, lr=lr, momentum=momentum, weight_decay=wd)
    losses = [model.train_step(x, y, opt) for _ in range(steps)]
    return {"logits": logits, "loss": loss, "grads": grads, "weights": model.state_dict(), "losses": losses}


def _compare(ref, got, where):
    np.testing.assert_allclose(got["logits"], ref["logits"], rtol=RTOL, atol=ATOL, err_msg=f"logits {where}")
    assert got["loss"] == pytest.approx(ref["loss"], rel=RTOL), where
    np.testing.assert_allclose(got["losses"], ref["losses"], rtol=RTOL, err_msg=f"losses {where}")
    for k in ref["grads"]:
        np.testing.assert_allclose(got["grads"][k], ref["grads"][k], rtol=RTOL, atol=ATOL, err_msg=f"grad {k} {where}")
        np.testing.assert_allclose(got["weights"][k], ref["weights"][k], rtol=RTOL, atol=ATOL,
                                   err_msg=f"weight {k} {where}")


def test_state_dict_layout_matches_pytorch_names():
    sd = clcnn.models.lenet5().state_dict()
    assert list(sd) == ["0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias", "9.weight", "9.bias",
                        "11.weight", "11.bias"]
    assert sd["0.weight"].shape == (6, 1, 5, 5) and sd["7.weight"].shape == (120, 400)
    assert sd["11.weight"].shape == (10, 84) and all(v.dtype == np.float32 for v in sd.values())
    assert not sd["0.bias"].any() and sd["0.weight"].std() == pytest.approx(np.sqrt(2 / 25), rel=0.25)


def test_same_seed_same_weights_and_different_seed_differs():
    a, b, c = (clcnn.models.lenet5(seed=s).state_dict() for s in (7, 7, 8))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["0.weight"], c["0.weight"])


@pytest.mark.parametrize("loss", ["cross_entropy", "bce"])
def test_cross_device_consistency(all_device_ids, loss):
    """One model, one set of weights, one batch: same logits, gradients and weights on every device."""
    classes = 5 if loss == "cross_entropy" else 1
    x, y = _batch(classes=max(classes, 2))
    results = {d: run_on(d, lambda: small_cnn(classes, loss=loss), x, y) for d in all_device_ids}
    ref = results["cpu"]
    assert ref["losses"][-1] < ref["losses"][0]
    for d, got in results.items():
        _compare(ref, got, d)


def test_load_state_dict_round_trip_and_errors(device_id):
    m = clcnn.models.lenet5(seed=1).to(device_id)
    sd = clcnn.models.lenet5(seed=2).state_dict()
    m.load_state_dict(sd)
    assert all(np.array_equal(m.state_dict()[k], sd[k]) for k in sd)
    with pytest.raises(ValueError, match="missing"):
        m.load_state_dict({k: v for k, v in sd.items() if k != "0.bias"})
    with pytest.raises(ValueError, match="shape"):
        m.load_state_dict({**sd, "0.bias": np.zeros(7, np.float32)})


def test_sgd_validates_arguments():
    m = small_cnn()
    for kw in ({"lr": 0.0}, {"lr": -1.0}, {"lr": 0.1, "momentum": -0.5}, {"lr": 0.1, "weight_decay": -1}):
        with pytest.raises(ValueError, match="Invalid"):
            SGD(m, **kw)


# LeNet-5 on numba and the first OpenCL device; the same check on the other OpenCL devices in the deep grid (on
# PoCL's LLVM 14 its GEMM tiles take ~60 s to build cold)
OVERFIT_PARAMS = [p if i < 2 else pytest.param(*p.values, id=p.id, marks=[*p.marks, pytest.mark.deep])
                  for i, p in enumerate(FAST_PARAMS)]


@pytest.mark.parametrize("dev", OVERFIT_PARAMS)
def test_overfit_one_batch(dev):
    """LeNet-5 drives the loss of one fixed batch of 32 random images with random labels to ~zero."""
    open_device(dev)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 32).astype(np.int32)
    model = clcnn.models.lenet5(seed=0).to(dev)
    opt = SGD(model, lr=0.05, momentum=0.9)
    first = model.train_step(x, y, opt)
    for _ in range(80):
        last = model.train_step(x, y, opt)
    assert first > 1.5 and last < 0.01, (first, last)
    assert (model.predict(x).argmax(1) == y).all()


def test_async_steps_accumulate_loss_on_device(fast_device_id):
    """sync=False steps add their losses on the device; read_loss() returns the sum once and resets it;
    gradients() and synchronous steps in between do not disturb the accumulator."""
    x, y = _batch(n=6)
    ref = run_on("cpu", small_cnn, x, y, steps=3)["losses"]
    model = small_cnn().to(fast_device_id)
    opt = SGD(model, lr=0.1, momentum=0.9, weight_decay=1e-3)
    model.gradients(x, y)
    assert model.train_step(x, y, opt, sync=False) is None
    model.gradients(x, y)
    model.train_step(x, y, opt, sync=False)
    assert model.read_loss() == pytest.approx(ref[0] + ref[1], rel=RTOL)
    assert model.train_step(x, y, opt) == pytest.approx(ref[2], rel=RTOL)
    assert model.read_loss() == 0.0


def test_move_between_devices_keeps_weights_and_training(all_device_ids):
    """.to() another device carries the weights over; training continues there as it would have on the first."""
    x, y = _batch()
    ref = run_on("cpu", small_cnn, x, y, steps=3)["losses"]
    for dev in all_device_ids:
        model = small_cnn().to("cpu")
        opt = SGD(model, lr=0.1, momentum=0.9, weight_decay=1e-3)
        model.train_step(x, y, opt)
        before, logits_cpu = model.state_dict(), model.predict(x)
        model.to(dev)
        assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items()), dev
        np.testing.assert_allclose(model.predict(x), logits_cpu, rtol=RTOL, atol=ATOL, err_msg=dev)
        losses = [model.train_step(x, y, opt) for _ in range(2)]   # momentum buffers follow the model
        np.testing.assert_allclose(losses, ref[1:], rtol=RTOL, err_msg=dev)
