"""SGD with momentum, Nesterov momentum and weight decay: torch.optim.SGD's rule (dampening 0)."""
from __future__ import annotations

from ..errors import ConfigError
from .base import Optimizer, checked


class SGD(Optimizer):
    """Mini-batch SGD with PyTorch's momentum and weight-decay rule, as torch.optim.SGD documents it:
    g = grad + wd*p; v = mu*v + g; g = v (nesterov: g = g + mu*v); p -= lr*g.

    Args:
        model: see Optimizer.
        lr: learning rate (> 0; a schedule may later take it to 0). momentum: mu (>= 0; 0 is plain SGD).
        weight_decay: L2 penalty (>= 0). nesterov: Nesterov momentum (needs momentum > 0, as in PyTorch).
    Raises ConfigError (a ValueError) for a bad value, as torch.optim.SGD's "Invalid learning rate".
    State: "momentum_buffer" per parameter while momentum != 0 (PyTorch's name).
    """

    hyper = ("lr", "momentum", "weight_decay")
    state_names = ("momentum_buffer",)

    def __init__(self, model, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False):
        checked("lr", lr, strict=True, what="learning rate")
        super().__init__(model)
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.nesterov = nesterov

    def __setattr__(self, name, value):
        if name in self.hyper:
            value = checked(name, value, what="learning rate" if name == "lr" else None)
            if name == "momentum" and (value != 0) != (getattr(self, "momentum", 0.0) != 0):
                if value == 0 and getattr(self, "nesterov", False):
                    raise ConfigError("Nesterov momentum requires a momentum (got momentum 0)")
                self.__dict__["version"] = self.__dict__.get("version", 0) + 1   # state appears or goes
        elif name == "nesterov":
            value = bool(value)
            if value and getattr(self, "momentum", 0.0) == 0:
                raise ConfigError("Nesterov momentum requires a momentum (got momentum 0)")
            if value != self.__dict__.get("nesterov", False):
                self.__dict__["version"] = self.__dict__.get("version", 0) + 1   # another kernel argument
        super().__setattr__(name, value)

    def active_state(self):
        return self.state_names if self.momentum != 0 else ()

    def param_group(self):
        return super().param_group() | {"dampening": 0.0, "nesterov": self.nesterov}

    def load_param_group(self, group):
        if not group.get("nesterov", True):
            self.nesterov = False   # first: the group's momentum may be 0
        super().load_param_group(group)
        if "nesterov" in group:
            self.nesterov = group["nesterov"]

    def config(self):
        return super().config() | {"nesterov": self.nesterov}

    def _update(self, pb, hyper, state):
        pb.backend.sgd_update(pb.data, pb.grad, state.get("momentum_buffer") if self.momentum else None, hyper,
                              pb.size, nesterov=self.nesterov)
