"""The training loader: a background thread prepares the next mini-batches (the shuffled slice, augmentation)
while the device computes the current one, through a bounded queue.

    for x, y in batches(split, 64, rng, augment):   # as data.batches, prefetched
        model.train_step(x, y, opt, sync=False)

The batch order is data.batches': one permutation drawn from ``rng`` when iteration starts (on the calling
thread, so the shuffle stream stays where it would be without the thread). The thread stops cleanly when the loop
ends, breaks, or raises (KeyboardInterrupt included); an error in the thread is raised in the loop.
"""
from __future__ import annotations

import queue
import threading
import time

import numpy as np

_DONE = object()


def _produce(split, order, batch_size, start, augment, out: queue.Queue, stop: threading.Event,
             stats: dict) -> None:
    """Thread body: put (x, y) for each slice of ``order`` from step ``start``, then _DONE (or the exception
    raised); gives up when ``stop`` is set. The j-th batch made is the augmentation stream's batch
    ``augment.batches + j`` (the stream is advanced by the consumer). Holds no reference to the Loader (so a
    dropped loader is collected and closes)."""
    def put(item) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    try:
        base = augment.batches if augment is not None else 0
        for j, i in enumerate(range(start * batch_size, len(order), batch_size)):
            if stop.is_set():
                return
            t0 = time.perf_counter()
            idx = order[i:i + batch_size]
            x = augment(split.images, idx, batch=base + j) if augment is not None else split.images[idx]
            stats["produce_seconds"] += time.perf_counter() - t0
            if not put((x, split.labels[idx])):
                return
        put(_DONE)
    except BaseException as exc:  # handed to the consumer, which raises it
        put(exc)


class Loader:
    """An iterator over the (x, y) mini-batches of one pass over ``split``, prepared ``depth`` batches ahead.

    Args:
        split: a data.Split (images float32 (S, C, H, W), labels int32 (S,)).
        batch_size: images per batch (the last may be smaller).
        rng: a numpy Generator shuffling the order (one permutation, drawn now); None: in order.
        augment: a clcnn.augment.Augment or None. The thread draws batch ``augment.batches + j`` of its stream
            for the j-th batch; ``augment.batches`` advances as the loop takes each batch, so its state_dict()
            is always that of the batches consumed (a checkpoint taken mid-epoch resumes exactly).
        depth: batches the thread may have ready (the queue's bound), >= 1.
        order: the permutation to follow instead of drawing one (rng is then unused); start: the first step
            (a resumed epoch skips the steps it has done).
    Shape: x float32 (n, C, H, W), y int32 (n,), n <= batch_size.
    Stats (``stats``): ``wait_seconds``, the time the loop spent waiting for a batch (0 when the thread keeps
    ahead: the device never stalls on the host; ``first_wait_seconds`` of it for the first batch, which nothing
    can overlap), ``produce_seconds`` (the thread's work), ``batches`` (taken by the loop).
    """

    def __init__(self, split, batch_size: int, rng: np.random.Generator | None = None, augment=None,
                 depth: int = 3, order: np.ndarray | None = None, start: int = 0):
        n = len(split)
        if order is None:
            order = rng.permutation(n) if rng is not None else np.arange(n)
        self.order, self.augment = np.asarray(order), augment
        self.stats = {"wait_seconds": 0.0, "first_wait_seconds": 0.0, "produce_seconds": 0.0, "batches": 0}
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, int(depth)))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=_produce, name="clcnn-loader", daemon=True,
                                        args=(split, self.order, int(batch_size), int(start), augment,
                                              self._queue, self._stop, self.stats))
        self._thread.start()
        self._finished = False

    def __iter__(self):
        return self

    def __next__(self):
        if self._finished:
            raise StopIteration
        t0 = time.perf_counter()
        try:
            item = self._queue.get()
        except BaseException:   # KeyboardInterrupt while waiting
            self.close()
            raise
        waited = time.perf_counter() - t0
        self.stats["wait_seconds"] += waited
        if self.stats["batches"] == 0:
            self.stats["first_wait_seconds"] = waited
        if item is _DONE:
            self.close()
            raise StopIteration
        if isinstance(item, BaseException):
            self.close()
            raise item
        self.stats["batches"] += 1
        if self.augment is not None:
            self.augment.batches += 1
        return item

    def close(self) -> None:
        """Stop the thread (it finishes the batch in hand) and wait for it; idempotent."""
        self._finished = True
        self._stop.set()
        while True:   # unblock a put()
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:   # interpreter shutdown: nothing left to join
            pass


def batches(split, batch_size: int, rng: np.random.Generator | None = None, augment=None, depth: int = 3,
            order: np.ndarray | None = None, start: int = 0) -> Loader:
    """data.batches prefetched on a thread, with ``augment`` applied: see Loader."""
    return Loader(split, batch_size, rng, augment, depth, order, start)
