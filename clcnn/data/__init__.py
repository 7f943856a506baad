"""Datasets: IDX files (MNIST, Fashion-MNIST, any IDX pair), gzipped or not, found in the usual places; each
describes itself (DatasetInfo: shape, classes, per-channel statistics); batch iteration."""
from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np


from .errors import DataError  # noqa: E402,F401  (raised here; kept importable as clcnn.data.DataError)


DATASETS = {   # name -> the folder looked for (idx: any IDX files in --data-dir; classes from the labels)
    "mnist": "mnist",
    "fashion-mnist": "fashion-mnist",
    "idx": "idx",
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
    """Images as float32 (N, C, H, W), normalised, and labels as int32 (N,)."""
    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class DatasetInfo:
    """What a data set says about itself; the model is built from it and the normalisation goes with the model.

    Attributes:
        name: the data set's name; dir: where its files were found.
        input_shape: (C, H, W) of one image; num_classes: K (labels are 0..K-1); class_names: K names.
        mean, std: per channel, of the [0, 1]-scaled pixels of the whole training split (x = (p/255 - mean)/std).
    """
    name: str
    dir: str
    input_shape: tuple
    num_classes: int
    class_names: list
    mean: tuple
    std: tuple

    def normalise(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, C, H, W) (or (N, H, W) with C = 1) -> float32 (N, C, H, W) scaled and normalised."""
        x = images.reshape((len(images), *self.input_shape)).astype(np.float32) / np.float32(255.0)
        mean = np.asarray(self.mean, np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(1, -1, 1, 1)
        return np.ascontiguousarray((x - mean) / std, dtype=np.float32)


def load_raw(name: str, split: str, data_dir=None) -> tuple[np.ndarray, np.ndarray, Path]:
    """(uint8 images (N, C, H, W), int labels (N,), the images' path) of ``split`` ("train"/"test").

    IDX image files hold (N, H, W) (one channel) or (N, C, H, W). DataError for an unknown data set, a missing
    or damaged file, or images and labels that do not pair up."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r} (known: {', '.join(DATASETS)})")
    img_stem, lbl_stem = FILES[split]
    path = _find(name, img_stem, data_dir)
    images = read_idx(path)
    if images.ndim not in (3, 4):
        raise DataError(f"{path} holds a {images.ndim}-dimensional array, expected images (N, H, W) or (N, C, H, W)")
    images = images.reshape(images.shape[0], 1, *images.shape[1:]) if images.ndim == 3 else images
    labels = read_idx(_find(name, lbl_stem, data_dir), expect_ndim=1)
    if len(images) != len(labels):
        raise DataError(f"{name} {split}: {len(images)} images but {len(labels)} labels")
    if labels.size and labels.min() < 0:
        raise DataError(f"{name} {split}: negative labels")
    return images, labels, path


CLASS_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"],
}


def channel_stats(images: np.ndarray) -> tuple[tuple, tuple]:
    """Per-channel mean and std of the [0, 1]-scaled pixels of uint8 ``images`` (N, C, H, W) (std 0 -> 1)."""
    x = images.astype(np.float64) / 255.0
    mean, std = x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3))
    return tuple(float(m) for m in mean), tuple(float(s) if s > 0 else 1.0 for s in std)


def describe(name: str, data_dir=None) -> tuple[DatasetInfo, tuple, tuple]:
    """(info, (train images, labels), (test images, labels)) with every check made: neither split empty, both
    of one image shape, labels below the class count. DataError naming the file otherwise."""
    tr_x, tr_y, tr_path = load_raw(name, "train", data_dir)
    te_x, te_y, te_path = load_raw(name, "test", data_dir)
    for x, path in ((tr_x, tr_path), (te_x, te_path)):
        if len(x) == 0:
            raise DataError(f"{path} holds no images: the {'training' if x is tr_x else 'test'} set is empty")
    if tr_x.shape[1:] != te_x.shape[1:]:
        raise DataError(f"{name}: training images are {tr_x.shape[1:]} (C, H, W) but test images are "
                        f"{te_x.shape[1:]} ({te_path})")
    names = CLASS_NAMES.get(name) or [str(i) for i in range(int(max(tr_y.max(), te_y.max())) + 1)]
    for y, path in ((tr_y, tr_path), (te_y, te_path)):
        if y.max() >= len(names):
            raise DataError(f"{name}: labels of {path} go up to {y.max()}, the data set has {len(names)} classes")
    if len(names) < 2:
        raise DataError(f"{name}: the labels name only one class ({tr_path})")
    mean, std = channel_stats(tr_x)
    info = DatasetInfo(name, str(dataset_dir(name, data_dir)), tuple(int(s) for s in tr_x.shape[1:]), len(names),
                       names, mean, std)
    return info, (tr_x, tr_y), (te_x, te_y)


def load(name: str, data_dir=None, limit_train: int | None = None) -> tuple[Split, Split, DatasetInfo]:
    """(train, test, info): pixels scaled to [0, 1], normalised per channel with the full training split's mean
    and std (so --limit-train keeps them)."""
    info, (tr_x, tr_y), (te_x, te_y) = describe(name, data_dir)
    if limit_train:
        tr_x, tr_y = tr_x[:limit_train], tr_y[:limit_train]
    return (Split(info.normalise(tr_x), tr_y.astype(np.int32)), Split(info.normalise(te_x), te_y.astype(np.int32)),
            info)


def batches(split: Split, batch_size: int, rng: np.random.Generator | None = None):
    """Yield (x, y) mini-batches; shuffled with ``rng`` (a fresh permutation per call), in order without."""
    n = len(split)
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for i in range(0, n, batch_size):
        idx = order[i:i + batch_size]
        yield split.images[idx], split.labels[idx]
