"""The optimizer and learning-rate schedule of a training run, from its settings (``clcnn train``'s flags):

    clcnn train --optimizer adamw --lr 2e-3 --lr-schedule cosine --warmup-epochs 1 --label-smoothing 0.1

``check_options`` range-checks them (ConfigError naming the flag), ``make_optimizer`` and ``make_schedule``
build the objects. ``cfg`` is anything with the attributes named below (clcnn.train_config.TrainConfig).
Schedule lengths are given in epochs and stepped once per optimizer step (PyTorch's per-batch use).
"""
from __future__ import annotations

import math

from ..errors import ConfigError
from . import lr_scheduler
from .adam import Adam, AdamW
from .sgd import SGD

OPTIMIZER_NAMES = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "step", "cosine", "onecycle")
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3, "adamw": 1e-3}   # PyTorch's for Adam/AdamW; clcnn's for SGD
DEFAULT_WEIGHT_DECAY = {"sgd": 0.0, "adam": 0.0, "adamw": 1e-2}   # PyTorch's


def parse_betas(text) -> tuple[float, float]:
    """"0.9,0.999" (or a pair) -> (0.9, 0.999); ConfigError naming --betas unless two numbers in [0, 1)."""
    try:
        parts = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    except (TypeError, ValueError):
        parts = []
    if len(parts) != 2 or not all(0 <= b < 1 for b in parts):
        raise ConfigError(f"--betas takes two numbers in [0, 1), comma-separated, e.g. 0.9,0.999 (got {text!r})")
    return parts[0], parts[1]


def fill_defaults(cfg) -> None:
    """Set cfg.lr and cfg.weight_decay where None to the chosen optimizer's default (ConfigError naming
    --optimizer for an unknown one)."""
    if cfg.optimizer not in OPTIMIZER_NAMES:
        raise ConfigError(f"--optimizer must be one of {', '.join(OPTIMIZER_NAMES)} (got {cfg.optimizer!r})")
    cfg.lr = DEFAULT_LR[cfg.optimizer] if cfg.lr is None else cfg.lr
    cfg.weight_decay = DEFAULT_WEIGHT_DECAY[cfg.optimizer] if cfg.weight_decay is None else cfg.weight_decay


def _range(flag, value, low, high=math.inf, low_open=False, high_open=True):
    ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok or math.isnan(value):
        span = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ConfigError(f"{flag} must be in {span} (got {value})")


def check_options(cfg) -> None:
    """ConfigError naming the first bad optimizer, schedule or label-smoothing flag."""
    fill_defaults(cfg)
    if cfg.lr_schedule not in SCHEDULES:
        raise ConfigError(f"--lr-schedule must be one of {', '.join(SCHEDULES)} (got {cfg.lr_schedule!r})")
    parse_betas(cfg.betas)
    _range("--eps", cfg.eps, 0.0)
    _range("--label-smoothing", cfg.label_smoothing, 0.0, 1.0, high_open=False)
    _range("--lr-step-size", cfg.lr_step_size, 0.0, low_open=True)
    _range("--lr-gamma", cfg.lr_gamma, 0.0, low_open=True)
    _range("--lr-min", cfg.lr_min, 0.0, cfg.lr)
    _range("--warmup-epochs", cfg.warmup_epochs, 0.0)
    _range("--warmup-start-factor", cfg.warmup_start_factor, 0.0, 1.0, low_open=True, high_open=False)
    if cfg.nesterov and (cfg.optimizer != "sgd" or cfg.momentum <= 0):
        raise ConfigError("--nesterov needs --optimizer sgd and --momentum above 0 (Nesterov momentum)")
    if cfg.optimizer != "sgd" and cfg.momentum:
        raise ConfigError(f"--momentum is SGD's; {cfg.optimizer} has --betas")
    if cfg.lr_schedule == "onecycle" and cfg.warmup_epochs:
        raise ConfigError("--warmup-epochs does not combine with --lr-schedule onecycle (it warms up itself)")
    if cfg.warmup_epochs and cfg.warmup_epochs >= cfg.epochs and cfg.lr_schedule != "none":
        raise ConfigError(f"--warmup-epochs {cfg.warmup_epochs:g} leaves no epoch of the {cfg.epochs} for "
                          f"--lr-schedule {cfg.lr_schedule}")


def make_optimizer(model, cfg):
    """The optimizer cfg.optimizer names, for ``model`` (a Sequential or a group)."""
    if cfg.optimizer == "sgd":
        return SGD(model, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
    cls = Adam if cfg.optimizer == "adam" else AdamW
    return cls(model, lr=cfg.lr, betas=parse_betas(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)


def make_schedule(opt, cfg, steps_per_epoch: int):
    """The schedule of cfg.lr_schedule after an optional linear warm-up (LinearLR from warmup_start_factor *
    lr over warmup_epochs), in steps of ``steps_per_epoch`` per epoch; None for no schedule and no warm-up.
    step: StepLR(step_size = lr_step_size epochs, gamma); cosine: CosineAnnealingLR(T_max = the epochs after
    the warm-up, eta_min = lr_min); onecycle: OneCycleLR(max_lr = lr, total_steps = every step; momentum or
    beta1 cycled as PyTorch does, except for SGD without momentum, which stays plain)."""
    total = cfg.epochs * steps_per_epoch
    warm = min(round(cfg.warmup_epochs * steps_per_epoch), total)
    if cfg.lr_schedule == "onecycle":
        plain = cfg.optimizer == "sgd" and cfg.momentum == 0
        return lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, cycle_momentum=not plain)
    main = None
    if cfg.lr_schedule == "step":
        main = lr_scheduler.StepLR(opt, step_size=max(1, round(cfg.lr_step_size * steps_per_epoch)),
                                   gamma=cfg.lr_gamma)
    elif cfg.lr_schedule == "cosine":
        main = lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total - warm), eta_min=cfg.lr_min)
    if warm == 0:
        return main
    warmup = lr_scheduler.LinearLR(opt, start_factor=cfg.warmup_start_factor, total_iters=warm)
    if main is None:
        return warmup
    return lr_scheduler.SequentialLR(opt, [warmup, main], milestones=[warm])
