"""Dropout: inverted dropout with a device-side counter-based RNG (Philox-4x32-10, cpu/dropout.py), PyTorch's
nn.Dropout semantics (training: zero each element with probability p and scale the rest by 1/(1-p); evaluation:
the identity)."""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .base import Layer


class Dropout(Layer):
    """Inverted dropout (Srivastava et al. 2014; PyTorch's nn.Dropout), off in evaluation mode.

    Args:
        p: the probability of zeroing an element, in [0, 1) (ConfigError otherwise).
    Randomness: element i of the layer's k-th training forward is kept when the Philox-4x32-10 word
    philox((i >> 2, k, stream, 0), key)[i & 3] >> 8 is >= round(p * 2^24); the key (two uint32) is drawn from
    the model's seeded initialisation RNG (``init``), ``stream`` (default 0) separates data-parallel replicas,
    and k is a device counter advanced by every training forward -- also by a replayed recorded step, which
    therefore draws a fresh mask. The same key, stream and k give the same mask on every device.
    Shape: any, unchanged. No parameters, no state_dict entries (as nn.Dropout).
    """

    def __init__(self, p=0.5):
        if not isinstance(p, (int, float)) or not 0 <= p < 1:
            raise ConfigError(f"Dropout: p must be in [0, 1) (got {p!r})")
        self.p = float(p)
        self.params = {}
        self.key = (0x5EED0000, 0x0D20C0DE)
        self.stream = 0
        self._start = 0   # the step the device counter starts from when placed

    def config(self) -> dict:
        return {"p": self.p}

    @property
    def threshold(self) -> int:
        """round(p * 2^24): a 24-bit random value below it drops the element."""
        return int(round(self.p * (1 << 24)))

    @property
    def scale(self) -> float:
        return float(np.float32(1.0 / (1.0 - self.p)))

    def init(self, rng):
        self.key = tuple(int(v) for v in rng.integers(0, 1 << 32, size=2, dtype=np.uint64))

    @property
    def step(self) -> int:
        """How many training forwards this layer has run (its Philox step counter)."""
        if getattr(self, "counter", None) is None:
            return self._start
        return int(np.uint32(self.backend.download(self.counter)[0].view(np.uint32)))

    @step.setter
    def step(self, value: int) -> None:
        """Set the step counter (a resumed run puts its checkpoint's back, so it draws the masks it would have)."""
        self._start = int(value) & 0xFFFFFFFF
        if getattr(self, "counter", None) is not None:
            self.backend.upload_into(self.counter, np.array([np.uint32(self._start).view(np.int32)], np.int32))
            self.backend.synchronize()

    def state_dict(self) -> dict:
        """{"step", "key"}: where the layer's random stream stands (a checkpoint's; not the model's state_dict,
        which holds tensors named as PyTorch's, and nn.Dropout has none). ``stream`` is the group's to set."""
        return {"step": self.step, "key": [int(k) for k in self.key]}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state_dict()``'s values: the next training forward draws step ``state["step"]``."""
        self.key = tuple(int(k) & 0xFFFFFFFF for k in state["key"])
        self.step = int(state["step"])

    def clone(self):
        twin = super().clone()
        twin.key, twin.stream, twin._start = self.key, self.stream, self.step
        return twin

    def to(self, backend, place_params=True):
        start = self.step
        super().to(backend, place_params)
        self.counter = backend.upload(np.array([np.uint32(start).view(np.int32)], np.int32))

    def forward(self, x, train=True):
        # x: any shape -> y: same; keeps the mask (scale or 0 per element) for backward.
        self.mask = None
        if not self.training or self.p == 0.0:
            return x
        be = self.backend
        y, self.mask = self._buffer("y", x.shape), self._buffer("mask", x.shape)
        be.dropout_forward(x, y, self.mask, self.counter, self.key, self.stream, self.threshold, self.scale, x.size)
        be.counter_advance(self.counter)
        return y

    def backward(self, dy, need_dx=True):
        if not need_dx:
            return None
        if self.mask is None:   # evaluation mode: the identity
            return dy
        dx = self._buffer("dx", dy.shape)
        self.backend.dropout_backward(dy, self.mask, dx, dy.size)
        return dx
