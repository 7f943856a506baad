"""Data-parallel SGD across processes and machines with MPI (mpi4py): one device per rank.

    mpiexec -n 2 clcnn train --distributed mpi --device auto --batch-size 1024 ...

Every rank builds the same model from the seed and shuffles the data identically, so each holds the same global
mini-batch; rank i computes the mean gradient of its shard (cut by the split), the shard-size-weighted gradients
(and losses) are summed with one Allreduce on a contiguous host buffer, and every rank applies the same update.
The result equals the single-process run up to float rounding. Rank 0 alone prints, writes metrics and saves.
"""
from __future__ import annotations

import time

import numpy as np

from .parallel import GroupInfo, HostCombined, cut, parse_split, settle

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


class MPIParallel(HostCombined):
    """A placed Sequential on this rank's device, trained in lockstep with the other ranks; the model interface
    of ``DataParallel`` (train_step, read_loss, predict, state_dict, split) and usable with ``clcnn.optim.SGD``."""

    def __init__(self, model, comm, split="auto"):
        self.model, self.comm = model, comm
        self.rank, self.size = comm.rank, comm.size
        mode = parse_split(split, self.size)
        self.auto = mode == "auto"
        self.fractions = np.full(self.size, 1.0 / self.size) if self.auto else np.asarray(mode) / sum(mode)
        self.ms_per_image = None   # this rank's smoothed time per image (split="auto")
        self.all_ms = [None] * self.size
        self.steps = 0
        self._index = model.flat_index()
        self._buf = np.zeros(self._index.size + 1, np.float32)   # gradients, then the loss
        self._grad = np.zeros(model.flat_grad.shape, np.float32)
        self.devices = comm.allgather(model.device.id)

    # ---- the model interface ------------------------------------------------------------------------------
    backend = property(lambda self: self.model.backend)
    flat_offsets = property(lambda self: self.model.flat_offsets)

    @property
    def device(self):
        return GroupInfo(",".join(self.devices), f"{self.size} MPI ranks")

    def named_parameters(self):
        return self.model.named_parameters()

    def parameter_buffers(self):
        return self.model.parameter_buffers()

    def _ensure_device(self):
        pass

    def self_test(self) -> None:
        self.model.self_test()

    def state_dict(self):
        return self.model.state_dict()

    def load_state_dict(self, state) -> None:
        self.model.load_state_dict(state)

    def predict(self, x, batch_size: int = 1024):
        return self.model.predict(x, batch_size)

    def split(self) -> dict:
        return {f"rank{r}:{d}": {"fraction": round(float(f), 4), "active": True,
                                 "ms_per_image": None if t is None else round(t, 5)}
                for r, (d, f, t) in enumerate(zip(self.devices, self.fractions, self.all_ms))}

    # ---- computation --------------------------------------------------------------------------------------
    def _step_gradients(self, x, y) -> float:
        """This rank's shard, then one Allreduce: every rank ends with the global mean gradient in .grad."""
        from mpi4py import MPI
        x = np.ascontiguousarray(x, dtype=np.float32)
        y = np.ascontiguousarray(y, dtype=np.int32).reshape(-1)
        n = x.shape[0]
        a, b = cut(n, self.fractions)[self.rank]
        buf, m = self._buf, self.model
        t0 = time.perf_counter()
        if b > a:
            m.shard_gradients(x[a:b], y[a:b])
            w = (b - a) / n
            grad, loss = m.backend.download_async(m.flat_grad), m.backend.download_async(m._loss_buf)
            buf[:-1] = grad()[self._index]
            buf[-1] = loss()[0]
            buf *= np.float32(w)
            t = 1e3 * (time.perf_counter() - t0) / (b - a)
            if self.steps > 0:   # the first step builds and compiles: not a measurement
                old = self.ms_per_image
                self.ms_per_image = t if old is None else (1 - SMOOTHING) * old + SMOOTHING * t
        else:
            buf[:] = 0.0
        self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
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
