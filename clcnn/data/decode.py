"""Decoding image files with Pillow, in parallel: worker processes each decode one contiguous run of the files
straight into a shared ``.npy`` file (opened as a memory map), so no pixels travel through pipes.

The workers are fresh interpreters (``python -c`` calling ``worker``), not forks (a fork of a process running
Numba or OpenCL threads may deadlock) nor multiprocessing's spawn (which re-runs a user's unguarded ``__main__``
script). Small folders are decoded in the calling process: starting an interpreter costs ~0.3 s.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..errors import DataError

PARALLEL_FROM = 4000   # images: fewer are decoded in this process
_GREY = ("1", "L", "LA", "I", "I;16", "F")


def _unreadable(path, exc) -> DataError:
    return DataError(f"{path}: not an image Pillow can read ({exc})")


def decode(path, size: tuple[int, int], channels: int) -> np.ndarray:
    """One image file -> uint8 (channels, H, W): converted to "L" (1) or "RGB" (3), resized bilinearly to
    ``size`` (H, W) unless it is that size already. DataError naming the file when Pillow cannot read it."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            mode = "L" if channels == 1 else "RGB"
            im = im if im.mode == mode else im.convert(mode)
            if im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            a = np.frombuffer(im.tobytes(), np.uint8)   # (faster than np.asarray(im) for small images)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        raise _unreadable(path, exc) from None
    return a.reshape(1, *size) if channels == 1 else a.reshape(*size, 3).transpose(2, 0, 1)


def first_shape(path) -> tuple[tuple[int, int], int]:
    """((H, W), channels) of one image file: 1 channel for Pillow's grey modes (1, L, LA, I, F), else 3."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            return (im.height, im.width), 1 if im.mode in _GREY else 3
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        raise _unreadable(path, exc) from None


def _decode_range(files, size, channels: int, npy, start: int, stop: int) -> None:
    """Decode files[start:stop] into rows start:stop of the .npy file ``npy`` (uint8 (N, C, H, W))."""
    out = np.load(npy, mmap_mode="r+")
    for i in range(start, stop):
        out[i] = decode(files[i], size, channels)
    out.flush()


def worker() -> None:
    """A worker process: sys.argv = [-c, list file (NUL-separated paths), npy, H, W, C, start, stop]. Exit 3
    with the DataError's one line on stderr for an unreadable image."""
    listing, npy, h, w, c, start, stop = sys.argv[1:8]
    files = Path(listing).read_bytes().decode("utf-8", "surrogateescape").split("\0")
    try:
        _decode_range(files, (int(h), int(w)), int(c), npy, int(start), int(stop))
    except DataError as exc:
        sys.stderr.write(f"{exc}\n")
        raise SystemExit(3) from None


def default_workers() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # not Linux
        return os.cpu_count() or 1


def decode_all(files: list, size: tuple[int, int], channels: int, npy, workers: int | None = None,
               min_parallel: int = PARALLEL_FROM) -> None:
    """Fill the .npy file ``npy`` (uint8 (len(files), C, H, W), header already written) with the decoded
    ``files``: in ``workers`` processes (default: the CPUs available), or in this one for fewer than
    ``min_parallel`` files or one worker. DataError naming the first unreadable file; the workers are stopped on
    any failure (Ctrl-C included)."""
    workers = min(workers or default_workers(), len(files))
    if workers <= 1 or len(files) < min_parallel:
        _decode_range(files, size, channels, npy, 0, len(files))
        return
    import clcnn
    root = str(Path(clcnn.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    bounds = np.linspace(0, len(files), workers + 1).astype(int)
    with tempfile.NamedTemporaryFile("wb", suffix=".list", delete=False) as f:
        f.write("\0".join(str(p) for p in files).encode("utf-8", "surrogateescape"))
    procs = []
    try:
        for start, stop in zip(bounds[:-1], bounds[1:]):
            procs.append(subprocess.Popen(
                [sys.executable, "-c", "from clcnn.data.decode import worker; worker()", f.name, str(npy),
                 str(size[0]), str(size[1]), str(channels), str(start), str(stop)],
                stderr=subprocess.PIPE, env=env))
        errors = [(p.wait(), p.stderr.read().decode(errors="replace").strip()) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stderr.close()
        Path(f.name).unlink(missing_ok=True)
    for rc, err in errors:
        if rc == 3:
            raise DataError(err.splitlines()[-1])
    for rc, err in errors:
        if rc != 0:
            raise RuntimeError(f"an image-decoding worker failed (exit status {rc}): {err[-2000:]}")
