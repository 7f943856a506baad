"""Adam and AdamW: torch.optim.Adam's and torch.optim.AdamW's rules (amsgrad off), one fused op per buffer."""
from __future__ import annotations

import math

from ..errors import ConfigError
from .base import Optimizer, checked


class Adam(Optimizer):
    """Adam (Kingma & Ba), as torch.optim.Adam documents it, with L2 weight decay added to the gradient:
    g = grad + wd*p; m = beta1*m + (1-beta1)*g; v = beta2*v + (1-beta2)*g^2;
    p -= lr/(1 - beta1^t) * m / (sqrt(v)/sqrt(1 - beta2^t) + eps), t the step number (from 1).

    Args:
        model: see Optimizer.
        lr: learning rate (> 0; a schedule may later take it to 0). betas: (beta1, beta2), each in [0, 1).
        eps: added to the denominator (>= 0). weight_decay: L2 penalty (>= 0).
    Defaults are PyTorch's: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 0.
    Raises ConfigError (a ValueError) for a bad value, worded as torch.optim's ("Invalid beta parameter at index 0").
    State: "exp_avg" and "exp_avg_sq" per parameter on the device; the step count on the host, written with
    the bias corrections into the hyper-parameter buffer before each step (so a recorded step replays with its
    own step number), and kept as each parameter's "step" in state_dict, as PyTorch does.
    """

    hyper = ("lr", "beta1", "beta2", "eps", "weight_decay")
    state_names = ("exp_avg", "exp_avg_sq")
    per_param_step = True
    decoupled = False   # AdamW: True

    def __init__(self, model, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        checked("lr", lr, strict=True, what="learning rate")
        try:
            beta1, beta2 = (float(b) for b in betas)
        except (TypeError, ValueError):
            raise ConfigError(f"Invalid betas: {betas!r} (two numbers in [0, 1))") from None
        super().__init__(model)
        self.lr, self.beta1, self.beta2, self.eps, self.weight_decay = lr, beta1, beta2, eps, weight_decay

    def __setattr__(self, name, value):
        if name in self.hyper:
            what = {"lr": "learning rate", "eps": "epsilon value", "beta1": "beta parameter at index 0",
                    "beta2": "beta parameter at index 1"}.get(name)
            value = checked(name, value, high=1.0 if name.startswith("beta") else None, what=what)
        super().__setattr__(name, value)

    @property
    def betas(self) -> tuple[float, float]:
        """(beta1, beta2), PyTorch's name."""
        return self.beta1, self.beta2

    def _derived(self, step):
        # [step, step_size = lr / (1 - beta1^t), bias_correction2_sqrt = sqrt(1 - beta2^t), 1 - beta1, 1 - beta2]
        # in float64 as torch
        return [float(step), self.lr / (1.0 - self.beta1 ** step), math.sqrt(1.0 - self.beta2 ** step),
                1.0 - self.beta1, 1.0 - self.beta2]

    def param_group(self):
        return {"lr": self.lr, "betas": self.betas, "eps": self.eps, "weight_decay": self.weight_decay,
                "amsgrad": False}

    def load_param_group(self, group):
        if "betas" in group:
            self.beta1, self.beta2 = (float(b) for b in group["betas"])
        for k in ("lr", "eps", "weight_decay"):
            if k in group:
                setattr(self, k, group[k])

    def config(self):
        return {"lr": self.lr, "betas": self.betas, "eps": self.eps, "weight_decay": self.weight_decay}

    def _update(self, pb, hyper, state):
        pb.backend.adam_update(pb.data, pb.grad, state["exp_avg"], state["exp_avg_sq"], hyper, pb.size,
                               decoupled=self.decoupled)


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter), as torch.optim.AdamW documents it: Adam's update with the weight decay
    decoupled from the gradient, p *= 1 - lr*wd before the Adam step. Arguments, state and errors as Adam's;
    defaults PyTorch's: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 1e-2."""

    decoupled = True

    def __init__(self, model, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2):
        super().__init__(model, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
