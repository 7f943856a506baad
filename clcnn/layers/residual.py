"""Residual: a block that adds its input (or a shortcut of it) to the output of its layers, as in ResNet
(He et al. 2016, "Deep Residual Learning for Image Recognition"), and ``fuse_chain``, the fusions a chain of
layers makes (Sequential's and a block's)."""
from __future__ import annotations

from ..errors import ConfigError, ShapeError
from .activation import ReLU
from .base import Layer
from .conv import Conv2D, MaxPool2D
from .dense import Dense
from .norm import BatchNorm2D, _BatchNorm
from .registry import from_config, layer_config


def fuse_chain(layers: list) -> None:
    """Mark the fusions of a chain: a ReLU after a Conv2D/Dense is applied in that layer's GEMM write-out, after a
    batch-norm in its normalising pass; a ReLU's backward is done by a following MaxPool2D's or Dense's (in its
    input gradient's write-out), else by a preceding batch-norm's; a MaxPool2D (stride = window) after a Conv2D,
    with or without a ReLU between, may run in the convolution's ops (fuse_pool: the backend's choice). In eval
    forwards, a BatchNorm2D after a Conv2D is folded into its weights (fold_bn), the ReLU after it into the
    convolution's write-out, and a MaxPool2D after those may run in its ops too (fold_pool)."""
    for prev, nxt in zip(layers, layers[1:]):
        if isinstance(nxt, ReLU) and isinstance(prev, (Conv2D, Dense, _BatchNorm)):   # in prev's write-out
            prev.fuse_relu, nxt.fused = True, True
        if isinstance(prev, ReLU) and isinstance(nxt, (MaxPool2D, Dense)):   # ReLU's backward in the pool's
            prev.backward_in_next, nxt.relu_mask = True, True               # backward, the product's write-out
    for i, layer in enumerate(layers):   # a max-pool after a convolution (and its ReLU) may run in its ops
        after = layers[i + 2] if i + 2 < len(layers) and getattr(layers[i + 1], "fused", False) else \
            (layers[i + 1] if i + 1 < len(layers) else None)
        if isinstance(layer, Conv2D) and isinstance(after, MaxPool2D) and after.stride == after.kernel_size:
            layer.fuse_pool = after
    for i, (prev, nxt) in enumerate(zip(layers, layers[1:])):
        if isinstance(prev, Conv2D) and isinstance(nxt, BatchNorm2D):
            j = i + (3 if nxt.fuse_relu else 2)
            after = layers[j] if j < len(layers) else None
            prev.fold_bn = nxt
            prev.fold_pool = after if isinstance(after, MaxPool2D) and after.stride == after.kernel_size else None
    for prev, nxt in zip(layers, layers[1:]):
        if isinstance(prev, _BatchNorm) and isinstance(nxt, ReLU) and not nxt.backward_in_next:
            prev.relu_mask, nxt.backward_in_prev = True, True   # the BN's backward cuts dy where y <= 0


def walk(layers):
    """Every layer of a chain, each Residual followed by its sub-layers (depth first, main branch first)."""
    for layer in layers:
        yield layer
        if isinstance(layer, Residual):
            yield from walk(x for _, x in layer._named())


def _chain(items, what: str) -> list:
    if not isinstance(items, (list, tuple)) or not items:
        raise ConfigError(f"Residual: {what} must be a non-empty list of layers (got {items!r})")
    out = [from_config(i) if isinstance(i, dict) else i for i in items]
    for item in out:
        if not isinstance(item, Layer):
            raise ConfigError(f"Residual: {what} must hold layers or layer configs (got {item!r})")
    fuse_chain(out)
    return out


class Residual(Layer):
    """y = layers(x) + shortcut(x): the identity shortcut (``shortcut=None``), or a chain of layers where the
    shape changes, e.g. ``[Conv2D(c_in, c_out, 1, stride=s), BatchNorm2D(c_out)]`` (ResNet's projection).

    Args:
        layers: the main branch, a non-empty list of layers (or their ``layer_config`` dicts).
        shortcut: None, or a non-empty list of layers (or configs) for the shortcut branch.
    Shape: both branches must map x to the same shape (ShapeError naming the block otherwise).
    Names: parameters and buffers are ``layers.<i>.<name>`` and ``shortcut.<i>.<name>`` -- the state_dict of the
    PyTorch module ``R`` with ``R.layers = nn.Sequential(*layers)``, ``R.shortcut = nn.Sequential(*shortcut)``
    (or None) and ``forward(x) = R.layers(x) + (x if R.shortcut is None else R.shortcut(x))``; inside a
    Sequential: ``"3.layers.0.weight"``. Config: {"layers": [configs], "shortcut": [configs] or None}.
    """

    def __init__(self, layers, shortcut=None):
        self.layers = _chain(layers, "layers")
        self.shortcut = None if shortcut is None else _chain(shortcut, "shortcut")
        self.params, self.buffers = {}, {}
        for prefix, layer in self._named():
            self.params.update({f"{prefix}.{k}": p for k, p in layer.params.items()})
            self.buffers.update({f"{prefix}.{k}": b for k, b in layer.buffers.items()})

    def _named(self):
        """(``layers.<i>`` / ``shortcut.<i>``, layer) for every sub-layer, main branch first."""
        yield from ((f"layers.{i}", layer) for i, layer in enumerate(self.layers))
        yield from ((f"shortcut.{i}", layer) for i, layer in enumerate(self.shortcut or []))

    def config(self) -> dict:
        return {"layers": [layer_config(x) for x in self.layers],
                "shortcut": None if self.shortcut is None else [layer_config(x) for x in self.shortcut]}

    def __repr__(self) -> str:
        main = ", ".join(map(repr, self.layers))
        side = "" if self.shortcut is None else f", shortcut=[{', '.join(map(repr, self.shortcut))}]"
        return f"Residual([{main}]{side})"

    def train(self, mode=True):
        super().train(mode)
        for _, layer in self._named():
            layer.train(mode)
        return self

    def init(self, rng):
        for _, layer in self._named():
            layer.init(rng)

    def clone(self):
        twin = Residual([x.clone() for x in self.layers],
                        None if self.shortcut is None else [x.clone() for x in self.shortcut])
        twin.training, twin.name = self.training, self.name
        return twin

    def host_step(self) -> None:
        """The host's part of a replayed training step: each sub-layer's ``host_step``, where it has one."""
        for _, layer in self._named():
            if hasattr(layer, "host_step"):
                layer.host_step()

    def output_shape(self, shape):
        for prefix, layer in self._named():
            layer.name = f"{self.name}.{prefix}" if self.name else prefix
        main = side = tuple(shape)
        for layer in self.layers:
            main = layer.check(main)
        for layer in self.shortcut or []:
            side = layer.check(side)
        if main != side:
            label = f"layer {self.name} (Residual)" if self.name else "Residual"
            raise ShapeError(f"{label}: its layers map {tuple(shape)} to {main} but its shortcut to {side}; "
                             "give it a shortcut (e.g. a 1x1 Conv2D with the stride) that matches")
        return main

    def to(self, backend, place_params=True):
        self.backend, self._bufs = backend, {}
        for _, layer in self._named():
            layer.to(backend, place_params)

    def forward(self, x, train=True):
        # x -> y = layers(x) + shortcut(x) (x itself for the identity), one add pass.
        self.check(x.shape)
        main = x
        for layer in self.layers:
            main = layer.forward(main, train)
        side = x
        for layer in self.shortcut or []:
            side = layer.forward(side, train)
        y = self._buffer("y", main.shape)
        self.backend.add(main, side, y, y.size)
        self.xshape = x.shape
        return y

    def backward(self, dy, need_dx=True):
        # dy -> dx = d(layers)/dx . dy + d(shortcut)/dx . dy (dy itself for the identity); parameter gradients
        # of both branches with this block's grad_beta.
        for _, layer in self._named():
            layer.grad_beta = self.grad_beta
        g = dy
        for i in range(len(self.layers) - 1, -1, -1):
            g = self.layers[i].backward(g, need_dx=need_dx or i > 0)
        s = dy
        chain = self.shortcut or []
        for i in range(len(chain) - 1, -1, -1):
            s = chain[i].backward(s, need_dx=need_dx or i > 0)
        if not need_dx:
            return None
        dx = self._buffer("dx", self.xshape)
        self.backend.add(g, s, dx, dx.size)
        return dx
