"""Model specs (clcnn.specs) and presets (clcnn.models): parse/print round trips, one-line errors naming the token,
JSON files, `clcnn models`, and every preset's parameter count equal to the equivalent PyTorch module's."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from clcnn.errors import ConfigError
from clcnn.layers import LAYERS
from clcnn.models import PRESETS, get_model
from clcnn.specs import parse_spec, to_spec

HAVE_NEW_LAYERS = {"BatchNorm2D", "Residual", "GlobalAvgPool2D", "Dropout"} <= set(LAYERS)
new_layers = pytest.mark.skipif(not HAVE_NEW_LAYERS, reason="needs BatchNorm2D, Residual, GlobalAvgPool2D, Dropout")


def types(layers):
    return [type(x).__name__ for x in layers]


def count(model):
    return sum(p.size for _, p in model.named_parameters())


@pytest.mark.parametrize("spec, shape, canonical", [
    ("c6k5p2-relu-mp2-c16k5-relu-mp2-fc120-relu-fc84-relu-fc", (1, 28, 28),
     "c6k5p2-relu-mp2-c16k5-relu-mp2-fc120-relu-fc84-relu-fc10"),
    ("C8K3S2P1 - sigmoid - mp3s2 - flat - fc", (3, 17, 17), "c8k3s2p1-sigmoid-mp3s2-fc10"),
    ("c4k3-relu", (2, 8, 8), "c4k3-relu-fc10"),   # the output layer implied by the class count
    ("fc32-relu", (20,), "fc32-relu-fc10"),
])
def test_round_trip(spec, shape, canonical):
    layers = parse_spec(spec, shape, 10)
    assert to_spec(layers) == canonical
    again = parse_spec(canonical, shape, 10)
    assert [c.config() for c in again] == [c.config() for c in layers]


def test_layers_built():
    layers = parse_spec("c8k3p1-relu-mp2-fc16", (3, 10, 10), 16)
    assert types(layers) == ["Conv2D", "ReLU", "MaxPool2D", "Flatten", "Dense"]
    assert layers[0].config()["in_channels"] == 3 and layers[4].config() == {"in_features": 200, "out_features": 16}


@new_layers
def test_round_trip_new_layers():
    spec = "c8k3p1-bn-relu-res(c8k3p1-bn-relu-c8k3p1-bn)-res(c16k3s2p1-bn-tanh-c16k3p1-bn)-relu-ap2-gap-fc12-bn-drop0.3-fc"
    layers = parse_spec(spec, (3, 16, 16), 10)
    assert types(layers)[:3] == ["Conv2D", "BatchNorm2D", "ReLU"] and types(layers)[-3:] == ["BatchNorm1D", "Dropout",
                                                                                           "Dense"]
    res = layers[4]
    assert res.shortcut and types(res.shortcut) == ["Conv2D", "BatchNorm2D"]   # the projection, c16k1s2-bn
    assert res.shortcut[0].config()["stride"] == 2 and layers[3].shortcut is None
    text = to_spec(layers)
    assert "res(c16k3s2p1-bn-tanh-c16k3p1-bn|c16k1s2-bn)" in text and text.endswith("fc12-bn-drop0.3-fc10")
    assert [x.config() for x in parse_spec(text, (3, 16, 16), 10)] == [x.config() for x in layers]
    explicit = parse_spec("res(c4k3p1|c4k1)", (2, 5, 5), 3)[0]
    assert types(explicit.shortcut) == ["Conv2D"]


@pytest.mark.parametrize("spec, match", [
    ("c8k3-bx-relu", r"token 2 'bx' \(character 6\) is not a layer"),
    ("c8k3--relu", r"token 2 '' .*empty"),
    ("c8k99", r"token 1 'c8k99'.*does not fit"),
    ("c8k3-fc12", r"token 2 'fc12'.* needs 10 outputs"),
    ("fc-c3k3", r"token 2 'c3k3'.*\(C, H, W\)"),
    ("c8k3s0", r"token 1 'c8k3s0'"),
    ("drop1.5", r"token 1 'drop1.5'"),
    ("res(c8k3", r"unbalanced '\('"),
    ("c8k3)", r"unbalanced '\)'"),
    ("res(c8k3p1|c4k1|c4k1)", r"token 1 .*more than one '\|'"),
    ("res(c8k3p1-bx)", r"token 2 of the res\(\.\.\.\) 'bx'"),
    ("vgg99", r"unknown model 'vgg99' \(presets: lenet5, cifar, fashion"),
    ("resnet", "unknown model"),
])
def test_errors_name_the_token(spec, match):
    with pytest.raises(ConfigError, match=match) as info:
        get_model(spec, (1, 28, 28), 10)
    assert "\n" not in str(info.value)


@new_layers
def test_residual_errors():
    with pytest.raises(ConfigError, match=r"token 1 'res\(c4k3\|c4k1\)'.*adds a body"):
        get_model("res(c4k3|c4k1)", (2, 8, 8), 10)
    with pytest.raises(ConfigError, match="give its shortcut"):
        get_model("res(c4k3)", (2, 8, 8), 10)


def test_json_files(tmp_path):
    listing = tmp_path / "net.json"
    listing.write_text(json.dumps([{"type": "Conv2D", "out_channels": 4, "kernel_size": 3}, {"type": "ReLU"},
                                   {"type": "Flatten"}, {"type": "Dense"}]))
    model = get_model(str(listing), (2, 6, 6), 5)
    assert to_spec(model) == "c4k3-relu-fc5" and model.layers[0].config()["in_channels"] == 2
    if HAVE_NEW_LAYERS:   # a block's layers get their input sizes too
        block = [{"type": "Conv2D", "out_channels": 4, "kernel_size": 3, "padding": 1},
                 {"type": "Residual", "layers": [{"type": "Conv2D", "out_channels": 8, "kernel_size": 3, "stride": 2,
                                                  "padding": 1}, {"type": "BatchNorm2D"}],
                  "shortcut": [{"type": "Conv2D", "out_channels": 8, "kernel_size": 1, "stride": 2}]},
                 {"type": "GlobalAvgPool2D"}, {"type": "Dense"}]
        listing.write_text(json.dumps(block))
        assert to_spec(get_model(str(listing), (2, 6, 6), 5)) == "c4k3p1-res(c8k3s2p1-bn|c8k1s2)-gap-fc5"
    full = tmp_path / "seq.json"
    full.write_text(json.dumps(get_model("lenet5").config()))
    assert to_spec(get_model(str(full))) == to_spec(get_model("lenet5"))
    for text, match in (("{", "not JSON"), ("[]", "a list of layers"), ('[{"kind": 1}]', 'layer 0 .*"type"')):
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(ConfigError, match=match):
            get_model(str(tmp_path / "bad.json"))
    with pytest.raises(ConfigError, match="cannot read"):
        get_model(str(tmp_path / "missing.json"))


def test_presets_keep_their_state_dict_names():
    names = [k for k, _ in get_model("lenet5").named_parameters()]
    assert names == ["0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias", "9.weight", "9.bias",
                     "11.weight", "11.bias"]
    assert count(get_model("cifar", (3, 32, 32), 100)) == 620362 - 2570 + 25700


def test_cli_models():
    from clcnn.cli import main
    runner = CliRunner()
    res = runner.invoke(main, ["models"])
    assert res.exit_code == 0 and all(name in res.output for name in PRESETS)
    assert "61,706" in res.output   # LeNet-5
    res = runner.invoke(main, ["models", "c4k3-relu", "--input-shape", "3x8x8", "--num-classes", "7"])
    assert res.exit_code == 0 and "spec: c4k3-relu-fc7" in res.output and "(4, 6, 6)" in res.output
    res = runner.invoke(main, ["models", "c4k3-bx"])
    assert res.exit_code != 0 and isinstance(res.exception, ConfigError)
    res = runner.invoke(main, ["models", "lenet5", "--input-shape", "3x32"])
    assert isinstance(res.exception, ConfigError) and "--input-shape" in str(res.exception)


# ---- the equivalent PyTorch modules, written out by hand ---------------------------------------------------
def torch_presets(nn):
    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.layers = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU(),
                                        nn.Conv2d(cout, cout, 3, 1, 1), nn.BatchNorm2d(cout))
            self.shortcut = None if stride == 1 and cin == cout else nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride), nn.BatchNorm2d(cout))

        def forward(self, x):
            return self.layers(x) + (x if self.shortcut is None else self.shortcut(x))

    class GlobalAvgPool(nn.Module):   # clcnn's GlobalAvgPool2D: (N, C, H, W) -> (N, C), one layer
        def forward(self, x):
            return x.mean((2, 3))

    def resnet(cin, widths):
        stem = [nn.Conv2d(cin, widths[0], 3, 1, 1), nn.BatchNorm2d(widths[0]), nn.ReLU()]
        blocks = []
        for i, w in enumerate(widths):
            blocks += [Block(widths[max(i - 1, 0)], w, 1 if i == 0 else 2), nn.ReLU()]
        return nn.Sequential(*stem, *blocks, GlobalAvgPool(), nn.Linear(widths[-1], 10))

    return {
        "lenet5": nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5),
                                nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(),
                                nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10)),
        "cifar": nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                               nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                               nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                               nn.Linear(2048, 256), nn.ReLU(), nn.Linear(256, 10)),
        "fashion": nn.Sequential(nn.Conv2d(1, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Flatten(), nn.Linear(128 * 49, 256), nn.ReLU(), nn.Dropout(0.3),
                                 nn.Linear(256, 10)),
        "fashion-aug": resnet(1, [32, 64, 128]),
        "resnet8": resnet(3, [16, 32, 64]),
    }


@new_layers
def test_preset_parameters_equal_torch():
    torch = pytest.importorskip("torch")
    modules = torch_presets(torch.nn)
    assert set(modules) == set(PRESETS)
    for name, module in modules.items():
        model = get_model(name)
        want = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        assert got == want, name   # names and shapes: parameters and batch-norm buffers alike
        assert count(model) == sum(p.numel() for p in module.parameters()), name
        x = torch.zeros((2, *PRESETS[name][1]))
        assert tuple(module.eval()(x).shape) == model.output_shape(tuple(x.shape)), name
