"""Data-parallel SGD over several devices of any vendor in one process (the seed's Algorithm 2).

    net = clcnn.DataParallel(clcnn.models.lenet5(), devices=["cl:0", "cpu"], split="auto")
    opt = clcnn.optim.SGD(net, lr=0.05, momentum=0.9)
    loss = net.train_step(x, y, opt)

Each device holds a replica. A global mini-batch is cut into contiguous shards (by the split); the replicas compute
their shard's mean gradient at the same time (OpenCL queues run on their own; the Numba replica runs on the calling
thread while the others wait on their devices); the gradients are combined on the host weighted by shard size, so
the result is the single-device mean gradient of the whole batch, and every replica applies the same update.
"""
from __future__ import annotations

import concurrent.futures
import time
import warnings
from dataclasses import dataclass

import numpy as np

SMOOTHING = 0.3        # weight of the newest per-image time in the running estimate (split="auto")
PRUNE_AFTER = 5        # steps measured before a device that does not help is left out
MIN_GAIN = 0.05        # a device stays only if the group is modelled >= 5% faster than without it
RESPLIT_GAIN = 0.03    # a new split is adopted only when it models a step >= 3% faster (shard shapes stay put,
                       # so each device keeps replaying its recorded step instead of re-recording every step)


def settle(current, speeds) -> np.ndarray:
    """The split to use next: shares proportional to ``speeds`` (0 = left out), rounded to 1/64, adopted only when
    the modelled step time (the slowest shard) drops by >= RESPLIT_GAIN; else ``current``."""
    speeds = np.asarray(speeds, np.float64)
    proposed = np.round(64 * speeds / speeds.sum()) / 64
    proposed = proposed / proposed.sum()
    alive = speeds > 0
    if (np.asarray(current)[~alive] > 0).any():   # a device was just left out: adopt at once
        return proposed

    def step_time(f):
        return max(f[i] / speeds[i] for i in range(len(f)) if alive[i])
    return proposed if step_time(proposed) <= (1 - RESPLIT_GAIN) * step_time(current) else np.asarray(current)


@dataclass
class GroupInfo:
    """What ``.device`` reports for a group of devices (ids and names joined with commas)."""
    id: str
    name: str
    backend: str = "parallel"


def cut(n: int, fractions) -> list[tuple[int, int]]:
    """[start, stop) of each shard of n items: sizes proportional to ``fractions`` (largest remainders, so they add
    up to n; a fraction of 0 gives an empty shard)."""
    f = np.asarray(fractions, np.float64)
    exact = n * f / f.sum()
    sizes = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - sizes), kind="stable")[: n - sizes.sum()]:
        sizes[i] += 1
    stops = np.cumsum(sizes)
    return [(int(b - s), int(b)) for s, b in zip(sizes, stops)]


def parse_split(split, count: int):
    """"auto" or ``count`` non-negative fractions (a list, or a string "0.7,0.3") not all zero."""
    if split is None or (isinstance(split, str) and split.strip().lower() == "auto"):
        return "auto"
    try:
        parts = [float(v) for v in (split.split(",") if isinstance(split, str) else split)]
    except ValueError:
        raise ValueError(f"--split must be 'auto' or comma-separated fractions (got {split!r})") from None
    if len(parts) != count or min(parts) < 0 or sum(parts) <= 0 or not all(np.isfinite(parts)):
        raise ValueError(f"--split needs {count} non-negative fractions, not all zero (got {split!r})")
    return parts


class HostCombined:
    """What a group whose gradients are combined on the host shares: each step waits for its devices, so the loss
    is kept on the host. Subclasses provide ``_step_gradients(x, y) -> loss`` (every member's .grad then holds
    the global mean gradient), ``backend`` and ``named_parameters``."""

    _loss_sum = 0.0

    def gradients(self, x, y) -> tuple[float, dict[str, np.ndarray]]:
        """(mean loss, gradients keyed like state_dict) of one global batch; weights unchanged."""
        loss = self._step_gradients(x, y)
        return loss, {k: self.backend.download(p.grad).reshape(p.shape) for k, p in self.named_parameters()}

    def train_step(self, x, y, optimizer, sync: bool = True):
        """Gradients of the global batch over the group, then one update everywhere; ``sync=False`` adds the
        loss to the total ``read_loss`` returns."""
        loss = self._step_gradients(x, y)
        optimizer.step()
        if sync:
            return loss
        self._loss_sum += loss
        return None

    def read_loss(self, reset: bool = True) -> float:
        value = self._loss_sum
        if reset:
            self._loss_sum = 0.0
        return value


class DataParallel(HostCombined):
    """One model on several devices; the same interface as a Sequential (train_step, gradients, predict,
    state_dict, load_state_dict) and usable with ``clcnn.optim.SGD``.

    Args:
        model: a Sequential (placed or not); replica 0 is the model itself, moved to ``devices[0]``.
        devices: device ids ("cl:0", "cpu", ...), each at most once.
        split: "auto" (measure each device's time per image and rebalance, smoothed, so shards finish together;
            a device whose help would not beat the fastest device alone is left out, with one warning) or one
            fraction per device.
    """

    def __init__(self, model, devices, split="auto"):
        devices = [str(d).strip() for d in devices]
        if not devices:
            raise ValueError("DataParallel needs at least one device")
        if len(set(devices)) != len(devices):
            raise ValueError(f"each device may appear once (got {','.join(devices)})")
        mode = parse_split(split, len(devices))
        self.auto = mode == "auto"
        self.fractions = np.full(len(devices), 1.0 / len(devices)) if self.auto else np.asarray(mode) / sum(mode)
        twins = [model.clone() for _ in devices[1:]]
        self.replicas = [model.to(devices[0])] + [t.to(d) for t, d in zip(twins, devices[1:])]
        self.active = [True] * len(devices)
        self.ms_per_image = [None] * len(devices)   # smoothed, from the auto split's measurements
        self.steps = 0
        self.notes: list[str] = []
        self._index = [r.flat_index() for r in self.replicas]
        # replicas whose flat buffers share one layout (same alignment) are combined without gathering
        self._same_layout = all(len(r.flat_grad.shape) == 1 and r.flat_grad.shape == self.replicas[0].flat_grad.shape
                                and np.array_equal(i, self._index[0]) for r, i in zip(self.replicas, self._index))
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(devices))   # read-back waits
        self._loss_sum, self._alone = 0.0, None   # _alone: the replica stepping by itself once others are out

    # ---- the model interface ------------------------------------------------------------------------------
    @property
    def lead(self) -> int:
        """The replica that answers state_dict / predict: the one with the largest share (always active)."""
        return int(np.argmax(self.fractions))

    @property
    def backend(self):
        return self.replicas[self.lead].backend

    @property
    def device(self):
        infos = [r.device for r in self.replicas]
        return GroupInfo(",".join(i.id for i in infos), ", ".join(i.name for i in infos))

    @property
    def flat_offsets(self):
        return self.replicas[self.lead].flat_offsets

    def named_parameters(self):
        return self.replicas[self.lead].named_parameters()

    def _ensure_device(self):
        pass

    def self_test(self) -> None:
        for r in self.replicas:
            r.self_test()

    def state_dict(self) -> dict[str, np.ndarray]:
        return self.replicas[self.lead].state_dict()

    def load_state_dict(self, state: dict) -> None:
        for r in self.replicas:
            r.load_state_dict(state)

    def parameter_buffers(self):
        """The active replicas' buffers, the lead's first (a replica left out is no longer updated)."""
        order = [self.lead] + [i for i in range(len(self.replicas)) if i != self.lead and self.active[i]]
        return [buf for i in order for buf in self.replicas[i].parameter_buffers()]

    def predict(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Logits from the lead replica (every active replica holds the same weights)."""
        return self.replicas[self.lead].predict(x, batch_size)

    def split(self) -> dict:
        """The current split and the measured time per image of each device (for metrics)."""
        return {r.device.id: {"fraction": round(float(f), 4), "active": a,
                              "ms_per_image": None if t is None else round(t, 5)}
                for r, f, a, t in zip(self.replicas, self.fractions, self.active, self.ms_per_image)}

    # ---- computation --------------------------------------------------------------------------------------
    def _device_error(self, i, exc):
        from .backends import DeviceError
        info = self.replicas[i].device
        return DeviceError(f"device {info.id} ({info.name}) failed: {exc}")

    def _run_shards(self, x, y, shards):
        """Every non-empty shard at once: OpenCL replicas are enqueued first and waited on by worker threads (the
        waits release the GIL, so each device's finish time is its own), Numba replicas then compute on this
        thread (their kernels release the GIL too); returns {replica: (seconds, loss, host gradient)}."""
        jobs = [i for i, (a, b) in enumerate(shards) if b > a]
        jobs.sort(key=lambda i: self.replicas[i].backend.info.backend == "numba")
        waits, done = {}, {}
        for i in jobs:
            a, b = shards[i]
            t0, r = time.perf_counter(), self.replicas[i]
            try:
                r.shard_gradients(x[a:b], y[a:b])
                grad, loss = r.backend.download_async(r.flat_grad), r.backend.download_async(r._loss_buf)
            except Exception as exc:
                raise self._device_error(i, exc) from exc
            if r.backend.info.backend == "numba":   # already computed, on this thread
                done[i] = (time.perf_counter() - t0, float(loss()[0]), grad())
            else:
                waits[i] = self._pool.submit(self._finish, t0, grad, loss)
        for i, fut in waits.items():
            try:
                done[i] = fut.result()
            except Exception as exc:
                raise self._device_error(i, exc) from exc
        return done

    @staticmethod
    def _finish(t0, grad, loss):
        g, lv = grad(), float(loss()[0])
        return time.perf_counter() - t0, lv, g

    def _combine(self, shards, done) -> float:
        """Every replica's gradient := the shard-size-weighted mean of the shard gradients; returns the loss."""
        n = sum(b - a for a, b in shards)
        total, loss = None, 0.0
        for i, (a, b) in enumerate(shards):
            if i in done:
                w = np.float32((b - a) / n)
                g = done[i][2]
                if not self._same_layout:
                    g = g[self._index[i]]
                if total is None:
                    total = g * w
                else:
                    total += g * w
                loss += float(w) * done[i][1]
        for r, idx in zip(self.replicas, self._index):
            if self._same_layout:
                r.backend.upload_into(r.flat_grad, total)
            else:
                flat = np.zeros(r.flat_grad.shape, np.float32)
                flat[idx] = total
                r.backend.upload_into(r.flat_grad, flat)
        return loss

    def _rebalance(self, shards, done, combine_s) -> None:
        """split="auto": update each device's smoothed time per image; shares follow the speeds; after a few
        steps, leave out devices whose help does not beat the fastest device alone."""
        for i, (a, b) in enumerate(shards):
            if i in done and b > a:
                t = 1e3 * done[i][0] / (b - a)
                old = self.ms_per_image[i]
                self.ms_per_image[i] = t if old is None else (1 - SMOOTHING) * old + SMOOTHING * t
        known = [i for i in range(len(self.replicas)) if self.active[i] and self.ms_per_image[i] is not None]
        if len(known) < sum(self.active):
            return   # some active device not measured yet (an empty shard): keep the split
        speed = {i: 1.0 / self.ms_per_image[i] for i in known}
        fastest = max(speed, key=speed.get)
        if self.steps >= PRUNE_AFTER and len(known) > 1:
            n = sum(b - a for a, b in shards)
            together = n / sum(speed.values()) + 1e3 * combine_s
            alone = n / speed[fastest]
            if together >= (1 - MIN_GAIN) * alone:   # drop the slowest and try again next step
                slow = min(speed, key=speed.get)
                self.active[slow] = False
                info = self.replicas[slow].device
                note = (f"clcnn: {info.id} ({info.name}) is left out of the split: with it a step would take "
                        f"{together:.2f} ms, without it about {alone:.2f} ms")
                self.notes.append(note)
                warnings.warn(note, RuntimeWarning, stacklevel=3)
                speed.pop(slow)
        self.fractions = settle(self.fractions, [speed.get(i, 0.0) for i in range(len(self.replicas))])

    def _step_gradients(self, x, y) -> float:
        x = np.ascontiguousarray(x, dtype=np.float32)
        y = np.ascontiguousarray(y, dtype=np.int32).reshape(-1)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"{x.shape[0]} inputs but {y.shape[0]} labels")
        if x.shape[0] == 0:
            raise ValueError("an empty batch has no gradient")
        shards = cut(x.shape[0], self.fractions * np.asarray(self.active))
        done = self._run_shards(x, y, shards)
        t0 = time.perf_counter()
        loss = self._combine(shards, done)
        if self.auto and self.steps > 0:   # the first step builds and compiles: not a measurement
            self._rebalance(shards, done, time.perf_counter() - t0)
        self.steps += 1
        return loss

    def train_step(self, x, y, optimizer, sync: bool = True):
        """Shards computed on every device at once, gradients combined, one update on every replica."""
        if sum(self.active) == 1:   # the others were left out: the one device runs its own prepared steps
            self._alone = self.replicas[self.lead]
            self.steps += 1
            return self._alone.train_step(x, y, optimizer, sync=sync)
        return super().train_step(x, y, optimizer, sync)

    def read_loss(self, reset: bool = True) -> float:
        return super().read_loss(reset) + (self._alone.read_loss(reset) if self._alone is not None else 0.0)

    def __repr__(self) -> str:
        return f"DataParallel({self.device.id}, split={'auto' if self.auto else list(self.fractions)})"
