"""Recorded steps: a step's kernels recorded once and replayed with their arguments already set.

A step (or a data-parallel shard) is run plainly the first time a key is seen (its buffers get allocated and its
kernels built), recorded the second time (``Backend.capture``), and replayed after that (``Backend.replay``) as
long as it reads the same input arrays. Only what is fixed at recording time may differ between keys: shapes, the
train/eval mode, the optimizer object and its structure. Values that change every step (the learning rate) live
in device buffers that the replay reads, so they do not make new recordings.
"""
from __future__ import annotations


class StepCache:
    """Recorded sequences of one backend, by key; at most ``capacity`` at a time (cleared when full).

    Attributes:
        recordings: how many sequences have been recorded so far (tests count them).
    """

    def __init__(self, backend, capacity: int = 8):
        self.backend, self.capacity, self.recordings = backend, capacity, 0
        self._graphs: dict = {}   # key -> None (seen once, or the backend records nothing) or (inputs, recording)

    def run(self, key, inputs: tuple, fn, enabled: bool = True) -> bool:
        """Run ``fn()`` (which enqueues the step reading the device arrays ``inputs``), or replay its recording;
        ``enabled=False`` runs it plainly (no recording, no replay). Returns True when it replayed (the host code
        in ``fn`` did not run)."""
        if not enabled:
            fn()
            return False
        entry = self._graphs.get(key)
        if entry is not None and all(a is b for a, b in zip(entry[0], inputs)):
            self.backend.replay(entry[1])
            return True
        elif key in self._graphs:   # seen once: its buffers exist; record it now
            with self.backend.capture() as recorded:
                fn()
            if len(self._graphs) >= self.capacity:
                self._graphs.clear()
            if recorded is not None:
                self.recordings += 1
            self._graphs[key] = None if recorded is None else (inputs, recorded)
        else:
            fn()
            self._graphs[key] = None
        return False

    def recorded(self) -> list:
        """The recordings held now (a profiler replays one)."""
        return [entry[1] for entry in self._graphs.values() if entry is not None]

    def clear(self) -> None:
        """Forget every recording (the next run of each key runs plainly again)."""
        self._graphs.clear()
