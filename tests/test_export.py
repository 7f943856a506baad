"""Export: the ONNX graph run by onnxruntime and the PyTorch file's nn.Sequential (loading model.safetensors with
load_state_dict) give clcnn's logits (<= 1e-5 relative) for the presets and a model of every layer type; the CLI
writes both; bad requests are one-line errors."""
import importlib.util
import json

import numpy as np
import pytest

from clcnn import data, export, io, predict
from clcnn.layers import LAYERS, Conv2D, Dense, Flatten, ReLU
from clcnn.model import Sequential
from clcnn.models import get_model
from clcnn.train_config import TrainConfig
from clcnn.training import save_meta
from test_cli import assert_one_line_error, clcnn
from test_predict import cli_error

RTOL = 1e-5   # float32 logits of two implementations, relative to the largest logit


def make_run(folder, net, name="fashion-mnist", names=None, mean=None, std=None, seed=0):
    """A run folder as `clcnn train` leaves it (model.safetensors with its metadata), the weights random, every
    float buffer (running statistics) random too, so the export is checked on non-trivial values."""
    rng = np.random.default_rng(seed)
    c = net.input_shape[0]
    k = net.num_classes
    state = net.state_dict()
    for key, v in state.items():
        if key.endswith("running_var"):
            state[key] = rng.uniform(0.5, 2.0, v.shape)
        elif key.endswith(("running_mean", "bias")) or (key.endswith("weight") and v.ndim == 1):
            state[key] = rng.normal(0.0, 0.5, v.shape) + (1.0 if key.endswith("weight") else 0.0)
    net.load_state_dict(state)
    info = data.DatasetInfo(name, str(folder), net.input_shape, k, names or [f"class {i}" for i in range(k)],
                            tuple(mean or rng.uniform(0.2, 0.6, c)), tuple(std or rng.uniform(0.2, 0.4, c)))
    folder.mkdir(parents=True, exist_ok=True)
    io.save_safetensors(folder / "model.safetensors", net.state_dict(),
                        save_meta(TrainConfig(model="custom", dataset=name), net, info))
    return folder


def every_layer_model() -> Sequential:
    """One model with every layer type of clcnn.layers (BatchNorm in evaluation mode, a projection Residual)."""
    L = LAYERS
    block = L["Residual"]([L["Conv2D"](8, 8, 3, padding=1), L["BatchNorm2D"](8), L["ReLU"](),
                           L["Conv2D"](8, 8, 3, padding=1), L["BatchNorm2D"](8)])
    project = L["Residual"]([L["Conv2D"](8, 12, 3, stride=2, padding=1), L["Tanh"]()],
                            shortcut=[L["Conv2D"](8, 12, 1, stride=2), L["BatchNorm2D"](12)])
    return Sequential([
        L["Conv2D"](3, 8, 3, padding=1), L["BatchNorm2D"](8), L["ReLU"](), block, project,
        L["MaxPool2D"](2), L["AvgPool2D"](2, stride=1), L["Dropout"](0.3), L["Sigmoid"](),
        L["Conv2D"](12, 16, 1), L["GlobalAvgPool2D"](), L["BatchNorm1D"](16), L["Dense"](16, 10),
    ], input_shape=(3, 16, 16))


def models():
    yield "lenet5", lambda: get_model("lenet5", input_shape=(1, 28, 28), num_classes=10, seed=1)
    yield "cifar", lambda: get_model("cifar", input_shape=(3, 32, 32), num_classes=10, seed=2)
    yield "bce", lambda: Sequential([Conv2D(1, 4, 3), ReLU(), Flatten(), Dense(4 * 6 * 6, 1)], loss="bce",
                                    input_shape=(1, 8, 8))
    if {"BatchNorm2D", "Residual", "GlobalAvgPool2D", "Dropout", "AvgPool2D", "Tanh", "BatchNorm1D"} <= set(LAYERS):
        yield "every-layer", every_layer_model


MODELS = dict(models())


@pytest.fixture(scope="module", params=list(MODELS))
def run(request, tmp_path_factory):
    folder = make_run(tmp_path_factory.mktemp(request.param), MODELS[request.param]())
    return predict.load_run(folder)


def pixels(run, n=5, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, *run.info.input_shape)).astype(np.uint8)


def close(got, want):
    """Within RTOL of the outputs' scale, at least 1 (a logit near 0 is a float32 sum of terms of order 1: a
    purely relative bound on it failed once by 1%, with PyTorch's summation order against ours)."""
    return np.abs(np.asarray(got, np.float64) - want).max() <= RTOL * max(np.abs(want).max(), 1.0)


def test_every_layer_type_has_an_export_entry():
    assert set(LAYERS) <= set(export.EXPORTS)


def test_onnx_matches_predict(run, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "model.onnx"
    export.save_onnx(run.model, run.info, path)
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version >= 13
    assert json.loads({p.key: p.value for p in proto.metadata_props}["class_names"]) == run.info.class_names
    x = pixels(run)
    logits = predict.predict_images(run, x, device="cpu")
    got, probs = ort.InferenceSession(str(path)).run(["logits", "probabilities"],
                                                     {"input": x.astype(np.float32) / np.float32(255)})
    assert close(got, logits), np.abs(got - logits).max()
    want = predict.probabilities(logits)
    np.testing.assert_allclose(probs, want[:, 1:] if logits.shape[1] == 1 else want, atol=1e-5)


def _import(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_torch_file_loads_the_state_dict_and_matches(run, tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file
    path = tmp_path / "twin.py"
    export.save_torch(run.model, run.info, path)
    twin = _import(path)
    model = twin.build()
    model.load_state_dict(load_file(str(run.weights)))   # strict: every name and shape is torch's
    model.eval()
    x = pixels(run, seed=1)
    with torch.no_grad():
        got = model(twin.normalise(torch.from_numpy(x.astype(np.float32) / np.float32(255)))).numpy()
    assert close(got, predict.predict_images(run, x, device="cpu"))
    assert list(twin.INPUT_SHAPE) == list(run.info.input_shape) and twin.CLASS_NAMES == run.info.class_names
    assert close(twin.load(str(run.weights))(twin.normalise(torch.zeros(1, *twin.INPUT_SHAPE))).detach().numpy(),
                 predict.predict_images(run, np.zeros((1, *run.info.input_shape), np.uint8), device="cpu"))


def test_cli_writes_both(tmp_path):
    folder = make_run(tmp_path / "run", get_model("lenet5", seed=3))
    res = clcnn("export", folder, "--onnx", tmp_path / "m.onnx", "--torch", tmp_path / "m.py")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "m.onnx").stat().st_size > 100_000 and "def build()" in (tmp_path / "m.py").read_text()
    assert not list(tmp_path.glob(".*tmp"))


def test_cli_errors(tmp_path):
    folder = make_run(tmp_path / "run", get_model("lenet5", seed=3))
    assert "--onnx FILE and/or --torch" in cli_error("export", folder)
    assert ".py name" in cli_error("export", folder, "--torch", tmp_path / "twin.txt")
    assert "does not exist" in cli_error("export", folder, "--onnx", tmp_path / "no" / "dir" / "m.onnx")
    assert "does not exist" in cli_error("export", tmp_path / "nope", "--onnx", tmp_path / "m.onnx")
    assert "no model.safetensors" in cli_error("export", tmp_path, "--onnx", tmp_path / "m.onnx")
    assert_one_line_error(clcnn("export", tmp_path / "nope", "--onnx", tmp_path / "m.onnx"), "does not exist")
