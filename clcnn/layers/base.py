"""The layer base: trainable parameters, buffers (non-trainable state), train/eval modes, a config to rebuild
from, and the shape check every layer makes on first use of an input shape.

Every layer is written once against the Backend interface: ``forward`` keeps what ``backward`` needs,
``backward`` returns the input gradient (or None when the input needs none) and accumulates parameter gradients.
"""
from __future__ import annotations

import math
import os

import numpy as np

from ..errors import ConfigError, ShapeError

INDEX_LIMIT = 2**31   # elements an array may hold: every kernel indexes with 32-bit signed ints


class Parameter:
    """A trainable float32 tensor: its host initial value, then device ``data`` and accumulated ``grad``.

    A model places all its parameters in one flat data buffer and one flat gradient buffer (``bind``), so zeroing
    the gradients and the optimizer update are one launch each; a layer used alone places its own (``to``).
    """

    def __init__(self, value: np.ndarray):
        self.host = np.array(value, dtype=np.float32, order="C", copy=True)   # its own copy: init() writes in place
        self.shape, self.size = self.host.shape, self.host.size
        self.data = self.grad = None
        self._backend = None

    def current(self) -> np.ndarray:
        """The value as float32 NumPy (shape ``self.shape``): from the device once placed, else the host value."""
        return self.host if self.data is None else self._backend.download(self.data).reshape(self.shape)

    def to(self, backend) -> None:
        """Place on ``backend`` alone (a layer used without a model): own data and gradient arrays."""
        src = self.current()
        self._backend, self.data, self.grad = backend, backend.upload(src), backend.zeros(self.shape)

    def bind(self, backend, data, grad, value: np.ndarray) -> None:
        """Use the device arrays ``data``/``grad`` (views of a model's flat buffers), uploading ``value``."""
        self._backend, self.data, self.grad = backend, data, grad
        backend.upload_into(data, np.ascontiguousarray(value, dtype=np.float32))


class Buffer(Parameter):
    """Non-trainable layer state (e.g. batch-norm running statistics), float32 or int64 on the host.

    Buffers are in the model's ``state_dict`` (PyTorch's names), are never decayed, never get a gradient and are
    never exchanged between data-parallel replicas; each is its own device array (``data``), ``grad`` is None.
    """

    def __init__(self, value: np.ndarray):
        value = np.asarray(value)
        dtype = np.int64 if np.issubdtype(value.dtype, np.integer) else np.float32
        self.host = np.array(value, dtype=dtype, order="C", copy=True)
        self.shape, self.size = self.host.shape, self.host.size
        self.data = self.grad = None
        self._backend = None

    def current(self) -> np.ndarray:
        """The value as NumPy of the host dtype: from the device where it lives there."""
        if self.data is None:
            return self.host
        return self._backend.download(self.data).reshape(self.shape).astype(self.host.dtype, copy=False)

    def to(self, backend) -> None:
        """Place on ``backend``: int64 buffers stay on the host (counters the host updates, as
        ``num_batches_tracked``); float32 buffers get a device array."""
        value = self.current()
        self._backend = backend
        self.data = backend.upload(np.ascontiguousarray(value)) if self.host.dtype == np.float32 else None
        self.host = np.array(value, copy=True)


def check_weight(layer: str, shape: tuple) -> None:
    """ConfigError naming ``layer`` when a weight of ``shape`` cannot exist: 2**31 elements or more (the kernels
    index with int32), or more than the host memory available now (it is made and initialised on the host, in
    float64, before it goes to a device)."""
    count = math.prod(int(s) for s in shape)
    if count >= INDEX_LIMIT:
        raise ConfigError(f"{layer}: a weight of shape {tuple(shape)} holds {count:,} elements; the kernels index "
                          "at most 2**31 - 1")
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return
    if 16 * count > avail:
        raise ConfigError(f"{layer}: a weight of shape {tuple(shape)} needs about {16 * count / 2**30:.1f} GiB of "
                          f"host memory to make, and {avail / 2**30:.1f} GiB are free (a smaller input size or "
                          "layer makes it smaller)")


def check_positive(layer: str, **values) -> None:
    """ConfigError naming ``layer`` and the argument when an int argument is < 1."""
    for name, v in values.items():
        try:
            whole = not isinstance(v, bool) and int(v) == v
        except (TypeError, ValueError, OverflowError):   # None, "3", inf, nan
            whole = False
        if not whole or v < 1:
            raise ConfigError(f"{layer}: {name} must be a positive integer (got {v!r})")


class Layer:
    """Base class. Subclasses set ``params`` (name -> Parameter) and ``buffers`` (name -> Buffer) in __init__,
    implement ``forward``/``backward``/``output_shape`` and return their constructor arguments from ``config``."""

    params: dict[str, Parameter] = {}
    buffers: dict[str, Buffer] = {}
    training = True     # train()/eval(): batch statistics, dropout masks (layers that have them) follow it
    name = ""           # set by Sequential ("3" for its fourth layer): error messages name the layer
    fuse_relu = False   # set by Sequential when a ReLU follows: forward writes max(y, 0) itself
    grad_beta = 1.0     # backward: param.grad = grad_beta * param.grad + this batch's gradient (0: overwrite,
                        # so a model need not zero its gradients before a step)

    # ---- configuration and modes ----------------------------------------------------------------------
    def config(self) -> dict:
        """The constructor's keyword arguments: ``type(self)(**config())`` is the same layer, untrained."""
        return {}

    def train(self, mode: bool = True) -> "Layer":
        """Training mode (True) or evaluation mode (False), as PyTorch's ``Module.train``; returns self."""
        self.training = bool(mode)
        return self

    def eval(self) -> "Layer":
        """Evaluation mode: ``train(False)``."""
        return self.train(False)

    def init(self, rng: np.random.Generator) -> None:
        """(Re)initialise parameters from ``rng`` on the host (He-normal weights, zero biases)."""

    def clone(self) -> "Layer":
        """An unplaced copy: the same configuration, mode, and current parameter and buffer values."""
        twin = type(self)(**self.config())
        twin.training, twin.name = self.training, self.name
        for src, dst in ((self.params, twin.params), (self.buffers, twin.buffers)):
            for k, p in src.items():
                dst[k].host[...] = p.current()
        return twin

    # ---- shapes ---------------------------------------------------------------------------------------
    def output_shape(self, shape: tuple) -> tuple:
        """The output shape for input ``shape`` (batch first); raises ShapeError when the input does not fit."""
        return tuple(shape)

    def _fail(self, expected: str, shape) -> None:
        label = f"layer {self.name} ({self!r})" if self.name else repr(self)
        raise ShapeError(f"{label} expects input {expected}, got {tuple(int(s) for s in shape)}")

    _checked: tuple | None = None

    def check(self, shape) -> tuple:
        """``output_shape(shape)``, computed once per new input shape (forward calls it before any kernel);
        ShapeError too when the input or the output has INDEX_LIMIT elements or more (kernels index with int32)."""
        shape = tuple(int(s) for s in shape)
        if self._checked is None or self._checked[0] != shape:
            out = self.output_shape(shape)
            for what, s in (("input", shape), ("output", out)):
                if int(np.prod(s, dtype=object)) >= INDEX_LIMIT:
                    label = f"layer {self.name} ({self!r})" if self.name else repr(self)
                    raise ShapeError(f"{label}: its {what} {tuple(s)} has {int(np.prod(s, dtype=object)):,} elements, "
                                     f"more than the kernels' 32-bit indices reach ({INDEX_LIMIT - 1:,}): use a "
                                     "smaller batch")
            self._checked = (shape, out)
        return self._checked[1]

    # ---- placement --------------------------------------------------------------------------------------
    def to(self, backend, place_params: bool = True) -> None:
        """Run on ``backend`` (a Backend, or a device id such as "cpu" or "cl:1"); ``place_params=False`` when the
        owning model places the parameters (buffers are always placed here: they are not part of the model's flat
        buffers). DeviceError for an unknown device id."""
        if backend is None or isinstance(backend, str):
            from ..backends import get_backend
            backend = get_backend(backend)
        self.backend = backend
        self._bufs = {}
        if place_params:
            for p in self.params.values():
                p.to(backend)
        for b in self.buffers.values():
            b.to(backend)

    def _buffer(self, name: str, shape, dtype=np.float32):
        """A device array kept on the layer and reused by later steps of the same shape (every op that writes
        one overwrites it completely, so no re-zeroing is needed)."""
        shape = tuple(int(s) for s in shape)
        a = self._bufs.get(name)
        if a is None or tuple(a.shape) != shape or a.dtype != dtype:
            a = self._bufs[name] = self.backend.zeros(shape, dtype)
        return a

    def forward(self, x, train: bool = True):
        """Device array x (batch first) -> device array y of ``output_shape(x.shape)``; ``train``: a backward
        follows (keep what it needs). The mode (``self.training``) chooses batch or running statistics."""
        raise TypeError(f"{type(self).__name__} must implement forward")

    def backward(self, dy, need_dx: bool = True):
        """dL/dy (the forward output's shape) -> dL/dx (the input's shape; None when not ``need_dx``); parameter
        gradients go to ``p.grad`` as ``grad_beta * p.grad + this batch's gradient``."""
        raise TypeError(f"{type(self).__name__} must implement backward")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


def he_normal(rng: np.random.Generator, shape, fan_in: int) -> np.ndarray:
    """He-normal initialisation: N(0, 2/fan_in) (He et al. 2015, "Delving Deep into Rectifiers")."""
    return rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
