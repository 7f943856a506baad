"""Layers written once against the Backend: parameters, buffers, train/eval modes, a config to rebuild from.

``from_config({"type": "Conv2D", "in_channels": 1, ...})`` rebuilds a layer from ``{"type": ..., **config()}``.
"""
from __future__ import annotations

from ..errors import ConfigError
from .activation import ReLU, Sigmoid
from .base import Buffer, Layer, Parameter
from .conv import Conv2D, MaxPool2D
from .dense import Dense, Flatten

LAYERS = {cls.__name__: cls for cls in (Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sigmoid)}

__all__ = ["LAYERS", "Buffer", "Conv2D", "Dense", "Flatten", "Layer", "MaxPool2D", "Parameter", "ReLU", "Sigmoid",
           "from_config", "layer_config"]


def layer_config(layer: Layer) -> dict:
    """``{"type": class name, **layer.config()}``: what ``from_config`` rebuilds the layer from."""
    return {"type": type(layer).__name__, **layer.config()}


def from_config(cfg: dict) -> Layer:
    """A new, untrained layer from ``layer_config``'s dict; ConfigError for an unknown type or bad arguments."""
    cfg = dict(cfg)
    kind = cfg.pop("type", None)
    cls = LAYERS.get(kind)
    if cls is None:
        raise ConfigError(f"unknown layer type {kind!r} (known: {', '.join(sorted(LAYERS))})")
    try:
        return cls(**cfg)
    except TypeError as exc:
        raise ConfigError(f"{kind}: {exc}") from None
