"""Datasets: IDX files (MNIST, Fashion-MNIST), gzipped or not, found in the usual places, and batch iteration."""
from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np


from .errors import DataError  # noqa: E402,F401  (raised here; kept importable as clcnn.data.DataError)


DATASETS = {
    "mnist": "mnist",
    "fashion-mnist": "fashion-mnist",
}
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if path.suffix == ".gz":
        if raw[:2] != b"\x1f\x8b":
            raise DataError(f"{path} is not a gzip file")
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise DataError(f"{path} is a damaged or truncated gzip file ({exc})") from None
    return raw


def read_idx(path, expect_ndim: int | None = None) -> np.ndarray:
    """The array stored in one IDX file (``.gz`` is decompressed). Raises DataError on any malformation."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    if expect_ndim is not None and ndim != expect_ndim:
        raise DataError(f"{path} holds a {ndim}-dimensional array, expected {expect_ndim} dimensions")
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path} is truncated (incomplete header)")
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    want = int(np.prod(shape)) * dtype.itemsize
    body = raw[4 + 4 * ndim:]
    if len(body) < want:
        raise DataError(f"{path} is truncated: {len(body)} bytes of data, expected {want} for shape {shape}")
    if len(body) > want:
        raise DataError(f"{path} has {len(body) - want} unexpected trailing bytes")
    return np.frombuffer(body, dtype=dtype).reshape(shape)


def search_dirs(name: str, data_dir=None) -> list[Path]:
    """Where ``name``'s files are looked for, in order: --data-dir (itself or DIR/name), $CLCNN_DATA/name,
    ~/.cache/clcnn/name, /usr/share/datasets/name (Debian's dataset-* packages)."""
    dirs = []
    if data_dir:
        dirs += [Path(data_dir), Path(data_dir) / name]
    if os.environ.get("CLCNN_DATA"):
        dirs.append(Path(os.environ["CLCNN_DATA"]) / name)
    dirs += [Path.home() / ".cache" / "clcnn" / name, Path("/usr/share/datasets") / name]
    return dirs


def _stems():
    return [stem for pair in FILES.values() for stem in pair]


def dataset_dir(name: str, data_dir=None) -> Path:
    """The first search directory holding any of the dataset's IDX files (all four must then be there)."""
    dirs = search_dirs(name, data_dir)
    for d in dirs:
        if any((d / s).is_file() or (d / f"{s}.gz").is_file() for s in _stems()):
            return d
    where = ", ".join(str(d) for d in dirs)
    hint = " (on Debian: apt-get install dataset-fashion-mnist)" if name == "fashion-mnist" else ""
    raise DataError(f"{name} not found: no IDX files in {where}{hint}")


def _find(name: str, stem: str, data_dir) -> Path:
    d = dataset_dir(name, data_dir)
    for candidate in (d / stem, d / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{name}: {stem}[.gz] not found in {d}")


@dataclass
class Split:
    """Images as float32 (N, 1, 28, 28) and labels as int32 (N,)."""
    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def load_raw(name: str, split: str, data_dir=None) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images (N, H, W), labels (N,)) of ``split`` ("train"/"test") of dataset ``name``."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r} (known: {', '.join(DATASETS)})")
    img_stem, lbl_stem = FILES[split]
    images = read_idx(_find(name, img_stem, data_dir), expect_ndim=3)
    labels = read_idx(_find(name, lbl_stem, data_dir), expect_ndim=1)
    if len(images) != len(labels):
        raise DataError(f"{name} {split}: {len(images)} images but {len(labels)} labels")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{name} {split}: labels outside 0..9")
    return images, labels


def pixel_stats(images: np.ndarray) -> tuple[float, float]:
    """Mean and std of the [0, 1]-scaled pixels of the whole training set (so --limit-train keeps them)."""
    x = images.astype(np.float64) / 255.0
    return float(x.mean()), float(x.std()) or 1.0


def load(name: str, data_dir=None, limit_train: int | None = None) -> tuple[Split, Split, dict]:
    """(train, test, stats): pixels scaled to [0, 1], normalised with the full training set's mean and std."""
    tr_x, tr_y = load_raw(name, "train", data_dir)
    te_x, te_y = load_raw(name, "test", data_dir)
    mean, std = pixel_stats(tr_x)
    if limit_train:
        tr_x, tr_y = tr_x[:limit_train], tr_y[:limit_train]

    def prep(x, y):
        x = ((x.astype(np.float32) / 255.0 - mean) / std)[:, None, :, :]
        return Split(np.ascontiguousarray(x, dtype=np.float32), y.astype(np.int32))

    stats = {"mean": mean, "std": std, "dir": str(dataset_dir(name, data_dir))}
    return prep(tr_x, tr_y), prep(te_x, te_y), stats


def batches(split: Split, batch_size: int, rng: np.random.Generator | None = None):
    """Yield (x, y) mini-batches; shuffled with ``rng`` (a fresh permutation per call), in order without."""
    n = len(split)
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for i in range(0, n, batch_size):
        idx = order[i:i + batch_size]
        yield split.images[idx], split.labels[idx]
