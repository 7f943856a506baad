"""IDX files (MNIST, Fashion-MNIST, any IDX pair), gzipped or not: the format's reader and a data set's files.

Format (LeCun's MNIST page): 2 zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D
float32, 0x0E float64), a dimension count D, D big-endian uint32 sizes, then the data in C order, big-endian.
"""
from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np

from ..errors import DataError

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
    want = math.prod(shape) * dtype.itemsize   # Python ints: no overflow for huge dimensions
    body = raw[4 + 4 * ndim:]
    if len(body) < want:
        raise DataError(f"{path} is truncated: {len(body)} bytes of data, expected {want} for shape {shape}")
    if len(body) > want:
        raise DataError(f"{path} has {len(body) - want} unexpected trailing bytes")
    return np.frombuffer(body, dtype=dtype).reshape(shape)


def stems() -> list[str]:
    """The four IDX file names without ``.gz``."""
    return [stem for pair in FILES.values() for stem in pair]


def holds_idx(d: Path) -> bool:
    """Whether folder ``d`` holds any of the four IDX files (gzipped or not)."""
    return any((d / s).is_file() or (d / f"{s}.gz").is_file() for s in stems())


def _find(name: str, d: Path, stem: str) -> Path:
    for candidate in (d / stem, d / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{name}: {stem}[.gz] not found in {d}")


def read_split(name: str, d: Path, split: str) -> tuple[np.ndarray, np.ndarray, Path]:
    """(uint8 images (N, C, H, W), int labels (N,), the images' path) of ``split`` ("train"/"test") in ``d``.

    IDX image files hold (N, H, W) (one channel) or (N, C, H, W). DataError for a missing or damaged file, or
    images and labels that do not pair up."""
    img_stem, lbl_stem = FILES[split]
    path = _find(name, d, img_stem)
    images = read_idx(path)
    if images.dtype != np.uint8:
        raise DataError(f"{path} holds {images.dtype.name} pixels; clcnn reads 8-bit images (IDX type 0x08, "
                        "pixels 0..255)")
    if images.ndim not in (3, 4):
        raise DataError(f"{path} holds a {images.ndim}-dimensional array, expected images (N, H, W) or (N, C, H, W)")
    images = images.reshape(images.shape[0], 1, *images.shape[1:]) if images.ndim == 3 else images
    labels = read_idx(_find(name, d, lbl_stem), expect_ndim=1)
    if len(images) != len(labels):
        raise DataError(f"{name} {split}: {len(images)} images but {len(labels)} labels")
    if labels.size and labels.min() < 0:
        raise DataError(f"{name} {split}: negative labels")
    return images, labels, path
