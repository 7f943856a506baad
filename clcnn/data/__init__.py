"""Datasets: MNIST and Fashion-MNIST (IDX, gzipped or not), CIFAR-10/100 (python or binary release), any IDX
pair, and image folders (``folder:PATH``); found in the usual places or downloaded with verified digests; each
describes itself (DatasetInfo: shape, classes, per-channel statistics); splits and batch iteration.

    train, test, info = data.load("cifar10", download=True)
    train, val = data.hold_out(train, 0.1, seed=0)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError  # noqa: F401  (raised here; kept importable as clcnn.data.DataError)
from . import cifar, download as dl, folder, idx
from .idx import read_idx  # noqa: F401  (public)
from .registry import SPECS, download_dir, search_dirs

FOLDER_PREFIX = "folder:"
DATASETS = {name: spec.summary for name, spec in SPECS.items()}   # name -> one line (and folder:PATH)
DATASETS_HELP = ", ".join(DATASETS) + ", or folder:PATH (PATH/train/<class>/*.png, optional PATH/test/<class>/)"


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
        name: the data set's name (``folder:PATH`` for a folder); dir: where its files were found.
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
        x = np.asarray(images).reshape((len(images), *self.input_shape)).astype(np.float32) / np.float32(255.0)
        mean = np.asarray(self.mean, np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(1, -1, 1, 1)
        return np.ascontiguousarray((x - mean) / std, dtype=np.float32)


def channel_stats(images: np.ndarray, block: int = 8192) -> tuple[tuple, tuple]:
    """Per-channel mean and std of the [0, 1]-scaled pixels of uint8 ``images`` (N, C, H, W) (std 0 -> 1): the
    pixel sums and sums of squares are exact integers, taken over blocks of images (a memory-mapped array is
    never copied whole), then mean = S / (255 n), var = Q / (255^2 n) - mean^2 in float64."""
    s = q = np.zeros(images.shape[1], np.uint64)
    for i in range(0, len(images), block):
        x = np.asarray(images[i:i + block])
        s = s + x.sum(axis=(0, 2, 3), dtype=np.uint64)
        q = q + np.square(x, dtype=np.uint32).sum(axis=(0, 2, 3), dtype=np.uint64)
    count = float(len(images) * images.shape[2] * images.shape[3])
    mean = s.astype(np.float64) / (255.0 * count)
    std = np.sqrt(np.maximum(q.astype(np.float64) / (255.0 * 255.0 * count) - mean * mean, 0.0))
    return tuple(float(m) for m in mean), tuple(float(v) if v > 1e-12 else 1.0 for v in std)


def _not_found(name: str, data_dir, dirs, downloading: bool, reason: str = "") -> DataError:
    spec = SPECS[name]
    where = ", ".join(str(d) for d in dirs)
    if not spec.remotes:
        return DataError(f"dataset {name} not found: no IDX files in {where}")
    hint = dl.manual_hint(spec.remotes, download_dir(name, data_dir))
    if downloading:
        return DataError(f"dataset {name} not found in {where} and it cannot be downloaded ({reason}): {hint}")
    return DataError(f"dataset {name} not found in {where}: pass --download, or {hint}")


def locate(name: str, data_dir=None, unpack: bool = True) -> Path | None:
    """The folder holding ``name``'s files (for CIFAR: the release's folder, an archive found there unpacked
    first unless ``unpack`` is False), or None."""
    spec = SPECS[name]
    for d in search_dirs(name, data_dir):
        if spec.kind == "idx" and idx.holds_idx(d):
            return d
        if spec.kind == "cifar":
            archives = [d / r.filename for r in spec.remotes + spec.alternatives if (d / r.filename).is_file()]
            if cifar.find_release(name, d) is None and archives:
                if not unpack:
                    return d
                dl.extract(archives[0], d)
            if cifar.find_release(name, d) is not None:
                return d
    return None


def fetch(name: str, data_dir=None, *, progress: bool = True, log=None, **download_args) -> Path:
    """The folder of ``name``'s files, downloading them (download.ensure: verified, atomic) into
    registry.download_dir when they are nowhere to be found. ``download_args`` go to download.ensure
    (base_url, digests, retries, wait, timeout). DataError naming the files and where to put them when offline."""
    found = locate(name, data_dir)
    if found is not None:
        return found
    target = download_dir(name, data_dir)
    try:
        dl.ensure(SPECS[name].remotes, target, progress=progress, log=log, **download_args)
    except dl.Unreachable as exc:
        raise _not_found(name, data_dir, search_dirs(name, data_dir), True, str(exc)) from None
    found = locate(name, data_dir)
    if found is None:
        raise DataError(f"{name}: the downloaded files in {target} do not hold the data set")
    return found


def _read_known(name: str, data_dir, download: bool, log) -> tuple[tuple, tuple, list, Path, tuple]:
    spec = SPECS[name]
    d = fetch(name, data_dir, log=log) if download and spec.remotes else locate(name, data_dir)
    if d is None:
        raise _not_found(name, data_dir, search_dirs(name, data_dir), False)
    if spec.kind == "cifar":
        release, where = cifar.find_release(name, d)
        tr, te, names, paths = cifar.read(name, release, where)
        return tr, te, names, where, paths
    tr_x, tr_y, tr_path = idx.read_split(name, d, "train")
    te_x, te_y, te_path = idx.read_split(name, d, "test")
    names = list(spec.class_names) or [str(i) for i in range(int(max(tr_y.max(initial=0), te_y.max(initial=0))) + 1)]
    return (tr_x, tr_y), (te_x, te_y), names, d, (tr_path, te_path)


def _read_folder(name: str, image_size, channels, test_fraction: float, log) -> tuple[tuple, tuple, list, Path,
                                                                                     tuple]:
    root = Path(name[len(FOLDER_PREFIX):]).expanduser()
    tr, te, names = folder.read(root, image_size, channels, test_fraction, log=log)
    return tr, te, names, root, (root / "train", root / "test")


def _check(name: str, tr, te, names, paths) -> None:
    (tr_x, tr_y), (te_x, te_y) = tr, te
    for x, path, what in ((tr_x, paths[0], "training"), (te_x, paths[1], "test")):
        if len(x) == 0:
            raise DataError(f"{path} holds no images: the {what} set is empty")
    if tr_x.shape[1:] != te_x.shape[1:]:
        raise DataError(f"{name}: training images are {tr_x.shape[1:]} (C, H, W) but test images are "
                        f"{te_x.shape[1:]} ({paths[1]})")
    for y, path in ((tr_y, paths[0]), (te_y, paths[1])):
        if y.max() >= len(names):
            raise DataError(f"{name}: labels of {path} go up to {y.max()}, the data set has {len(names)} classes")
    if len(names) < 2:
        raise DataError(f"{name}: the labels name only one class ({paths[0]})")


def describe(name: str, data_dir=None, *, download: bool = False, image_size=None, channels: int | None = None,
             test_fraction: float = 0.1, log=None) -> tuple[DatasetInfo, tuple, tuple]:
    """(info, (train images uint8 (N, C, H, W), labels (N,)), (test images, labels)) with every check made:
    neither split empty, both of one image shape, labels below the class count. DataError naming the file
    otherwise.

    Args:
        name: a key of DATASETS, or ``folder:PATH``.
        data_dir: a folder searched first (and downloaded into); see registry.search_dirs.
        download: fetch a known data set's official files when it is nowhere to be found.
        image_size, channels: a folder's target (H, W) ("32x32") and channel count (1 or 3) [default: those of
            its first training image]; test_fraction: a folder's share cut (seeded, fixed) as the test split
            when it has no test/.
    """
    if name.startswith(FOLDER_PREFIX):
        tr, te, names, where, paths = _read_folder(name, image_size, channels, test_fraction, log)
    elif name in SPECS:
        tr, te, names, where, paths = _read_known(name, data_dir, download, log)
    else:
        raise DataError(f"unknown dataset {name!r} (known: {DATASETS_HELP})")
    _check(name, tr, te, names, paths)
    mean, std = channel_stats(tr[0])
    info = DatasetInfo(name, str(where), tuple(int(s) for s in tr[0].shape[1:]), len(names), list(names), mean,
                       std)
    return info, tr, te


def load(name: str, data_dir=None, limit_train: int | None = None, **describe_args) -> tuple[Split, Split,
                                                                                          DatasetInfo]:
    """(train, test, info): pixels scaled to [0, 1], normalised per channel with the full training split's mean
    and std (so --limit-train keeps them). ``describe_args`` go to describe (download, image_size, ...)."""
    info, (tr_x, tr_y), (te_x, te_y) = describe(name, data_dir, **describe_args)
    if limit_train:
        tr_x, tr_y = tr_x[:limit_train], tr_y[:limit_train]
    return (Split(info.normalise(tr_x), tr_y.astype(np.int32)), Split(info.normalise(te_x), te_y.astype(np.int32)),
            info)


def hold_out(split: Split, fraction: float, seed: int = 0) -> tuple[Split, Split]:
    """(rest, validation): round(N * fraction) images drawn with ``np.random.default_rng(seed)``; both keep the
    original order. ConfigError naming --val-fraction when either part would be empty."""
    n = len(split)
    k = int(round(n * fraction))
    if not 0 < fraction < 1 or k < 1 or k >= n:
        raise ConfigError(f"--val-fraction must leave at least one image on each side of {n} (got {fraction})")
    held = np.zeros(n, bool)
    held[np.random.default_rng(seed).permutation(n)[:k]] = True
    return (Split(split.images[~held], split.labels[~held]), Split(split.images[held], split.labels[held]))


def batches(split: Split, batch_size: int, rng: np.random.Generator | None = None):
    """Yield (x, y) mini-batches; shuffled with ``rng`` (a fresh permutation per call), in order without."""
    n = len(split)
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for i in range(0, n, batch_size):
        take = order[i:i + batch_size]
        yield split.images[take], split.labels[take]
