"""Model presets and ``--model``: a preset name, a spec string (clcnn.specs) or a JSON file, built for a data set's
input shape and class count; the layers are indexed like the equivalent PyTorch nn.Sequential.

    get_model("fashion", input_shape=(1, 28, 28), num_classes=10)
    get_model("c32k3p1-bn-relu-mp2-fc", input_shape=(3, 32, 32), num_classes=100)
    get_model("net.json", input_shape=(1, 28, 28), num_classes=10)
"""
from __future__ import annotations

import re
from pathlib import Path

from .errors import ConfigError
from .model import Sequential
from .specs import load_json, parse_spec

_BLOCK = "res(c{0}k3{1}p1-bn-relu-c{0}k3p1-bn)-relu"   # ResNet's basic block (He et al. 2016), ReLU after the sum

PRESETS = {   # name -> (spec, the (C, H, W) it is built for by default, what it is)
    "lenet5": ("c6k5p2-relu-mp2-c16k5-relu-mp2-fc120-relu-fc84-relu-fc", (1, 28, 28),
               "LeNet-5 (ReLU, max-pooling)"),
    "cifar": ("c32k3p1-relu-mp2-c64k3p1-relu-mp2-c128k3p1-relu-mp2-fc256-relu-fc", (3, 32, 32),
              "the 3-conv CIFAR CNN"),
    "fashion": ("c64k3p1-bn-relu-mp2-c128k3p1-bn-relu-mp2-fc256-relu-drop0.3-fc", (1, 28, 28),
                "2 conv + pooling + batch-norm, dropout (the default)"),
    "fashion-aug": ("c32k3p1-bn-relu-" + "-".join([_BLOCK.format(32, ""), _BLOCK.format(64, "s2"),
                                                    _BLOCK.format(128, "s2")]) + "-gap-fc", (1, 28, 28),
                    "a ResNet of 3 basic blocks (32, 64, 128 channels) for --augment crop,flip,erase"),
    "resnet8": ("c16k3p1-bn-relu-" + "-".join([_BLOCK.format(16, ""), _BLOCK.format(32, "s2"),
                                                _BLOCK.format(64, "s2")]) + "-gap-fc", (3, 32, 32),
                "ResNet-8 for 32x32 images (He et al.'s CIFAR ResNet, n=1, projection shortcuts)"),
}
INPUT_SHAPES = {name: shape for name, (_, shape, _) in PRESETS.items()}   # (C, H, W) of each preset by default
_TOKEN_START = r"c\d|mp\d|ap\d|gap|flat|fc|bn|relu|sigmoid|tanh|drop|res\("   # how a spec string starts
DEFAULT_INPUT_SHAPE = (1, 28, 28)   # a spec string or JSON file built without a data set


def _check(num_classes, shape, name) -> tuple:
    if int(num_classes) != num_classes or num_classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes (got {num_classes!r})")
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (1, 3) or min(shape) < 1:
        raise ConfigError(f"{name} needs an input shape (C, H, W) of positive sizes (got {shape})")
    return shape


def is_json(name: str) -> bool:
    """Whether ``--model name`` names a JSON file (a .json path, or any existing file)."""
    return str(name).lower().endswith(".json") or Path(str(name)).is_file()


def get_model(name: str, input_shape=None, num_classes: int = 10, seed: int | None = 0) -> Sequential:
    """The model ``name`` (a preset, a spec string or a JSON file) for inputs (C, H, W) and ``num_classes``.

    input_shape defaults to the preset's (INPUT_SHAPES), else 1x28x28. Raises ConfigError for a malformed spec
    (naming the token), an unreadable JSON file or a class count < 2; ShapeError or ConfigError when the input
    is too small for the network's windows."""
    name = str(name).strip()
    if not name:
        raise ConfigError(f"--model needs a preset ({', '.join(PRESETS)}), a spec string or a JSON file")
    preset = PRESETS.get(name.lower())
    default = preset[1] if preset else DEFAULT_INPUT_SHAPE
    shape = _check(num_classes, default if input_shape is None else input_shape, name)
    loss = "cross_entropy"
    if preset:
        layers = parse_spec(preset[0], shape, int(num_classes))
    elif is_json(name):
        layers, loss = load_json(name, shape, int(num_classes))
    elif "-" not in name and not re.match(_TOKEN_START, name.lower()):   # a word, not a spec: a name mistyped
        raise ConfigError(f"unknown model {name!r} (presets: {', '.join(PRESETS)}; or a spec string such as "
                          f"c32k3p1-bn-relu-mp2-fc, or a JSON file)")
    else:
        layers = parse_spec(name, shape, int(num_classes))
    return Sequential(layers, loss=loss, seed=seed, input_shape=shape)


def lenet5(num_classes: int = 10, input_shape=(1, 28, 28), seed: int | None = 0) -> Sequential:
    """LeNet-5: conv(6,5x5,pad 2)-ReLU-pool2-conv(16,5x5)-ReLU-pool2-flatten-dense(F,120)-ReLU-dense(120,84)-
    ReLU-dense(84,classes); F = 16*5*5 = 400 for 28x28 inputs (16*6*6 for 32x32). Layers 0..11."""
    return get_model("lenet5", input_shape, num_classes, seed)


def cifar(num_classes: int = 10, input_shape=(3, 32, 32), seed: int | None = 0) -> Sequential:
    """The 3-conv CIFAR CNN: three conv(3x3, pad 1)-ReLU-pool2 blocks of 32, 64, 128 channels, flatten (2048 for
    32x32 inputs), dense(F,256)-ReLU-dense(256,classes). Layers 0..12."""
    return get_model("cifar", input_shape, num_classes, seed)


MODELS = {name: (lambda n: lambda **kw: get_model(n, **kw))(name) for name in PRESETS}   # name -> builder
