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
import contextlib
import sys
import time
import warnings
from dataclasses import dataclass

import numpy as np

SMOOTHING = 0.3        # weight of the newest per-image time in the running estimate (split="auto")
PRUNE_AFTER = 5        # steps measured before a device that does not help is left out
MIN_GAIN = 0.05        # a device stays only if the group is modelled >= 5% faster than without it
TRIAL_AFTER = 20       # split="auto": steps before the group's measured step rate is put against its lead alone
TRIAL_STEPS = 10       # steps timed on each side of that trial (after two unmeasured ones on the lead alone)
TRIAL_MARGIN = 0.05    # the group stays together only when it trained at least this much faster than its lead alone
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


CHUNK_MIN = 32768   # gradient elements: a layer's gradients go out with the next layer's until a chunk has this many


def grad_chunks(model) -> list[tuple[int, int, int]]:
    """(layer index, start, stop): ranges of the model's flat gradient buffer in the order backward completes
    them (the last layers first), each sent as soon as the backward of its layer is enqueued, so most of the
    exchange overlaps the rest of the backward pass. Small layers ride with the next chunk; the last chunk starts
    at 0, so together they cover the whole buffer."""
    with_params = [i for i, layer in enumerate(model.layers) if layer.params]
    chunks, stop = [], model.flat_grad.size
    for i in reversed(with_params):
        start = 0 if i == with_params[0] else min(model.flat_offsets[id(p)] for p in model.layers[i].params.values())
        if stop - start >= CHUNK_MIN or start == 0:
            chunks.append((i, start, stop))
            stop = start
    return chunks


def global_batch(x, y) -> tuple[np.ndarray, np.ndarray]:
    """(x as contiguous float32, y as contiguous int32 labels) of a batch every device group cuts into shards;
    ValueError for mismatched lengths or an empty batch."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.ascontiguousarray(y, dtype=np.int32).reshape(-1)
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"{x.shape[0]} inputs but {y.shape[0]} labels")
    if x.shape[0] == 0:
        raise ValueError("an empty batch has no gradient")
    return x, y


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
    """What the device groups share. Subclasses provide ``_step_gradients(x, y, sync) -> loss`` (every member's
    .grad then holds the global mean gradient; the loss is None when ``sync`` is False and it was kept where it
    was computed: ``read_loss`` collects it), ``backend`` and ``named_parameters``."""

    _loss_sum = 0.0

    def gradients(self, x, y) -> tuple[float, dict[str, np.ndarray]]:
        """(mean loss, gradients keyed like state_dict) of one global batch; weights unchanged."""
        loss = self._step_gradients(x, y, True)
        return loss, {k: self.backend.download(p.grad).reshape(p.shape) for k, p in self.named_parameters()}

    def train_step(self, x, y, optimizer, sync: bool = True):
        """Gradients of the global batch over the group, then one update everywhere; ``sync=False`` adds the
        loss to the total ``read_loss`` returns."""
        loss = self._step_gradients(x, y, sync)
        optimizer.step()
        self._after_update()
        if sync:
            return loss
        if loss is not None:
            self._loss_sum += loss
        return None

    def _after_update(self) -> None:
        pass

    def read_loss(self, reset: bool = True) -> float:
        value = self._loss_sum
        if reset:
            self._loss_sum = 0.0
        return value


def _momentum_of(optimizer, replica) -> np.ndarray | None:
    """The optimizer's state for ``replica``'s flat buffer, on the host in the device-independent order, or None."""
    state = getattr(optimizer, "buffer_state", lambda d: None)(replica.flat_data)
    return None if state is None else replica.backend.download(state)[replica.flat_index()]


def _set_momentum(optimizer, replica, values: np.ndarray) -> None:
    """The inverse of _momentum_of: ``values`` laid out like ``replica``'s flat buffer, as its optimizer state."""
    flat = np.zeros(replica.flat_data.shape, np.float32)
    flat[replica.flat_index()] = values
    optimizer.load_buffer_state(replica.flat_data, flat)


PROCESSES = {"auto": None, "yes": True, "no": False}   # --processes -> DataParallel(processes=...)


def _device_list(devices) -> list[str]:
    devices = [str(d).strip() for d in devices]
    if not devices:
        raise ValueError("DataParallel needs at least one device")
    if len(set(devices)) != len(devices):
        raise ValueError(f"each device may appear once (got {','.join(devices)})")
    return devices


def use_processes(devices: list[str], processes=None) -> bool:
    """Whether a group runs a process per device (procgroup.ProcessParallel): as asked, or by default when it is
    two or more GPUs on Linux (one thread enqueueing for several GPUs is host-bound; docs/PERFORMANCE.md)."""
    if processes is not None:
        if processes and not sys.platform.startswith("linux"):
            raise ValueError("a process per device (processes=True) needs Linux")
        return bool(processes) and len(devices) > 1
    if len(devices) < 2 or not sys.platform.startswith("linux"):
        return False
    from .backends import resolve_device
    return all(resolve_device(d).type == "gpu" for d in devices)


class DataParallel(HostCombined):
    """One model on several devices; the same interface as a Sequential (train_step, gradients, predict,
    state_dict, load_state_dict) and usable with ``clcnn.optim.SGD``.

    Args:
        model: a Sequential (placed or not); replica 0 is the model itself, moved to ``devices[0]``.
        devices: device ids ("cl:0", "cpu", ...), each at most once.
        split: "auto" (measure each device's time per image and rebalance, smoothed, so shards finish together;
            a device whose help would not beat the fastest device alone is left out, with one warning; once, the
            group's measured step rate is timed against its lead device alone and the faster goes on) or one
            fraction per device.
        processes: run a process per device (True), all in this one (False), or None: a process per device when
            every device is a GPU (Linux). With processes, this process drives ``devices[0]`` and each other
            device's replica lives in a worker process; the engine is MPIParallel's, with shared memory for MPI
            (see clcnn/procgroup.py); the split follows the measured speeds but nobody is left out.

    Devices of one OpenCL platform share a context: their gradients move chunk by chunk, each as soon as its
    layer's backward is done, through pinned host memory, chained by events with no host wait, and every device
    sums the shards itself (``weighted_sum``, the same order everywhere, so the replicas stay bit-identical).
    Other mixes (Numba with OpenCL, two platforms) are read back and combined on the host.
    """

    def __new__(cls, model=None, devices=(), split="auto", processes=None):
        if cls is DataParallel and devices:
            ids = _device_list(devices)
            if use_processes(ids, processes):
                from .procgroup import ProcessParallel
                parse_split(split, len(ids))   # bad input fails before any process starts
                return ProcessParallel(model, ids, split)
        return super().__new__(cls)

    def __init__(self, model, devices, split="auto", processes=None):
        from .backends import get_group
        devices = _device_list(devices)
        mode = parse_split(split, len(devices))
        self.auto = mode == "auto"
        self.fractions = np.full(len(devices), 1.0 / len(devices)) if self.auto else np.asarray(mode) / sum(mode)
        backends = get_group(devices)
        twins = [model.clone() for _ in devices[1:]]
        self.replicas = [model.to(backends[0])] + [t.to(b) for t, b in zip(twins, backends[1:])]
        self.active = [True] * len(devices)
        self.ms_per_image = [None] * len(devices)   # smoothed, from the auto split's measurements
        self.steps = 0
        self.notes: list[str] = []
        self._index = [r.flat_index() for r in self.replicas]
        # replicas whose flat buffers share one layout (same alignment) are combined without gathering
        self._same_layout = all(len(r.flat_grad.shape) == 1 and r.flat_grad.shape == self.replicas[0].flat_grad.shape
                                and np.array_equal(i, self._index[0]) for r, i in zip(self.replicas, self._index))
        self.linked = len(backends) > 1 and self._same_layout and backends[0].shares_memory_with(backends[1:])
        if self.linked:
            self._link()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(devices))   # read-back waits
        self._loss_sum, self._alone = 0.0, None   # _alone: the replica stepping by itself once others are out
        self._acc_weights = None   # the shard weights the devices' loss accumulators were filled with
        self._cuts: dict = {}   # (batch, fractions, active) -> shards
        self._last_shards, self._shape_age = None, 0   # steps run with the current shard sizes
        self._trial, self._trial_done = None, False   # split="auto": the group timed against its lead alone
        self._rehomed = False   # the lead, left alone, moved to its device's own backend

    def _link(self) -> None:
        """Buffers of the device-side exchange: per replica, marks in its step (start, and after each chunk's
        layer), pinned host memory per chunk, and one buffer per peer to receive that peer's gradients into."""
        from .backends.base import Mark
        self.chunks = grad_chunks(self.replicas[0])
        k, size = len(self.replicas), self.replicas[0].flat_grad.size
        self._marks = [{layer: Mark() for layer, _, _ in self.chunks} | {-1: Mark()} for _ in range(k)]
        self._combined = [Mark() for _ in range(k)]   # after each replica's weighted_sum: its peer buffers are free
        self._host = [[r.backend.pinned(b - a) for _, a, b in self.chunks] for r in self.replicas]
        self._peer = [{j: r.backend.zeros((size,)) for j in range(k) if j != i} for i, r in enumerate(self.replicas)]
        self._host_users = [[[] for _ in self.chunks] for _ in range(k)]   # last step's writes out of each host chunk
        self._timing = []   # (replica, images, start event, end event) not yet read

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

    @property
    def settling(self) -> bool:
        """True while split="auto" has still to time the group against its lead alone (benchmarks warm up past
        it, so they time the configuration a long run goes on with)."""
        return self.auto and not self._trial_done and sum(self.active) > 1

    def self_test(self) -> None:
        for r in self.replicas:
            r.self_test()

    def state_dict(self) -> dict[str, np.ndarray]:
        return self.replicas[self.lead].state_dict()

    def load_state_dict(self, state: dict) -> None:
        for r in self.replicas:
            r.load_state_dict(state)

    def parameter_buffers(self):
        """The active replicas' buffers, the lead's first (a replica left out is no longer updated); only the
        lead's while it steps alone."""
        if self._alone is not None:
            return self._alone.parameter_buffers()
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

    @contextlib.contextmanager
    def _on(self, i):
        """Any failure inside is reported as device i's, with its id and name (one line from the CLI)."""
        try:
            yield
        except Exception as exc:
            raise self._device_error(i, exc) from exc

    def _linked_step(self, x, y, shards, sync) -> float | None:
        """The device-side exchange (shared context): enqueue every shard, then per chunk each sender's read into
        pinned memory and each receiver's write into its peer buffer, each waiting on events only; then every
        active replica sums the shards in rank order. Nothing here waits for a device (unless ``sync``)."""
        n = sum(b - a for a, b in shards)
        senders = [i for i, (a, b) in enumerate(shards) if b > a]
        receivers = [i for i in range(len(self.replicas)) if self.active[i]]
        weights = tuple((shards[j][1] - shards[j][0]) / n for j in senders)
        if not sync and self._acc_weights not in (None, (senders, weights)):
            self._drain_losses()   # the devices' loss totals were summed with other weights: collect them first
        reads = {}
        for i in senders:
            (a, b), r, marks = shards[i], self.replicas[i], self._marks[i]
            with self._on(i):
                r.upload_shard(x[a:b], y[a:b])
                r.run_shard(accumulate=not sync, marks=marks)
                for c, (layer, start, _) in enumerate(self.chunks):
                    reads[i, c] = r.backend.read_async(r.flat_grad, start, self._host[i][c],
                                                       after=[marks[layer]] + self._host_users[i][c])
                    self._host_users[i][c] = []
                r.backend.flush()   # the other devices' copies wait on these reads
            if self.auto and self._shape_age > 2:   # a shape's first two steps build and record: not measured
                self._timing.append((i, b - a, marks[-1].event, marks[self.chunks[-1][0]].event))
        for i in receivers:
            r, be = self.replicas[i], self.replicas[i].backend
            with self._on(i):
                waits = [reads[i, c] for c in range(len(self.chunks)) if i in senders]
                for j in senders:
                    if j == i:
                        continue
                    for c, (_, start, _) in enumerate(self.chunks):
                        w = be.write_async(self._peer[i][j], start, self._host[j][c],
                                           after=[reads[j, c], self._combined[i]])
                        self._host_users[j][c].append(w)
                        waits.append(w)
                be.wait_all(waits)
                parts = [r.flat_grad if j == i else self._peer[i][j] for j in senders]
                be.weighted_sum(r.flat_grad, parts, weights, r.flat_grad.size)
                be.mark(self._combined[i])
                be.flush()
        if self._timing:
            self._read_timing(n)
        if not sync:
            self._acc_weights = (senders, weights)
            return None
        loss = 0.0
        for j, w in zip(senders, weights):
            with self._on(j):
                loss += w * float(self.replicas[j].backend.download(self.replicas[j]._loss_buf)[0])
        return loss

    def _read_timing(self, n) -> None:
        """Device time of each finished shard (split="auto"), from its queue's profiling; unfinished ones wait."""
        from .backends.base import Mark
        pending, seconds, images = [], {}, {}
        for i, count, start, end in self._timing:
            m0, m1 = Mark(), Mark()
            m0.event, m1.event = start, end
            t = self.replicas[i].backend.elapsed(m0, m1)
            if t is None:
                pending.append((i, count, start, end))
            else:
                seconds[i], images[i] = seconds.get(i, 0.0) + t, images.get(i, 0) + count
        self._timing = pending[-4 * len(self.replicas):]   # a driver that never times markers: keep few
        if self.auto and seconds:
            self._rebalance(images, seconds, 0.0, n)

    def _drain_losses(self) -> None:
        """Add the devices' loss totals, weighted by their shard's share, to the host total; reset them."""
        if self._acc_weights is not None:
            senders, weights = self._acc_weights
            for j, w in zip(senders, weights):
                self._loss_sum += w * self.replicas[j].read_loss()
            self._acc_weights = None

    def _rebalance(self, images, seconds, combine_s, n) -> None:
        """split="auto": update each device's smoothed time per image (``seconds`` over ``images`` per replica);
        shares follow the speeds; after a few steps, leave out devices whose help (on a batch of ``n``, with
        ``combine_s`` of combining per step) does not beat the fastest device alone."""
        for i, count in images.items():
            if count > 0:
                t = 1e3 * seconds[i] / count
                old = self.ms_per_image[i]
                self.ms_per_image[i] = t if old is None else (1 - SMOOTHING) * old + SMOOTHING * t
        known = [i for i in range(len(self.replicas)) if self.active[i] and self.ms_per_image[i] is not None]
        if len(known) < sum(self.active):
            return   # some active device not measured yet (an empty shard): keep the split
        speed = {i: 1.0 / self.ms_per_image[i] for i in known}
        fastest = max(speed, key=speed.get)
        if self.steps >= PRUNE_AFTER and len(known) > 1:
            together = n / sum(speed.values()) + 1e3 * combine_s
            alone = n / speed[fastest]
            if together >= (1 - MIN_GAIN) * alone:   # drop the slowest and try again next step
                slow = min(speed, key=speed.get)
                self.active[slow] = False
                info = self.replicas[slow].device
                note = (f"clcnn: {info.id} ({info.name}) is left out of the split: with it a step would take "
                        f"{together:.2f} ms, without it about {alone:.2f} ms")
                self.notes.append(note)
                warnings.warn(note, RuntimeWarning, stacklevel=4)
                speed.pop(slow)
        self.fractions = settle(self.fractions, [speed.get(i, 0.0) for i in range(len(self.replicas))])

    def _step_gradients(self, x, y, sync=True) -> float | None:
        x, y = global_batch(x, y)
        key = (x.shape[0], tuple(self.fractions), tuple(self.active))
        shards = self._cuts.get(key)
        if shards is None:
            if len(self._cuts) > 64:
                self._cuts.clear()
            shards = self._cuts[key] = cut(x.shape[0], self.fractions * np.asarray(self.active))
        if shards != self._last_shards:
            self._last_shards, self._shape_age = shards, 0
        self._shape_age += 1
        if self.linked:
            loss = self._linked_step(x, y, shards, sync)
            self.steps += 1
            return loss
        done = self._run_shards(x, y, shards)
        t0 = time.perf_counter()
        loss = self._combine(shards, done)
        if self.auto and self._shape_age > 2:   # a new shape's first steps build and record: not measurements
            self._rebalance({i: shards[i][1] - shards[i][0] for i in done}, {i: d[0] for i, d in done.items()},
                            time.perf_counter() - t0, x.shape[0])
        self.steps += 1
        return loss

    def _after_update(self) -> None:
        if self.linked:
            for i, r in enumerate(self.replicas):
                if self.active[i]:
                    r.backend.flush()

    def train_step(self, x, y, optimizer, sync: bool = True):
        """Shards computed on every device at once, gradients combined, one update on every replica."""
        if sum(self.active) == 1:   # the others were left out: the one device runs its own prepared steps
            if self.linked and not self._rehomed:
                self._rehome(optimizer)
            self._alone = self.replicas[self.lead]
            self.steps += 1
            return self._alone.train_step(x, y, optimizer, sync=sync)
        if self._trial is not None or (self.auto and self.steps >= TRIAL_AFTER and not self._trial_done
                                       and hasattr(optimizer, "buffer_state")):
            return self._trial_step(x, y, optimizer, sync)
        return super().train_step(x, y, optimizer, sync)

    def _rehome(self, optimizer) -> None:
        """The lead, left alone, moves out of the context it shares with the others (its queue records profiling
        events, and NVIDIA's enqueues are slower in a multi-device context) onto the device's own backend, with
        its momentum and its summed losses."""
        from .backends import get_backend
        self._rehomed = True
        lead = self.replicas[self.lead]
        self._loss_sum += lead.read_loss()
        velocity = _momentum_of(optimizer, lead)
        with self._on(self.lead):
            lead.to(get_backend(lead.device.id))
            if velocity is not None:
                _set_momentum(optimizer, lead, velocity)

    # ---- split="auto": the group against its lead device alone, measured --------------------------------------
    # The per-device times the split follows leave out what the group costs the host (enqueueing for several
    # devices from one thread, the exchange): on two GPUs in one process the modelled step was 2x faster while the
    # measured one was slower than one GPU. So once, after TRIAL_AFTER steps, the group's step rate is timed, then
    # the lead's alone (the others wait); the faster one goes on. If the group wins, the others take the lead's
    # weights and optimizer state again (they sat the trial out), so the run is the same as without the trial.
    def _sync_all(self) -> float:
        for i, r in enumerate(self.replicas):
            if self.active[i]:
                r.backend.synchronize()
        return self._clock()

    _clock = staticmethod(time.perf_counter)

    def _trial_step(self, x, y, optimizer, sync):
        t = self._trial
        if t is None:   # start: time the group
            t = self._trial = {"phase": "group", "steps": 0, "images": 0, "t0": self._sync_all(),
                               "shards": self._last_shards}
        if t["phase"] == "group":
            loss = super().train_step(x, y, optimizer, sync)
            if self._last_shards != t["shards"]:   # the split moved: measure again from here
                t.update(steps=0, images=0, t0=self._sync_all(), shards=self._last_shards)
                return loss
            t["steps"], t["images"] = t["steps"] + 1, t["images"] + x.shape[0]
            if t["steps"] == TRIAL_STEPS:
                t.update(phase="alone", group=(self._sync_all() - t["t0"]) / t["images"], steps=0, images=0)
                self._drain_losses()   # the devices' loss totals as the group left them
            return loss
        lead = self.replicas[self.lead]
        self._alone = lead   # parameter_buffers and read_loss follow the lead alone
        if t["steps"] == 2:   # the lead's first two steps alone build and record: not timed
            t["t0"] = self._sync_all()
        loss = lead.train_step(x, y, optimizer, sync=sync)
        self.steps += 1
        t["steps"] += 1
        if t["steps"] > 2:
            t["images"] += x.shape[0]
        if t["steps"] == TRIAL_STEPS + 2:
            self._end_trial(optimizer, t["group"], (self._sync_all() - t["t0"]) / t["images"])
        return loss

    def _end_trial(self, optimizer, group_s, alone_s) -> None:
        """Keep the group only when it trained at least TRIAL_MARGIN faster than its lead alone (seconds per image
        as measured; within that margin the two are one measurement's noise apart, and one device is simpler)."""
        self._trial, self._trial_done = None, True
        lead = self.lead
        others = [i for i in range(len(self.replicas)) if i != lead and self.active[i]]
        info = self.replicas[lead].device
        if alone_s < group_s * (1 + TRIAL_MARGIN):
            for i in others:
                self.active[i] = False
            self.fractions = np.asarray(self.active, np.float64)
            names = ", ".join(f"{self.replicas[i].device.id} ({self.replicas[i].device.name})" for i in others)
            note = (f"clcnn: {names} left out of the split: measured, the group trained {1 / group_s:,.0f} img/s "
                    f"and {info.id} alone {1 / alone_s:,.0f} img/s")
            self.notes.append(note)
            warnings.warn(note, RuntimeWarning, stacklevel=4)
            return   # the lead goes on alone (train_step's first branch)
        self._loss_sum += self.replicas[lead].read_loss()   # what the lead summed alone
        self._alone = None
        state = self.replicas[lead].state_dict()
        velocity = _momentum_of(optimizer, self.replicas[lead])
        for i in others:
            self.replicas[i].load_state_dict(state)
            if velocity is not None:
                _set_momentum(optimizer, self.replicas[i], velocity)
        self.notes.append(f"clcnn: the group stays together: measured {1 / group_s:,.0f} img/s against "
                          f"{1 / alone_s:,.0f} img/s for {info.id} alone")

    def read_loss(self, reset: bool = True) -> float:
        self._drain_losses()
        return super().read_loss(reset) + (self._alone.read_loss(reset) if self._alone is not None else 0.0)

    def __repr__(self) -> str:
        return f"DataParallel({self.device.id}, split={'auto' if self.auto else list(self.fractions)})"
