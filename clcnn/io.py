"""Files written atomically (temp file + rename) so a failed run never leaves a half-written checkpoint, and
strict RFC 8259 JSON: a non-finite float is written as the string "NaN", "Infinity" or "-Infinity" (what
Python's float(), JavaScript's Number() and Go's strconv.ParseFloat read back), never as a bare NaN token."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import ConfigError, DataError


def check_writable(path, what: str) -> None:
    """ConfigError unless a file could be written at ``path`` (its folder exists and is writable, and the path is
    not a folder): checked before long work whose result goes there, so that the work is not lost at the end."""
    p = Path(path)
    folder = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise ConfigError(f"{what} {path} is a folder, not a file")
    if not folder.is_dir():
        raise ConfigError(f"{what} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"{what} {path}: the folder {folder} is not writable")


def write_atomic(path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` via a temp file in the same folder, fsync, then os.replace (the old file, if
    any, stays whole until then). ConfigError naming the path when it cannot be written (no folder, a file in
    the way, no permission, a full disk)."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)   # mkstemp makes 0600: give the file the mode a plain open() would
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}   # float -> its JSON string (docs/CHECKS.md)


def strict(obj):
    """``obj`` with every non-finite float (NumPy scalars included) replaced by its string in NON_FINITE and NumPy
    scalars and arrays made Python numbers and lists: what ``json.dumps(..., allow_nan=False)`` accepts."""
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return strict(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return NON_FINITE[repr(obj)]
    return obj


def dumps(obj, indent: int | None = None) -> str:
    """Strict JSON text of ``obj`` (see ``strict``); ValueError for an object JSON cannot hold."""
    return json.dumps(strict(obj), indent=indent, allow_nan=False)


def write_json(path, obj) -> None:
    """``obj`` as indented strict JSON, written atomically."""
    write_atomic(path, (dumps(obj, indent=1) + "\n").encode())


def append_jsonl(path, row: dict) -> None:
    """Append one strict JSON object as a line and flush it to disk; ConfigError naming the path when it cannot.
    A failed append (a full disk) is cut back to the file's previous length: no partial last line is left."""
    line = (dumps(row) + "\n").encode()
    try:
        with open(path, "ab") as f:
            start = f.tell()
            try:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            except OSError:
                f.truncate(start)
                raise
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None


def save_safetensors(path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """``tensors`` (float arrays as float32, integer buffers as int64) and string ``metadata``, atomically."""
    from safetensors.numpy import save
    arrays = {k: np.asarray(v, dtype=np.int64 if np.issubdtype(np.asarray(v).dtype, np.integer) else np.float32,
                            order="C") for k, v in tensors.items()}   # asarray: a 0-d buffer stays 0-d
    write_atomic(path, save(arrays, metadata={k: str(v) for k, v in (metadata or {}).items()}))


def load_safetensors(path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors, metadata); DataError for a missing or malformed file."""
    from safetensors import SafetensorError
    from safetensors.numpy import load
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read weights {path}: {exc.strerror or exc}") from None
    try:
        tensors = load(raw)
        header_len = int.from_bytes(raw[:8], "little")
        metadata = json.loads(raw[8:8 + header_len]).get("__metadata__", {}) or {}
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not a valid safetensors file ({exc})") from None
    return tensors, metadata
