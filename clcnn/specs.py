"""Model specs: a compact string read at a glance (``c32k3p1-bn-relu-mp2-fc128-relu-drop0.3-fc10``) or a JSON
file, turned into layers for a data set's input shape and class count; and any such model written back.

Grammar (tokens joined by ``-``; sizes are whole numbers, the input sizes are inferred from the shape so far):

    c<out>k<k>[s<stride>][p<pad>]   Conv2D(in_channels, out, k, stride=1, padding=0)
    mp<k>[s<stride>]                MaxPool2D(k, stride=k)          ap<k>[s<stride>]  AvgPool2D(k, stride=k)
    gap                             GlobalAvgPool2D()               flat              Flatten()
    fc[<out>]                       Dense(in_features, out); a Flatten goes before it on (N, C, H, W) inputs;
                                    a bare ``fc`` has one output per class
    bn                              BatchNorm2D(C) on (N, C, H, W), BatchNorm1D(F) on (N, F)
    relu  sigmoid  tanh             the activations                 drop<p>           Dropout(p), 0 <= p < 1
    res(<body>[|<shortcut>])        Residual(body, shortcut): body and shortcut are specs; without a shortcut,
                                    an identity, or where the body changes the shape, ResNet's projection
                                    c<out>k1s<stride>-bn (``res(c64k3s2p1-bn-relu-c64k3p1-bn)``)

When the last layer is not a Dense, ``fc<classes>`` is appended (after a Flatten where needed); a last Dense must
have one output per class. Every malformed token is a ConfigError naming the token and its position.
A JSON file holds a list of layer configs (``{"type": "Conv2D", "out_channels": 32, "kernel_size": 3}``: in_*
and num_features may be left out, and a last Dense's out_features) or a Sequential config ({"layers": [...]}).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from .errors import ConfigError, ShapeError
from .layers import LAYERS, Layer, from_config

GRAMMAR = ("c<out>k<k>[s<stride>][p<pad>], mp<k>[s<stride>], ap<k>[s<stride>], gap, flat, fc[<out>], bn, relu, "
           "sigmoid, tanh, drop<p>, res(<spec>[|<spec>])")
_N = r"([1-9]\d*)"
PATTERNS = [   # (regex, builder(groups, shape) -> (layer type, kwargs))
    (re.compile(rf"c{_N}k{_N}(?:s{_N})?(?:p(\d+))?"),
     lambda g, s: ("Conv2D", dict(in_channels=s[1], out_channels=int(g[0]), kernel_size=int(g[1]),
                                  stride=int(g[2] or 1), padding=int(g[3] or 0)))),
    (re.compile(rf"mp{_N}(?:s{_N})?"), lambda g, s: ("MaxPool2D", dict(kernel_size=int(g[0]),
                                                                       stride=int(g[1] or g[0])))),
    (re.compile(rf"ap{_N}(?:s{_N})?"), lambda g, s: ("AvgPool2D", dict(kernel_size=int(g[0]),
                                                                       stride=int(g[1] or g[0])))),
    (re.compile("gap"), lambda g, s: ("GlobalAvgPool2D", {})),
    (re.compile("flat"), lambda g, s: ("Flatten", {})),
    (re.compile(r"fc(?:[1-9]\d*)?"), None),   # Dense: built by _Spec.simple (a Flatten first, the class count)
    (re.compile(r"bn"), lambda g, s: ("BatchNorm2D" if len(s) == 4 else "BatchNorm1D", dict(num_features=s[1]))),
    (re.compile("relu"), lambda g, s: ("ReLU", {})),
    (re.compile("sigmoid"), lambda g, s: ("Sigmoid", {})),
    (re.compile("tanh"), lambda g, s: ("Tanh", {})),
    (re.compile(r"drop(0(?:\.\d*)?|\.\d+)"), lambda g, s: ("Dropout", dict(p=float(g[0])))),
]


class _Spec:
    """One parse: the text (for messages) and the class count."""

    def __init__(self, text: str, num_classes: int):
        self.text, self.num_classes = text, num_classes

    def fail(self, token: str, pos: int, start: int, why: str):
        raise ConfigError(f"model spec {self.text!r}: token {pos} {token!r} (character {start + 1}) {why}")

    def split(self, text: str, offset: int, sep: str = "-") -> list[tuple[str, int]]:
        """(token, start offset in the whole text) for each ``sep``-separated part outside parentheses."""
        parts, depth, start = [], 0, 0
        for i, ch in enumerate(text + sep):
            depth += (ch == "(") - (ch == ")")
            if depth < 0:
                raise ConfigError(f"model spec {self.text!r}: unbalanced ')' at character {offset + i + 1}")
            if ch == sep and depth == 0:
                parts.append((text[start:i], offset + start))
                start = i + 1
        if depth:
            raise ConfigError(f"model spec {self.text!r}: unbalanced '(' (a res(...) is not closed)")
        return parts

    def layers(self, text: str, offset: int, shape: tuple, top: bool) -> tuple[list[Layer], tuple]:
        """The layers of ``text`` (part of the spec at ``offset``) for inputs ``shape``, and their output shape."""
        out = []
        tokens = self.split(text, offset)
        for pos, (token, start) in enumerate(tokens, 1):
            token_pos = pos if top else f"{pos} of the res(...)"
            if not token:
                self.fail(token, token_pos, start, "is empty (two '-' in a row, or one at an end)")
            made = self.residual(token, token_pos, start, shape) if token.startswith("res(") else \
                self.simple(token, token_pos, start, shape, last=top and pos == len(tokens))
            for layer in made:
                shape = self.apply(layer, shape, token, token_pos, start)
                out.append(layer)
        return out, shape

    def apply(self, layer: Layer, shape: tuple, token, pos, start) -> tuple:
        try:
            return tuple(layer.output_shape(shape))
        except ShapeError as exc:
            self.fail(token, pos, start, f"does not fit its input {tuple(shape[1:])}: {exc}")

    def simple(self, token: str, pos, start: int, shape: tuple, last: bool) -> list[Layer]:
        for regex, build in PATTERNS:
            m = regex.fullmatch(token)
            if m:
                break
        else:
            self.fail(token, pos, start, f"is not a layer (known: {GRAMMAR})")
        made = []
        if token.startswith("fc"):
            if len(shape) > 2:
                made.append(make("Flatten", {}))
                shape = (shape[0], int(np.prod(shape[1:])))
            out = int(token[2:]) if token[2:] else self.num_classes
            if last and out != self.num_classes:
                self.fail(token, pos, start, f"is the output layer: it needs {self.num_classes} outputs, one per "
                          f"class (write fc{self.num_classes} or fc)")
            return made + [make("Dense", dict(in_features=shape[1], out_features=out), self, token, pos, start)]
        kind, kwargs = build(m.groups(), shape)
        if kind in ("Conv2D", "MaxPool2D", "AvgPool2D", "GlobalAvgPool2D", "BatchNorm2D") and len(shape) != 4:
            self.fail(token, pos, start, f"needs (C, H, W) inputs, the shape here is {tuple(shape[1:])}")
        return [make(kind, kwargs, self, token, pos, start)]

    def residual(self, token: str, pos, start: int, shape: tuple) -> list[Layer]:
        if not token.endswith(")"):
            self.fail(token, pos, start, "must end with ')' (res(<spec>) or res(<spec>|<shortcut>))")
        inner = self.split(token[4:-1], start + 4, sep="|")
        if len(inner) > 2:
            self.fail(token, pos, start, "has more than one '|' (res(<body>|<shortcut>))")
        body, out_shape = self.layers(inner[0][0], inner[0][1], shape, top=False)
        if len(inner) == 2:
            shortcut, cut_shape = self.layers(inner[1][0], inner[1][1], shape, top=False)
        elif tuple(out_shape) != tuple(shape):
            shortcut, cut_shape = self.projection(token, pos, start, shape, out_shape)
        else:
            shortcut, cut_shape = None, shape
        if tuple(cut_shape) != tuple(out_shape):
            self.fail(token, pos, start, f"adds a body of output {tuple(out_shape[1:])} to a shortcut of output "
                      f"{tuple(cut_shape[1:])}")
        return [make("Residual", dict(layers=body, shortcut=shortcut), self, token, pos, start)]

    def projection(self, token, pos, start, shape, out_shape):
        """ResNet's projection shortcut: a strided 1x1 convolution and batch-norm to the body's output shape."""
        if len(shape) != 4 or len(out_shape) != 4 or shape[2] % out_shape[2] or shape[3] % out_shape[3] or \
                shape[2] // out_shape[2] != shape[3] // out_shape[3]:
            self.fail(token, pos, start, f"changes {tuple(shape[1:])} to {tuple(out_shape[1:])}: give its "
                      "shortcut (res(<body>|<shortcut>))")
        stride = shape[2] // out_shape[2]
        return self.layers(f"c{out_shape[1]}k1s{stride}-bn", start, shape, top=False)


def make(kind: str, kwargs: dict, spec: _Spec | None = None, token="", pos=0, start=0) -> Layer:
    """The layer ``LAYERS[kind](**kwargs)``; ConfigError (naming the token) when clcnn has no such layer or its
    arguments are bad."""
    cls = LAYERS.get(kind)
    try:
        if cls is None:
            raise ConfigError(f"needs the {kind} layer, which this clcnn does not have")
        return cls(**kwargs)
    except ConfigError as exc:
        if spec is None:
            raise
        spec.fail(token, pos, start, str(exc))


def parse_spec(text: str, input_shape, num_classes: int) -> list[Layer]:
    """The layers a spec string describes for inputs (C, H, W) (or (F,)) and ``num_classes`` outputs."""
    compact = "".join(str(text).split()).lower()
    spec = _Spec(compact, int(num_classes))
    layers, shape = spec.layers(compact, 0, (1, *input_shape), top=True)
    if not layers or not _is(layers[-1], "Dense"):
        tail = ([make("Flatten", {})] if len(shape) > 2 else []) + \
            [make("Dense", dict(in_features=int(np.prod(shape[1:])), out_features=spec.num_classes))]
        layers += tail
    return layers


def _is(layer: Layer, kind: str) -> bool:
    return type(layer).__name__ == kind


# ---- writing a model back as a spec --------------------------------------------------------------------------
def _token(cfg: dict) -> str:
    """One layer config ({"type": ..., **args}) as its token; ConfigError when the grammar cannot say it."""
    kind, a = cfg["type"], cfg
    if kind == "Conv2D":
        return (f"c{a['out_channels']}k{a['kernel_size']}" + (f"s{a['stride']}" if a.get("stride", 1) != 1 else "")
                + (f"p{a['padding']}" if a.get("padding", 0) else ""))
    if kind in ("MaxPool2D", "AvgPool2D"):
        k, s = a["kernel_size"], a.get("stride") or a["kernel_size"]
        return ("mp" if kind == "MaxPool2D" else "ap") + f"{k}" + (f"s{s}" if s != k else "")
    if kind == "Dense":
        return f"fc{a['out_features']}"
    if kind in ("BatchNorm2D", "BatchNorm1D"):
        if a.get("eps", 1e-5) != 1e-5 or a.get("momentum", 0.1) != 0.1:
            raise ConfigError(f"a spec string writes batch-norm with eps 1e-5 and momentum 0.1 only (got {a})")
        return "bn"
    if kind == "Dropout":
        return f"drop{float(a['p']):g}"
    if kind == "Residual":
        short = a.get("shortcut")
        return f"res({_join(a['layers'])}" + (f"|{_join(short)}" if short else "") + ")"
    simple = {"GlobalAvgPool2D": "gap", "Flatten": "flat", "ReLU": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh"}
    if kind in simple:
        return simple[kind]
    raise ConfigError(f"a {kind} layer has no spec token")


def _configs(layers) -> list[dict]:
    from .layers import layer_config
    return [c if isinstance(c, dict) else layer_config(c) for c in layers]


def _join(layers) -> str:
    cfgs, out = _configs(layers), []
    for i, cfg in enumerate(cfgs):
        if cfg["type"] == "Flatten" and i + 1 < len(cfgs) and cfgs[i + 1]["type"] == "Dense":
            continue   # the parser puts it back before the fc
        out.append(_token(cfg))
    return "-".join(out)


def to_spec(model_or_layers) -> str:
    """The spec string of a Sequential (or a list of layers or layer configs): ``parse_spec`` of it builds the
    same layers. ConfigError for a layer the grammar cannot write."""
    return _join(getattr(model_or_layers, "layers", model_or_layers))


# ---- JSON files ----------------------------------------------------------------------------------------------
def _fill(cfgs: list, shape: tuple, num_classes: int, where: str, top: bool) -> tuple[list[Layer], tuple]:
    """Layers from configs, the input sizes left out filled in from the shape so far (and a last Dense's
    out_features from the class count)."""
    if not isinstance(cfgs, list):
        raise ConfigError(f"{where}: expected a list of layers (got {cfgs!r})")
    layers = []
    for i, cfg in enumerate(cfgs):
        if not isinstance(cfg, dict) or "type" not in cfg:
            raise ConfigError(f"{where}: layer {i} must be an object with a \"type\" (got {cfg!r})")
        cfg, kind = dict(cfg), cfg["type"]
        if kind == "Conv2D" or kind == "BatchNorm2D":
            cfg.setdefault("in_channels" if kind == "Conv2D" else "num_features", shape[1] if len(shape) > 1 else 0)
        elif kind == "BatchNorm1D":
            cfg.setdefault("num_features", shape[1])
        elif kind == "Dense":
            cfg.setdefault("in_features", int(np.prod(shape[1:])))
            if top and i == len(cfgs) - 1:
                cfg.setdefault("out_features", num_classes)
        if kind == "Residual":
            body, out = _fill(cfg.get("layers") or [], shape, num_classes, f"{where} layer {i}", False)
            short = cfg.get("shortcut")
            short = _fill(short, shape, num_classes, f"{where} layer {i} shortcut", False)[0] if short else None
            layer = make("Residual", dict(layers=body, shortcut=short))
        else:
            layer = from_config(cfg)
        try:
            shape = tuple(layer.output_shape(shape))
        except ShapeError as exc:
            raise ConfigError(f"{where}: layer {i} ({kind}) does not fit its input {tuple(shape[1:])}: {exc}") \
                from None
        layers.append(layer)
    return layers, shape


def load_json(path, input_shape, num_classes: int) -> tuple[list[Layer], str]:
    """(layers, loss name) of a JSON model file: a list of layer configs or a Sequential config."""
    try:
        cfg = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"--model {path}: cannot read it ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--model {path}: not JSON ({exc})") from None
    loss = "cross_entropy"
    if isinstance(cfg, dict):
        loss = cfg.get("loss", loss)
        cfg = cfg.get("layers")
    if not isinstance(cfg, list) or not cfg:
        raise ConfigError(f"--model {path}: expected a list of layers or {{\"layers\": [...]}}")
    return _fill(cfg, (1, *input_shape), int(num_classes), f"--model {path}", True)[0], loss
