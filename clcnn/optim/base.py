"""The optimizer base class: hyper-parameters in a small device buffer, per-parameter state on the device, one
Backend update op per flat parameter buffer, ``state_dict()`` / ``load_state_dict()`` through the host."""
from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy as np

from ..errors import ConfigError


def checked(name: str, value, low: float = 0.0, strict: bool = False, high: float | None = None,
            what: str | None = None) -> float:
    """``value`` as a float if finite and in range (> or >= ``low``; < ``high`` when given), else ConfigError
    (a ValueError) worded as torch.optim's ("Invalid learning rate: -1.0")."""
    value = float(value)
    ok = math.isfinite(value) and (value > low if strict else value >= low) and (high is None or value < high)
    if not ok:
        bound = f"{'>' if strict else '>='} {low:g}" + ("" if high is None else f" and < {high:g}")
        raise ConfigError(f"Invalid {what or name + ' value'}: {value} (must be {bound})")
    return value


class Optimizer(ABC):
    """Base class (PyTorch's torch.optim.Optimizer, for one model; one parameter group).

    Subclasses name their hyper-parameters (``hyper``: the first entries of the float32 device buffer the update
    op reads, in that order), may append values derived for the coming step (``_derived``: Adam's bias
    corrections), name their per-parameter state (``state_names``), validate in ``__setattr__`` and implement
    ``_update``. Hyper-parameters are plain attributes (``opt.lr = 0.01``, what a schedule sets); ``prepare``
    writes changed values to the device buffers, so a recorded step replays with them. ``version`` changes only
    when the step's structure changes (state appears, Nesterov is switched), which makes a new recording.

    Steps are counted on the host (``step_count``): ``prepare()`` announces the next step (Sequential.train_step
    calls it before running or replaying a recorded step: the replay calls no optimizer code) and ``step()``
    without an announced step announces one itself (data-parallel groups, a hand-written loop). So a replayed
    step sees its own step number in the device buffer. (A bare ``step()`` right after a *replayed*
    ``train_step`` of an OpenCL model takes that step's announcement over: its step number is one short, which
    only Adam's bias correction reads (hyper-parameters set since are written); call ``prepare()`` before such a
    step.)

    Args:
        model: a Sequential (placed, or placed on the CPU now) or a data-parallel group: every buffer of
            ``model.parameter_buffers()`` is updated, each with its own state on its own device.
    """

    hyper: tuple[str, ...] = ()
    state_names: tuple[str, ...] = ()
    per_param_step = False   # True: state_dict keeps the step count in each parameter's state, as Adam's does

    def __init__(self, model):
        model._ensure_device()
        self.model, self.version = model, 0
        self.step_count, self._announced = 0, False   # steps announced so far; one announced, not yet updated
        self._hyper_bufs: dict = {}   # id(backend) -> [backend, device (len,) array, host values written]
        self._state: dict = {}        # id(flat data) -> (ParamBuffer, {state name: device array})

    def updates(self, model) -> bool:
        """Whether every flat parameter buffer of ``model`` is one this optimizer updates: ``model`` is the one
        it was made with (no buffer lookup then: an MPI group's finishes its pending step), or a replica of the
        data-parallel group it was made with."""
        if model is self.model:
            return True
        mine = {id(pb) for pb in self.model.parameter_buffers()}
        return all(id(pb) in mine for pb in model.parameter_buffers())

    # ---- hyper-parameters ---------------------------------------------------------------------------------
    def _derived(self, step: int) -> list[float]:
        """Values the update op needs for step number ``step`` (counted from 1) beyond ``hyper``."""
        return []

    def hyper_values(self) -> np.ndarray:
        """The device buffer's contents for the step to run next (the announced one, else the one after the last)
        as float32: ``hyper`` in order, then ``_derived``."""
        step = self.step_count + (0 if self._announced else 1)
        return np.array([getattr(self, k) for k in self.hyper] + self._derived(step), np.float32)

    def prepare(self) -> None:
        """Announce the next step: count it and write changed hyper-parameters (and the step's derived values)
        to each device's buffer, before the step is run or replayed."""
        self.step_count += 1
        self._announced = True
        self._write()

    def _write(self) -> None:
        """Upload ``hyper_values()`` to each device's buffer where they differ from what it holds."""
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
        """Apply the accumulated gradients: one fused update op per flat parameter buffer (enqueued; does not
        wait), with the announced step's values (announced now if none is)."""
        if self._announced:
            self._write()   # values set since the announcement (nothing, inside a train_step)
        else:
            self.prepare()
        self._announced = False
        for pb in self._buffers():
            self._update(pb, self._hyper_bufs[id(pb.backend)][1], self._state[id(pb.data)][1])

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

    def param_group(self) -> dict:
        """The hyper-parameters as PyTorch's param_groups[0] names them (without "params")."""
        return {k: float(getattr(self, k)) for k in self.hyper}

    def load_param_group(self, group: dict) -> None:
        """Set the hyper-parameters from a ``param_group()`` dict (missing keys keep their value)."""
        for k in self.hyper:
            if k in group:
                setattr(self, k, group[k])

    def state_dict(self) -> dict:
        """{"state": {param name: {state name: float32 array}}, "param_groups": [{hyper..., "params": [names]}]},
        PyTorch's layout with parameter names for indices; host copies, exact. Optimizers that count steps per
        parameter in PyTorch (Adam) add "step" (a float32 0-d array) to each parameter's state."""
        bufs = self._buffers()
        names = [(k, p.shape, p.size) for k, p in self.model.named_parameters()]
        flat = self._host_state(self._state[id(bufs[0].data)])
        state, off = {}, 0
        for name, shape, size in names:
            state[name] = {s: flat[s][off:off + size].reshape(shape).copy() for s in flat}
            if flat and self.per_param_step:
                state[name]["step"] = np.array(self.step_count, np.float32)
            off += size
        group = self.param_group() | {"params": [n for n, _, _ in names]}
        return {"state": {k: v for k, v in state.items() if v}, "param_groups": [group]}

    def load_state_dict(self, sd: dict) -> None:
        """Restore hyper-parameters, step count and state from ``state_dict()``'s dict (on every replica);
        ConfigError when it does not match this model."""
        try:
            group, state = sd["param_groups"][0], sd["state"]
        except (KeyError, IndexError, TypeError):
            raise ConfigError("not an optimizer state_dict (needs 'state' and 'param_groups')") from None
        names = [(k, p.shape) for k, p in self.model.named_parameters()]
        if list(group.get("params", [])) != [n for n, _ in names]:
            raise ConfigError("optimizer state_dict is for other parameters than this model's")
        names_in = {s for v in state.values() for s in v} - {"step"}
        if names_in - set(self.state_names):
            raise ConfigError(f"optimizer state_dict holds {sorted(names_in - set(self.state_names))}, which "
                              f"{type(self).__name__} does not keep (a state_dict of another optimizer?)")
        self.load_param_group(group)
        host = {}
        for s in names_in:
            parts = []
            for name, shape in names:
                v = np.asarray(state.get(name, {}).get(s, np.zeros(shape)), np.float32)
                if v.shape != shape:
                    raise ConfigError(f"optimizer state {name}.{s} has shape {v.shape}, expected {shape}")
                parts.append(v.reshape(-1))
            host[s] = np.concatenate(parts)
        steps = {int(np.asarray(v["step"]).reshape(-1)[0]) for v in state.values() if "step" in v}
        if len(steps) > 1:
            raise ConfigError(f"optimizer state_dict has different step counts per parameter: {sorted(steps)}")
        if self.per_param_step:
            self.step_count = steps.pop() if steps else 0
        self._announced = False
        for entry in (self._state[id(pb.data)] for pb in self._buffers()):
            self._load_host(entry, host)

    def config(self) -> dict:
        """The hyper-parameters: ``type(self)(model, **config())`` is this optimizer for another model."""
        return {k: getattr(self, k) for k in self.hyper}
