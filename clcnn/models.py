"""Model presets, indexed like the equivalent PyTorch nn.Sequential, built for any input shape and class count."""
from __future__ import annotations

import numpy as np

from .errors import ConfigError
from .layers import Conv2D, Dense, Flatten, Layer, MaxPool2D, ReLU
from .model import Sequential


def _features(layers: list[Layer], input_shape) -> int:
    """The per-image length of the (flattened) output of ``layers`` for inputs (C, H, W) (ShapeError if none)."""
    shape = (1, *input_shape)
    for layer in layers:
        shape = layer.check(shape)
    return int(np.prod(shape[1:]))


def lenet5(num_classes: int = 10, input_shape=(1, 28, 28), seed: int | None = 0) -> Sequential:
    """LeNet-5: conv(6,5x5,pad 2)-ReLU-pool2-conv(16,5x5)-ReLU-pool2-flatten-dense(F,120)-ReLU-dense(120,84)-
    ReLU-dense(84,classes); F = 16*5*5 = 400 for 28x28 inputs (16*6*6 for 32x32). Layers 0..11."""
    c = input_shape[0]
    features = [Conv2D(c, 6, 5, padding=2), ReLU(), MaxPool2D(2), Conv2D(6, 16, 5), ReLU(), MaxPool2D(2), Flatten()]
    return Sequential(features + [
        Dense(_features(features, input_shape), 120), ReLU(),
        Dense(120, 84), ReLU(),
        Dense(84, num_classes),
    ], seed=seed, input_shape=input_shape)


def cifar(num_classes: int = 10, input_shape=(3, 32, 32), seed: int | None = 0) -> Sequential:
    """The 3-conv CIFAR CNN: three conv(3x3, pad 1)-ReLU-pool2 blocks of 32, 64, 128 channels, flatten (2048 for
    32x32 inputs), dense(F,256)-ReLU-dense(256,classes). Layers 0..12."""
    c = input_shape[0]
    features = [Conv2D(c, 32, 3, padding=1), ReLU(), MaxPool2D(2),
                Conv2D(32, 64, 3, padding=1), ReLU(), MaxPool2D(2),
                Conv2D(64, 128, 3, padding=1), ReLU(), MaxPool2D(2), Flatten()]
    return Sequential(features + [
        Dense(_features(features, input_shape), 256), ReLU(),
        Dense(256, num_classes),
    ], seed=seed, input_shape=input_shape)


MODELS = {"lenet5": lenet5, "cifar": cifar}
INPUT_SHAPES = {"lenet5": (1, 28, 28), "cifar": (3, 32, 32)}   # (C, H, W) each preset is built for by default


def get_model(name: str, input_shape=None, num_classes: int = 10, seed: int | None = 0) -> Sequential:
    """Preset ``name`` for inputs (C, H, W) (default: INPUT_SHAPES[name]) and ``num_classes`` outputs.

    Raises ConfigError naming the known presets, or for a class count < 2; ShapeError when the input is too
    small for the preset's windows."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r} (known: {', '.join(sorted(MODELS))})")
    if int(num_classes) != num_classes or num_classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes (got {num_classes!r})")
    shape = INPUT_SHAPES[name] if input_shape is None else tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"{name} needs an input shape (C, H, W) of positive sizes (got {shape})")
    return MODELS[name](num_classes=int(num_classes), input_shape=shape, seed=seed)
