"""Label smoothing of the softmax cross-entropy (torch.nn.CrossEntropyLoss(label_smoothing=eps)): the device
loss and gradient against float64 NumPy, torch and finite differences of the device's own loss, on every device."""
import numpy as np
import pytest

import clcnn
from clcnn.errors import ConfigError
from opcheck import GRAD_TOL, check, check_scalar, randn, up
import reference as ref


# ---- label smoothing ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,c,eps", [(4, 5, 0.1), (3, 2, 1.0)])
def test_label_smoothing_matches_torch_and_finite_differences(device, n, c, eps):
    rng = np.random.default_rng(72)
    logits, labels = randn(rng, n, c, scale=2.0), rng.integers(0, c, n).astype(np.int32)
    dlab, probs, loss = up(device, labels), device.zeros((n, c)), device.zeros((1,))

    def device_loss(z):
        device.softmax_xent_forward(up(device, z), dlab, probs, loss, n, c, label_smoothing=eps)
        return float(device.download(loss)[0])

    value = device_loss(logits)
    dl = up(device, np.full((n, c), np.nan, np.float32))
    device.softmax_xent_forward(up(device, logits), dlab, probs, loss, n, c, label_smoothing=eps, dlogits=dl)
    grad = device.download(dl)
    want_p, want_loss = ref.softmax_xent_forward(logits, labels, n, c, label_smoothing=eps)
    check_scalar(value, want_loss, 1e-5, "smoothed loss vs float64")
    check(grad, ref.softmax_xent_backward(want_p, labels, n, c, label_smoothing=eps), GRAD_TOL, "smoothed grad")
    fd, h = np.zeros((n, c)), 1e-2   # central differences of the device's own float32 loss
    for i in range(n):
        for j in range(c):
            zp, zm = logits.copy(), logits.copy()
            zp[i, j] += h
            zm[i, j] -= h
            fd[i, j] = (device_loss(zp) - device_loss(zm)) / (2 * h)
    check(grad, fd, 2e-3, "smoothed grad vs finite differences")
    model_loss = clcnn.losses.CrossEntropyLoss(label_smoothing=eps).evaluate(logits, labels)[0]
    check_scalar(model_loss, want_loss, 1e-9, "CrossEntropyLoss.evaluate")
    torch = pytest.importorskip("torch")
    z = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    tl = torch.nn.CrossEntropyLoss(label_smoothing=eps)(z, torch.from_numpy(labels).long())
    tl.backward()
    check_scalar(value, float(tl.detach()), 1e-5, "smoothed loss vs torch")
    check(grad, z.grad.numpy(), GRAD_TOL, "smoothed grad vs torch")


def test_label_smoothing_is_range_checked():
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ConfigError, match="label_smoothing"):
            clcnn.losses.CrossEntropyLoss(label_smoothing=bad)
