"""The training loop: epochs of shuffled mini-batch SGD, evaluation, metrics.jsonl and an atomic checkpoint
(clcnn.checkpoint) every epoch and every --checkpoint-every steps, from which a run continues exactly.

    clcnn train --dataset fashion-mnist --model lenet5 --epochs 1 --batch-size 64 --lr 0.05 --device cpu --seed 0
    clcnn train --resume runs/20261202-013000 --epochs 3   # after Ctrl-C, a crash, or to train on
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from . import checkpoint, data, io, plots, signals
from .checkpoint import CHECKPOINT, EpochState
from .errors import ConfigError
from .layers import walk
from .models import get_model
from .optim import recipe
from .train_config import TrainConfig
from .trainer import Trainer, evaluate, make_augment, restore_loss


def default_out_dir() -> Path:
    """runs/<local time as YYYYmmdd-HHMMSS>."""
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


def train(cfg: TrainConfig, log=print, show_progress=True, command=None) -> list[dict]:
    """Run ``cfg``: returns the per-epoch metrics (also appended to OUT/metrics.jsonl). ``show_progress``:
    True/"bar", "lines" (plain lines for logs) or False/"off"; ``command``: the command line for run.json.
    With ``cfg.resume`` it continues that run from its checkpoint (see resume_config). Raises
    signals.Interrupted (exit_code 130/143) after saving a checkpoint when SIGINT/SIGTERM stops it."""
    cfg.validate()
    saved = checkpoint.load(Path(cfg.resume) / CHECKPOINT) if cfg.resume else None
    train_set, test_set, info = data.load(cfg.dataset, cfg.data_dir, cfg.limit_train, download=cfg.download,
                                          image_size=cfg.image_size, channels=cfg.channels,
                                          test_fraction=cfg.test_fraction, log=log)
    net = get_model(cfg.model, input_shape=info.input_shape, num_classes=info.num_classes, seed=cfg.seed)
    if cfg.label_smoothing:
        from .losses import with_label_smoothing
        net.loss = with_label_smoothing(net.loss, cfg.label_smoothing)
    identity = checkpoint.dataset_identity(info, train_set, test_set)
    train_set, val_set = data.hold_out(train_set, cfg.val_fraction, cfg.seed) if cfg.val_fraction else (train_set,
                                                                                                         None)
    if saved is not None:
        checkpoint.check_resumable(saved, cfg, net.config(), identity)
    model = net
    devices = cfg.devices()
    lead = True   # the process that prints, writes metrics and saves (rank 0 under MPI)
    from .launch import plan
    how = plan(cfg.parallel, devices)
    if how == "launch":
        raise ConfigError(f"{cfg.device} trains as MPI ranks: start them with the clcnn command (it runs mpiexec) "
                          "or under mpiexec, or pass --parallel threads")
    if how == "ranks":   # one device per rank, gradients summed with Allreduce
        from .distributed import DistributedDataParallel, mpi_world, rank_device
        comm = mpi_world()
        model = DistributedDataParallel(model.to(rank_device(devices, comm)), comm, split=cfg.split)
        lead = comm.rank == 0
        if not lead:
            log, show_progress = (lambda *a, **k: None), False
    elif how == "threads":   # one mini-batch over several devices of this process
        from .parallel import DataParallel
        model = DataParallel(model, devices, split=cfg.split)
    else:
        model = model.to(devices[0])
    mode = {True: "bar", False: "off"}.get(show_progress, show_progress)
    run = _Run(cfg, net, model, train_set, test_set, info, lead, log, mode, saved, identity, command)
    run.val_set = val_set
    return run.fit()


def save_meta(cfg: TrainConfig, net, info: data.DatasetInfo) -> dict:
    """The metadata saved beside the weights: the model spec, the data set's description and normalisation,
    the run's configuration (strings, as safetensors metadata must be)."""
    return {"model": cfg.model, "spec": io.dumps(net.config()), "dataset": cfg.dataset,
            "normalisation": io.dumps({"mean": list(info.mean), "std": list(info.std)}),
            "class_names": io.dumps(info.class_names), "config": io.dumps(asdict(cfg))}


class _Run:
    """One session of a run (``train``'s body): the setup, the epochs, OUT's files and checkpoints, the stop on
    SIGINT/SIGTERM. ``net`` is the Sequential, ``model`` what trains it (itself, or a group); ``saved`` the
    checkpoint to continue (None: a fresh run)."""
    val_set = None   # the held-out validation split (--val-fraction), evaluated each epoch beside the test split

    def __init__(self, cfg, net, model, train_set, test_set, info, lead, log, progress, saved, identity, command):
        self.cfg, self.net, self.model, self.train_set, self.test_set, self.info = cfg, net, model, train_set, \
            test_set, info
        self.lead, self.log, self.identity = lead, log, identity
        model.self_test()   # a device that cannot build or run the kernels fails here, before any work
        model.gradients(train_set.images[:2], train_set.labels[:2])   # compile/build every kernel before timing
        opt = recipe.make_optimizer(model, cfg)
        schedule = recipe.make_schedule(opt, cfg, -(-len(train_set) // cfg.batch_size))   # None: a fixed lr
        self.out = Path(cfg.resume or cfg.out or default_out_dir())
        if lead:
            checkpoint.prepare_out(self.out, resuming=saved is not None)
        # what the checkpoint carries besides the weights: register here anything with state_dict() and
        # load_state_dict() (a schedule, an augmentation stream), before the restore below
        self.registry = checkpoint.Registry()
        self.registry.register("optimizer", opt)
        if schedule is not None:
            self.registry.register("lr_scheduler", schedule)
        for i, layer in enumerate(walk(net.layers)):   # a layer with state of its own (a dropout RNG counter)
            if callable(getattr(layer, "state_dict", None)) and callable(getattr(layer, "load_state_dict", None)):
                self.registry.register(f"layers.{i}", layer)   # i: its place in layers.walk order
        policy = getattr(model, "policy", None)   # a group's split and measured times, where it can carry them
        if callable(getattr(policy, "state_dict", None)) and callable(getattr(policy, "load_state_dict", None)):
            self.registry.register("split", policy)
        self.augment = make_augment(cfg, info)
        if self.augment is not None:   # the augmentation stream: where it stands goes in the checkpoint
            self.registry.register("augment", self.augment)
        self.rng = np.random.default_rng(cfg.seed)   # the shuffle
        self.meta, self.history = save_meta(cfg, net, info), []
        self.state = EpochState(epoch=1, shuffle=self.rng.bit_generator.state)
        if saved is not None:
            self._restore(saved, command)
        elif lead:
            checkpoint.write_run(self.out, asdict(cfg), command)
        self.trainer = Trainer(model, opt, train_set, cfg.batch_size, progress, log, self.save if lead else None,
                               cfg.checkpoint_every)
        self.trainer.schedule = schedule
        self.trainer.augment = self.augment

    def _restore(self, saved: dict, command) -> None:
        """Continue ``saved``: weights, registered state, shuffle, metrics so far, the epoch in progress."""
        self.model.load_state_dict(saved["model"])
        self.registry.load_state_dict(saved["objects"])
        self.history = list(saved["history"])
        self.state = EpochState(**saved["epoch_state"])
        if self.state.epoch > self.cfg.epochs:
            done = self.state.epoch - 1
            raise ConfigError(f"--epochs {self.cfg.epochs}: the run in {self.out} has done {done} epochs already; "
                              f"pass --epochs {done + 1} or more to train on")
        restore_loss(self.model, self.state)
        if self.lead:
            checkpoint.write_metrics(self.out, self.history)   # drops rows written after the checkpoint
            checkpoint.write_run(self.out, asdict(self.cfg), command, resumed=(self.state.epoch, self.state.step))

    def save(self, state: EpochState) -> None:
        """Write OUT/checkpoint.safetensors for the run at ``state`` (atomically; the lead alone)."""
        payload = {"config": asdict(self.cfg), "spec": self.net.config(), "dataset": self.identity,
                   "normalisation": {"mean": list(self.info.mean), "std": list(self.info.std)},
                   "class_names": list(self.info.class_names), "epoch_state": asdict(state),
                   "history": self.history, "model": self.model.state_dict()}
        checkpoint.save(self.out / CHECKPOINT, payload, self.registry)

    def fit(self) -> list[dict]:
        """The epochs from the saved point (or the first) to cfg.epochs; returns the per-epoch metrics."""
        cfg, dev, st = self.cfg, self.model.device, self.state
        info, n = self.info, self.trainer.steps_per_epoch()
        with signals.StopRequest() as stop:   # from here a signal stops the run at a step, with a checkpoint
            self.log(f"training {cfg.model} on {cfg.dataset} ({len(self.train_set)} train / {len(self.test_set)} "
                     f"test images {'x'.join(map(str, info.input_shape))}, {info.num_classes} classes, from "
                     f"{info.dir}) on {dev.id}: {dev.name} -> {self.out}")
            if cfg.resume:
                self.log(f"resuming {self.out} at epoch {st.epoch} step {st.step}/{n}")
            self.trainer.stop = stop
            while self.state.epoch <= cfg.epochs:
                st = self.state
                self.rng.bit_generator.state = st.shuffle
                order = self.rng.permutation(len(self.train_set))   # the epoch's, drawn again on a resume
                if not self.trainer.run_epoch(st, order, desc=f"epoch {st.epoch}/{cfg.epochs}"):
                    self._stopped(stop, st, n)
                self.end_epoch(st)
                self.state = EpochState(epoch=st.epoch + 1, global_step=st.global_step,
                                        shuffle=self.rng.bit_generator.state)
                if self.lead:
                    self.save(self.state)
                if self.state.epoch <= cfg.epochs and stop.requested(self.model):
                    self._stopped(stop, self.state, n)
        return self.history

    def _stopped(self, stop, st: EpochState, n: int):
        """Once every rank is here (the lead's checkpoint written), say where the run stopped and how to resume
        it; raise signals.Interrupted."""
        stop.settle(self.model)
        where = f"after epoch {st.epoch - 1}" if st.step == 0 else f"at epoch {st.epoch} step {st.step}/{n}"
        hint = f"clcnn train --resume {checkpoint.quote(self.out)}"
        ranks = getattr(self.model, "world_size", 1)
        if ranks > 1:   # under MPI: the same launcher, where the user started the ranks
            hint += f" (behind your `mpiexec -n {ranks}` if you started the ranks yourself)"
        self.log(f"stopped by {stop.name()} {where}; checkpoint saved to {self.out / CHECKPOINT}\n"
                 f"resume with: {hint}")
        raise signals.Interrupted(stop.signum, f"stopped by {stop.name()}; resume with: {hint}")

    def end_epoch(self, st: EpochState) -> None:
        """The epoch's metrics: evaluate, log, OUT/metrics.jsonl and OUT/model.safetensors (the lead alone)."""
        if not self.lead:   # the other ranks go straight on to the next epoch's first Allreduce
            return
        cfg, model, dev = self.cfg, self.model, self.model.device
        train_loss, seconds = st.loss_sum / max(st.seen, 1), st.seconds
        ips = st.seen / seconds if seconds > 0 else 0.0
        test_loss, test_acc = evaluate(model, self.test_set, self.net.loss)
        val = {} if self.val_set is None else dict(zip(("val_loss", "val_accuracy"),
                                                       evaluate(model, self.val_set, self.net.loss)))
        row = {"epoch": st.epoch, "train_loss": train_loss, **val, "test_loss": test_loss, "test_accuracy": test_acc,
               "images_per_second": ips, "seconds": seconds, "device": dev.id, "device_name": dev.name}
        if hasattr(model, "split"):   # data-parallel: each device's share and measured time per image
            row["split"] = model.split()
        self.history.append(row)
        self.log(f"epoch {st.epoch}/{cfg.epochs}  train loss {train_loss:.4f}  "
                 + (f"val loss {val['val_loss']:.4f}  val acc {val['val_accuracy']:.4f}  " if val else "")
                 + f"test loss {test_loss:.4f}  "
                 f"test acc {test_acc:.4f}  {ips:,.0f} img/s  {seconds:.1f} s")
        if not np.isfinite(train_loss):
            self.log(f"warning: the training loss is {train_loss} (the run diverged): try a smaller --lr")
        if "split" in row:
            self.log("  split: " + ", ".join(f"{d} {v['fraction']:.2f}" + ("" if v["active"] else " (left out)")
                                             for d, v in row["split"].items()))
        io.append_jsonl(self.out / "metrics.jsonl", row)
        io.save_safetensors(self.out / "model.safetensors", model.state_dict(), self.meta)
        plots.after_epoch(self.out, title=f"{cfg.model} on {cfg.dataset}")   # OUT/curves.png, atomically
