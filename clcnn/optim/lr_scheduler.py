"""Learning-rate schedules with torch.optim.lr_scheduler's semantics, stepped once per optimizer step.

    opt = Adam(model, lr=1e-3)
    sched = lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    for x, y in batches:
        model.train_step(x, y, opt)
        sched.step()

Each schedule is a closed form ``lr_at(t)`` of its step count t (``last_epoch``, PyTorch's name; 0 after
construction), so the values equal PyTorch's recursive ones up to float64 rounding and a resumed run continues
exactly. Setting ``opt.lr`` changes a value in the optimizer's device buffer: a recorded step keeps replaying.
"""
from __future__ import annotations

import bisect
import math

from ..errors import ConfigError
from .base import checked


class LRScheduler:
    """Base class (torch.optim.lr_scheduler.LRScheduler): ``step()`` advances t and sets the optimizer's lr
    (and, for OneCycleLR, its momentum or beta1). ``base_lrs``: [the optimizer's lr when the first schedule
    was attached] (its ``initial_lr``, as PyTorch keeps it in the param group)."""

    def __init__(self, optimizer, last_epoch: int = -1):
        self.optimizer = optimizer
        if not hasattr(optimizer, "initial_lr"):
            optimizer.initial_lr = float(optimizer.lr)
        self.base_lrs = [float(optimizer.initial_lr)]
        self.last_epoch = int(last_epoch)
        self.step()

    def lr_at(self, t: int) -> float:
        """The learning rate after ``t`` steps."""
        return self.base_lrs[0]

    def momentum_at(self, t: int) -> float | None:
        """The momentum (SGD) or beta1 (Adam) after ``t`` steps, or None: left as it is."""
        return None

    def step(self) -> None:
        """Advance one step and write the step's learning rate into the optimizer."""
        self.last_epoch += 1
        self._apply()

    def _apply(self) -> None:
        self.optimizer.lr = self.lr_at(self.last_epoch)
        momentum = self.momentum_at(self.last_epoch)
        if momentum is not None:
            setattr(self.optimizer, "beta1" if hasattr(self.optimizer, "beta1") else "momentum", momentum)
        self._last_lr = [self.optimizer.lr]

    def get_last_lr(self) -> list[float]:
        """[the learning rate the last ``step()`` set], PyTorch's accessor."""
        return list(self._last_lr)

    def state_dict(self) -> dict:
        """The progress: {"last_epoch": t, "base_lrs": [...]} (PyTorch's names), JSON-able. The settings are
        the constructor's: a resumed run builds its schedule from its flags again (with a changed --epochs the
        schedule then follows the new length from step t), then loads this."""
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict()``'s progress and set the optimizer's lr (and momentum) for that step."""
        try:
            self.last_epoch, self.base_lrs = int(state["last_epoch"]), [float(v) for v in state["base_lrs"]]
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"not a {type(self).__name__} state_dict (needs last_epoch and base_lrs)") from None
        self._apply()


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (t // step_size) (torch.optim.lr_scheduler.StepLR). step_size >= 1 steps,
    gamma > 0 (default 0.1)."""

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1):
        if int(step_size) != step_size or step_size < 1:
            raise ConfigError(f"Invalid step_size: {step_size} (a whole number >= 1)")
        self.step_size, self.gamma = int(step_size), checked("gamma", gamma, strict=True)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, t):
        return self.base_lrs[0] * self.gamma ** (t // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2 (torch.optim.lr_scheduler.
    CosineAnnealingLR's closed form). T_max >= 1 steps, eta_min >= 0."""

    def __init__(self, optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1):  # noqa: N803
        if int(T_max) != T_max or T_max < 1:
            raise ConfigError(f"Invalid T_max: {T_max} (a whole number >= 1)")
        self.T_max, self.eta_min = int(T_max), checked("eta_min", eta_min)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, t):
        return self.eta_min + (self.base_lrs[0] - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2


class LinearLR(LRScheduler):
    """lr = base_lr * (start_factor + (end_factor - start_factor) * min(t, total_iters) / total_iters)
    (torch.optim.lr_scheduler.LinearLR: a linear warm-up). start_factor in (0, 1], end_factor in [0, 1],
    total_iters >= 1 steps."""

    def __init__(self, optimizer, start_factor: float = 1.0 / 3, end_factor: float = 1.0, total_iters: int = 5,
                 last_epoch: int = -1):
        if not 0 < float(start_factor) <= 1 or not 0 <= float(end_factor) <= 1:
            raise ConfigError(f"Invalid start_factor {start_factor} or end_factor {end_factor} (in (0, 1] and "
                              "[0, 1])")
        if int(total_iters) != total_iters or total_iters < 1:
            raise ConfigError(f"Invalid total_iters: {total_iters} (a whole number >= 1)")
        self.start_factor, self.end_factor = float(start_factor), float(end_factor)
        self.total_iters = int(total_iters)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, t):
        frac = min(t, self.total_iters) / self.total_iters
        return self.base_lrs[0] * (self.start_factor + (self.end_factor - self.start_factor) * frac)


class OneCycleLR(LRScheduler):
    """The 1cycle policy (torch.optim.lr_scheduler.OneCycleLR, two phases): from max_lr/div_factor up to
    max_lr over the first pct_start of total_steps, then down to max_lr/(div_factor*final_div_factor), each
    phase annealed by cosine ("cos") or linearly ("linear"); with cycle_momentum the momentum (SGD) or beta1
    (Adam) goes the other way between max_momentum and base_momentum. More than total_steps steps is an error,
    as in PyTorch; step total_steps (past the last one used) keeps the final values where PyTorch extrapolates."""

    def __init__(self, optimizer, max_lr: float, total_steps: int, pct_start: float = 0.3,
                 anneal_strategy: str = "cos", cycle_momentum: bool = True, base_momentum: float = 0.85,
                 max_momentum: float = 0.95, div_factor: float = 25.0, final_div_factor: float = 1e4,
                 last_epoch: int = -1):
        if int(total_steps) != total_steps or total_steps < 1:
            raise ConfigError(f"Invalid total_steps: {total_steps} (a whole number >= 1)")
        if not 0 <= float(pct_start) <= 1:
            raise ConfigError(f"Invalid pct_start: {pct_start} (in [0, 1])")
        if anneal_strategy not in ("cos", "linear"):
            raise ConfigError(f"Invalid anneal_strategy: {anneal_strategy!r} (cos or linear)")
        self.max_lr, self.total_steps = checked("max_lr", max_lr, strict=True), int(total_steps)
        self.pct_start, self.anneal_strategy, self.cycle_momentum = float(pct_start), anneal_strategy, cycle_momentum
        self.base_momentum, self.max_momentum = float(base_momentum), float(max_momentum)
        self.div_factor = checked("div_factor", div_factor, strict=True)
        self.final_div_factor = checked("final_div_factor", final_div_factor, strict=True)
        optimizer.initial_lr = self.max_lr / self.div_factor   # PyTorch's group["initial_lr"]
        super().__init__(optimizer, last_epoch)

    def _phases(self):
        start = self.max_lr / self.div_factor
        return [(self.pct_start * self.total_steps - 1, start, self.max_lr, self.max_momentum, self.base_momentum),
                (self.total_steps - 1, self.max_lr, start / self.final_div_factor, self.base_momentum,
                 self.max_momentum)]

    def _anneal(self, start, end, pct):
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def _at(self, t, index):
        if t > self.total_steps:
            raise ConfigError(f"OneCycleLR stepped {t} times, more than total_steps={self.total_steps}")
        begin, phases = 0.0, self._phases()
        for i, phase in enumerate(phases):
            if t <= phase[0] or i == len(phases) - 1:
                pct = min((t - begin) / (phase[0] - begin), 1.0)   # t = total_steps: the final value
                return self._anneal(phase[index], phase[index + 1], pct)
            begin = phase[0]

    def lr_at(self, t):
        return self._at(t, 1)

    def momentum_at(self, t):
        return self._at(t, 3) if self.cycle_momentum else None


class SequentialLR(LRScheduler):
    """Schedules one after another (torch.optim.lr_scheduler.SequentialLR): schedulers[i] runs from step
    milestones[i-1] with its own count starting at 0 there. E.g. a linear warm-up then a cosine:
    SequentialLR(opt, [LinearLR(opt, 0.1, total_iters=w), CosineAnnealingLR(opt, T_max=n - w)], [w])."""

    def __init__(self, optimizer, schedulers: list, milestones: list[int], last_epoch: int = -1):
        if len(milestones) != len(schedulers) - 1 or list(milestones) != sorted(milestones):
            raise ConfigError(f"SequentialLR needs len(schedulers) - 1 increasing milestones (got {milestones})")
        if any(s.optimizer is not optimizer for s in schedulers):
            raise ConfigError("SequentialLR: every scheduler must belong to its optimizer")
        self.schedulers, self._milestones = list(schedulers), [int(m) for m in milestones]
        super().__init__(optimizer, last_epoch)

    def _current(self, t):
        i = bisect.bisect_right(self._milestones, t)
        return self.schedulers[i], t - (self._milestones[i - 1] if i else 0)

    def lr_at(self, t):
        sched, local = self._current(t)
        return sched.lr_at(local)

    def momentum_at(self, t):
        sched, local = self._current(t)
        return sched.momentum_at(local)
