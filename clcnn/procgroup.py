"""DataParallel with a process per device: the MPI engine (distributed.MPIParallel), run between the processes of
one host with shared memory instead of MPI.

Why: one Python thread driving two GPUs is host-bound. It enqueues every kernel of both shards, and NVIDIA's
OpenCL enqueues ~1.6x slower in a context holding both GPUs (docs/PERFORMANCE.md, issue 4). Two processes, each
driving one GPU in a context of its own, were 1.6x one GPU where one process was 1.0x.

How:
- The calling process is rank 0 and drives ``devices[0]``. Each other device gets a worker process
  (``python -m clcnn.procgroup``) holding a replica built from the same weights; its commands come over a pipe.
- Per step the parent copies each worker's shard of the global batch into that worker's shared-memory slot, then
  sends the step with the optimizer's hyper-parameters when they changed. Two slots by step parity; the worker
  writes the number of each shard it has read into the segment's header, and the parent rewrites a slot only once
  its last shard has been read (the pipeline's collectives normally guarantee it already).
- Every rank runs the MPIParallel step: its shard, the gradient chunks read back as their layers finish, summed over
  the ranks (``ShmComm.sum_``), written back, one update. The sum adds the ranks in rank order on every rank, so
  the replicas stay bit-identical.
- Any read of the group (state_dict, predict, read_loss, load_state_dict) is mirrored to the workers, so the
  collectives inside it meet.

A worker that fails posts its error in shared memory; whichever rank waits on it raises a DeviceError naming the
device. A worker that dies is noticed by the parent within half a second of waiting on it; a worker whose parent
dies exits. Linux (POSIX shared memory, inherited pipe descriptors).
"""
from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import secrets
import subprocess
import sys
import threading
import time
import weakref
from multiprocessing import shared_memory
from multiprocessing.connection import Connection

import numpy as np

from .backends import DeviceError
from .distributed import MPIParallel
from .parallel import GroupInfo, cut, global_batch

OBJ_BYTES = 1 << 16      # per rank and parity: one pickled object of an allgather
ERR_BYTES = 4096         # per rank: the message of a failure
HEADER = 64              # bytes before a worker's two batch slots: the number of the last shard it has read
FLAG_STRIDE = 8          # int64s between two ranks' flags (one cache line each)
SPIN_S = 0.02            # a wait spins this long before it sleeps between looks
CHECK_S = 0.5            # how often a long wait checks that the peers are alive
START_S = 600.0          # how long the parent waits for a worker to build its replica (kernel builds included)


_FENCE = threading.Lock()


def _fence() -> None:
    """A full memory barrier between this thread's loads and stores before and after (taking and releasing an
    uncontended lock is one), so flags and data in shared memory are seen in the order they were written."""
    _FENCE.acquire()
    _FENCE.release()


def _attach(name: str) -> shared_memory.SharedMemory:
    """Attach an existing segment without handing it to this process's resource tracker (which would unlink it
    when this process exits, under the creator's feet)."""
    shm = shared_memory.SharedMemory(name=name)
    try:
        from multiprocessing import resource_tracker
        resource_tracker.unregister(shm._name, "shared_memory")   # noqa: SLF001 (Python < 3.13 has no track=)
    except Exception:   # pragma: no cover - the tracker's internals moved
        pass
    return shm


class ShmComm:
    """The collectives of distributed.MPIComm (sum_, allgather, allreduce) between ``size`` processes of one
    host, through one shared-memory segment: per rank a flag (the number of the last collective it has posted
    its part of), and per parity of that number a float32 slot and an object slot per rank.

    A collective writes this rank's part into its slot, posts its number, waits until every flag has reached it,
    then reads every rank's part in rank order. Two slots by parity are enough: a rank writes the slot of
    collective c + 2 only after every rank posted c + 1, so after every rank has read the parts of c."""

    def __init__(self, name: str | None, rank: int, size: int, capacity: int, check=None):
        self.rank, self.size, self.capacity = rank, size, int(capacity)
        flags = 8 * FLAG_STRIDE * size
        data = 4 * 2 * size * self.capacity
        objs = 2 * size * OBJ_BYTES
        total = flags + data + objs + size * ERR_BYTES
        if name is None:
            self.shm = shared_memory.SharedMemory(create=True, size=total, name=f"clcnn-{secrets.token_hex(8)}")
            self.owner = True
        else:
            self.shm = _attach(name)
            self.owner = False
        buf = self.shm.buf
        self._flags = np.ndarray((size,), np.int64, buf, 0, (8 * FLAG_STRIDE,))
        self._data = np.ndarray((2, size, self.capacity), np.float32, buf, flags)
        self._objs = np.ndarray((2, size, OBJ_BYTES), np.uint8, buf, flags + data)
        self._err = np.ndarray((size, ERR_BYTES), np.uint8, buf, flags + data + objs)
        if self.owner:
            self._flags[:] = 0
        self._seq = 0
        self.check = check   # called now and then during a long wait: raises if a peer is gone

    @property
    def name(self) -> str:
        return self.shm.name

    # ---- the collectives --------------------------------------------------------------------------------------
    def sum_(self, buf: np.ndarray) -> None:
        """buf[...] = the sum over the ranks of buf (contiguous float32), added in rank order on every rank."""
        n = buf.size
        if n > self.capacity:
            raise ValueError(f"ShmComm.sum_: {n} values, the segment holds {self.capacity}")
        seq, par = self._next()
        np.copyto(self._data[par, self.rank, :n], buf.reshape(-1))
        self._post(seq)
        self._wait(seq)
        out = buf.reshape(-1)   # the parts added in rank order, the same on every rank
        np.copyto(out, self._data[par, 0, :n])
        for r in range(1, self.size):
            out += self._data[par, r, :n]

    def allgather(self, obj) -> list:
        raw = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        if len(raw) > OBJ_BYTES - 8:
            raise ValueError(f"ShmComm.allgather: a {len(raw)}-byte object (at most {OBJ_BYTES - 8})")
        seq, par = self._next()
        slot = self._objs[par, self.rank]
        slot[:8] = np.frombuffer(np.int64(len(raw)).tobytes(), np.uint8)
        slot[8:8 + len(raw)] = np.frombuffer(raw, np.uint8)
        self._post(seq)
        self._wait(seq)
        out = []
        for r in range(self.size):
            s = self._objs[par, r]
            length = int(s[:8].view(np.int64)[0])
            out.append(pickle.loads(s[8:8 + length].tobytes()))
        return out

    def allreduce(self, value: float) -> float:
        """The sum of every rank's value, added in rank order."""
        total = 0.0
        for v in self.allgather(value):
            total += v
        return total

    # ---- flags ------------------------------------------------------------------------------------------------
    def _next(self) -> tuple[int, int]:
        self._seq += 1
        return self._seq, self._seq & 1

    def _post(self, seq: int) -> None:
        _fence()   # the part's stores before the flag's (x86 keeps their order anyway; weaker CPUs need the fence)
        self._flags[self.rank] = seq   # one aligned 8-byte store

    def _wait(self, seq: int) -> None:
        flags, t0, spins, last = self._flags, time.monotonic(), 0, None
        while True:
            low = int(flags.min())
            if low >= seq:
                _fence()   # the peers' parts are read after their flags
                return
            if low < 0:
                self._raise_failure()
            spins += 1
            if spins & 255 == 0:
                now = time.monotonic()
                if now - t0 > SPIN_S:
                    time.sleep(1e-4)
                    if self.check is not None and (last is None or now - last > CHECK_S):
                        last = now
                        self.check()

    def fail(self, message: str) -> None:
        """Tell every rank that this one failed (their waits raise DeviceError with ``message``)."""
        raw = message.encode("utf-8", "replace")[:ERR_BYTES - 8]
        self._err[self.rank, :8] = np.frombuffer(np.int64(len(raw)).tobytes(), np.uint8)
        self._err[self.rank, 8:8 + len(raw)] = np.frombuffer(raw, np.uint8)
        _fence()
        self._flags[self.rank] = -1

    def failure(self) -> str | None:
        """The message of the first rank that failed, or None."""
        for r in range(self.size):
            if self._flags[r] < 0:
                length = int(self._err[r, :8].view(np.int64)[0])
                return self._err[r, 8:8 + length].tobytes().decode("utf-8", "replace")
        return None

    def _raise_failure(self):
        raise DeviceError(self.failure() or "a process of the group failed")

    def close(self) -> None:
        # the views go first: a segment with exported buffers cannot be closed
        self._flags = self._data = self._objs = self._err = None
        try:
            self.shm.close()
            if self.owner:
                self.shm.unlink()
        except (BufferError, FileNotFoundError):
            pass


def _optimizer_spec(optimizer):
    cls = type(optimizer)
    return cls.__module__, cls.__qualname__, optimizer.config()


class ProcessParallel(MPIParallel):
    """``DataParallel(model, devices, processes=True)``: rank 0 here on ``devices[0]``, a worker process for each
    other device; the model interface of DataParallel. See the module docstring."""

    def __init__(self, model, devices, split="auto"):
        from .backends import get_backend, resolve_device
        self.devices = [resolve_device(d).id for d in devices]   # an unknown id fails here, before any process
        self._workers: list[tuple[subprocess.Popen, Connection]] = []
        self._slots: dict[int, tuple[shared_memory.SharedMemory, int]] = {}   # worker rank -> (segment, slot bytes)
        self._opt_sent, self._step_no, self._closed = None, 0, False
        twin = model.clone()
        placed = model.to(get_backend(self.devices[0]))
        capacity = max(placed.flat_grad.size, placed.flat_index().size + 1) + 64
        self._comm = ShmComm(None, 0, len(self.devices), capacity, check=self._check_workers)
        self._finalizer = weakref.finalize(self, _shutdown, self._workers, self._comm, self._slots)
        try:
            blob = pickle.dumps(twin, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            self.close()
            raise ValueError(f"the model cannot be sent to a worker process ({exc}); pass processes=False "
                             "(--processes no) to train the group in this process") from None
        pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (pkg_root, os.environ.get("PYTHONPATH")) if p))
        for rank, dev in enumerate(self.devices[1:], 1):
            mine, theirs = _pipe()
            proc = subprocess.Popen([sys.executable, "-m", "clcnn.procgroup", str(theirs.fileno())],
                                    pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL)
            theirs.close()
            self._workers.append((proc, mine))
            mine.send({"comm": self._comm.name, "rank": rank, "size": len(self.devices), "capacity": capacity,
                       "device": dev, "model": blob, "split": split})
        try:
            super().__init__(placed, self._comm, split)   # its allgathers meet the workers' (they build first)
        except BaseException:
            self.close()
            raise

    # ---- the model interface ------------------------------------------------------------------------------
    @property
    def device(self):
        names = [self.model.device.name] + [f"{d} (worker process)" for d in self.devices[1:]]
        return GroupInfo(",".join(self.devices), ", ".join(names))

    def split(self) -> dict:
        return {d: {"fraction": round(float(f), 4), "active": True,
                    "ms_per_image": None if t is None else round(t, 5)}
                for d, f, t in zip(self.devices, self.fractions, self.all_ms)}

    def state_dict(self):
        with self._guard():
            self._finish_pending()
            return super().state_dict()

    def named_parameters(self):
        with self._guard():
            self._finish_pending()
            return super().named_parameters()

    def predict(self, x, batch_size: int = 1024):
        with self._guard():
            self._finish_pending()
        return super().predict(x, batch_size)

    def load_state_dict(self, state) -> None:
        with self._guard():
            self._finish_pending()
            self._send(("load", {k: np.asarray(v) for k, v in state.items()}))
            super().load_state_dict(state)

    def read_loss(self, reset: bool = True) -> float:
        with self._guard():
            self._send(("read_loss", reset))
            return super().read_loss(reset)

    def train_step(self, x, y, optimizer, sync: bool = True):
        with self._guard():
            n, xs, ys = self._scatter("step", x, y, sync, optimizer)
            return self.train_shard(n, xs, ys, optimizer, sync)

    def _step_gradients(self, x, y, sync=True) -> float | None:
        with self._guard():
            n, xs, ys = self._scatter("grads", x, y, True, None)
            return self.shard_gradients(n, xs, ys)

    def worker_states(self) -> list[dict]:
        """Each worker replica's state_dict (after the pending step), in rank order: for checks that every
        replica holds the same weights."""
        with self._guard():
            self._finish_pending()
            self._send(("state",))
            states = []
            for _, conn in self._workers:
                while not conn.poll(CHECK_S):
                    self._check_workers()
                states.append(conn.recv())
            return states

    def close(self) -> None:
        """Stop the worker processes and free the shared memory (also at exit or when the group is collected)."""
        self._closed = True
        self._finalizer()

    # ---- the parent's side --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _guard(self):
        """A failure here (this device, a worker, bad input) ends the group: the workers are told (their waits
        raise) and stopped, and later calls raise at once."""
        if self._closed:
            raise DeviceError(f"the group {','.join(self.devices)} was stopped by an earlier failure or close()")
        try:
            yield
        except ValueError:   # bad input, found before anything was sent
            raise
        except BaseException as exc:
            if self._comm.failure() is None:
                self._comm.fail(f"device {self.devices[0]} failed: {str(exc).strip()}")
            self.close()
            raise

    def _finish_pending(self) -> None:
        """Finish the pending step here and on every worker (its collectives meet)."""
        if self._pending is not None:
            self._send(("complete",))
            self._complete()

    def _scatter(self, op, x, y, sync, optimizer):
        """Each worker's shard into its slot, then the command; returns (n, xs, ys) of rank 0's own shard."""
        from .backends.opencl import host_copy
        x, y = global_batch(x, y)
        n, shards = x.shape[0], cut(x.shape[0], self.fractions)
        spec = None
        if optimizer is not None and self._opt_sent != (id(optimizer), getattr(optimizer, "version", 0)):
            spec, self._opt_sent = _optimizer_spec(optimizer), (id(optimizer), getattr(optimizer, "version", 0))
        self._step_no += 1
        k = self._step_no   # this scatter's number; its slot was last used by scatter k - 2
        per_image = x[0].nbytes
        for rank, (a, b) in enumerate(shards[1:], 1):
            seg, slot = self._slot(rank, (b - a) * (per_image + 4), k)
            self._await_consumed(rank, seg, k - 2)
            base = HEADER + (k & 1) * slot
            if b > a:
                xb = np.ndarray(((b - a) * per_image,), np.uint8, seg.buf, base)
                host_copy(xb, x[a:b].reshape(-1).view(np.uint8))
                np.ndarray((b - a,), np.int32, seg.buf, base + (b - a) * per_image)[:] = y[a:b]
            self._send((op, seg.name, base, b - a, x.shape[1:], n, sync, spec, k), ranks=[rank])
        a, b = shards[0]
        return n, x[a:b], y[a:b]

    def _slot(self, rank, nbytes, k):
        """Worker ``rank``'s segment (a header, then two slots) with slots of at least ``nbytes``; a bigger one
        replaces it once the worker has read every shard it was sent."""
        seg, slot = self._slots.get(rank, (None, 0))
        if seg is None or nbytes > slot:
            slot = max(nbytes, 2 * slot, 1 << 16)
            new = shared_memory.SharedMemory(create=True, size=HEADER + 2 * slot,
                                             name=f"clcnn-{secrets.token_hex(8)}")
            np.ndarray((1,), np.int64, new.buf, 0)[0] = k - 1   # what the worker has read, as of the old segment
            if seg is not None:
                self._await_consumed(rank, seg, k - 1)
                seg.close()
                seg.unlink()
            self._slots[rank] = seg, slot = new, slot
        return seg, slot

    def _await_consumed(self, rank, seg, k) -> None:
        """Wait until worker ``rank`` has read shard number ``k`` (it writes the number into the segment's header
        once that step's call returns: its upload is done by then). The pipeline normally has it so already."""
        consumed, t0, last = np.ndarray((1,), np.int64, seg.buf, 0), time.monotonic(), 0.0
        try:
            while consumed[0] < k:
                now = time.monotonic()
                if now - t0 > SPIN_S:
                    time.sleep(1e-4)
                    if now - last > CHECK_S:
                        last = now
                        self._check_workers()
            _fence()   # the slot is rewritten after the worker's reads of it
        finally:
            del consumed   # a view of the segment would keep it from closing

    def _send(self, msg: tuple, ranks=None) -> None:
        for rank, (proc, conn) in enumerate(self._workers, 1):
            if ranks is not None and rank not in ranks:
                continue
            try:
                conn.send(msg)
            except (BrokenPipeError, ConnectionResetError, OSError):
                self._check_workers()
                raise DeviceError(f"device {self.devices[rank]}: its worker process is gone") from None

    def _check_workers(self) -> None:
        """Raise DeviceError naming the device whose worker failed or exited."""
        msg = self._comm.failure()
        if msg:
            raise DeviceError(msg)
        for rank, (proc, _) in enumerate(self._workers, 1):
            code = proc.poll()
            if code is not None:
                raise DeviceError(f"device {self.devices[rank]}: its worker process exited (code {code}; its "
                                  "messages are above)")

    def __repr__(self) -> str:
        return f"DataParallel({','.join(self.devices)}, processes=True, split=" \
               f"{'auto' if self.auto else list(self.fractions)})"


def _pipe() -> tuple[Connection, Connection]:
    import multiprocessing
    return multiprocessing.Pipe(duplex=True)


def _shutdown(workers, comm, slots) -> None:
    for _, conn in workers:
        try:
            conn.send(("close",))
        except Exception:
            pass
    deadline = time.monotonic() + 10
    for proc, conn in workers:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        conn.close()
    workers.clear()
    for seg, _ in slots.values():
        try:
            seg.close()
            seg.unlink()
        except (BufferError, FileNotFoundError):
            pass
    slots.clear()
    comm.close()


# ---- the worker's side ------------------------------------------------------------------------------------
def _consumed(buf, k: int) -> None:
    """Tell the parent that shard number ``k`` has been read (its upload returned): its slot may be rewritten."""
    _fence()
    np.ndarray((1,), np.int64, buf, 0)[0] = k


def _worker(fd: int) -> int:
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C reaches the parent, which stops its workers
    conn = Connection(fd)
    init = conn.recv()
    parent = os.getppid()

    def parent_alive():
        if os.getppid() != parent:
            raise SystemExit(0)

    comm = ShmComm(init["comm"], init["rank"], init["size"], init["capacity"], check=parent_alive)
    device = init["device"]
    try:
        try:
            model = pickle.loads(init["model"])
        except (AttributeError, ImportError) as exc:   # a layer class defined in the user's __main__
            raise ValueError(f"its copy of the model could not be rebuilt here ({exc}); define custom layers in an "
                             "importable module, or pass processes=False (--processes no)") from None
        model = model.to(device)
        model.self_test()
        device = f"{model.device.id} ({model.device.name})"
        group = MPIParallel(model, comm, split=init["split"])
    except Exception as exc:
        comm.fail(f"device {device} failed: {str(exc).strip()}")
        return 1
    segments: dict[str, shared_memory.SharedMemory] = {}
    optimizer = None
    try:
        while True:
            try:
                msg = conn.recv()
            except EOFError:   # the parent is gone
                return 0
            op = msg[0]
            if op == "close":
                return 0
            if op in ("step", "grads"):
                _, name, base, count, shape, n, sync, spec, k = msg
                if name not in segments:
                    for old in segments.values():
                        try:
                            old.close()
                        except BufferError:   # a view of it still alive: the mapping goes at exit
                            pass
                    segments = {name: _attach(name)}
                buf = segments[name].buf
                per_image = int(np.prod(shape)) * 4
                xs = np.ndarray((count, *shape), np.float32, buf, base)
                ys = np.ndarray((count,), np.int32, buf, base + count * per_image)
                if op == "grads":
                    group.shard_gradients(n, xs, ys)
                    _consumed(buf, k)
                    continue
                if spec is not None:
                    module, qualname, cfg = spec
                    cls = getattr(importlib.import_module(module), qualname)
                    if type(optimizer) is not cls:
                        optimizer = cls(group, **cfg)
                    else:
                        for key, value in cfg.items():
                            setattr(optimizer, key, value)
                group.train_shard(n, xs, ys, optimizer, sync)
                del xs, ys
                _consumed(buf, k)
            elif op == "read_loss":
                group.read_loss(msg[1])
            elif op == "complete":
                group._complete()
            elif op == "state":
                conn.send(group.state_dict())
            elif op == "load":
                group.load_state_dict(msg[1])
    except SystemExit:
        return 0
    except Exception as exc:
        comm.fail(f"device {device} failed: {str(exc).strip()}")
        return 1


if __name__ == "__main__":
    sys.exit(_worker(int(sys.argv[1])))
