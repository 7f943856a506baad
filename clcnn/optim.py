"""Optimizers: hold hyper-parameters and per-parameter state on the device, and call one Backend update op."""
from __future__ import annotations


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
        self._velocity = {}
        self._backend = model.backend

    def _state(self, name, p):
        v = self._velocity.get(name)
        if v is None or v is not None and v.shape != p.data.shape:
            v = self._velocity[name] = self.model.backend.zeros(p.data.shape)
        return v

    def _follow_model(self):
        """After model.to(another device), carry the momentum buffers over to it."""
        be = self.model.backend
        if be is not self._backend:
            self._velocity = {k: be.upload(self._backend.download(v)) for k, v in self._velocity.items()}
            self._backend = be

    def step(self) -> None:
        """Apply the accumulated gradients of every parameter (enqueued; does not wait)."""
        self._follow_model()
        be = self.model.backend
        for name, p in self.model.named_parameters():
            v = self._state(name, p) if self.momentum else None
            be.sgd_update(p.data, p.grad, v, p.size, self.lr, self.momentum, self.weight_decay)

    def state_dict(self) -> dict:
        """Hyper-parameters and host copies of the momentum buffers (for checkpoints)."""
        be = self.model.backend
        return {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay,
                "velocity": {k: be.download(v) for k, v in self._velocity.items()}}
