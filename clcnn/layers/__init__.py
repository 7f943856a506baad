"""Layers written once against the Backend: parameters, buffers, train/eval modes, a config to rebuild from.

``from_config({"type": "Conv2D", "in_channels": 1, ...})`` rebuilds a layer from ``{"type": ..., **config()}``.
"""
from __future__ import annotations

from .activation import ReLU, Sigmoid, Tanh
from .base import Buffer, Layer, Parameter
from .conv import Conv2D, MaxPool2D
from .dense import Dense, Flatten
from .dropout import Dropout
from .norm import BatchNorm1D, BatchNorm2D
from .pool import AvgPool2D, GlobalAvgPool2D
from .registry import LAYERS, from_config, layer_config
from .residual import Residual, fuse_chain, walk

LAYERS.update({cls.__name__: cls for cls in (Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sigmoid, Tanh, BatchNorm1D,
                                               BatchNorm2D, Dropout, AvgPool2D, GlobalAvgPool2D, Residual)})

__all__ = ["LAYERS", "AvgPool2D", "BatchNorm1D", "BatchNorm2D", "Buffer", "Conv2D", "Dense", "Dropout", "Flatten",
           "GlobalAvgPool2D", "Layer", "MaxPool2D", "Parameter", "ReLU", "Residual", "Sigmoid", "Tanh", "from_config",
           "fuse_chain", "layer_config", "walk"]

