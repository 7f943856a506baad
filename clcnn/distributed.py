"""Data-parallel SGD across processes and machines with MPI (mpi4py): one device per rank.

    mpiexec -n 2 clcnn train --distributed mpi --device auto --batch-size 1024 ...

Every rank builds the same model from the seed and shuffles the data identically, so each holds the same global
mini-batch; rank i computes the mean gradient of its shard (cut by the split), the shard-size-weighted gradients
(and losses) are summed with one Allreduce on a contiguous host buffer, and every rank applies the same update.
The result equals the single-process run up to float rounding. Rank 0 alone prints, writes metrics and saves.
"""
from __future__ import annotations

import hashlib
import time

import numpy as np

from .parallel import GroupInfo, HostCombined, cut, global_batch, parse_split, settle

SMOOTHING = 0.3


def mpi_comm():
    """MPI.COMM_WORLD, or a ValueError saying how to get mpi4py."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ValueError(f"--distributed mpi needs mpi4py ({exc}); pip install 'clcnn[mpi]' (mpi4py with the "
                         "MPICH wheels: no system MPI needed), then run under mpiexec") from None
    return MPI.COMM_WORLD


def rank_device(device: str, comm) -> str:
    """This rank's device: one id for every rank, one id per rank (comma list of comm.size entries), or "auto":
    the node-local rank's GPU (cl:(local_rank mod number of GPUs)), else cpu."""
    from mpi4py import MPI

    from .backends import list_devices
    ids = [d.strip() for d in str(device).split(",") if d.strip()] or ["auto"]
    if len(ids) > 1:
        if len(ids) != comm.size:
            raise ValueError(f"--device lists {len(ids)} devices for {comm.size} MPI ranks (give one, one per "
                             "rank, or auto)")
        return ids[comm.rank]
    if ids[0].lower() != "auto":
        return ids[0]
    local = comm.Split_type(MPI.COMM_TYPE_SHARED).rank
    gpus = [d.id for d in list_devices() if d.backend == "opencl" and d.type == "gpu"]
    return gpus[local % len(gpus)] if gpus else "cpu"


class MPIComm:
    """The collectives MPIParallel uses, over an mpi4py communicator (clcnn.procgroup.ShmComm is the same
    interface between the processes of one host)."""

    def __init__(self, comm):
        self.comm, self.rank, self.size = comm, comm.rank, comm.size

    def allgather(self, obj) -> list:
        return self.comm.allgather(obj)

    def allreduce(self, value: float) -> float:
        return self.comm.allreduce(value)

    def sum_(self, buf: np.ndarray) -> None:
        """buf[...] = the sum of every rank's buf (contiguous float32, in place)."""
        from mpi4py import MPI
        self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)


class MPIParallel(HostCombined):
    """A placed Sequential on this rank's device, trained in lockstep with the other ranks; the model interface
    of ``DataParallel`` (train_step, read_loss, predict, state_dict, split) and usable with ``clcnn.optim.SGD``.

    When every rank lays its flat buffers out alike, the exchange goes chunk by chunk: each chunk of gradients is
    read back as soon as its layer's backward is done and summed with one Allreduce while the device works on
    the earlier layers; and a step's exchange and update are finished only once the next batch has been copied
    to the device (so that copy overlaps the device's work). Any read of the model (state_dict, predict,
    read_loss, ...) finishes the pending step first."""

    def __init__(self, model, comm, split="auto"):
        from .backends.base import Mark
        from .parallel import grad_chunks
        self.model = model
        self.comm = comm if hasattr(comm, "sum_") else MPIComm(comm)
        self.rank, self.size = comm.rank, comm.size
        mode = parse_split(split, self.size)
        self.auto = mode == "auto"
        self.fractions = np.full(self.size, 1.0 / self.size) if self.auto else np.asarray(mode) / sum(mode)
        self.ms_per_image = None   # this rank's smoothed time per image (split="auto")
        self.all_ms = [None] * self.size
        self.steps = 0
        self._index = model.flat_index()
        layout = hashlib.sha256(np.asarray(model.flat_grad.shape, np.int64).tobytes() + self._index.tobytes())
        self.chunked = len(set(comm.allgather(layout.hexdigest()))) == 1   # else: gathered into one host layout
        if self.chunked:
            self.chunks = grad_chunks(model)
            self._marks = {layer: Mark() for layer, _, _ in self.chunks}
            self._host = [model.backend.pinned(b - a) for _, a, b in self.chunks]
            self._loss_host = model.backend.pinned(1)
        else:
            self._buf = np.zeros(self._index.size + 1, np.float32)   # gradients, then the loss
            self._grad = np.zeros(model.flat_grad.shape, np.float32)
        self._pending = None   # the step whose exchange and update are still to do
        self._shard_size, self._shape_age = None, 0   # steps run with this rank's current shard size
        self._local_loss = 0.0   # this rank's share-weighted losses since read_loss (summed over ranks there)
        self.devices = comm.allgather(model.device.id)

    # ---- the model interface ------------------------------------------------------------------------------
    backend = property(lambda self: self.model.backend)
    flat_offsets = property(lambda self: self.model.flat_offsets)

    @property
    def device(self):
        return GroupInfo(",".join(self.devices), f"{self.size} MPI ranks")

    def named_parameters(self):
        self._complete()
        return self.model.named_parameters()

    def parameter_buffers(self):
        return self.model.parameter_buffers()

    def _ensure_device(self):
        pass

    def self_test(self) -> None:
        self.model.self_test()

    def state_dict(self):
        self._complete()
        return self.model.state_dict()

    def load_state_dict(self, state) -> None:
        self._complete()
        self.model.load_state_dict(state)

    def predict(self, x, batch_size: int = 1024):
        self._complete()
        return self.model.predict(x, batch_size)

    def split(self) -> dict:
        return {f"rank{r}:{d}": {"fraction": round(float(f), 4), "active": True,
                                 "ms_per_image": None if t is None else round(t, 5)}
                for r, (d, f, t) in enumerate(zip(self.devices, self.fractions, self.all_ms))}

    # ---- computation --------------------------------------------------------------------------------------
    def _shard(self, x, y):
        x, y = global_batch(x, y)
        a, b = cut(x.shape[0], self.fractions)[self.rank]
        return x.shape[0], x[a:b], y[a:b]

    def train_step(self, x, y, optimizer, sync: bool = True):
        """This rank's shard of the global batch; the exchange and update finish at the next call (or read)."""
        return self.train_shard(*self._shard(x, y), optimizer, sync)

    def train_shard(self, n: int, xs, ys, optimizer, sync: bool = True):
        """train_step given this rank's shard (xs, ys) of a global batch of ``n`` images."""
        if not self.chunked:
            loss = self._gathered_shard(n, xs, ys)
            optimizer.step()
            if sync:
                return loss
            self._loss_sum += loss
            return None
        if len(xs):
            self.model.upload_shard(xs, ys)   # overlaps the device's work on the previous step
        self._complete()
        self._start(n, len(xs), optimizer, sync)
        if sync:
            return self._complete()
        return None

    def _step_gradients(self, x, y, sync=True) -> float | None:
        return self.shard_gradients(*self._shard(x, y))

    def shard_gradients(self, n: int, xs, ys) -> float:
        """This rank's shard, then the exchange: every rank ends with the global mean gradient in .grad."""
        if not self.chunked:
            return self._gathered_shard(n, xs, ys)
        self._complete()
        if len(xs):
            self.model.upload_shard(xs, ys)
        self._start(n, len(xs), None, True)
        return self._complete()

    def _start(self, n, count, optimizer, sync) -> None:
        """Enqueue this rank's shard and the read of each gradient chunk as soon as its layer is done."""
        m, be = self.model, self.model.backend
        t0 = time.perf_counter()
        self._shape_age = self._shape_age + 1 if count == self._shard_size else 1
        self._shard_size = count
        reads = loss = None
        if count:
            m.run_shard(False, self._marks)
            reads = [be.read_async(m.flat_grad, s, h, after=[self._marks[layer]])
                     for (layer, s, _), h in zip(self.chunks, self._host)]
            loss = be.read_async(m._loss_buf, 0, self._loss_host, after=[self._marks[self.chunks[-1][0]]])
            be.flush()
        self._pending = (reads, loss, count / n, count, t0, optimizer, sync, self._shape_age > 2)
        if self.auto:
            self._rebalance()   # the last measurement; the device is busy meanwhile

    def _complete(self):
        """Finish the pending step: each chunk, once read back, weighted by this rank's share and summed over the
        ranks (Allreduce), then written back beside the compute queue; the update waits for the writes. Returns
        the global loss of that step when it was a sync step, else None."""
        if self._pending is None:
            return None
        reads, loss, w, count, t0, optimizer, sync, measured = self._pending
        self._pending = None
        m, be = self.model, self.model.backend
        writes = []
        for c, ((_, s, _), h) in enumerate(zip(self.chunks, self._host)):
            if reads is None:
                h[...] = 0.0
            else:
                reads[c].wait()
                h *= np.float32(w)
            self.comm.sum_(h)
            writes.append(be.write_async(m.flat_grad, s, h))
        be.wait_all(writes)
        local = 0.0
        if reads is not None:
            local = w * float(loss.wait()[0])
            if measured:   # a shard size's first two steps build and record: not measurements
                t = 1e3 * (time.perf_counter() - t0) / count
                old = self.ms_per_image
                self.ms_per_image = t if old is None else (1 - SMOOTHING) * old + SMOOTHING * t
        self.steps += 1
        if optimizer is not None:
            optimizer.step()
            be.flush()
        if sync:   # the global loss of this step now (gradients(), train_step(sync=True))
            return self.comm.allreduce(local)
        self._local_loss += local
        return None

    def read_loss(self, reset: bool = True) -> float:
        """The loss summed over the steps since the last reset (every rank must call it: one Allreduce)."""
        self._complete()
        total = self.comm.allreduce(self._local_loss) + super().read_loss(reset)
        if reset:
            self._local_loss = 0.0
        return total

    def _gathered_shard(self, n, xs, ys) -> float:
        """Ranks whose flat layouts differ: the whole gradient gathered into the device-independent order, one
        Allreduce, scattered back."""
        buf, m, count = self._buf, self.model, len(xs)
        t0 = time.perf_counter()
        if count:
            m.shard_gradients(xs, ys)
            w = count / n
            grad, loss = m.backend.download_async(m.flat_grad), m.backend.download_async(m._loss_buf)
            buf[:-1] = grad()[self._index]
            buf[-1] = loss()[0]
            buf *= np.float32(w)
            t = 1e3 * (time.perf_counter() - t0) / count
            if self.steps > 0:   # the first step builds and compiles: not a measurement
                old = self.ms_per_image
                self.ms_per_image = t if old is None else (1 - SMOOTHING) * old + SMOOTHING * t
        else:
            buf[:] = 0.0
        self.comm.sum_(buf)
        self._grad[self._index] = buf[:-1]
        m.backend.upload_into(m.flat_grad, self._grad)
        if self.auto:
            self._rebalance()
        self.steps += 1
        return float(buf[-1])

    def _rebalance(self) -> None:
        """Shares follow the ranks' measured speeds (identical on every rank: computed from one allgather)."""
        self.all_ms = self.comm.allgather(self.ms_per_image)
        if all(t is not None for t in self.all_ms):
            self.fractions = settle(self.fractions, [1.0 / t for t in self.all_ms])
