"""Optimizers (torch.optim's SGD, Adam, AdamW) with their state on the device, and learning-rate schedules
(torch.optim.lr_scheduler's StepLR, CosineAnnealingLR, OneCycleLR, LinearLR, SequentialLR) stepped per step;
``recipe`` builds them from ``clcnn train``'s flags."""
from . import lr_scheduler
from .adam import Adam, AdamW
from .base import Optimizer
from .sgd import SGD

__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "lr_scheduler"]
