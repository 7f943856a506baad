"""Losses on the logits: the device forward + backward of a training step, and the host evaluation.

Each loss is an object a model owns (``Sequential(loss=...)``); evaluation uses the model's own loss.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from .errors import ConfigError, ShapeError


class Loss(ABC):
    """Base class. ``name`` is what ``Sequential(loss=name)`` and a saved model spec call it."""

    name = ""

    def check(self, logits_shape) -> None:
        """ShapeError when the model's output (N, K) does not fit this loss."""

    @abstractmethod
    def forward_backward(self, backend, logits, labels, probs, dlogits, loss, accumulate: bool) -> None:
        """Enqueue the batch-mean loss into device ``loss`` (1,) (added to it when ``accumulate``) and
        dL/dlogits into ``dlogits``; ``probs`` is a scratch of the logits' shape."""

    @abstractmethod
    def evaluate(self, logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
        """(mean loss, accuracy) of host float32 ``logits`` (N, K) against int ``labels`` (N,), in float64."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class CrossEntropyLoss(Loss):
    """Softmax cross-entropy over K classes with optional label smoothing, as torch.nn.CrossEntropyLoss:
    mean_n(logsumexp(z_n) - (1-eps)*z_n[y_n] - eps*mean_k z_n[k]); gradient (softmax - y_smooth)/N with
    y_smooth = (1-eps)*onehot + eps/K (eps = 0: the plain cross-entropy).

    Args:
        label_smoothing: eps in [0, 1] (ConfigError otherwise), PyTorch's name and meaning.
    Shape: logits (N, K), labels int (N,) in [0, K)."""

    name = "cross_entropy"

    def __init__(self, label_smoothing: float = 0.0):
        eps = float(label_smoothing)
        if not 0.0 <= eps <= 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1] (got {label_smoothing})")
        self.label_smoothing = eps

    def check(self, logits_shape):
        if len(logits_shape) != 2 or logits_shape[1] < 2:
            raise ShapeError(f"cross_entropy needs logits (N, K) with K >= 2 classes, got {tuple(logits_shape)}")

    def forward_backward(self, backend, logits, labels, probs, dlogits, loss, accumulate):
        n, c = logits.shape
        eps = self.label_smoothing
        backend.softmax_xent_forward(logits, labels, probs, loss, n, c, accumulate=accumulate, label_smoothing=eps,
                                     dlogits=dlogits)

    def evaluate(self, logits, labels):
        """(mean loss with this loss's label smoothing, accuracy), as forward_backward's loss."""
        if len(labels) == 0:
            return float("nan"), float("nan")
        z = logits.astype(np.float64)
        z -= z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        eps = self.label_smoothing
        loss = -((1.0 - eps) * logp[np.arange(len(labels)), labels] + eps * logp.mean(axis=1)).mean()
        return float(loss), float((logits.argmax(axis=1) == labels).mean())

    def __repr__(self) -> str:
        return f"CrossEntropyLoss(label_smoothing={self.label_smoothing:g})" if self.label_smoothing else \
            "CrossEntropyLoss()"


class BCEWithLogitsLoss(Loss):
    """Sigmoid binary cross-entropy on one logit: mean_n(softplus(z_n) - y_n z_n); gradient (sigmoid - y)/N.

    Shape: logits (N, 1), labels int (N,) in {0, 1}."""

    name = "bce"

    def check(self, logits_shape):
        if len(logits_shape) != 2 or logits_shape[1] != 1:
            raise ShapeError(f"bce needs a model with exactly one output, (N, 1), got {tuple(logits_shape)}")

    def forward_backward(self, backend, logits, labels, probs, dlogits, loss, accumulate):
        n = logits.shape[0]
        backend.sigmoid_bce_forward(logits, labels, probs, loss, n, accumulate=accumulate, dlogits=dlogits)

    def evaluate(self, logits, labels):
        if len(labels) == 0:
            return float("nan"), float("nan")
        z, y = logits[:, 0].astype(np.float64), labels.astype(np.float64)
        loss = np.logaddexp(0.0, z) - y * z   # softplus(z) - y*z, stable
        return float(loss.mean()), float(((z > 0) == (y > 0.5)).mean())


LOSSES = {cls.name: cls for cls in (CrossEntropyLoss, BCEWithLogitsLoss)}


def get_loss(loss) -> Loss:
    """A Loss object from a Loss (returned as is) or a name in LOSSES; ConfigError otherwise."""
    if isinstance(loss, Loss):
        return loss
    if loss not in LOSSES:
        raise ConfigError(f"Invalid loss {loss!r}; expected one of {tuple(LOSSES)}")
    return LOSSES[loss]()


def with_label_smoothing(loss: Loss, label_smoothing: float) -> Loss:
    """``loss`` with label smoothing ``label_smoothing`` (``clcnn train --label-smoothing``): a new
    CrossEntropyLoss; ConfigError for a loss that has none (bce)."""
    if not isinstance(loss, CrossEntropyLoss):
        raise ConfigError(f"--label-smoothing needs a cross-entropy model (this model's loss is {loss.name})")
    return CrossEntropyLoss(label_smoothing=label_smoothing)
