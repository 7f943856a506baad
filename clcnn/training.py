"""The training loop: epochs of shuffled mini-batch SGD, evaluation, metrics.jsonl and an atomic checkpoint.

    clcnn train --dataset fashion-mnist --model lenet5 --epochs 1 --batch-size 64 --lr 0.05 --device cpu --seed 0
"""
from __future__ import annotations

import math
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import data, io
from .errors import ConfigError
from .models import get_model
from .optim import SGD

LOSS_READ_EVERY = 20  # steps between reads of the device-side loss accumulator (the only per-step sync)


@dataclass
class TrainConfig:
    """Everything one training run depends on (the CLI fills it from its flags)."""
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    model: str = "lenet5"
    device: str = "auto"
    epochs: int = 1
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.0
    weight_decay: float = 0.0
    seed: int = 0
    limit_train: int | None = None
    out: str | None = None
    split: str = "auto"   # with several comma-separated devices: "auto" or one fraction per device (or rank)
    parallel: str = "auto"   # with several devices: "threads" (one process), "mpi" (ranks) or "auto" (clcnn.launch)

    def validate(self) -> None:
        """Raise ConfigError naming the first bad setting."""
        if self.epochs < 1:
            raise ConfigError(f"--epochs must be at least 1 (got {self.epochs})")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be positive (got {self.batch_size})")
        if not 0 < self.lr < math.inf:
            raise ConfigError(f"--lr must be positive and finite (got {self.lr})")
        if not 0 <= self.momentum < math.inf:
            raise ConfigError(f"--momentum must be non-negative and finite (got {self.momentum})")
        if not 0 <= self.weight_decay < math.inf:
            raise ConfigError(f"--weight-decay must be non-negative and finite (got {self.weight_decay})")
        if self.limit_train is not None and self.limit_train < 1:
            raise ConfigError(f"--limit-train must be positive (got {self.limit_train})")
        if self.seed < 0:
            raise ConfigError(f"--seed must be a non-negative integer (got {self.seed})")
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


def _progress(total, desc, enabled):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="img", unit_scale=True, leave=False, dynamic_ncols=True)


def train_epoch(model, opt, split, batch_size, rng, show_progress=True, desc="") -> tuple[float, float, float]:
    """One shuffled pass; returns (train loss, images/s, seconds). The loss is the mean over the images of the
    epoch (each step's batch-mean loss weighted by its batch size: a short last batch weighs what its images do);
    images/s counts the images the steps processed."""
    bar = _progress(len(split), desc, show_progress)
    t0, seen, loss_sum, pending, size = time.perf_counter(), 0, 0.0, 0, 0
    for x, y in data.batches(split, batch_size, rng):
        if pending and len(y) != size:   # the device total sums batch means: read it out when the size changes
            loss_sum, pending = loss_sum + model.read_loss() * size, 0
        model.train_step(x, y, opt, sync=False)
        seen, pending, size = seen + len(y), pending + 1, len(y)
        if bar is not None:
            bar.update(len(y))
        if pending == LOSS_READ_EVERY:
            chunk = model.read_loss()
            loss_sum, pending = loss_sum + chunk * size, 0
            if bar is not None:
                bar.set_postfix(loss=f"{chunk / LOSS_READ_EVERY:.4f}")   # the bar itself shows img/s
    loss_sum += model.read_loss() * size
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    return loss_sum / max(seen, 1), seen / seconds, seconds


def default_out_dir() -> Path:
    """runs/<local time as YYYYmmdd-HHMMSS>."""
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


def train(cfg: TrainConfig, log=print, show_progress=True) -> list[dict]:
    """Run ``cfg``: returns the per-epoch metrics (also appended to OUT/metrics.jsonl)."""
    cfg.validate()
    train_set, test_set, info = data.load(cfg.dataset, cfg.data_dir, cfg.limit_train)
    net = get_model(cfg.model, input_shape=info.input_shape, num_classes=info.num_classes, seed=cfg.seed)
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
    return _train(cfg, net, model, train_set, test_set, info, lead, log, show_progress)


def save_meta(cfg: TrainConfig, net, info: data.DatasetInfo) -> dict:
    """The metadata saved beside the weights: the model spec, the data set's description and normalisation,
    the run's configuration (strings, as safetensors metadata must be)."""
    return {"model": cfg.model, "spec": io.dumps(net.config()), "dataset": cfg.dataset,
            "normalisation": io.dumps({"mean": list(info.mean), "std": list(info.std)}),
            "class_names": io.dumps(info.class_names), "config": io.dumps(asdict(cfg))}


def _train(cfg, net, model, train_set, test_set, info, lead, log, show_progress) -> list[dict]:
    """The epochs of ``train``: ``net`` is the Sequential, ``model`` what trains it (itself, or a group)."""
    model.self_test()   # a device that cannot build or run the kernels fails here, before any work
    model.gradients(train_set.images[:2], train_set.labels[:2])   # compile/build every kernel before timing
    opt = SGD(model, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    out = Path(cfg.out) if cfg.out else default_out_dir()
    if lead:
        try:
            out.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=out).close()   # writable: fail now, not after the first epoch
        except OSError as exc:
            raise ConfigError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
    dev = model.device
    log(f"training {cfg.model} on {cfg.dataset} ({len(train_set)} train / {len(test_set)} test images "
        f"{'x'.join(map(str, info.input_shape))}, {info.num_classes} classes, from {info.dir}) on {dev.id}: "
        f"{dev.name} -> {out}")
    rng = np.random.default_rng(cfg.seed)
    meta, history = save_meta(cfg, net, info), []
    for epoch in range(1, cfg.epochs + 1):
        train_loss, ips, seconds = train_epoch(model, opt, train_set, cfg.batch_size, rng, show_progress,
                                               desc=f"epoch {epoch}/{cfg.epochs}")
        if not lead:   # the other ranks go straight on to the next epoch's first Allreduce
            continue
        test_loss, test_acc = evaluate(model, test_set, net.loss)
        row = {"epoch": epoch, "train_loss": train_loss, "test_loss": test_loss, "test_accuracy": test_acc,
               "images_per_second": ips, "seconds": seconds, "device": dev.id, "device_name": dev.name}
        if hasattr(model, "split"):   # data-parallel: each device's share and measured time per image
            row["split"] = model.split()
        history.append(row)
        log(f"epoch {epoch}/{cfg.epochs}  train loss {train_loss:.4f}  test loss {test_loss:.4f}  "
            f"test acc {test_acc:.4f}  {ips:,.0f} img/s  {seconds:.1f} s")
        if "split" in row:
            log("  split: " + ", ".join(f"{d} {v['fraction']:.2f}" + ("" if v["active"] else " (left out)")
                                        for d, v in row["split"].items()))
        io.append_jsonl(out / "metrics.jsonl", row)
        io.save_safetensors(out / "model.safetensors", model.state_dict(), meta)
    return history
