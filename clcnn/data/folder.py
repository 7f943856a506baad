"""Image folders (torchvision's ImageFolder layout): ``PATH/train/<class>/*.png|jpg`` and ``PATH/test/<class>/``
(with no ``test/``, the test split is cut from the training images). Images are read with Pillow, converted to
one channel count (1: "L", 3: "RGB") and resized (bilinear) to one (H, W).

Decoding is done once, in parallel (clcnn.data.decode: worker processes), into a memory-mapped
``.npy`` under $CLCNN_DATA/decoded (else ~/.cache/clcnn/decoded) named by a SHA-256 of every image's relative
path, size and modification time plus the requested shape: a changed, added or removed file means a new decode,
an unchanged folder is read back with no decoding at all.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from .decode import decode_all, first_shape
from .registry import cache_root

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
CACHE_VERSION = "1"    # bumped when the decoded layout or the conversion changes


def parse_size(text) -> tuple[int, int] | None:
    """"32x32" or "32" -> (H, W) = (32, 32); None -> None. ConfigError naming --image-size otherwise."""
    if text is None or isinstance(text, tuple):
        return text
    parts = str(text).lower().replace(",", "x").split("x")
    try:
        h, w = (int(parts[0]), int(parts[0])) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
    except ValueError:
        h = w = 0
    if len(parts) > 2 or not (1 <= h <= 4096 and 1 <= w <= 4096):
        raise ConfigError(f"--image-size takes HxW with sides 1..4096, e.g. 32x32 (got {text!r})")
    return h, w


def list_split(root: Path, classes: list[str] | None = None) -> tuple[list[str], list[str], np.ndarray]:
    """(class names, image files as str paths, labels (N,) int64) of one split folder: one sub-folder per class,
    sorted by name (torchvision's order), the images of each found recursively and sorted. With ``classes``
    (the training split's), the split's class folders must be among them. DataError for no classes or no
    images. (Plain strings, not Paths: 60,000 Path objects cost seconds.)"""
    names = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not names:
        raise DataError(f"{root} has no class sub-folders (expected {root}/<class>/<image>.png)")
    if classes is not None:
        unknown = [n for n in names if n not in classes]
        if unknown:
            raise DataError(f"{root}: class folder(s) {', '.join(unknown)} are not among the training classes")
    index = {n: i for i, n in enumerate(classes or names)}
    files, labels = [], []
    for name in names:
        found = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(root, name)) for f in fs
                       if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))
        files += found
        labels += [index[name]] * len(found)
    if not files:
        raise DataError(f"{root} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return classes or names, files, np.asarray(labels, np.int64)


def fingerprint(files: list[str], base: Path, size, channels: int) -> str:
    """SHA-256 (hex, first 32 digits) of the decode's inputs: each file's path relative to ``base``, byte size
    and mtime in ns, and the target (H, W) and channel count."""
    h = hashlib.sha256(f"{CACHE_VERSION}|{size}|{channels}\n".encode())
    cut = len(os.path.join(str(base), ""))
    for f in files:
        st = os.stat(f)
        h.update(f"{f[cut:]}\t{st.st_size}\t{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:32]


def cached_decode(files: list[Path], base: Path, size, channels: int, log=None) -> np.ndarray:
    """The decoded images of ``files`` as a read-only memory-mapped uint8 (N, C, H, W) array: from the cache
    when the fingerprint matches, else decoded now into a temporary .npy that is renamed into the cache when
    complete (and the entries of this folder's earlier contents at this shape are deleted: the cache holds one
    per folder and shape). The file is named <hash of the folder's path and shape>-<fingerprint>.npy."""
    folder = cache_root() / "decoded"
    owner = hashlib.sha256(f"{Path(base).resolve()}|{size}|{channels}".encode()).hexdigest()[:12]
    path = folder / f"{owner}-{fingerprint(files, base, size, channels)}.npy"
    if path.is_file():
        try:
            arr = np.load(path, mmap_mode="r")
            if arr.shape == (len(files), channels, *size) and arr.dtype == np.uint8:
                return arr
        except (OSError, ValueError):
            pass   # a damaged cache entry is decoded again
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{path.stem}.{os.getpid()}.npy"
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(files), channels, *size))
    except OSError as exc:
        raise DataError(f"cannot write the decoded-image cache in {folder}: {exc.strerror or exc}") from None
    try:
        if log:
            log(f"decoding {len(files)} images of {base} into {path}")
        del arr   # the header is written; the workers fill the images in place
        decode_all(files, size, channels, tmp)
        os.replace(tmp, path)
        for stale in folder.glob(f"{owner}-*.npy"):   # earlier contents of this folder at this shape
            if stale != path:
                stale.unlink(missing_ok=True)
    finally:
        tmp.unlink(missing_ok=True)
    return np.load(path, mmap_mode="r")


def _cut(n: int, fraction: float) -> np.ndarray:
    """Boolean (n,): True for the round(n * fraction) images that form the test split (a fixed seed, 0, so that
    training, eval and predict cut the same images)."""
    k = int(round(n * fraction))
    if not 0 < fraction < 1 or k < 1 or k >= n:
        raise ConfigError(f"--test-fraction must leave at least one image on each side of {n} (got {fraction})")
    test = np.zeros(n, bool)
    test[np.random.default_rng(0).permutation(n)[:k]] = True
    return test


def read(root: Path, image_size=None, channels: int | None = None, test_fraction: float = 0.1,
         log=None) -> tuple[tuple, tuple, list[str]]:
    """((train images uint8 (N, C, H, W), labels (N,)), (test images, labels), class names) of an image folder.

    ``image_size`` ("HxW" or (H, W)) and ``channels`` (1 or 3) default to the first training image's. The arrays
    are read-only memory maps of the decode cache (copies where the test split was cut). DataError for a
    missing layout or an unreadable image (naming the file), ConfigError for a bad option."""
    root = Path(root)
    if not (root / "train").is_dir():
        raise DataError(f"folder:{root}: no train/ sub-folder (expected {root}/train/<class>/<image>.png)")
    if channels not in (None, 1, 3):
        raise ConfigError(f"--channels must be 1 or 3 (got {channels})")
    names, tr_files, tr_y = list_split(root / "train")
    has_test = (root / "test").is_dir()
    te_files, te_y = list_split(root / "test", names)[1:] if has_test else ([], np.zeros(0, np.int64))
    size = parse_size(image_size)
    if size is None or channels is None:
        first_size, first_channels = first_shape(tr_files[0])
        size, channels = size or first_size, channels or first_channels
    images = cached_decode(tr_files + te_files, root, size, channels, log)
    tr_x, te_x = images[:len(tr_files)], images[len(tr_files):]
    if not has_test:
        test = _cut(len(tr_files), test_fraction)
        tr_x, te_x, tr_y, te_y = tr_x[~test], tr_x[test], tr_y[~test], tr_y[test]
    return (tr_x, tr_y), (te_x, te_y), names
