"""The layer registry: ``from_config`` rebuilds a layer from ``layer_config``'s ``{"type": ..., **config()}``.
``LAYERS`` (class name -> class) is filled by the package (clcnn/layers/__init__.py) once every layer module is
imported, so a module that builds layers from configs (residual.py) needs only this one, below it."""
from __future__ import annotations

from ..errors import ConfigError

LAYERS: dict[str, type] = {}


def layer_config(layer) -> dict:
    """``{"type": class name, **layer.config()}``: what ``from_config`` rebuilds the layer from."""
    return {"type": type(layer).__name__, **layer.config()}


def from_config(cfg: dict):
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
