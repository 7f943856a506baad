"""Data parallelism in one process over any mix of devices (the seed's heterogeneous workers):

    net = clcnn.DataParallel(clcnn.models.lenet5(), devices=["cl:1", "cpu"], split="auto")
    opt = clcnn.optim.SGD(net, lr=0.05, momentum=0.9)
    loss = net.train_step(x, y, opt)

Each device holds a replica. A global mini-batch is cut into shards (clcnn.split); every replica computes its
shard's mean gradient at the same time (OpenCL queues run on their own and are waited on by threads; the Numba
replica computes on the calling thread); the host sums the gradients weighted by shard size, in device order, and
uploads the sum to every replica, so each holds the single-device mean gradient of the whole batch and applies the
same update. For several GPUs of one host, MPI ranks are faster (clcnn/distributed.py, docs/PERFORMANCE.md).
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import time

import numpy as np

from .errors import ConfigError, DeviceError
from .layers import Dropout, walk
from .split import Group, GroupInfo, SplitPolicy, global_batch
from .steps import check_optimizer, refuse_device_batch


class DataParallel(Group):
    """One model on several devices, with the interface of a Sequential (train_step, gradients, read_loss,
    predict, state_dict, load_state_dict, train/eval, parameter_buffers) and usable with any clcnn optimizer.

    Args:
        model: a Sequential (placed or not); replica 0 is the model itself, moved to ``devices[0]``, the others
            are clones on the other devices.
        devices: device ids ("cl:0", "cpu", ...), each at most once (ConfigError otherwise).
        split: "auto" (follow each device's measured time per image; a device whose help does not beat the
            fastest device alone is left out, with one RuntimeWarning) or one fraction per device.
    Shape: as the model's; a batch of N images is cut into shards that add up to N.
    Raises DeviceError naming the device whose shard failed.
    """

    def __init__(self, model, devices, split="auto"):
        ids = [str(d).strip() for d in devices]
        if not ids or len(set(ids)) != len(ids):
            raise ConfigError(f"DataParallel needs at least one device, each at most once (got {','.join(ids)})")
        self.replicas = [model.to(ids[0])] + [model.clone().to(d) for d in ids[1:]]
        for i, r in enumerate(self.replicas):
            set_dropout_stream(r, i)
        self.policy = SplitPolicy(split, [f"{r.device.id} ({r.device.name})" for r in self.replicas])
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(ids))   # waits on the devices
        self._loss_sum = 0.0   # host total of the sync=False steps' losses since read_loss
        self._alone_steps = 0   # steps the lead ran by itself once the others were left out

    # ---- the model interface ----------------------------------------------------------------------------------
    @property
    def lead(self):
        """The replica with the largest share (always active): it answers state_dict, predict and backend."""
        return self.replicas[self.policy.lead]

    @property
    def device(self) -> GroupInfo:
        """The devices' ids and names, comma-joined."""
        infos = [r.device for r in self.replicas]
        return GroupInfo(",".join(i.id for i in infos), ", ".join(i.name for i in infos))

    def parameter_buffers(self) -> list:
        """Every active replica's flat buffers, the lead's first (a replica left out is no longer updated)."""
        order = [self.policy.lead] + [i for i, a in enumerate(self.policy.active) if a and i != self.policy.lead]
        return [pb for i in order for pb in self.replicas[i].parameter_buffers()]

    def split(self) -> dict:
        """The current split and each device's measured time per image (for metrics)."""
        return self.policy.report([r.device.id for r in self.replicas])

    # ---- computation --------------------------------------------------------------------------------------------
    def train_step(self, x, y, optimizer, sync: bool = True):
        """The global batch's gradient over the group, then one update of every active replica; returns the
        mean loss, or None with ``sync=False`` (then it is added to ``read_loss``'s total)."""
        refuse_device_batch(x, y)   # alike with one device active or more (global_batch checks the rest)
        check_optimizer(optimizer, self)
        if sum(self.policy.active) == 1:   # the others are left out: the lead runs its own recorded steps
            self._alone_steps += 1
            return self.lead.train_step(x, y, optimizer, sync=sync)
        loss = self._step_gradients(x, y)
        optimizer.step()
        if sync:
            return loss
        self._loss_sum += loss
        return None

    def gradients(self, x, y) -> tuple[float, dict[str, np.ndarray]]:
        """(mean loss, gradients keyed like state_dict) of one global batch; the weights are not changed."""
        loss = self._step_gradients(x, y)
        return loss, {k: self.backend.download(p.grad).reshape(p.shape) for k, p in self.named_parameters()}

    def read_loss(self, reset: bool = True) -> float:
        """The loss summed over the ``sync=False`` steps since the last reset."""
        value = self._loss_sum + (self.lead.read_loss(reset) if self._alone_steps else 0.0)
        if reset:
            self._loss_sum = 0.0
        return value

    def _step_gradients(self, x, y) -> float:
        """Every replica's gradient := the global mean gradient of (x, y); returns the mean loss."""
        x, y = self.lead._host_batch(*global_batch(x, y))   # the whole batch checked before any shard runs
        shards = self.policy.shards(x.shape[0])
        done = self._run_shards(x, y, shards)
        t0 = time.perf_counter()
        n, total, loss = x.shape[0], None, 0.0
        for i, (seconds, shard_loss, grad) in sorted(done.items()):   # device order: the same sum every step
            w = np.float32((shards[i][1] - shards[i][0]) / n)
            total = grad * w if total is None else total + grad * w
            loss += float(w) * shard_loss
        for i, r in enumerate(self.replicas):
            if self.policy.active[i]:
                with self._on(i):
                    flat = np.zeros(r.flat_grad.shape, np.float32)
                    flat[r.flat_index()] = total
                    r.backend.upload_into(r.flat_grad, flat)
        self._broadcast_buffers()
        if self.policy.measurable:
            ms = [1e3 * done[i][0] / (shards[i][1] - shards[i][0]) if i in done else None
                  for i in range(len(self.replicas))]
            self.policy.update(ms, n, 1e3 * (time.perf_counter() - t0))
        return loss

    def _broadcast_buffers(self) -> None:
        """DDP's broadcast_buffers: after each step every replica takes the lead's buffers (batch-norm running
        statistics, which each replica updated from its own shard), so they stay identical everywhere."""
        values = {k: b.current() for k, b in self.lead.named_buffers()}
        if values:
            for r in self.replicas:
                if r is not self.lead:
                    set_buffers(r, values)

    def _run_shards(self, x, y, shards) -> dict:
        """Every non-empty shard at once: OpenCL replicas are enqueued first and waited on by the pool's threads
        (the waits release the GIL, so each device's finish time is its own), then Numba replicas compute on
        this thread. Returns {replica: (seconds, mean loss, gradient in state_dict order, float32 (P,))}."""
        jobs = sorted((i for i, (a, b) in enumerate(shards) if b > a),
                      key=lambda i: self.replicas[i].backend.info.backend == "numba")
        waits, done = {}, {}
        for i in jobs:
            (a, b), r, t0 = shards[i], self.replicas[i], time.perf_counter()
            with self._on(i):
                r.shard_gradients(x[a:b], y[a:b])
                grad, loss = r.backend.download_async(r.flat_grad), r.backend.download_async(r._loss_buf)
                if r.backend.info.backend == "numba":   # already computed, on this thread
                    done[i] = _finish(t0, grad, loss, r.flat_index())
                else:
                    waits[i] = self._pool.submit(_finish, t0, grad, loss, r.flat_index())
        for i, fut in waits.items():
            with self._on(i):
                done[i] = fut.result()
        return done

    def _on(self, i):
        """A context in which any failure is raised as replica i's DeviceError (one line from the CLI)."""
        return _device_errors(self.replicas[i].device)

    def __repr__(self) -> str:
        policy = getattr(self, "policy", None)   # absent when construction failed (a traceback's locals)
        if policy is None:
            return "DataParallel(<not constructed>)"
        split = "auto" if policy.auto else [round(float(f), 4) for f in policy.fractions]
        return f"DataParallel({self.device.id}, split={split})"


def set_dropout_stream(model, stream: int) -> None:
    """Every Dropout layer of ``model`` draws from Philox stream ``stream`` (a replica's or rank's index), so
    the shards of one step get independent masks."""
    for layer in walk(model.layers):
        if isinstance(layer, Dropout):
            layer.stream = int(stream)


def set_buffers(model, values: dict) -> None:
    """Write ``values`` (name -> NumPy array, as ``named_buffers`` names them) into ``model``'s buffers: the
    device copy where the buffer has one (asynchronously: the arrays are kept on the model until its next
    write), else the host value."""
    keep = []
    for k, b in model.named_buffers():
        v = np.ascontiguousarray(values[k], dtype=b.host.dtype)
        if b.data is None:
            b.host[...] = v
        else:
            model.backend.upload_into(b.data, v)
            keep.append(v)
    model._buffer_uploads = keep


def _finish(t0, grad, loss, index) -> tuple[float, float, np.ndarray]:
    """Wait for a shard's read-backs: (seconds since t0, its loss, its gradient in state_dict order)."""
    g, value = grad()[index], float(loss()[0])
    return time.perf_counter() - t0, value, g


@contextlib.contextmanager
def _device_errors(info):
    """Any failure inside but a user error (ConfigError) is raised as a DeviceError naming device ``info``."""
    try:
        yield
    except (ConfigError, DeviceError):
        raise
    except Exception as exc:
        raise DeviceError(f"device {info.id} ({info.name}) failed: {exc}") from exc
