"""PyTorch CPU as an independent oracle: same weights, same batch -> same logits, loss, gradients and SGD steps.

Skipped cleanly when torch is not installed (it is an optional test dependency; `make test` installs it).
Tolerances: float32 on both sides with different summation orders -> rtol 1e-4, atol 1e-5.
"""
import numpy as np
import pytest

import clcnn
from clcnn.optim import SGD
from conftest import _device_params, lean_device_params, open_device

torch = pytest.importorskip("torch")
nn = torch.nn
FAST = [p for p in _device_params() if "oclgrind" not in p.id]
LEAN = [p for p in lean_device_params() if "oclgrind" not in p.id]   # a second PoCL build in the deep grid only
RTOL, ATOL = 1e-4, 1e-5


def torch_lenet5(classes=10):
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                         nn.Linear(84, classes))


def torch_small_bce():
    return nn.Sequential(nn.Conv2d(1, 3, 3, stride=2, padding=1), nn.Sigmoid(), nn.MaxPool2d(3, 2), nn.Flatten(),
                         nn.Linear(3 * 2 * 2, 1))


def clcnn_small_bce():
    from clcnn import Conv2D, Dense, Flatten, MaxPool2D, Sequential, Sigmoid
    return Sequential([Conv2D(1, 3, 3, stride=2, padding=1), Sigmoid(), MaxPool2D(3, 2), Flatten(),
                       Dense(12, 1)], loss="bce", seed=3)


def _torch_run(tmodel, sd, x, y, loss_fn, steps, lr, momentum, wd):
    torch.set_num_threads(2)
    tmodel.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in sd.items()})
    tx, ty = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    logits = tmodel(tx)
    loss = loss_fn(logits, ty)
    loss.backward()
    grads = {k: p.grad.numpy().copy() for k, p in tmodel.named_parameters()}
    opt = torch.optim.SGD(tmodel.parameters(), lr=lr, momentum=momentum, weight_decay=wd)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        step_loss = loss_fn(tmodel(tx), ty)
        step_loss.backward()
        opt.step()
        losses.append(step_loss.item())
    weights = {k: v.detach().numpy().copy() for k, v in tmodel.state_dict().items()}
    return logits.detach().numpy(), loss.item(), grads, losses, weights


def _check(model, tmodel, x, y, loss_fn, steps=3, lr=0.05, momentum=0.9, wd=5e-4):
    want = _torch_run(tmodel, model.state_dict(), x, y, loss_fn, steps, lr, momentum, wd)
    logits = model.predict(x)
    loss, grads = model.gradients(x, y)
    opt = SGD(model, lr=lr, momentum=momentum, weight_decay=wd)
    losses = [model.train_step(x, y, opt) for _ in range(steps)]
    np.testing.assert_allclose(logits, want[0], rtol=RTOL, atol=ATOL)
    assert loss == pytest.approx(want[1], rel=RTOL)
    for k, g in want[2].items():
        np.testing.assert_allclose(grads[k], g, rtol=RTOL, atol=ATOL, err_msg=k)
    np.testing.assert_allclose(losses, want[3], rtol=RTOL)
    for k, w in want[4].items():
        np.testing.assert_allclose(model.state_dict()[k], w, rtol=RTOL, atol=ATOL, err_msg=k)


@pytest.mark.parametrize("device_id", LEAN)   # the whole network's cold builds: cpu and one PoCL by default
def test_lenet5_matches_pytorch(device_id):
    open_device(device_id)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 16).astype(np.int32)
    model = clcnn.models.lenet5(seed=5).to(device_id)
    _check(model, torch_lenet5(), x, y, nn.functional.cross_entropy)


@pytest.mark.parametrize("device_id", FAST)
def test_sigmoid_bce_overlapping_pool_matches_pytorch(device_id):
    open_device(device_id)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 1, 12, 12)).astype(np.float32)
    y = rng.integers(0, 2, 6).astype(np.int32)

    def bce(logits, target):
        return nn.functional.binary_cross_entropy_with_logits(logits[:, 0], target.to(logits.dtype))
    _check(clcnn_small_bce().to(device_id), torch_small_bce(), x, y, bce)
