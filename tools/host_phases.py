"""Where the host's time goes in a data-parallel step (issue 4): wraps the calls a step makes with wall-clock
timers and prints a table, with the device time of each shard from profiling marks where the backend has them.

    python3 tools/host_phases.py --devices cl:0,cl:1 [--batch-size 1024] [--split 0.5,0.5]
    python3 tools/host_phases.py --shared cl:0              # one model alone on a device of a shared context
    mpiexec -n 2 python3 tools/host_phases.py --mpi         # rank 0's table
    python3 tools/host_phases.py --processes --devices cl:0,cl:1   # a process per device: the parent's table
"""
from __future__ import annotations

import argparse
import collections
import functools
import time
import warnings

import numpy as np

import clcnn
from clcnn.backends import base
from clcnn.models import get_model
from clcnn.optim import SGD

TOTALS = collections.defaultdict(float)
COUNTS = collections.Counter()


def timed(owner, name, label=None):
    fn = getattr(owner, name)

    @functools.wraps(fn)
    def wrapper(*a, **k):
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            TOTALS[label or name] += time.perf_counter() - t0
            COUNTS[label or name] += 1
    setattr(owner, name, wrapper)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", default="cl:0,cl:1")
    ap.add_argument("--shared", default=None)
    ap.add_argument("--mpi", action="store_true")
    ap.add_argument("--processes", action="store_true", help="DataParallel with a process per device")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--split", default="0.5,0.5")
    ap.add_argument("--steps", type=int, default=30)
    a = ap.parse_args()
    warnings.simplefilter("ignore")
    from clcnn.backends.opencl import OpenCLBackend, open_shared
    from clcnn.model import Sequential
    for name in ("upload_shard", "run_shard", "train_step"):
        timed(Sequential, name, f"Sequential.{name}")
    for name in ("read_async", "write_async", "wait_all", "flush", "mark", "weighted_sum", "replay", "_staged_copy"):
        timed(OpenCLBackend, name, f"backend.{name}")
    timed(base.Transfer, "wait", "Transfer.wait")
    timed(SGD, "step", "SGD.step")
    rank = 0
    if a.mpi:
        from clcnn.distributed import MPIParallel, mpi_comm, rank_device
        comm = mpi_comm()
        rank = comm.rank
        orig = comm.Allreduce
        comm = type("Comm", (), {})()
        real = mpi_comm()
        for attr in ("rank", "size"):
            setattr(comm, attr, getattr(real, attr))
        for attr in ("allgather", "allreduce", "Split_type"):
            setattr(comm, attr, getattr(real, attr))

        def allreduce(*args, **kw):
            t0 = time.perf_counter()
            orig(*args, **kw)
            TOTALS["MPI Allreduce"] += time.perf_counter() - t0
            COUNTS["MPI Allreduce"] += 1
        comm.Allreduce = allreduce
        model = MPIParallel(get_model("cifar", seed=0).to(rank_device("auto", real)), comm, split=a.split)
    elif a.shared:
        be = open_shared([clcnn.backends.resolve_device(d) for d in (a.shared, "cl:1")])[0]
        model = get_model("cifar", seed=0).to(be)
    elif a.processes:
        from clcnn.procgroup import ProcessParallel, ShmComm
        timed(ShmComm, "sum_", "ShmComm.sum_")
        timed(ShmComm, "_wait", "ShmComm._wait (in sum_ etc.)")
        timed(ProcessParallel, "_scatter", "ProcessParallel._scatter")
        timed(ProcessParallel, "_complete", "MPIParallel._complete")
        model = clcnn.DataParallel(get_model("cifar", seed=0), a.devices.split(","), split=a.split, processes=True)
    else:
        model = clcnn.DataParallel(get_model("cifar", seed=0), a.devices.split(","), split=a.split, processes=False)
    opt = SGD(model, lr=0.01, momentum=0.9)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((a.batch_size, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, a.batch_size).astype(np.int32)
    for _ in range(5):
        model.train_step(x, y, opt, sync=False)
    model.read_loss()
    TOTALS.clear()
    COUNTS.clear()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        model.train_step(x, y, opt, sync=False)
    host = time.perf_counter() - t0
    model.read_loss()
    wall = time.perf_counter() - t0
    if rank:
        return
    print(f"{a.steps} steps at batch {a.batch_size}: {1e3 * wall / a.steps:.3f} ms per step "
          f"({a.batch_size * a.steps / wall:,.0f} img/s); host returned after {1e3 * host / a.steps:.3f} ms per step")
    for name, t in sorted(TOTALS.items(), key=lambda kv: -kv[1]):
        print(f"  {name:28s} {1e3 * t / a.steps:8.3f} ms per step  ({COUNTS[name] / a.steps:.1f} calls)")
    if hasattr(model, "split"):
        print("  split:", model.split())


if __name__ == "__main__":
    main()
