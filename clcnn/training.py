"""The training loop: epochs of shuffled mini-batch SGD, evaluation, metrics.jsonl and an atomic checkpoint
(clcnn.checkpoint) every epoch and every --checkpoint-every steps, from which a run continues exactly.

    clcnn train --dataset fashion-mnist --model lenet5 --epochs 1 --batch-size 64 --lr 0.05 --device cpu --seed 0
    clcnn train --resume runs/20261202-013000 --epochs 3   # after Ctrl-C, a crash, or to train on
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import checkpoint, data, io, loader, plots
from .checkpoint import CHECKPOINT, EpochState
from .errors import ConfigError
from .layers import walk
from .progress import Progress
from .models import get_model
from .optim import recipe

LOSS_READ_EVERY = 20  # steps between reads of the device-side loss accumulator (the only per-step sync)


@dataclass
class TrainConfig:
    """Everything one training run depends on (the CLI fills it from its flags)."""
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    model: str = "fashion"   # a preset (clcnn.models.PRESETS), a spec string or a JSON file
    device: str = "auto"
    epochs: int = 1
    batch_size: int = 64
    lr: float | None = None   # None: the optimizer's default (optim.recipe.DEFAULT_LR)
    momentum: float = 0.0
    weight_decay: float | None = None   # None: the optimizer's default (0; adamw: 1e-2)
    optimizer: str = "sgd"   # sgd | adam | adamw
    nesterov: bool = False
    betas: str = "0.9,0.999"   # adam/adamw: beta1,beta2
    eps: float = 1e-8   # adam/adamw
    lr_schedule: str = "none"   # none | step | cosine | onecycle, stepped every optimizer step
    lr_step_size: float = 1.0   # step: epochs between decays
    lr_gamma: float = 0.1   # step: the decay factor
    lr_min: float = 0.0   # cosine: eta_min
    warmup_epochs: float = 0.0   # a linear warm-up (LinearLR) before the schedule
    warmup_start_factor: float = 1.0 / 3   # the warm-up's first lr, as a fraction of --lr (LinearLR's default)
    label_smoothing: float = 0.0   # cross-entropy label smoothing, as torch.nn.CrossEntropyLoss
    seed: int = 0
    limit_train: int | None = None
    out: str | None = None
    split: str = "auto"   # with several comma-separated devices: "auto" or one fraction per device (or rank)
    parallel: str = "auto"   # with several devices: "threads" (one process), "mpi" (ranks) or "auto" (clcnn.launch)
    checkpoint_every: int | None = None   # steps between mid-epoch checkpoints (one is written every epoch anyway)
    resume: str | None = None   # a run folder to continue (clcnn.checkpoint.resume_config gives its settings)
    augment: str = ""   # --augment crop[:padding],flip[:p],erase[:p] (clcnn.augment); "" or "none": none
    download: bool = True   # fetch a known data set's official files when they are nowhere to be found
    val_fraction: float = 0.0   # share of the training images held out (seeded) as a validation split; 0: none
    test_fraction: float = 0.1   # folder:PATH without test/: the share cut as the test split
    image_size: str | None = None   # folder:PATH: "HxW" every image is resized to (default: the first image's)
    channels: int | None = None   # folder:PATH: 1 or 3 (default: the first image's)

    def validate(self) -> None:
        """Raise ConfigError naming the first bad setting."""
        for flag, v in (("--epochs", self.epochs), ("--batch-size", self.batch_size), ("--seed", self.seed),
                        ("--limit-train", self.limit_train), ("--checkpoint-every", self.checkpoint_every)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer))):
                raise ConfigError(f"{flag} must be a whole number (got {v!r})")   # 2.5 epochs, "64" from a file
        if self.epochs < 1:
            raise ConfigError(f"--epochs must be at least 1 (got {self.epochs})")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be positive (got {self.batch_size})")
        recipe.fill_defaults(self)
        if not 0 < self.lr < math.inf:
            raise ConfigError(f"--lr must be positive and finite (got {self.lr})")
        if not 0 <= self.momentum < math.inf:
            raise ConfigError(f"--momentum must be non-negative and finite (got {self.momentum})")
        if not 0 <= self.weight_decay < math.inf:
            raise ConfigError(f"--weight-decay must be non-negative and finite (got {self.weight_decay})")
        recipe.check_options(self)   # --optimizer, --betas, --eps, --lr-schedule and its flags, --label-smoothing
        if self.limit_train is not None and self.limit_train < 1:
            raise ConfigError(f"--limit-train must be positive (got {self.limit_train})")
        if self.seed < 0:
            raise ConfigError(f"--seed must be a non-negative integer (got {self.seed})")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"--val-fraction must be at least 0 and below 1 (got {self.val_fraction})")
        if not 0 < self.test_fraction < 1:
            raise ConfigError(f"--test-fraction must be between 0 and 1, both excluded (got {self.test_fraction})")
        if self.channels not in (None, 1, 3):
            raise ConfigError(f"--channels must be 1 or 3 (got {self.channels})")
        data.folder.parse_size(self.image_size)   # ConfigError naming --image-size
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise ConfigError(f"--checkpoint-every must be a positive number of steps (got {self.checkpoint_every})")
        from .augment import parse_augment
        parse_augment(self.augment)   # ConfigError naming the bad --augment item
        if len(self.devices()) == 1 and str(self.split).strip().lower() != "auto":
            raise ConfigError(f"--split {self.split} needs several devices (--device a,b); one device takes "
                              "every image")
        from .launch import plan, world_size
        from .split import parse_split
        plan(self.parallel, self.devices())   # ConfigError for a bad --parallel
        if world_size() is None:   # under MPI: one fraction per rank, checked by the group
            parse_split(self.split, len(self.devices()))

    def devices(self) -> list[str]:
        """The device ids of --device (one, or several comma-separated for data-parallel training)."""
        return [d.strip() for d in str(self.device).split(",") if d.strip()] or ["auto"]


def evaluate(model, split: data.Split, loss, batch_size: int = 1000) -> tuple[float, float]:
    """(mean loss, accuracy) of ``model`` on ``split`` with ``loss`` (the model's own Loss object), on the host
    in float64 from the model's logits."""
    return loss.evaluate(model.predict(split.images, batch_size), split.labels)


def epoch_batches(split: data.Split, order: np.ndarray, batch_size: int, start: int = 0):
    """Yield the (x, y) mini-batches of one epoch in ``order`` (a permutation of the split), from step ``start``
    (a resumed epoch skips the steps it has done without touching their images)."""
    for i in range(start * batch_size, len(order), batch_size):
        idx = order[i:i + batch_size]
        yield split.images[idx], split.labels[idx]


def train_epoch(model, opt, split, batch_size, rng, show_progress=True, desc="") -> tuple[float, float, float]:
    """One shuffled pass; returns (train loss, images/s, seconds). The loss is the mean over the images of the
    epoch (each step's batch-mean loss weighted by its batch size: a short last batch weighs what its images do);
    images/s counts the images the steps processed."""
    state = EpochState(epoch=1, shuffle=rng.bit_generator.state)
    order = rng.permutation(len(split))
    loop = Trainer(model, opt, split, batch_size, progress="bar" if show_progress else "off")
    loop.run_epoch(state, order, desc)
    return state.loss_sum / max(state.seen, 1), state.seen / state.seconds, state.seconds


def _restore_loss(model, state: EpochState) -> None:
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
        stop: a checkpoint.StopRequest (None: signals are not watched here).
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


def default_out_dir() -> Path:
    """runs/<local time as YYYYmmdd-HHMMSS>."""
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


RESUME_MAY_CHANGE = ("epochs", "device", "split", "parallel", "checkpoint_every", "data_dir", "download", "resume",
                     "out")


def resume_config(cfg: TrainConfig, given=()) -> TrainConfig:
    """The configuration ``--resume DIR`` continues: the run's own (saved in its checkpoint), with the options
    in ``given`` (the flags typed now) taken from ``cfg`` where a resume may change them (RESUME_MAY_CHANGE).
    ConfigError for a missing DIR, a typed flag that would change the run (--lr, --model, ...), or --out
    naming another folder; DataError for a missing, truncated or corrupted checkpoint."""
    folder = Path(cfg.resume)
    if not folder.is_dir():
        raise ConfigError(f"--resume {folder}: no such run folder")
    saved = checkpoint.load(folder / CHECKPOINT)["config"]
    fields = TrainConfig.__dataclass_fields__
    merged = TrainConfig(**{k: v for k, v in saved.items() if k in fields})
    for name in given:
        now, then = getattr(cfg, name), getattr(merged, name, None)
        if name == "out" and now is not None and Path(now).resolve() != folder.resolve():
            raise ConfigError(f"--out {now}: a resumed run writes to its own folder ({folder}); drop --out")
        if name in RESUME_MAY_CHANGE:
            setattr(merged, name, now)
        elif now != then:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} {now}: the run in {folder} has {flag} {then}, and a resume continues "
                              "its own settings (drop the flag, or start a new run with another --out)")
    merged.resume, merged.out = str(folder), str(folder)
    return merged


def train(cfg: TrainConfig, log=print, show_progress=True, command=None) -> list[dict]:
    """Run ``cfg``: returns the per-epoch metrics (also appended to OUT/metrics.jsonl). ``show_progress``:
    True/"bar", "lines" (plain lines for logs) or False/"off"; ``command``: the command line for run.json.
    With ``cfg.resume`` it continues that run from its checkpoint (see resume_config). Raises
    checkpoint.Interrupted (exit_code 130/143) after saving a checkpoint when SIGINT/SIGTERM stops it."""
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
        _restore_loss(self.model, self.state)
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
        with checkpoint.StopRequest() as stop:   # from here a signal stops the run at a step, with a checkpoint
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
        """Say where the run stopped and how to resume it; raise checkpoint.Interrupted."""
        where = f"after epoch {st.epoch - 1}" if st.step == 0 else f"at epoch {st.epoch} step {st.step}/{n}"
        hint = f"clcnn train --resume {checkpoint.quote(self.out)}"
        ranks = getattr(self.model, "world_size", 1)
        if ranks > 1:   # under MPI: the same launcher, where the user started the ranks
            hint += f" (behind your `mpiexec -n {ranks}` if you started the ranks yourself)"
        self.log(f"stopped by {stop.name()} {where}; checkpoint saved to {self.out / CHECKPOINT}\n"
                 f"resume with: {hint}")
        raise checkpoint.Interrupted(stop.signum, f"stopped by {stop.name()}; resume with: {hint}")

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
        if "split" in row:
            self.log("  split: " + ", ".join(f"{d} {v['fraction']:.2f}" + ("" if v["active"] else " (left out)")
                                             for d, v in row["split"].items()))
        io.append_jsonl(self.out / "metrics.jsonl", row)
        io.save_safetensors(self.out / "model.safetensors", model.state_dict(), self.meta)
        plots.after_epoch(self.out, title=f"{cfg.model} on {cfg.dataset}")   # OUT/curves.png, atomically
