"""CIFAR-10 and CIFAR-100 from either official release (Krizhevsky's page, https://www.cs.toronto.edu/~kriz/cifar.html):

- python (``cifar-10-batches-py``: data_batch_1..5, test_batch, batches.meta; ``cifar-100-python``: train, test,
  meta): pickled dicts with b"data" (N, 3072) uint8 rows, b"labels" (CIFAR-100: b"fine_labels") and the class
  names in the meta file (b"label_names" / b"fine_label_names");
- binary (``cifar-10-batches-bin``: data_batch_1..5.bin, test_batch.bin, batches.meta.txt; ``cifar-100-binary``:
  train.bin, test.bin, fine_label_names.txt): records of 1 label byte (CIFAR-100: coarse then fine) + 3072 pixel
  bytes, one class name per line.

Each 3072-byte image is 1024 red, 1024 green, 1024 blue bytes, rows in order: (3, 32, 32) CHW as it stands.
CIFAR-100 is read with its 100 fine labels. The pickles are opened with an unpickler that builds only NumPy
arrays and plain containers (a pickle can otherwise run code).
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ..errors import DataError

IMAGE_BYTES = 3 * 32 * 32
# name -> release -> (folder in the archive, training files, test files, class-names file)
RELEASES = {
    "cifar10": {
        "python": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta"),
        "binary": ("cifar-10-batches-bin", [f"data_batch_{i}.bin" for i in range(1, 6)], ["test_batch.bin"],
                   "batches.meta.txt"),
    },
    "cifar100": {
        "python": ("cifar-100-python", ["train"], ["test"], "meta"),
        "binary": ("cifar-100-binary", ["train.bin"], ["test.bin"], "fine_label_names.txt"),
    },
}
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _ArraysOnly(pickle.Unpickler):
    """Unpickles dicts, lists, bytes, numbers and NumPy arrays; refuses any other global."""

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _ArraysOnly(f, encoding="bytes").load()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    except Exception as exc:   # any malformation of the pickle stream (EOF, bad opcode, refused global)
        raise DataError(f"{path} is not a CIFAR python batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR python batch (holds a {type(obj).__name__}, not a dict)")
    return obj


def find_release(name: str, d: Path) -> tuple[str, Path] | None:
    """("python" | "binary", the folder holding the files) for the first release found in ``d`` (its archive
    folder ``d/cifar-10-batches-py`` etc., or ``d`` itself), else None."""
    for release, (sub, train, _, _) in RELEASES[name].items():
        for folder in (d / sub, d):
            if (folder / train[0]).is_file():
                return release, folder
    return None


def _python_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    if b"data" not in batch or label_key not in batch:
        raise DataError(f"{path} is not a CIFAR python batch (no b'data' or {label_key!r} entry)")
    x, y = np.asarray(batch[b"data"]), np.asarray(batch[label_key])
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != IMAGE_BYTES:
        raise DataError(f"{path}: b'data' is {x.dtype} {x.shape}, expected uint8 (N, {IMAGE_BYTES})")
    if y.shape != (len(x),):
        raise DataError(f"{path}: {len(x)} images but {y.size} labels")
    return x.reshape(-1, 3, 32, 32), y.astype(np.int64)


def _binary_batch(path: Path, label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        raw = np.fromfile(path, np.uint8)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    record = label_bytes + IMAGE_BYTES
    if raw.size == 0 or raw.size % record:
        raise DataError(f"{path} is truncated or not a CIFAR binary batch: {raw.size} bytes is not a whole "
                        f"number of {record}-byte records")
    rows = raw.reshape(-1, record)
    return rows[:, label_bytes:].reshape(-1, 3, 32, 32), rows[:, label_bytes - 1].astype(np.int64)


def _class_names(name: str, release: str, path: Path) -> list[str]:
    if release == "binary":
        try:
            return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read the class names in {path} ({exc})") from None
    key = b"label_names" if name == "cifar10" else b"fine_label_names"
    meta = _unpickle(path)
    if key not in meta:
        raise DataError(f"{path} has no {key!r} entry")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in meta[key]]


def _read_files(name: str, release: str, folder: Path, files: list[str]) -> tuple[np.ndarray, np.ndarray]:
    parts = []
    for f in files:
        path = folder / f
        if not path.is_file():
            raise DataError(f"{name}: {f} not found in {folder}")
        if release == "python":
            parts.append(_python_batch(path, b"labels" if name == "cifar10" else b"fine_labels"))
        else:
            parts.append(_binary_batch(path, 1 if name == "cifar10" else 2))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def read(name: str, release: str, folder: Path) -> tuple[tuple, tuple, list[str], tuple[Path, Path]]:
    """((train images uint8 (N, 3, 32, 32), labels (N,)), (test images, labels), class names, (first training
    file, test file)). DataError naming the file for a missing, truncated or malformed one."""
    _, train, test, meta = RELEASES[name][release]
    tr = _read_files(name, release, folder, train)
    te = _read_files(name, release, folder, test)
    if not (folder / meta).is_file():
        raise DataError(f"{name}: the class names file {meta} is not in {folder}")
    return tr, te, _class_names(name, release, folder / meta), (folder / train[0], folder / test[0])
