"""Optimizers: hold hyper-parameters and per-parameter state on the device, and call one Backend update op."""
from __future__ import annotations

import numpy as np


class SGD:
    """Mini-batch SGD with PyTorch's momentum and weight-decay rule (g += wd*p; v = mu*v + g; p -= lr*v).

    Args:
        model: a ``clcnn.Sequential`` already placed on its device (``.to``); state lives on that device.
        lr: learning rate (> 0).
        momentum: momentum factor mu (>= 0); 0 means plain SGD.
        weight_decay: L2 penalty (>= 0).
    """

    def __init__(self, model, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        if not lr > 0:
            raise ValueError(f"Invalid learning rate: {lr} (must be > 0)")
        if not momentum >= 0:
            raise ValueError(f"Invalid momentum value: {momentum} (must be >= 0)")
        if not weight_decay >= 0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay} (must be >= 0)")
        self.model, self.lr, self.momentum, self.weight_decay = model, float(lr), float(momentum), float(weight_decay)
        model._ensure_device()
        self._velocity: dict = {}   # id(flat data buffer) -> its momentum buffer (on the buffer's device)
        self._backend, self._flat = model.backend, getattr(model, "flat_data", None)
        self._layout = dict(model.flat_offsets)

    def __setattr__(self, name, value):
        if name in ("lr", "momentum", "weight_decay"):   # a changed hyper-parameter invalidates prepared steps
            self.__dict__["version"] = self.__dict__.get("version", 0) + 1
        super().__setattr__(name, value)

    def _follow_model(self):
        """After model.to(another device), carry the momentum buffer over to it (re-laid out: the new device may
        align the flat buffer's parameters differently)."""
        be, flat = self.model.backend, getattr(self.model, "flat_data", None)
        if flat is not None and flat is not self._flat:   # model.to(): new flat buffers (maybe another device)
            if self._velocity:
                old = self._backend.download(next(iter(self._velocity.values())))
                new = np.zeros(self.model.flat_data.shape, np.float32)
                for _, p in self.model.named_parameters():
                    o, n = self._layout[id(p)], self.model.flat_offsets[id(p)]
                    new[n:n + p.size] = old[o:o + p.size]
                self._velocity = {id(self.model.flat_data): be.upload(new)}
            self._backend, self._layout, self._flat = be, dict(self.model.flat_offsets), flat

    def step(self) -> None:
        """Apply the accumulated gradients: one update op per flat parameter buffer (enqueued; does not wait)."""
        self._follow_model()
        for be, data, grad, size in self.model.parameter_buffers():   # one per device holding a replica
            v = None
            if self.momentum:
                v = self._velocity.get(id(data))
                if v is None:
                    v = self._velocity[id(data)] = be.zeros(data.shape)
            be.sgd_update(data, grad, v, size, self.lr, self.momentum, self.weight_decay)

    def config(self) -> dict:
        """The hyper-parameters: ``type(self)(model, **config())`` is this optimizer for another model."""
        return {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay}

    def buffer_state(self, data):
        """The state this optimizer keeps for flat parameter buffer ``data`` (its momentum buffer, on the same
        device), or None: how a data-parallel group hands one replica's state to another."""
        return self._velocity.get(id(data))

    def load_buffer_state(self, data, values: np.ndarray) -> None:
        """Set the state kept for flat parameter buffer ``data`` from host ``values`` laid out like ``data`` (how a
        data-parallel group carries it along when a replica moves to another backend)."""
        if self.momentum:
            be = next(b for b, d, _, _ in self.model.parameter_buffers() if d is data)
            self._velocity[id(data)] = be.upload(np.ascontiguousarray(values, np.float32))

    def state_dict(self) -> dict:
        """Hyper-parameters and host copies of the momentum buffers, keyed like the model's state_dict."""
        be, velocity = self.model.backend, {}
        first = self.model.parameter_buffers()[0][1]
        if id(first) in self._velocity:
            flat = be.download(self._velocity[id(first)])
            for name, p in self.model.named_parameters():
                off = self.model.flat_offsets[id(p)]
                velocity[name] = flat[off:off + p.size].reshape(p.shape).copy()
        return {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay,
                "velocity": velocity}
