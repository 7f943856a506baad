"""Sequential: a stack of layers with a loss, placed on one device, laid out like PyTorch's nn.Sequential."""
from __future__ import annotations

import numpy as np

from .backends import Backend, get_backend
from .errors import ConfigError
from .layers import Layer, from_config, fuse_chain, layer_config
from .losses import get_loss
from .recording import StepCache
from .steps import Steps


class ParamBuffer(tuple):
    """(backend, data, grad, size, index) of one flat parameter buffer: what an optimizer updates in one op.
    ``index``: int64 positions in ``data`` of every parameter element, parameters in state_dict order."""
    backend = property(lambda self: self[0])
    data = property(lambda self: self[1])
    grad = property(lambda self: self[2])
    size = property(lambda self: self[3])
    index = property(lambda self: self[4])


class Sequential(Steps):
    """Layers applied in order, with a loss on the logits (softmax cross-entropy, or sigmoid BCE on one logit).

    Args:
        layers: the layers; parameter names are ``"<index>.weight"`` / ``"<index>.bias"`` as in nn.Sequential.
        loss: ``"cross_entropy"``, ``"bce"`` or a ``clcnn.losses.Loss``.
        seed: seeds the He-normal initialisation (host RNG, so every device starts from the same weights).
        input_shape: (C, H, W) (or (features,)) the model is built for: checked through every layer now
            (ShapeError naming the first layer that does not fit); None checks on first use only.
    Shape:
        x: float32 (N, *input_shape); y: int class indices (N,); logits (N, num_classes).
    Modes: ``train()`` / ``eval()`` as in PyTorch; ``predict`` always runs in evaluation mode.
    """

    def __init__(self, layers: list[Layer], loss="cross_entropy", seed: int | None = 0, input_shape=None):
        self.layers = list(layers)
        self.loss = get_loss(loss)
        self.training = True
        for i, layer in enumerate(self.layers):
            layer.name = str(i)
        fuse_chain(self.layers)   # bias + ReLU in the GEMM write-out, ReLU's backward in a max-pool's
        self.input_shape = None if input_shape is None else tuple(int(s) for s in input_shape)
        if self.input_shape is not None:
            self.output_shape((1, *self.input_shape))
        rng = np.random.default_rng(seed)
        for layer in self.layers:
            layer.init(rng)
        self.backend = None
        self._checked_shapes: dict = {}   # input shape -> logits shape, checked through every layer once

    # ---- configuration, modes, shapes ---------------------------------------------------------------------
    def config(self) -> dict:
        """{"layers": [{"type": ..., **args}], "loss": name, "input_shape": [C, H, W] or None}: JSON-able;
        ``Sequential.from_config(config())`` rebuilds the model (untrained)."""
        return {"layers": [layer_config(layer) for layer in self.layers], "loss": self.loss.name,
                "input_shape": None if self.input_shape is None else list(self.input_shape)}

    @classmethod
    def from_config(cls, cfg: dict, seed: int | None = 0) -> "Sequential":
        """The model ``config()`` describes; ConfigError for an unknown layer or bad arguments."""
        if not isinstance(cfg, dict) or not isinstance(cfg.get("layers"), list):
            raise ConfigError("a model config needs a list of layers")
        return cls([from_config(c) for c in cfg["layers"]], loss=cfg.get("loss", "cross_entropy"), seed=seed,
                   input_shape=cfg.get("input_shape"))

    def clone(self) -> "Sequential":
        """A new, unplaced model with the same layers, loss, mode and current weights and buffers."""
        twin = Sequential([layer.clone() for layer in self.layers], loss=self.loss, seed=0,
                          input_shape=self.input_shape)
        twin.load_state_dict(self.state_dict())   # the constructor initialised the weights anew
        twin.train(self.training)
        twin.capture_steps = self.capture_steps
        return twin

    def train(self, mode: bool = True) -> "Sequential":
        """Training mode (True) or evaluation mode (False) for every layer, as PyTorch's; returns self."""
        self.training = bool(mode)
        for layer in self.layers:
            layer.train(mode)
        return self

    def eval(self) -> "Sequential":
        """Evaluation mode for every layer: ``train(False)``."""
        return self.train(False)

    def output_shape(self, shape) -> tuple:
        """The logits' shape for an input of ``shape`` (batch first), checked through every layer and the loss;
        ShapeError naming the first layer that does not fit."""
        for layer in self.layers:
            shape = layer.check(shape)
        self.loss.check(shape)
        return shape

    @property
    def num_classes(self) -> int | None:
        """The number of logits per image (None when the input shape is not known)."""
        return None if self.input_shape is None else self.output_shape((1, *self.input_shape))[1]

    def summary(self) -> str:
        """A table: each layer, its output shape for one image and its parameter count (Keras's summary)."""
        if self.input_shape is None:
            raise ConfigError("summary() needs the model's input_shape")
        shape, rows = (1, *self.input_shape), [f"{'layer':<64} {'output shape':<18} {'parameters':>10}"]
        for i, layer in enumerate(self.layers):
            shape = layer.check(shape)
            count = sum(p.size for p in layer.params.values())
            rows.append(f"{f'({i}) {layer!r}':<64.64} {str(tuple(shape[1:])):<18} {count:>10,}")
        total = sum(p.size for _, p in self.named_parameters())
        return "\n".join(rows + [f"input {self.input_shape}, {total:,} parameters, loss {self.loss.name}"])

    # ---- placement, parameters, buffers, state --------------------------------------------------------------
    def to(self, device=None) -> "Sequential":
        """Move parameters and buffers to ``device`` (an id "cpu"/"cl:0"/"auto", a DeviceInfo, or a Backend)."""
        backend = device if isinstance(device, Backend) else get_backend(device)
        values = [(p, p.current()) for _, p in self.named_parameters()]
        for layer in self.layers:
            layer.to(backend, place_params=False)
        self._place_parameters(backend, values)
        self.backend = backend
        self._steps = StepCache(backend, self.MAX_GRAPHS)
        self._loss_buf = backend.zeros((1,))   # the last synchronous step's loss
        self._loss_acc = backend.zeros((1,))   # the sum of sync=False steps' losses since read_loss()
        self._bufs = {}
        return self

    def _place_parameters(self, backend, values) -> None:
        """All parameters as views of one flat data buffer and one flat gradient buffer (offsets aligned to what
        the backend's views need): zeroing gradients and the optimizer update are then one launch each, and the
        gradients one contiguous buffer to sum across devices."""
        align, offsets, total = backend.view_align, [], 0
        for p, _ in values:
            offsets.append(total)
            total += -(-p.size // align) * align
        self.flat_data, self.flat_grad = backend.zeros((max(total, 1),)), backend.zeros((max(total, 1),))
        self.flat_offsets = {id(p): off for (p, _), off in zip(values, offsets)}
        for (p, value), off in zip(values, offsets):
            p.bind(backend, backend.view(self.flat_data, off, p.shape), backend.view(self.flat_grad, off, p.shape),
                   value)
        parts = [np.arange(off, off + p.size) for (p, _), off in zip(values, offsets)]
        self._flat_index = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
        self._param_buffers = [ParamBuffer((backend, self.flat_data, self.flat_grad, self.flat_data.size,
                                            self._flat_index))]
        backend.synchronize()

    def parameter_buffers(self) -> list[ParamBuffer]:
        """The flat buffers an optimizer updates in one op each (here: one)."""
        return self._param_buffers

    def flat_index(self) -> np.ndarray:
        """Positions in the flat buffers of every parameter element, parameters in state_dict order (so
        ``flat[flat_index()]`` is the device-independent concatenation of all parameters); int64 (P,)."""
        return self._flat_index

    def self_test(self) -> None:
        """The device's kernel self-test (raises DeviceError naming the device)."""
        self._ensure_device()
        self.backend.self_test()

    @property
    def device(self):
        """The DeviceInfo of the backend the model is placed on (None before ``to``)."""
        return self.backend.info if self.backend else None

    def named_parameters(self):
        """("<layer index>.<name>", Parameter) pairs in state_dict order."""
        for i, layer in enumerate(self.layers):
            for name, p in layer.params.items():
                yield f"{i}.{name}", p

    def named_buffers(self):
        """("<layer index>.<name>", Buffer) pairs: non-trainable state (running statistics)."""
        for i, layer in enumerate(self.layers):
            for name, b in layer.buffers.items():
                yield f"{i}.{name}", b

    def _ensure_device(self):
        if self.backend is None:
            self.to("cpu")

    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters (float32) and buffers as NumPy arrays, named and shaped as PyTorch's nn.Sequential."""
        out = {k: p.current().copy() for k, p in self.named_parameters()}
        out.update({k: b.current().copy() for k, b in self.named_buffers()})
        return out

    def load_state_dict(self, state: dict) -> None:
        """Copy ``state`` (as from state_dict or PyTorch) into the parameters and buffers; names and shapes must
        match (ConfigError listing the differences)."""
        tensors = dict(self.named_parameters()) | dict(self.named_buffers())
        missing, unexpected = set(tensors) - set(state), set(state) - set(tensors)
        if missing or unexpected:
            raise ConfigError(f"state_dict mismatch: missing {sorted(missing)}, unexpected {sorted(unexpected)}")
        for k, p in tensors.items():
            v = np.asarray(state[k], dtype=p.host.dtype)
            if v.shape != p.shape:
                raise ConfigError(f"state_dict[{k!r}] has shape {v.shape}, expected {p.shape}")
            p.host[...] = v
            if self.backend is not None and p.data is not None:
                self.backend.upload_into(p.data, np.ascontiguousarray(p.host))
        if self.backend is not None:
            self.backend.synchronize()

    def __repr__(self) -> str:
        body = "\n".join(f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential(\n{body}\n)"
