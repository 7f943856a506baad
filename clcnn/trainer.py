"""The steps of an epoch: the prefetching loader, the step, the schedule, the per-image loss total read from the
device every LOSS_READ_EVERY steps, the progress display, mid-epoch checkpoints and the stop on a signal."""
from __future__ import annotations

import time

import numpy as np

from . import data, loader
from .checkpoint import EpochState
from .progress import Progress
from .train_config import TrainConfig

LOSS_READ_EVERY = 20  # steps between reads of the device-side loss accumulator (the only per-step sync)


def evaluate(model, split: data.Split, loss, batch_size: int = 1000) -> tuple[float, float]:
    """(mean loss, accuracy) of ``model`` on ``split`` with ``loss`` (the model's own Loss object), on the host
    in float64 from the model's logits."""
    return loss.evaluate(model.predict(split.images, batch_size), split.labels)


def train_epoch(model, opt, split, batch_size, rng, show_progress=True, desc="") -> tuple[float, float, float]:
    """One shuffled pass; returns (train loss, images/s, seconds). The loss is the mean over the images of the
    epoch (each step's batch-mean loss weighted by its batch size: a short last batch weighs what its images do);
    images/s counts the images the steps processed."""
    state = EpochState(epoch=1, shuffle=rng.bit_generator.state)
    order = rng.permutation(len(split))
    loop = Trainer(model, opt, split, batch_size, progress="bar" if show_progress else "off")
    loop.run_epoch(state, order, desc)
    return state.loss_sum / max(state.seen, 1), state.seen / state.seconds, state.seconds


def restore_loss(model, state: EpochState) -> None:
    """Put a checkpoint's device loss total back: exactly on a Sequential (``set_loss``); a group's total is
    folded into the host sum instead (the same value to float32 rounding)."""
    if state.pending and hasattr(model, "set_loss"):
        model.set_loss(state.pending_loss)
    elif state.pending:
        state.loss_sum, state.pending = state.loss_sum + state.pending_loss * state.size, 0


def make_augment(cfg: TrainConfig, info):
    """The run's clcnn.augment.Augment (None without --augment): seeded with --seed, padding with the
    normalised value of a black pixel (-mean/std per channel)."""
    from .augment import Augment, parse_augment
    spec = parse_augment(cfg.augment)
    if not spec.active:
        return None
    return Augment(spec, cfg.seed, fill=[-m / s for m, s in zip(info.mean, info.std)])


class Trainer:
    """The steps of a run's epochs, with the checkpoints and the stop on a signal (clcnn.checkpoint).

    Args:
        model: what trains (a Sequential or a group); opt: its optimizer; split: the training data.
        progress: "bar", "lines" or "off" (clcnn.progress); log: where lines go.
        save: ``save(state)`` writes a checkpoint of the run at EpochState ``state`` (None: never).
        checkpoint_every: steps between mid-epoch checkpoints (None: at epoch ends only).
        stop: a signals.StopRequest (None: signals are not watched here).
    """

    augment = None   # a clcnn.augment.Augment applied to every batch on the loader's thread (set by _Run)

    def __init__(self, model, opt, split, batch_size, progress="bar", log=print, save=None, checkpoint_every=None,
                 stop=None):
        self.model, self.opt, self.split, self.batch_size = model, opt, split, batch_size
        self.progress, self.log, self.save, self.every, self.stop = progress, log, save, checkpoint_every, stop
        self.schedule = None   # an optim.lr_scheduler schedule stepped after every step, or None

    def steps_per_epoch(self) -> int:
        """Steps in one epoch: ceil(training images / batch size)."""
        return -(-len(self.split) // self.batch_size)

    def run_epoch(self, state: EpochState, order: np.ndarray, desc: str = "") -> bool:
        """Train ``state.epoch`` from ``state.step`` on (updating ``state``); the loss total is read out at
        fixed steps of the epoch, whatever the checkpoints. Returns False when a stop signal came mid-epoch (a
        checkpoint of it is saved then), True when the epoch is done."""
        model, total = self.model, self.steps_per_epoch()
        bar = Progress(total, state.step, desc, self.progress, self.log)
        t0 = time.perf_counter() - state.seconds
        try:
            batches = loader.batches(self.split, self.batch_size, augment=self.augment, order=order,
                                     start=state.step)   # prepared (and augmented) on a thread
            self.loader_stats = batches.stats   # its wait (the device idle for the host) and work, in seconds
            for x, y in batches:
                if state.pending and len(y) != state.size:   # the device total sums batch means: read it out
                    state.loss_sum, state.pending = state.loss_sum + model.read_loss() * state.size, 0
                model.train_step(x, y, self.opt, sync=False)
                if self.schedule is not None:   # the next step's learning rate (PyTorch's per-batch schedule)
                    self.schedule.step()
                state.step, state.seen, state.global_step = state.step + 1, state.seen + len(y), state.global_step + 1
                state.pending, state.size = state.pending + 1, len(y)
                bar.update(1, len(y))
                if state.pending == LOSS_READ_EVERY:
                    chunk = model.read_loss()
                    state.loss_sum, state.pending = state.loss_sum + chunk * state.size, 0
                    bar.set_loss(chunk / LOSS_READ_EVERY)
                if state.step == total:
                    break
                stopping = self.stop is not None and self.stop.requested(model)
                if stopping or (self.every and state.global_step % self.every == 0):
                    state.seconds = time.perf_counter() - t0
                    state.pending_loss = model.read_loss(reset=False)   # every rank: a collective read
                    if self.save is not None:
                        self.save(state)
                    if stopping:
                        return False
            state.loss_sum += model.read_loss() * state.size
            state.pending, state.pending_loss, state.seconds = 0, 0.0, time.perf_counter() - t0
            return True
        finally:
            bar.close()
