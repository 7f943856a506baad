"""The configuration of a training run: every setting `clcnn train` takes, its range checks, and what a resume
may change."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import checkpoint, data
from .checkpoint import CHECKPOINT
from .errors import ConfigError
from .optim import recipe


FLOAT32_MAX = float(np.finfo(np.float32).max)   # 3.4028e38: the largest hyper-parameter the device can hold


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
        if not 0 < self.lr <= FLOAT32_MAX:   # the hyper-parameters are float32 on the device
            raise ConfigError(f"--lr must be positive and at most {FLOAT32_MAX:.4g} (float32) (got {self.lr})")
        if not 0 <= self.momentum <= FLOAT32_MAX:
            raise ConfigError(f"--momentum must be non-negative and finite in float32 (got {self.momentum})")
        if not 0 <= self.weight_decay <= FLOAT32_MAX:
            raise ConfigError(f"--weight-decay must be non-negative and finite in float32 (got {self.weight_decay})")
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


def _applies(cfg: TrainConfig) -> dict:
    """option -> (whether it applies to ``cfg``, the setting it needs), for the options that take effect only
    with another one."""
    adam = cfg.optimizer in ("adam", "adamw")
    folder = str(cfg.dataset).startswith("folder:")
    return {"betas": (adam, "--optimizer adam or adamw"), "eps": (adam, "--optimizer adam or adamw"),
            "lr_step_size": (cfg.lr_schedule == "step", "--lr-schedule step"),
            "lr_gamma": (cfg.lr_schedule == "step", "--lr-schedule step"),
            "lr_min": (cfg.lr_schedule == "cosine", "--lr-schedule cosine"),
            "warmup_start_factor": (bool(cfg.warmup_epochs), "--warmup-epochs"),
            "channels": (folder, "--dataset folder:PATH"), "image_size": (folder, "--dataset folder:PATH"),
            "test_fraction": (folder, "--dataset folder:PATH")}


def check_given(cfg: TrainConfig, given) -> None:
    """ConfigError for an option typed (``given``: TrainConfig field names) where it would have no effect, e.g.
    --betas with --optimizer sgd or --channels with an IDX data set: the run would record a setting it ignored
    (--nesterov and --momentum with Adam: optim.recipe.check_options)."""
    for name, (ok, needs) in _applies(cfg).items():
        if name in given and not ok:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} applies only with {needs}; this run would ignore it")
