"""Using a trained run: load a run folder (model, normalisation, class names), read image files like the training
data, the top classes of each image, and the evaluation of a labelled split (loss, accuracy, per class, confusion).

    run = load_run("runs/20261202-010000")            # or the model.safetensors file itself
    rows = predict_files(run, ["shoe.png"], top=3)     # [{"file", "predictions": [{"class", "index", "probability"}]}]
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import io
from .data import DatasetInfo
from .errors import ConfigError, DataError
from .model import Sequential

WEIGHTS = "model.safetensors"   # what `clcnn train --out DIR` writes into DIR


@dataclass
class Run:
    """A trained model as `clcnn train` saved it.

    Attributes:
        dir: the run folder; weights: its model.safetensors.
        model: the Sequential rebuilt from the saved spec with the saved weights, unplaced, in evaluation mode.
        info: the data set's description as saved with the model: input_shape (C, H, W), class_names, and the
            normalisation (mean, std per channel of [0, 1]-scaled pixels), so ``info.normalise`` prepares images
            exactly as training did.
        dataset, data_dir: the training run's --dataset and --data-dir (None when not saved).
        meta: every metadata string saved with the weights.
    """
    dir: Path
    weights: Path
    model: Sequential
    info: DatasetInfo
    dataset: str | None = None
    data_dir: str | None = None
    meta: dict = field(default_factory=dict)


def weights_path(path) -> Path:
    """The model.safetensors of run folder ``path`` (or ``path`` itself when it is a file). DataError for a
    missing folder or a folder without weights."""
    path = Path(path)
    if path.is_dir():
        weights = path / WEIGHTS
        if not weights.is_file() and (path / "checkpoint.safetensors").is_file():
            raise DataError(f"{path} has no {WEIGHTS} yet: its run stopped before its first epoch ended "
                            f"(`clcnn train --resume {path}` continues it)")
        if not weights.is_file():
            raise DataError(f"{path} has no {WEIGHTS}: not a run folder (`clcnn train --out {path}` writes one)")
        return weights
    if not path.exists():
        raise DataError(f"cannot read run folder {path}: it does not exist")
    return path


def read_metadata(path) -> dict:
    """The metadata strings saved with the weights of run folder (or weights file) ``path``, tensors unread.
    DataError for a missing folder or a damaged file."""
    from safetensors import SafetensorError, safe_open
    weights = weights_path(path)
    try:
        with safe_open(str(weights), "np") as f:
            return dict(f.metadata() or {})
    except OSError as exc:
        raise DataError(f"cannot read weights {weights}: {exc.strerror or exc}") from None
    except (SafetensorError, ValueError) as exc:
        raise DataError(f"{weights} is not a valid safetensors file ({exc})") from None


def _json_meta(meta: dict, key: str, weights: Path):
    try:
        return json.loads(meta[key]) if key in meta else None
    except ValueError:
        raise DataError(f"{weights}: its {key!r} metadata is not valid JSON") from None


def load_run(path, preset: str | None = None, input_shape=None, num_classes: int | None = None) -> Run:
    """The run in folder ``path`` (or the weights file ``path``), its model in evaluation mode.

    ``preset`` (a model name of clcnn.models) builds that preset for ``input_shape``/``num_classes`` instead of the
    saved spec (for weights saved without one). DataError for a missing or damaged file; ConfigError when the
    weights do not fit the model."""
    weights = weights_path(path)
    tensors, meta = io.load_safetensors(weights)
    spec = _json_meta(meta, "spec", weights)
    norm = _json_meta(meta, "normalisation", weights) or {}
    names = _json_meta(meta, "class_names", weights)
    config = _json_meta(meta, "config", weights) or {}
    if preset is not None or spec is None:
        from .models import get_model
        if input_shape is None and spec is not None:
            input_shape = spec.get("input_shape")
        model = get_model(preset or meta.get("model", "lenet5"), input_shape=input_shape,
                          num_classes=num_classes or (len(names) if names else 10))
    else:
        model = Sequential.from_config(spec)
    if model.input_shape is None:
        raise DataError(f"{weights}: the saved model has no input_shape (C, H, W), so images cannot be prepared")
    model.load_state_dict(tensors)
    model.eval()
    shape, k = model.input_shape, model.num_classes
    k_names = max(k, 2)   # one logit (bce) names two classes
    names = [str(n) for n in names] if names and len(names) == k_names else [str(i) for i in range(k_names)]
    c = shape[0]
    mean = tuple(float(m) for m in norm.get("mean", [0.0] * c))
    std = tuple(float(s) for s in norm.get("std", [1.0] * c))
    if len(mean) != c or len(std) != c or not all(s > 0 for s in std):
        raise DataError(f"{weights}: its normalisation {norm} does not fit {c} channels")
    info = DatasetInfo(meta.get("dataset", "unknown"), str(weights.parent), tuple(shape), k_names, names, mean, std)
    return Run(weights.parent, weights, model, info, meta.get("dataset"), config.get("data_dir"), meta)


def load_image(path, input_shape) -> np.ndarray:
    """uint8 (C, H, W) pixels of image file ``path``, read as the image-folder data sets read theirs
    (clcnn.data.decode.decode): converted to grey (C = 1) or RGB (C = 3), resized to (H, W) with bilinear
    filtering when its size differs. DataError naming the file when Pillow cannot read it."""
    from .data.decode import decode
    if len(input_shape) != 3:
        raise ConfigError(f"the model takes inputs of shape {tuple(input_shape)}, not images (C, H, W)")
    c, h, w = input_shape
    if c not in (1, 3):
        raise ConfigError(f"the model takes {c}-channel images; image files give 1 (grey) or 3 (RGB) channels")
    return decode(path, (h, w), c)


def probabilities(logits: np.ndarray) -> np.ndarray:
    """float64 (N, K) class probabilities of logits (N, K) (softmax), or (N, 2) [1 - p, p] of one logit (N, 1)
    (sigmoid, the bce loss's model)."""
    z = np.asarray(logits, np.float64)
    if z.shape[1] == 1:
        p = 1.0 / (1.0 + np.exp(-z[:, 0]))
        return np.stack([1.0 - p, p], axis=1)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def predicted_classes(logits: np.ndarray) -> np.ndarray:
    """int64 (N,) predicted class of logits (N, K): the arg-max (or logit > 0 for one logit)."""
    return (logits[:, 0] > 0).astype(np.int64) if logits.shape[1] == 1 else logits.argmax(axis=1)


def predict_images(run: Run, images: np.ndarray, device=None, batch_size: int = 256) -> np.ndarray:
    """float32 logits (N, K) of uint8 ``images`` (N, C, H, W), normalised as in training, on ``device``."""
    if run.model.backend is None or device is not None:
        run.model.to(device)
    return run.model.predict(run.info.normalise(images), batch_size)


def predict_files(run: Run, paths, top: int = 3, device=None, batch_size: int = 256) -> list[dict]:
    """For each image file: {"file", "predictions": the ``top`` most probable classes, most probable first, each
    {"class": name, "index": i, "probability": p}}. Every file is read (DataError naming the first unreadable
    one) before the model runs; ConfigError for ``top`` < 1 (above the class count it gives every class)."""
    if top < 1:
        raise ConfigError(f"--top must be at least 1 (got {top})")
    if not paths:
        raise ConfigError("no image files given")
    images = np.stack([load_image(p, run.info.input_shape) for p in paths])
    probs = probabilities(predict_images(run, images, device, batch_size))
    rows = []
    for path, p in zip(paths, probs):
        best = np.argsort(-p, kind="stable")[:top]
        rows.append({"file": str(path), "predictions": [
            {"class": run.info.class_names[i], "index": int(i), "probability": float(p[i])} for i in best]})
    return rows


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 (K, K): [true class, predicted class] counts."""
    idx = np.asarray(labels, np.int64) * num_classes + np.asarray(predicted, np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def evaluate(run: Run, images: np.ndarray, labels: np.ndarray, device=None, batch_size: int = 1000) -> dict:
    """The run's model on labelled uint8 ``images`` (N, C, H, W): {"loss", "accuracy", "images", "device",
    "per_class": [{"class", "index", "images", "accuracy" (None for a class without images)}],
    "confusion": [[count]] (true class x predicted class)}. Loss and accuracy are the training loss's."""
    labels = np.asarray(labels).astype(np.int32)
    logits = predict_images(run, images, device, batch_size)
    loss, acc = run.model.loss.evaluate(logits, labels)
    k = len(run.info.class_names)
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        raise DataError(f"labels go up to {labels.max()}, the model has {k} classes")
    cm = confusion_matrix(labels, predicted_classes(logits), k)
    per_class = [{"class": name, "index": i, "images": int(cm[i].sum()),
                  "accuracy": float(cm[i, i] / cm[i].sum()) if cm[i].sum() else None}
                 for i, name in enumerate(run.info.class_names)]
    return {"loss": loss, "accuracy": acc, "images": int(len(labels)), "device": run.model.device.id,
            "per_class": per_class, "confusion": cm.tolist()}
