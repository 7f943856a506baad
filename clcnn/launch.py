"""Which way a run goes data-parallel (--parallel), and starting its MPI ranks when the user did not.

``clcnn train --device cl:0,cl:1`` on one host re-runs itself as ``mpiexec -n 2 <python> -m clcnn train ...`` with
the ``mpiexec`` beside the interpreter (the MPICH wheels of ``pip install 'clcnn[mpi]'``; $CLCNN_MPIEXEC names
another); each rank finds itself in the MPI environment and takes its own device (clcnn.distributed). Under the
user's own ``mpiexec`` (many hosts) the ranks just run.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from .errors import ConfigError

PARALLEL = ("auto", "threads", "mpi")
WORLD_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")   # MPICH/Intel, Open MPI, MVAPICH
INSTALL = "pip install 'clcnn[mpi]' (mpi4py and MPICH's mpiexec, no system MPI needed), or --parallel threads"
_NOISE = re.compile(rb"^(Abort\(\d+\) on node \d+|application called MPI_Abort)")   # MPICH's own line per rank


def world_size() -> int | None:
    """The number of MPI ranks this process was started among (from the launcher's environment), or None."""
    for var in WORLD_SIZE_VARS:
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return None


def plan(parallel: str, devices: list[str]) -> str:
    """How ``devices`` (ids) train: "one" (a single device), "threads" (DataParallel in this process),
    "ranks" (this process is an MPI rank: DistributedDataParallel) or "launch" (start one rank per device).

    ``parallel``: "threads"; "mpi"; or "auto": ranks under an MPI launcher, else ranks when every device is an
    OpenCL GPU (one thread driving several GPUs is host-bound: docs/PERFORMANCE.md), else threads.
    ConfigError for an unknown value or threads inside a world of several ranks."""
    if parallel not in PARALLEL:
        raise ConfigError(f"--parallel must be one of {', '.join(PARALLEL)} (got {parallel!r})")
    size = world_size()
    if size is not None and parallel != "threads":
        return "ranks"
    if size is not None and size > 1:
        raise ConfigError(f"--parallel threads inside {size} MPI ranks: give each rank one device instead")
    if len(devices) == 1:
        return "one"
    if parallel == "auto":
        from .backends import resolve_device
        gpus = all(resolve_device(d).backend == "opencl" and resolve_device(d).type == "gpu" for d in devices)
        return "launch" if gpus else "threads"
    return "launch" if parallel == "mpi" else "threads"


def mpiexec() -> str:
    """$CLCNN_MPIEXEC, else the mpiexec beside this interpreter (the MPICH wheels), else the first on PATH;
    ConfigError saying how to install one when there is none, or when mpi4py is missing."""
    try:
        import mpi4py  # noqa: F401  (the package alone: MPI itself starts only in the ranks)
    except ImportError as exc:
        raise ConfigError(f"MPI ranks need mpi4py ({exc}): {INSTALL}") from None
    named = os.environ.get("CLCNN_MPIEXEC")
    found = named if named else str(Path(sys.executable).with_name("mpiexec"))
    if not named and not os.access(found, os.X_OK):
        found = shutil.which("mpiexec") or found
    if not os.access(found, os.X_OK):
        raise ConfigError(f"MPI ranks need mpiexec, and {found} is not there: {INSTALL}")
    return found


def command_args(ctx) -> list[str]:
    """The arguments that run the click command of context ``ctx`` again with the same values (its command
    names below the root, then every option that has a value), whether it came from sys.argv or not."""
    names, c = [], ctx
    while c.parent is not None:
        names.insert(0, c.info_name)
        c = c.parent
    for p in ctx.command.params:
        value = ctx.params.get(p.name)
        if getattr(p, "is_flag", False):
            names += [p.opts[0]] if value else []
        elif value is not None:
            names += [p.opts[0], str(value)]
    return names


def launch(args: list[str], world_size: int) -> int:
    """Run ``python -m clcnn <args>`` as ``world_size`` MPI ranks and wait; returns mpiexec's exit status.
    The ranks' stderr comes through with each "clcnn: error:" line once and without MPICH's abort notes; each
    rank gets an equal part of the CPU cores for Numba unless $NUMBA_NUM_THREADS says otherwise."""
    env = dict(os.environ)
    env.setdefault("NUMBA_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // world_size)))
    if sys.stderr.isatty():
        env["CLCNN_PROGRESS"] = "1"   # rank 0's stderr is a pipe, but it ends on this terminal
    cmd = [mpiexec(), "-n", str(world_size), sys.executable, "-m", "clcnn", *args]
    try:
        proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
    except OSError as exc:
        raise ConfigError(f"cannot start {cmd[0]}: {exc.strerror or exc}: {INSTALL}") from None
    with proc:
        try:
            _relay(proc.stderr.fileno(), sys.stderr)
        except KeyboardInterrupt:   # the ranks got the same Ctrl-C; let them stop
            pass
        return proc.wait()


def _relay(fd: int, out) -> None:
    """Copy ``fd`` to ``out`` until it closes, piece by piece (a progress bar's \\r updates as they come), each
    error line once, MPICH's abort notes left out."""
    seen, rest = set(), b""
    while chunk := os.read(fd, 1 << 16):
        *pieces, rest = re.split(rb"(?<=[\r\n])", rest + chunk)
        for piece in pieces:
            if _NOISE.match(piece) or piece in seen:
                continue
            if piece.startswith(b"clcnn: error:"):
                seen.add(piece)
            out.buffer.write(piece) if hasattr(out, "buffer") else out.write(piece.decode(errors="replace"))
            out.flush()
    if rest:
        out.write(rest.decode(errors="replace"))


def exit_process(code: int) -> None:
    """Exit with ``code``. An MPI rank among several leaves at once (no MPI_Finalize, which would wait for the
    others): the launcher then stops every rank and returns the code."""
    sys.stdout.flush()
    sys.stderr.flush()
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized() and mpi.COMM_WORLD.size > 1:
        os._exit(code)
    sys.exit(code)
