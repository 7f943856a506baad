"""Taking a trained model elsewhere: an ONNX graph (opset 17, built with the `onnx` package) and the equivalent
PyTorch nn.Sequential as a short Python file, both made from the model's layer configs and its state_dict.

Each layer type has one entry in EXPORTS: how it becomes ONNX nodes and how it is written as a torch module; a new
layer type adds one entry. The state_dict names are PyTorch's, so the ONNX initializers carry them and
model.safetensors loads with ``load_state_dict`` into the torch file's ``build()``.

Input convention (both): images as float32 (N, C, H, W) with pixels scaled to [0, 1] (pixel / 255, as
torchvision's ToTensor). The ONNX graph starts with the run's normalisation, (x - mean) / std per channel, and
outputs "logits" and "probabilities"; the torch file's nn.Sequential takes normalised input (its ``normalise``
function does that step), so its state_dict is exactly model.safetensors'.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable

import numpy as np

from . import io
from .errors import ConfigError

OPSET = 17
IR_VERSION = 8   # the IR of opset 17: runtimes from onnxruntime 1.11 on load it


class OnnxGraph:
    """The nodes and initializers of the graph being built; ``state`` is the model's state_dict (NumPy)."""

    def __init__(self, state: dict):
        self.state, self.nodes, self.initializers, self._names = state, [], [], set()

    def tensor(self, name: str, value) -> str:
        """Add an initializer ``name`` holding ``value`` (float32, or int64 for integer arrays); returns name."""
        from onnx import numpy_helper
        value = np.asarray(value)
        value = value.astype(np.int64 if np.issubdtype(value.dtype, np.integer) else np.float32)
        if name not in self._names:
            self._names.add(name)
            self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def param(self, key: str) -> str:
        """The state_dict entry ``key`` ("3.weight") as an initializer of that name."""
        if key not in self.state:
            raise ConfigError(f"export: the state_dict has no {key!r}")
        return self.tensor(key, self.state[key])

    def op(self, op_type: str, inputs: list[str], name: str, **attrs) -> str:
        """Append node ``op_type`` named ``name``; returns its output's name (``name`` too)."""
        from onnx import helper
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name


def _pair(v) -> list[int]:
    return [int(v), int(v)]


# ---- ONNX: each function is (graph, layer config, state_dict prefix "3.", input name) -> output name -----------
def _conv_onnx(g, c, p, x):
    return g.op("Conv", [x, g.param(p + "weight"), g.param(p + "bias")], p + "Conv",
                kernel_shape=_pair(c["kernel_size"]), strides=_pair(c.get("stride", 1)),
                pads=[int(c.get("padding", 0))] * 4)


def _pool_onnx(op):
    def build(g, c, p, x):
        k = c["kernel_size"]
        return g.op(op, [x], p + op, kernel_shape=_pair(k), strides=_pair(c.get("stride") or k))
    return build


def _batchnorm_onnx(g, c, p, x):   # evaluation mode: the running statistics
    inputs = [x] + [g.param(p + n) for n in ("weight", "bias", "running_mean", "running_var")]
    return g.op("BatchNormalization", inputs, p + "BatchNormalization", epsilon=float(c.get("eps", 1e-5)))


def _global_avg_pool_onnx(g, c, p, x):   # (N, C, H, W) -> (N, C)
    return g.op("Flatten", [g.op("GlobalAveragePool", [x], p + "GlobalAveragePool")], p + "Flatten", axis=1)


def _unary_onnx(op, **attrs):
    return lambda g, c, p, x: g.op(op, [x], p + op, **attrs)


def _residual_onnx(g, c, p, x):   # layers(x) + shortcut(x) (identity shortcut when there is none)
    body = _onnx_layers(g, c["layers"], p + "layers.", x)
    short = _onnx_layers(g, c["shortcut"], p + "shortcut.", x) if c.get("shortcut") else x
    return g.op("Add", [body, short], p + "Add")


def _onnx_layers(g, configs: list[dict], prefix: str, x: str) -> str:
    for i, cfg in enumerate(configs):
        x = _entry(cfg).onnx(g, cfg, f"{prefix}{i}.", x)
    return x


# ---- torch: each function is (layer config, indent) -> the source of the equivalent torch module --------------
def _torch_layers(configs: list[dict], indent: str) -> str:
    """``nn.Sequential(...)`` source of ``configs``, one module per line commented with its index."""
    inner = indent + "    "
    rows = [f"{inner}{_entry(c).torch(c, inner)},   # {i}" for i, c in enumerate(configs)]
    return "nn.Sequential(\n" + "\n".join(rows) + f"\n{indent})"


def _residual_torch(c, indent):
    short = _torch_layers(c["shortcut"], indent) if c.get("shortcut") else "None"
    return f"Residual({_torch_layers(c['layers'], indent)}, {short})"


RESIDUAL_TORCH = '''

class Residual(nn.Module):
    """layers(x) + shortcut(x), the shortcut the identity when None (clcnn.layers.Residual)."""

    def __init__(self, layers: nn.Sequential, shortcut: nn.Sequential | None = None):
        super().__init__()
        self.layers, self.shortcut = layers, shortcut

    def forward(self, x):
        return self.layers(x) + (x if self.shortcut is None else self.shortcut(x))
'''


@dataclass(frozen=True)
class Export:
    """How one clcnn layer type is exported: ``onnx(graph, config, prefix, x) -> y`` appends its nodes;
    ``torch(config, indent) -> str`` is its torch module's source; ``torch_helper`` source the file then needs."""
    onnx: Callable
    torch: Callable
    torch_helper: str = ""


EXPORTS = {
    "Conv2D": Export(_conv_onnx, lambda c, _: f"nn.Conv2d({c['in_channels']}, {c['out_channels']}, kernel_size="
                     f"{c['kernel_size']}, stride={c.get('stride', 1)}, padding={c.get('padding', 0)})"),
    "Dense": Export(lambda g, c, p, x: g.op("Gemm", [x, g.param(p + "weight"), g.param(p + "bias")], p + "Gemm",
                                            transB=1),
                    lambda c, _: f"nn.Linear({c['in_features']}, {c['out_features']})"),
    "Flatten": Export(_unary_onnx("Flatten", axis=1), lambda c, _: "nn.Flatten()"),
    "MaxPool2D": Export(_pool_onnx("MaxPool"),
                        lambda c, _: f"nn.MaxPool2d({c['kernel_size']}, stride={c.get('stride') or c['kernel_size']})"),
    "AvgPool2D": Export(_pool_onnx("AveragePool"),
                        lambda c, _: f"nn.AvgPool2d({c['kernel_size']}, stride={c.get('stride') or c['kernel_size']})"),
    "GlobalAvgPool2D": Export(_global_avg_pool_onnx,
                              lambda c, _: "nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())"),
    "ReLU": Export(_unary_onnx("Relu"), lambda c, _: "nn.ReLU()"),
    "Sigmoid": Export(_unary_onnx("Sigmoid"), lambda c, _: "nn.Sigmoid()"),
    "Tanh": Export(_unary_onnx("Tanh"), lambda c, _: "nn.Tanh()"),
    "Dropout": Export(_unary_onnx("Identity"), lambda c, _: f"nn.Dropout(p={float(c.get('p', 0.5))!r})"),
    "BatchNorm2D": Export(_batchnorm_onnx, lambda c, _: f"nn.BatchNorm2d({c['num_features']}, eps="
                          f"{float(c.get('eps', 1e-5))!r}, momentum={float(c.get('momentum', 0.1))!r})"),
    "BatchNorm1D": Export(_batchnorm_onnx, lambda c, _: f"nn.BatchNorm1d({c['num_features']}, eps="
                          f"{float(c.get('eps', 1e-5))!r}, momentum={float(c.get('momentum', 0.1))!r})"),
    "Residual": Export(_residual_onnx, _residual_torch, RESIDUAL_TORCH),
}


def _entry(cfg: dict) -> Export:
    kind = cfg.get("type")
    if kind not in EXPORTS:
        raise ConfigError(f"export: layer type {kind!r} has no export mapping (known: {', '.join(sorted(EXPORTS))})")
    return EXPORTS[kind]


def _layer_types(configs: list[dict]) -> set[str]:
    out = set()
    for c in configs:
        out.add(c.get("type"))
        for key in ("layers", "shortcut"):
            if isinstance(c.get(key), list):
                out |= _layer_types(c[key])
    return out


def _checked(model) -> dict:
    spec = model.config()
    if spec.get("input_shape") is None or len(spec["input_shape"]) != 3:
        raise ConfigError(f"export needs a model built for images, input_shape (C, H, W) (got "
                          f"{spec.get('input_shape')})")
    for c in spec["layers"]:
        _entry(c)
    return spec


def onnx_model(model, info):
    """The ONNX ModelProto of ``model`` (a clcnn Sequential with an input_shape) and its data description
    ``info`` (a DatasetInfo: mean, std, class names). Input "input": float32 (N, C, H, W), pixels in [0, 1];
    outputs "logits" (N, K) and "probabilities" (N, K): softmax (a one-logit bce model: (N, 1), the sigmoid,
    the probability of class 1). Checked with
    ``onnx.checker`` before it is returned. ConfigError naming a layer type without a mapping."""
    try:
        import onnx
        from onnx import TensorProto, helper
    except ImportError:
        raise ConfigError("export --onnx needs the onnx package: pip install 'clcnn[onnx]'") from None
    spec = _checked(model)
    c, h, w = spec["input_shape"]
    k = model.num_classes
    g = OnnxGraph(model.state_dict())
    mean = g.tensor("normalise.mean", np.asarray(info.mean, np.float32).reshape(1, c, 1, 1))
    std = g.tensor("normalise.std", np.asarray(info.std, np.float32).reshape(1, c, 1, 1))
    x = g.op("Div", [g.op("Sub", ["input", mean], "normalise.Sub"), std], "normalise.Div")
    logits = _onnx_layers(g, spec["layers"], "", x)
    g.nodes.append(helper.make_node("Identity", [logits], ["logits"], name="logits"))
    prob_op = ("Sigmoid", {}) if k == 1 else ("Softmax", {"axis": 1})
    g.nodes.append(helper.make_node(prob_op[0], ["logits"], ["probabilities"], name="probabilities", **prob_op[1]))
    graph = helper.make_graph(
        g.nodes, "clcnn", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", c, h, w])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", k]) for name in ("logits", "probabilities")],
        g.initializers)
    proto = helper.make_model(graph, producer_name="clcnn", opset_imports=[helper.make_opsetid("", OPSET)],
                              doc_string="input: float32 (N, C, H, W) pixels in [0, 1] (pixel / 255); the graph "
                              "normalises them with the training data's per-channel mean and std")
    proto.ir_version = IR_VERSION
    helper.set_model_props(proto, {"class_names": json.dumps(info.class_names), "mean": json.dumps(list(info.mean)),
                                   "std": json.dumps(list(info.std)), "input_range": "[0, 1]"})
    onnx.checker.check_model(proto)
    return proto


def save_onnx(model, info, path) -> None:
    """``onnx_model(model, info)`` written to ``path`` atomically."""
    io.write_atomic(path, onnx_model(model, info).SerializeToString())


TORCH_FILE = '''"""PyTorch twin of a clcnn model ({source}), written by `clcnn export --torch`.

    import torch, <this module> as m
    model = m.load("model.safetensors")   # nn.Sequential, evaluation mode, clcnn's weights
    logits = model(m.normalise(x))         # x: float32 {shape_doc}, pixels in [0, 1] (pixel / 255)
"""
import torch
from torch import nn

INPUT_SHAPE = {input_shape!r}   # (C, H, W)
CLASS_NAMES = {class_names!r}
MEAN = {mean!r}   # per channel, of the training pixels in [0, 1]
STD = {std!r}
{helpers}

def build() -> nn.Sequential:
    """The model, untrained: its state_dict names and shapes are those of clcnn's model.safetensors."""
    return {body}


def normalise(x: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1], (N, C, H, W) -> the model's input, (x - MEAN) / STD per channel (as clcnn trained it)."""
    mean = torch.tensor(MEAN, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(STD, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def load(path: str) -> nn.Sequential:
    """build() with the weights and buffers of a clcnn model.safetensors (load_state_dict), in evaluation mode."""
    from safetensors.torch import load_file
    model = build()
    model.load_state_dict(load_file(path))
    return model.eval()
'''


def torch_source(model, info, source: str = "") -> str:
    """The Python source of a module defining ``build()`` (the equivalent torch.nn.Sequential), ``normalise(x)``
    and ``load(path)``, with the input shape, class names and normalisation as constants. ``source``: where the
    model came from (shown in the docstring)."""
    spec = _checked(model)
    helpers = "".join(sorted({EXPORTS[t].torch_helper for t in _layer_types(spec["layers"])} - {""}))
    c, h, w = spec["input_shape"]
    return TORCH_FILE.format(source=source or "clcnn", shape_doc=f"(N, {c}, {h}, {w})",
                             input_shape=(c, h, w), class_names=list(info.class_names),
                             mean=tuple(float(m) for m in info.mean), std=tuple(float(s) for s in info.std),
                             helpers=helpers, body=_torch_layers(spec["layers"], "    "))


def save_torch(model, info, path, source: str = "") -> None:
    """``torch_source(model, info, source)`` written to ``path`` atomically."""
    io.write_atomic(path, torch_source(model, info, source).encode())


def torch_module(model, info=None):
    """``build()`` of ``torch_source(model, info)`` with ``model``'s weights and buffers loaded: the equivalent
    torch.nn.Sequential, on the CPU, in training mode, one torch module per clcnn layer (the same indices and
    state_dict names). ``info`` (class names, normalisation) only fills the source's constants: without it, the
    model's own shapes stand in. ConfigError for a layer or model with no export."""
    import torch
    if info is None:
        c = _checked(model)["input_shape"][0]
        info = SimpleNamespace(class_names=[], mean=(0.0,) * c, std=(1.0,) * c)
    ns: dict = {}
    exec(compile(torch_source(model, info), "<clcnn.export>", "exec"), ns)
    module = ns["build"]()
    module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})
    return module.train()
