"""The one split policy of data parallelism: cutting a global batch into shards, the measured time per image of
each device (smoothed), rebalancing, and leaving out a device that does not help. Both engines use it: the
threads of ``DataParallel`` (clcnn/parallel.py) and the MPI ranks of ``DistributedDataParallel``
(clcnn/distributed.py), which feed it the same allgathered measurements on every rank, so every rank cuts alike.
``Group`` is the model interface the two share.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError, ShapeError

SMOOTHING = 0.3      # weight of the newest time per image in the running estimate
UNMEASURED = 2       # a shard size's first steps build and record its kernels: not measurements
PRUNE_AFTER = 5      # measured steps before a device that does not help may be left out
MIN_GAIN = 0.05      # a device stays only if the group is modelled >= 5% faster with it than without it
RESPLIT_GAIN = 0.03  # a new split is adopted only when it models a step >= 3% faster (shard shapes stay put, so
                     # each device keeps replaying its recorded step instead of re-recording every step)


@dataclass
class GroupInfo:
    """What ``.device`` reports for a group of devices: ids and names joined with commas."""
    id: str
    name: str
    backend: str = "parallel"


class Group:
    """The model interface both engines share, as a Sequential's: read from ``lead`` (the placed Sequential that
    answers for the group), applied to every one of ``replicas``, after ``_finish()`` (a pending step, if any).
    Subclasses set ``lead``, ``replicas`` and ``policy`` (a SplitPolicy)."""
    backend = property(lambda self: self.lead.backend)
    flat_offsets = property(lambda self: self.lead.flat_offsets)
    training = property(lambda self: self.lead.training)
    settling = property(lambda self: self.policy.settling)
    notes = property(lambda self: self.policy.notes)

    def _ensure_device(self) -> None:   # what optimizers call on a model: a group is placed already
        pass

    def _finish(self) -> None:
        pass

    def named_parameters(self):
        """The lead's ("<layer>.<name>", Parameter) pairs: every replica holds the same values."""
        self._finish()
        return self.lead.named_parameters()

    def self_test(self) -> None:
        """Every replica's device self-test (DeviceError naming the device)."""
        for r in self.replicas:
            r.self_test()

    def train(self, mode: bool = True):
        """Training (True) or evaluation mode for every replica; returns the group."""
        for r in self.replicas:
            r.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def state_dict(self) -> dict[str, np.ndarray]:
        """The lead's parameters and buffers (float32 NumPy, keyed as the Sequential's)."""
        self._finish()
        return self.lead.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """``state`` into every replica (ConfigError as the Sequential's)."""
        self._finish()
        for r in self.replicas:
            r.load_state_dict(state)

    def predict(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Logits (N, classes) from the lead, in evaluation mode."""
        self._finish()
        return self.lead.predict(x, batch_size)


def parse_split(split, world_size: int):
    """"auto" (also None), or ``world_size`` non-negative fractions (a list, or a string "0.7,0.3") not all zero,
    as floats; ConfigError otherwise."""
    if split is None or (isinstance(split, str) and split.strip().lower() == "auto"):
        return "auto"
    try:
        parts = [float(v) for v in (split.split(",") if isinstance(split, str) else split)]
    except (TypeError, ValueError):
        raise ConfigError(f"--split must be 'auto' or comma-separated fractions (got {split!r})") from None
    if len(parts) != world_size or min(parts) < 0 or sum(parts) <= 0 or not all(np.isfinite(parts)):
        raise ConfigError(f"--split needs {world_size} non-negative fractions, not all zero (got {split!r})")
    if not np.isfinite(sum(parts)):   # each finite, but their sum overflows: every shard would be cut empty
        raise ConfigError(f"--split fractions must add up to a finite number (got {split!r})")
    return parts


def cut(n: int, fractions) -> list[tuple[int, int]]:
    """[start, stop) of each shard of ``n`` items, sizes proportional to ``fractions`` (largest remainders, so
    they add up to n; a fraction of 0 gives an empty shard)."""
    f = np.asarray(fractions, np.float64)
    exact = n * f / f.sum()
    sizes = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - sizes), kind="stable")[: n - sizes.sum()]:
        sizes[i] += 1
    stops = np.cumsum(sizes)
    return [(int(b - s), int(b)) for s, b in zip(sizes, stops)]


def global_batch(x, y) -> tuple[np.ndarray, np.ndarray]:
    """(x as contiguous float32 (N, ...), y as contiguous int32 (N,)) of a batch to cut into shards; ShapeError
    for mismatched lengths or an empty batch."""
    from .steps import labels_int32, refuse_device_batch
    refuse_device_batch(x, y)
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = labels_int32(y)
    if y.shape[0] != x.shape[0]:
        raise ShapeError(f"{x.shape[0]} inputs but {y.shape[0]} labels")
    if x.shape[0] == 0:
        raise ShapeError("an empty batch has no gradient")
    return x, y


def settle(current, speeds) -> np.ndarray:
    """The fractions to use next: proportional to ``speeds`` (images/ms; 0 = left out), rounded to 1/64, adopted
    only when the modelled step time (the slowest shard) drops by >= RESPLIT_GAIN, or at once when a device was
    just left out; else ``current``."""
    speeds = np.asarray(speeds, np.float64)
    proposed = np.round(64 * speeds / speeds.sum()) / 64
    proposed = proposed / proposed.sum()
    alive = speeds > 0
    if (np.asarray(current)[~alive] > 0).any():
        return proposed

    def step_time(f):
        return max(f[i] / speeds[i] for i in range(len(f)) if alive[i])
    return proposed if step_time(proposed) <= (1 - RESPLIT_GAIN) * step_time(current) else np.asarray(current)


class SplitPolicy:
    """How a global batch is shared among ``world_size`` devices (ranks, or replicas of one process).

    Args:
        split: "auto" (follow the measured speeds, leave out a device that does not help) or one fraction per
            device (fixed); see parse_split.
        names: one "id (name)" per device, for the warning that leaves one out.
    Attributes:
        fractions: float64 (world_size,), summing to 1; active: bool per device (False: left out, shard empty);
        ms_per_image: smoothed milliseconds per image per device (None until measured); notes: what was decided.
    """

    def __init__(self, split, names: list[str]):
        mode = parse_split(split, len(names))
        self.names, self.auto = list(names), mode == "auto"
        k = len(names)
        self.fractions = np.full(k, 1.0 / k) if self.auto else np.asarray(mode, np.float64) / sum(mode)
        self.active = [f > 0 for f in self.fractions]
        self.ms_per_image: list[float | None] = [None] * k
        self.measured_steps = 0
        self.notes: list[str] = []
        self._cuts: dict = {}
        self._last, self._age = None, 0   # the shards of the last step, and for how many steps in a row

    @property
    def lead(self) -> int:
        """The device with the largest share (always active): it answers state_dict and predict."""
        return int(np.argmax(self.fractions))

    @property
    def settling(self) -> bool:
        """True while split="auto" may still leave a device out (benchmarks warm up past it)."""
        return self.auto and sum(self.active) > 1 and self.measured_steps < PRUNE_AFTER + 1

    def shards(self, n: int) -> list[tuple[int, int]]:
        """[start, stop) per device for a batch of ``n`` (empty for a device left out)."""
        key = (n, tuple(self.fractions), tuple(self.active))
        shards = self._cuts.get(key)
        if shards is None:
            if len(self._cuts) > 64:
                self._cuts.clear()
            shards = self._cuts[key] = cut(n, self.fractions * np.asarray(self.active))
        self._age = self._age + 1 if shards == self._last else 1
        self._last = shards
        return shards

    @property
    def measurable(self) -> bool:
        """Whether the step just cut (``shards``) should be timed: split="auto" and past its recording steps."""
        return self.auto and self._age > UNMEASURED

    def update(self, ms_per_image, n: int, exchange_ms: float = 0.0) -> None:
        """Fold in one step's measured milliseconds per image (one entry per device, None where not measured) on
        a batch of ``n`` with ``exchange_ms`` spent combining; then, after PRUNE_AFTER measured steps, leave out
        the slowest device while the group is not modelled MIN_GAIN faster than the fastest device alone (one
        RuntimeWarning each), and rebalance (``settle``). A step with no measurement at all is not counted."""
        if all(t is None for t in ms_per_image):
            return
        for i, t in enumerate(ms_per_image):
            if t is not None and self.active[i]:
                old = self.ms_per_image[i]
                self.ms_per_image[i] = t if old is None else (1 - SMOOTHING) * old + SMOOTHING * t
        self.measured_steps += 1
        known = [i for i, a in enumerate(self.active) if a and self.ms_per_image[i] is not None]
        if len(known) < sum(self.active):
            return   # an active device not measured yet (an empty shard): keep the split
        speed = {i: 1.0 / self.ms_per_image[i] for i in known}
        if self.measured_steps >= PRUNE_AFTER and len(speed) > 1:
            together, alone = n / sum(speed.values()) + exchange_ms, n / max(speed.values())
            if together >= (1 - MIN_GAIN) * alone:
                slow = min(speed, key=speed.get)
                self.active[slow] = False
                speed.pop(slow)
                self._note(f"clcnn: {self.names[slow]} is left out of the split: with it a step would take "
                           f"{together:.2f} ms, without it about {alone:.2f} ms")
        self.fractions = settle(self.fractions, [speed.get(i, 0.0) for i in range(len(self.active))])

    def _note(self, text: str) -> None:
        self.notes.append(text)
        warnings.warn(text, RuntimeWarning, stacklevel=4)

    def report(self, ids: list[str]) -> dict:
        """{device id: {"fraction", "active", "ms_per_image"}} (the metrics' "split")."""
        return {d: {"fraction": round(float(f), 4), "active": bool(a),
                    "ms_per_image": None if t is None else round(t, 5)}
                for d, f, a, t in zip(ids, self.fractions, self.active, self.ms_per_image)}
