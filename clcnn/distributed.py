"""Data parallelism over MPI ranks (mpi4py), SPMD as in PyTorch's DDP: one device per rank, every rank runs the
training loop itself, and only the gradients travel.

    clcnn train --device cl:0,cl:1 ...          # one host: clcnn starts the ranks (clcnn/launch.py)
    mpiexec -n 8 clcnn train --device auto ...  # many hosts: each rank takes its host's next GPU

Every rank starts from rank 0's weights and, seeded alike, draws the same global mini-batches; rank r computes
the mean gradient of its shard (clcnn.split). The gradients are read back chunk by chunk, each as soon as the
backward pass has finished its layers, weighted by the shard's share and summed over the ranks with one
Allreduce per chunk while the device works on the earlier layers; then every rank applies the same update. The
result equals one process up to float rounding.
"""
from __future__ import annotations

import hashlib
import sys
import time

import numpy as np

from .backends.base import Mark
from .errors import ConfigError
from .parallel import set_buffers, set_dropout_stream
from .split import Group, GroupInfo, SplitPolicy, global_batch
from .steps import check_optimizer

CHUNK_MIN = 32768   # gradient elements: a layer's gradients travel with the next layer's until a chunk has this many


def mpi_world():
    """MPI.COMM_WORLD, or a ConfigError saying how to get mpi4py. In a world of several ranks an uncaught
    exception aborts every rank (else the others would wait for it forever)."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ConfigError(f"MPI ranks need mpi4py ({exc}): pip install 'clcnn[mpi]' (mpi4py with the MPICH "
                          "wheels, no system MPI needed), or --parallel threads") from None
    comm = MPI.COMM_WORLD
    if comm.size > 1 and sys.excepthook is sys.__excepthook__:
        def abort(*exc_info):
            sys.__excepthook__(*exc_info)
            sys.stderr.flush()
            comm.Abort(1)
        sys.excepthook = abort
    return comm


def rank_device(device, comm) -> str:
    """This rank's device id from ``device``: one id for every rank, one per rank (a list or "a,b" with
    comm.size entries), or "auto": the host-local rank's GPU (cl:(local rank mod GPUs)), else cpu."""
    from mpi4py import MPI

    from .backends import list_devices
    ids = [d.strip() for d in (device.replace("+", ",").split(",") if isinstance(device, str) else device)]
    ids = [d for d in ids if d] or ["auto"]
    if len(ids) > 1:
        if len(ids) != comm.size:
            raise ConfigError(f"--device lists {len(ids)} devices for {comm.size} MPI ranks (give one, one per "
                              "rank, or auto)")
        return ids[comm.rank]
    if ids[0].lower() != "auto":
        return ids[0]
    local = comm.Split_type(MPI.COMM_TYPE_SHARED).rank
    gpus = [d.id for d in list_devices() if d.backend == "opencl" and d.type == "gpu"]
    return gpus[local % len(gpus)] if gpus else "cpu"


def grad_chunks(model) -> list[tuple[int, int, int]]:
    """(layer index, start, stop): ranges of ``model.flat_grad`` in the order the backward pass completes them
    (last layers first). Small layers ride with the next chunk; the last chunk starts at 0, so together they cover
    the buffer. Chunks are drawn by parameter counts, so every rank draws the same layers whatever its layout."""
    layers = [i for i, layer in enumerate(model.layers) if layer.params]
    chunks, stop, count = [], model.flat_grad.size, 0
    for i in reversed(layers):
        count += sum(p.size for p in model.layers[i].params.values())
        if count >= CHUNK_MIN or i == layers[0]:
            start = 0 if i == layers[0] else min(model.flat_offsets[id(p)] for p in model.layers[i].params.values())
            chunks.append((i, start, stop))
            stop, count = start, 0
    return chunks


def chunk_index(model, chunks) -> list[np.ndarray]:
    """Per chunk, the int64 positions within it (relative to its start) of its parameters' elements in
    state_dict order: how a chunk travels between ranks whose flat buffers are padded differently."""
    index = model.flat_index()
    return [index[(index >= a) & (index < b)] - a for _, a, b in chunks]


class DistributedDataParallel(Group):
    """A placed Sequential trained in lockstep with the other ranks of ``comm``; the model interface of
    ``DataParallel`` (train_step, gradients, read_loss, predict, state_dict, split) for any clcnn optimizer.

    Args:
        model: a Sequential placed on this rank's device (see rank_device); it takes rank 0's weights now.
        comm: an mpi4py communicator (every rank of it must build this group, then step together).
        split: "auto" or one fraction per rank (clcnn.split): identical on every rank, from allgathered times
            (each rank's runs to its last chunk's read-back, which an Allreduce waiting for a slower rank can
            delay: a faster rank may look slower than it is, and the split then moves toward it more slowly).
    Every rank must call train_step, gradients and read_loss the same number of times (collectives);
    state_dict, predict and split are local. Raises ConfigError for a bad split.
    """

    def __init__(self, model, comm, split="auto"):
        self.model, self.comm, self.rank, self.world_size = model, comm, comm.rank, comm.size
        model.load_state_dict(comm.bcast(model.state_dict(), root=0))
        set_dropout_stream(model, self.rank)
        self.devices = comm.allgather(model.device.id)
        self.policy = SplitPolicy(split, [f"rank {r} ({d})" for r, d in enumerate(self.devices)])
        self.chunks = grad_chunks(model)
        self._marks = {layer: Mark() for layer, _, _ in self.chunks}
        self._host = [model.backend.pinned(b - a) for _, a, b in self.chunks]
        self._loss_host = model.backend.pinned(1)
        layout = hashlib.sha256(np.int64(model.flat_grad.size).tobytes() + model.flat_index().tobytes())
        same = len(set(comm.allgather(layout.hexdigest()))) == 1
        self._gather = None if same else chunk_index(model, self.chunks)   # ranks laid out differently
        self._local_loss = 0.0   # this rank's share-weighted losses since read_loss (summed over ranks there)
        self._pending, self._writes = None, []   # the step whose exchange and update are still to do

    # ---- the model interface (local; a read of the model finishes the pending step first) -----------------------
    lead = property(lambda self: self.model)
    replicas = property(lambda self: [self.model])

    @property
    def device(self) -> GroupInfo:
        """Every rank's device id, comma-joined, and the number of ranks."""
        return GroupInfo(",".join(self.devices), f"{self.world_size} MPI ranks")

    def parameter_buffers(self) -> list:
        """This rank's flat buffers (what an optimizer updates), once the pending step is finished."""
        self._complete()
        return self.model.parameter_buffers()

    def _finish(self) -> None:
        self._complete()

    def split(self) -> dict:
        """Each rank's share and measured time per image, keyed "rank<r>:<device>"."""
        return self.policy.report([f"rank{r}:{d}" for r, d in enumerate(self.devices)])

    # ---- computation (collective) -----------------------------------------------------------------------------
    def train_step(self, x, y, optimizer, sync: bool = True):
        """This rank's shard of the global batch (x, y), the gradients summed over the ranks, one update; returns
        the global mean loss, or None with ``sync=False`` (see read_loss). A sync=False step's exchange and
        update finish at the next call on this group, once the next shard is on its way to the device (so
        the host's copy overlaps the device's work), with the hyper-parameters the optimizer had now."""
        check_optimizer(optimizer, self)
        self._start(x, y, optimizer, sync)
        return self.comm.allreduce(self._complete()) if sync else None

    def gradients(self, x, y) -> tuple[float, dict[str, np.ndarray]]:
        """(global mean loss, global mean gradients keyed like state_dict); the weights are not changed."""
        self._start(x, y, None, True)
        loss = self.comm.allreduce(self._complete())
        return loss, {k: self.backend.download(p.grad).reshape(p.shape) for k, p in self.named_parameters()}

    def read_loss(self, reset: bool = True) -> float:
        """The global loss summed over the ``sync=False`` steps since the last reset (one Allreduce)."""
        self._complete()
        total = self.comm.allreduce(self._local_loss)
        if reset:
            self._local_loss = 0.0
        return total

    def _start(self, x, y, optimizer, sync) -> None:
        """Copy this rank's shard to the device, finish the pending step, then enqueue the shard's forward and
        backward and the read of each gradient chunk as soon as its layers are done."""
        x, y = self.model._host_batch(*global_batch(x, y))   # every rank refuses the same bad batch, before a shard
        n, (a, b) = x.shape[0], self.policy.shards(x.shape[0])[self.rank]
        m, be = self.model, self.model.backend
        if b > a:
            m.upload_shard(x[a:b], y[a:b])
        self._complete()
        t0, reads, loss = time.perf_counter(), None, None
        if b > a:
            m.run_shard(False, self._marks)
            reads = [be.read_async(m.flat_grad, s, h, after=[self._marks[layer]])
                     for (layer, s, _), h in zip(self.chunks, self._host)]
            loss = be.read_async(m._loss_buf, 0, self._loss_host, after=[self._marks[self.chunks[-1][0]]])
            be.flush()
        hyper = None if optimizer is None else optimizer.hyper_values()
        self._pending = (b - a, n, reads, loss, t0, optimizer, hyper, sync, self.policy.measurable)

    def _complete(self) -> float | None:
        """Finish the pending step: each chunk, once read back, weighted by this rank's share and summed over the
        ranks (Allreduce), written back beside the compute queue; the update waits for the writes. Returns this
        rank's share-weighted loss of that step (summed over the ranks: the global mean loss), or None."""
        if self._pending is None:
            return None
        from mpi4py import MPI
        count, n, reads, loss, t0, optimizer, hyper, sync, measurable = self._pending
        self._pending = None
        m, be, w = self.model, self.model.backend, np.float32(count / n)
        for write in self._writes if reads is None else ():
            write.wait()   # an empty shard: the last step's writes from the host buffers are done
        writes, t1 = [], None
        for c, ((_, s, _), h) in enumerate(zip(self.chunks, self._host)):
            if reads is not None:
                reads[c].wait()
                t1 = time.perf_counter()   # after the last chunk: about when this device finished its shard
            part = h if self._gather is None else h[self._gather[c]]
            if reads is None:
                part[...] = 0.0
            else:
                part *= w
            self.comm.Allreduce(MPI.IN_PLACE, part, op=MPI.SUM)
            if self._gather is not None:
                h[self._gather[c]] = part
            writes.append(be.write_async(m.flat_grad, s, h))
        be.wait_all(writes)
        self._writes = writes
        local = 0.0 if reads is None else float(w) * float(loss.wait()[0])
        if measurable:   # the same on every rank (the same shards)
            self.policy.update(self.comm.allgather(None if reads is None else 1e3 * (t1 - t0) / count), n)
        if optimizer is not None:
            _step(optimizer, hyper)
            be.flush()
        self._broadcast_buffers()
        if not sync:
            self._local_loss += local
        return local

    def _broadcast_buffers(self) -> None:
        """DDP's broadcast_buffers: after each step every rank takes rank 0's buffers (batch-norm running
        statistics, which each rank updated from its own shard), so they stay identical on every rank."""
        buffers = list(self.model.named_buffers())
        if buffers and self.world_size > 1:
            values = self.comm.bcast({k: b.current() for k, b in buffers} if self.rank == 0 else None, root=0)
            if self.rank:
                set_buffers(self.model, values)


def _step(optimizer, hyper: np.ndarray) -> None:
    """optimizer.step() with the hyper-parameter values ``hyper`` (``optimizer.hyper`` order) it had when the
    step was started: the training loop may have set the next step's learning rate since."""
    now = optimizer.hyper_values()
    if np.array_equal(now, hyper):
        optimizer.step()
        return
    for name, value in zip(optimizer.hyper, hyper):
        setattr(optimizer, name, float(value))
    try:
        optimizer.step()
    finally:
        for name, value in zip(optimizer.hyper, now):
            setattr(optimizer, name, float(value))
