"""Model presets, indexed like the equivalent PyTorch nn.Sequential."""
from __future__ import annotations

from .layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from .model import Sequential


def lenet5(num_classes: int = 10, in_channels: int = 1, seed: int | None = 0) -> Sequential:
    """LeNet-5 for 28x28 inputs: conv(6,5x5,pad 2)-ReLU-pool2-conv(16,5x5)-ReLU-pool2-flatten-
    dense(400,120)-ReLU-dense(120,84)-ReLU-dense(84,classes). Layers 0..11."""
    return Sequential([
        Conv2D(in_channels, 6, 5, padding=2), ReLU(), MaxPool2D(2),
        Conv2D(6, 16, 5), ReLU(), MaxPool2D(2),
        Flatten(),
        Dense(16 * 5 * 5, 120), ReLU(),
        Dense(120, 84), ReLU(),
        Dense(84, num_classes),
    ], seed=seed)


def cifar(num_classes: int = 10, in_channels: int = 3, seed: int | None = 0) -> Sequential:
    """The 3-conv CIFAR CNN for 32x32 inputs: three conv(3x3, pad 1)-ReLU-pool2 blocks of 32, 64, 128 channels,
    flatten (2048), dense(2048,256)-ReLU-dense(256,classes). Layers 0..12."""
    return Sequential([
        Conv2D(in_channels, 32, 3, padding=1), ReLU(), MaxPool2D(2),
        Conv2D(32, 64, 3, padding=1), ReLU(), MaxPool2D(2),
        Conv2D(64, 128, 3, padding=1), ReLU(), MaxPool2D(2),
        Flatten(),
        Dense(128 * 4 * 4, 256), ReLU(),
        Dense(256, num_classes),
    ], seed=seed)


MODELS = {"lenet5": lenet5, "cifar": cifar}
INPUT_SHAPES = {"lenet5": (1, 28, 28), "cifar": (3, 32, 32)}   # (C, H, W) each preset is built for


def get_model(name: str, **kwargs) -> Sequential:
    """A preset by name; raises ValueError naming the known presets."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r} (known: {', '.join(sorted(MODELS))})")
    return MODELS[name](**kwargs)
