"""Optimizers: hyper-parameters in a small device buffer and per-parameter state on the device, one Backend
update op per flat parameter buffer, ``state_dict()`` / ``load_state_dict()`` through the host."""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from .errors import ConfigError


class Optimizer(ABC):
    """Base class (PyTorch's torch.optim.Optimizer, for one model).

    Subclasses name their hyper-parameters (``hyper``: the order of the float32 device buffer the update op
    reads) and their per-parameter state (``state_names``), validate in ``__init__`` and implement ``_update``.
    Hyper-parameters are plain attributes (``opt.lr = 0.01``); ``prepare`` (called by every step) writes changed
    values to the device buffer, so a recorded step replays with them. ``version`` changes only when the step's
    structure changes (state appears), which makes a new recording.

    Args:
        model: a Sequential (placed, or placed on the CPU now) or a data-parallel group: every buffer of
            ``model.parameter_buffers()`` is updated, each with its own state on its own device.
    """

    hyper: tuple[str, ...] = ()
    state_names: tuple[str, ...] = ()

    def __init__(self, model):
        model._ensure_device()
        self.model, self.version = model, 0
        self._hyper_bufs: dict = {}   # id(backend) -> [backend, device (len(hyper),) array, host values written]
        self._state: dict = {}        # id(flat data) -> (ParamBuffer, {state name: device array})

    # ---- hyper-parameters ---------------------------------------------------------------------------------
    def hyper_values(self) -> np.ndarray:
        """The hyper-parameters in ``hyper`` order as float32 (len(hyper),): what the device buffer holds."""
        return np.array([getattr(self, k) for k in self.hyper], np.float32)

    def prepare(self) -> None:
        """Write changed hyper-parameters to each device's buffer (before a step is run or replayed)."""
        values = self.hyper_values()
        for pb in self.model.parameter_buffers():
            entry = self._hyper_bufs.get(id(pb.backend))
            if entry is None:
                entry = self._hyper_bufs[id(pb.backend)] = [pb.backend, pb.backend.zeros((len(values),)), None]
            if entry[2] is None or not np.array_equal(entry[2], values):
                pb.backend.upload_into(entry[1], values)
                entry[2] = values

    def active_state(self) -> tuple[str, ...]:
        """The state names this optimizer keeps with its current settings (SGD without momentum keeps none)."""
        return self.state_names

    # ---- the step -----------------------------------------------------------------------------------------
    def step(self) -> None:
        """Apply the accumulated gradients: one update op per flat parameter buffer (enqueued; does not wait)."""
        self.prepare()
        for pb in self._buffers():
            state = self._state[id(pb.data)][1]
            self._update(pb, self._hyper_bufs[id(pb.backend)][1], state)

    @abstractmethod
    def _update(self, pb, hyper, state: dict) -> None:
        """Enqueue the update of ParamBuffer ``pb`` with the device hyper-parameter buffer ``hyper`` and the
        state arrays ``state`` ({name: device array like pb.data})."""

    def _buffers(self) -> list:
        """The model's current buffers, each with its state allocated (zeros). A buffer new to this optimizer
        while the old ones are gone (the model moved with ``to``) takes the old state over, re-laid out."""
        bufs = self.model.parameter_buffers()
        current = {id(pb.data) for pb in bufs}
        carried = None
        if self._state and any(i not in self._state for i in current):
            stale = [i for i in self._state if i not in current]
            if stale:
                carried = self._host_state(self._state[stale[0]])
                for i in stale:
                    del self._state[i]
        for pb in bufs:
            entry = self._state.get(id(pb.data))
            if entry is None:
                entry = self._state[id(pb.data)] = (pb, {})
                if carried is not None:
                    self._load_host(entry, carried)
            for name in self.active_state():
                if name not in entry[1]:
                    entry[1][name] = pb.backend.zeros(pb.data.shape)
        return bufs

    # ---- state ----------------------------------------------------------------------------------------------
    @staticmethod
    def _host_state(entry) -> dict:
        """{state name: flat host array in state_dict order} of one buffer's state."""
        pb, state = entry
        return {name: pb.backend.download(a)[pb.index] for name, a in state.items()}

    @staticmethod
    def _load_host(entry, host: dict) -> None:
        pb, state = entry
        for name, values in host.items():
            flat = np.zeros(pb.data.shape, np.float32)
            flat[pb.index] = values
            state[name] = pb.backend.upload(flat)

    def state_dict(self) -> dict:
        """{"state": {param name: {state name: float32 array}}, "param_groups": [{hyper..., "params": [names]}]},
        PyTorch's layout with parameter names for indices; host copies, exact."""
        bufs = self._buffers()
        names = [(k, p.shape, p.size) for k, p in self.model.named_parameters()]
        flat = self._host_state(self._state[id(bufs[0].data)])
        state, off = {}, 0
        for name, shape, size in names:
            state[name] = {s: flat[s][off:off + size].reshape(shape).copy() for s in flat}
            off += size
        group = {k: float(getattr(self, k)) for k in self.hyper} | {"params": [n for n, _, _ in names]}
        return {"state": {k: v for k, v in state.items() if v}, "param_groups": [group]}

    def load_state_dict(self, sd: dict) -> None:
        """Restore hyper-parameters and state from ``state_dict()``'s dict (on every replica); ConfigError when
        it does not match this model."""
        try:
            group, state = sd["param_groups"][0], sd["state"]
        except (KeyError, IndexError, TypeError):
            raise ConfigError("not an optimizer state_dict (needs 'state' and 'param_groups')") from None
        names = [(k, p.shape) for k, p in self.model.named_parameters()]
        if list(group.get("params", [])) != [n for n, _ in names]:
            raise ConfigError("optimizer state_dict is for other parameters than this model's")
        for k in self.hyper:
            if k in group:
                setattr(self, k, group[k])
        host = {}
        for s in {s for v in state.values() for s in v}:
            parts = []
            for name, shape in names:
                v = np.asarray(state.get(name, {}).get(s, np.zeros(shape)), np.float32)
                if v.shape != shape:
                    raise ConfigError(f"optimizer state {name}.{s} has shape {v.shape}, expected {shape}")
                parts.append(v.reshape(-1))
            host[s] = np.concatenate(parts)
        for entry in (self._state[id(pb.data)] for pb in self._buffers()):
            self._load_host(entry, host)

    def config(self) -> dict:
        """The hyper-parameters: ``type(self)(model, **config())`` is this optimizer for another model."""
        return {k: getattr(self, k) for k in self.hyper}


class SGD(Optimizer):
    """Mini-batch SGD with PyTorch's momentum and weight-decay rule (g += wd*p; v = mu*v + g; p -= lr*v).

    Args:
        model: see Optimizer.
        lr: learning rate (> 0). momentum: mu (>= 0; 0 is plain SGD). weight_decay: L2 penalty (>= 0).
    Raises ConfigError (a ValueError) for a bad value, as torch.optim.SGD's "Invalid learning rate".
    State: "momentum_buffer" per parameter while momentum != 0 (PyTorch's name).
    """

    hyper = ("lr", "momentum", "weight_decay")
    state_names = ("momentum_buffer",)

    def __init__(self, model, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        super().__init__(model)
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay

    def __setattr__(self, name, value):
        if name in self.hyper:
            value = float(value)
            low, strict = {"lr": (0.0, True)}.get(name, (0.0, False))
            if not (value > low if strict else value >= low) or not np.isfinite(value):
                what = {"lr": "learning rate"}.get(name, f"{name} value")
                raise ConfigError(f"Invalid {what}: {value} (must be {'>' if strict else '>='} 0)")
            if name == "momentum" and (value != 0) != (getattr(self, "momentum", 0.0) != 0):
                self.__dict__["version"] = self.__dict__.get("version", 0) + 1   # state appears or goes
        super().__setattr__(name, value)

    def active_state(self):
        return self.state_names if self.momentum != 0 else ()

    def _update(self, pb, hyper, state):
        pb.backend.sgd_update(pb.data, pb.grad, state.get("momentum_buffer") if self.momentum else None, hyper,
                              pb.size)
