"""Stopping a run by signal: StopRequest turns SIGINT/SIGTERM into a request the training loop checks at each step
boundary (it then saves a checkpoint and raises Interrupted, whose exit code is 128 + the signal)."""
from __future__ import annotations

import signal
import threading


class Interrupted(Exception):
    """The run stopped on SIGINT or SIGTERM after saving its checkpoint; ``exit_code`` is 128 + the signal
    (130, 143), the shell's convention. (Not a KeyboardInterrupt: click would turn that into its "Aborted!".)"""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum, self.exit_code = signum, 128 + int(signum)


class StopRequest:
    """While entered, SIGINT and SIGTERM ask the training loop to stop at the next step boundary (it then
    saves a checkpoint); a second signal stops at once (KeyboardInterrupt). Off the main thread, where Python
    cannot take signals, it watches nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum, self._old = 0, {}

    def _handle(self, signum, frame):
        if self.signum:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old = {}

    def name(self) -> str:
        """"SIGINT" / "SIGTERM" (or "" before any signal)."""
        return signal.Signals(self.signum).name if self.signum else ""

    def requested(self, model=None) -> bool:
        """Whether a signal came. Under MPI ranks (``model.comm``) every rank answers alike: one Allreduce."""
        comm = getattr(model, "comm", None)
        if comm is not None and comm.size > 1:
            from mpi4py import MPI
            self.signum = comm.allreduce(self.signum, op=MPI.MAX)
        return bool(self.signum)

    def settle(self, model=None) -> None:
        """Under MPI ranks (``model.comm``), wait until every rank is here, so the lead's checkpoint is written
        before any rank exits: a launcher (mpiexec) ends every rank once one of them exits non-zero."""
        comm = getattr(model, "comm", None)
        if comm is not None and comm.size > 1:
            comm.Barrier()
