"""Optimizers (torch.optim's SGD, Adam, AdamW) with their state on the device, and learning-rate schedules
(torch.optim.lr_scheduler's StepLR, CosineAnnealingLR, OneCycleLR, LinearLR, SequentialLR) stepped per step."""
from . import lr_scheduler
from .adam import Adam, AdamW
from .base import Optimizer
from .sgd import SGD

OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}

__all__ = ["OPTIMIZERS", "SGD", "Adam", "AdamW", "Optimizer", "lr_scheduler"]
