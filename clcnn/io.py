"""Files written atomically (temp file + rename) so a failed run never leaves a half-written checkpoint."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import ConfigError, DataError


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


def write_json(path, obj) -> None:
    """``obj`` as indented JSON, written atomically."""
    write_atomic(path, (json.dumps(obj, indent=1) + "\n").encode())


def append_jsonl(path, row: dict) -> None:
    """Append one JSON object as a line and flush it to disk; ConfigError naming the path when it cannot."""
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None


def save_safetensors(path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """``tensors`` (float arrays as float32, integer buffers as int64) and string ``metadata``, atomically."""
    from safetensors.numpy import save
    arrays = {k: np.ascontiguousarray(v, dtype=np.int64 if np.issubdtype(np.asarray(v).dtype, np.integer)
                                      else np.float32) for k, v in tensors.items()}
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
