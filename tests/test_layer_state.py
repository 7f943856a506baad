"""Layers with state and modes: config round trips, buffers in state_dict, train/eval, shape checks before any
kernel runs, the model's own loss in evaluation."""
import numpy as np
import pytest

import clcnn
from clcnn import Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sequential, Sigmoid
from clcnn.errors import ConfigError, ShapeError
from clcnn.layers import Buffer, Layer, from_config, layer_config
from conftest import _device_params, open_device


@pytest.fixture(params=_device_params())
def device_id(request):
    open_device(request.param)
    return request.param


class Counter(Layer):
    """A test layer with a float and an int buffer and no parameters: forward counts the images it has seen."""

    def __init__(self, width=3):
        self.width, self.params = width, {}
        self.buffers = {"running": Buffer(np.arange(width, dtype=np.float32)), "seen": Buffer(np.zeros((), np.int64))}

    def config(self):
        return {"width": self.width}

    def forward(self, x, train=True):
        if train and self.training:
            self.buffers["seen"].host[...] += x.shape[0]
        return x

    def backward(self, dy, need_dx=True):
        return dy


def test_layer_config_round_trip_and_pytorch_names():
    conv = Conv2D(3, 8, 5, stride=2, padding=1)
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding) == (3, 8, 5, 2, 1)
    for layer in (conv, MaxPool2D(3, stride=2), Dense(7, 4), Flatten(), ReLU(), Sigmoid()):
        twin = from_config(layer_config(layer))
        assert type(twin) is type(layer) and twin.config() == layer.config()
    with pytest.raises(ConfigError, match="unknown layer type"):
        from_config({"type": "Conv3D"})
    with pytest.raises(ConfigError, match="kernel_size"):
        Conv2D(1, 2, 0)
    with pytest.raises(ConfigError, match="padding"):
        Conv2D(1, 2, 3, padding=-1)


def test_model_config_clone_and_summary():
    model = clcnn.models.cifar(num_classes=100, input_shape=(3, 32, 32), seed=3)
    cfg = model.config()
    assert cfg["input_shape"] == [3, 32, 32] and cfg["loss"] == "cross_entropy"
    rebuilt = Sequential.from_config(cfg)
    assert rebuilt.config() == cfg and rebuilt.num_classes == 100
    twin = model.clone()
    for k, v in model.state_dict().items():
        assert np.array_equal(twin.state_dict()[k], v), k
    text = model.summary()
    assert "(2048,)" in text and f"{sum(v.size for v in model.state_dict().values()):,} parameters" in text


def test_buffers_in_state_dict_modes_and_clone(device_id):
    model = Sequential([Flatten(), Counter(4), Dense(16, 2)], seed=0, input_shape=(1, 4, 4))
    model.to(device_id)
    sd = model.state_dict()
    assert set(sd) == {"1.running", "1.seen", "2.weight", "2.bias"}
    assert sd["1.seen"].dtype == np.int64 and np.array_equal(sd["1.running"], np.arange(4, dtype=np.float32))
    x, y = np.ones((5, 1, 4, 4), np.float32), np.zeros(5, np.int32)
    model.gradients(x, y)
    model.eval()
    assert not model.layers[1].training
    model.gradients(x, y)   # evaluation mode: the counter does not count
    model.train()
    model.predict(x)        # predict always runs in evaluation mode
    assert int(model.state_dict()["1.seen"]) == 5 and model.layers[1].training
    sd = {**model.state_dict(), "1.running": np.full(4, 7.0, np.float32)}
    model.load_state_dict(sd)
    assert np.array_equal(model.clone().state_dict()["1.running"], np.full(4, 7.0, np.float32))
    opt = clcnn.optim.SGD(model, lr=0.1)
    model.train_step(x, y, opt)
    assert np.array_equal(model.state_dict()["1.running"], np.full(4, 7.0, np.float32))   # buffers never updated


@pytest.mark.parametrize("make, shape, needle", [
    (lambda: clcnn.models.lenet5(seed=0), (2, 1, 32, 32), "(N, 1, 28, 28)"),
    (lambda: Sequential([Conv2D(1, 1, 3), Flatten(), Dense(9, 2)]), (1, 1, 4, 4), "layer 2"),
    (lambda: Sequential([Conv2D(3, 4, 3)]), (2, 1, 8, 8), "layer 0"),
    (lambda: Sequential([MaxPool2D(5), Flatten(), Dense(1, 2)]), (1, 1, 4, 4), "H, W >= 5"),
])
def test_wrong_input_shape_is_refused_before_any_kernel(device_id, make, shape, needle, monkeypatch):
    model = make().to(device_id)
    calls = []
    # no kernel may see the wrong shape (monkeypatch: the backend is shared by every later test)
    monkeypatch.setattr(model.backend, "gemm", lambda *a, **k: calls.append(a))
    x = np.zeros(shape, np.float32)
    with pytest.raises(ShapeError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        model.predict(x)
    with pytest.raises(ShapeError):
        model.train_step(x, np.zeros(shape[0], np.int32), clcnn.optim.SGD(model, lr=0.1))
    assert calls == []


def test_labels_out_of_range_and_count_are_refused():
    model = Sequential([Flatten(), Dense(4, 3)], input_shape=(1, 2, 2)).to("cpu")
    opt = clcnn.optim.SGD(model, lr=0.1)
    x = np.zeros((2, 1, 2, 2), np.float32)
    with pytest.raises(ShapeError, match=r"\[0, 3\)"):
        model.train_step(x, np.array([0, 3]), opt)
    with pytest.raises(ShapeError, match="labels"):
        model.train_step(x, np.array([0]), opt)


def test_evaluation_uses_the_models_own_loss():
    from clcnn.losses import BCEWithLogitsLoss, CrossEntropyLoss
    logits, labels = np.array([[2.0], [-1.0], [0.5]], np.float32), np.array([1, 0, 0])
    loss, acc = BCEWithLogitsLoss().evaluate(logits, labels)
    want = np.mean(np.logaddexp(0, logits[:, 0]) - labels * logits[:, 0])
    assert loss == pytest.approx(want) and acc == pytest.approx(2 / 3)
    model = Sequential([Flatten(), Dense(4, 1)], loss="bce", input_shape=(1, 2, 2))
    assert isinstance(model.loss, BCEWithLogitsLoss)
    with pytest.raises(ShapeError, match="exactly one output"):
        Sequential([Flatten(), Dense(4, 2)], loss="bce", input_shape=(1, 2, 2))
    with pytest.raises(ConfigError, match="Invalid loss"):
        Sequential([Flatten()], loss="hinge")
    assert CrossEntropyLoss().evaluate(np.eye(3, dtype=np.float32) * 9, np.arange(3))[1] == 1.0


def test_api_trains_and_evaluates_a_3x32x32_100_class_model():
    from clcnn.trainer import evaluate
    from clcnn.data import Split
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((40, 3, 32, 32)).astype(np.float32), rng.integers(0, 100, 40).astype(np.int32)
    model = clcnn.models.get_model("cifar", input_shape=(3, 32, 32), num_classes=100, seed=1).to("cpu")
    opt = clcnn.optim.SGD(model, lr=0.05, momentum=0.9)
    losses = [model.train_step(x, y, opt) for _ in range(8)]
    assert losses[-1] < losses[0]
    assert model.predict(x[:3]).shape == (3, 100)
    loss, acc = evaluate(model, Split(x, y), model.loss)
    assert np.isfinite(loss) and 0 <= acc <= 1
