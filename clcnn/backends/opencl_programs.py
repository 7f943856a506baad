"""OpenCL program building for clcnn: -D options, in-process memo, and an on-disk binary cache.

A cache entry is untrusted: ``<key>.bin`` holds a header (a magic line, the entry's key, the binary's length and
SHA-256) before the driver's binary, and all of it is checked before any byte reaches the driver (PoCL asserts or
segfaults on a truncated or foreign binary). An entry that fails the check, or that the driver refuses, is
deleted and rebuilt from source, with one warning line per process."""
from __future__ import annotations

import hashlib
import os
import re
import sys
import tempfile
import time
import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import pyopencl as cl

from .base import DeviceError

_sources: dict[str, str] = {}
_programs: dict[tuple[int, int, str, str], cl.Program] = {}   # (context, device, file, options) -> program
builds = {"source": 0, "binary": 0}   # programs this process built from source / loaded from the disk cache


def cache_dir() -> Path:
    """``$CLCNN_CACHE_DIR`` or ``~/.cache/clcnn/kernels``."""
    env = os.environ.get("CLCNN_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "clcnn" / "kernels"


def build_options(defines: dict | None) -> str:
    """{"TM": 64, "TRANS_A": 0} -> "-D TM=64 -D TRANS_A=0" (sorted, so equal dicts give equal strings)."""
    return " ".join(f"-D {k}={v}" for k, v in sorted((defines or {}).items()))


_INCLUDE = re.compile(r'^#include "([\w.]+)".*$', re.M)


def source(file: str) -> str:
    """The text of ``cl/<file>`` (package ``clcnn.cl``), each ``#include "other.cl"`` line replaced by that
    file's text here on the host, so the built source (and the disk cache key) holds everything it uses."""
    if file not in _sources:
        text = resources.files("clcnn.cl").joinpath(file).read_text(encoding="utf-8")
        _sources[file] = _INCLUDE.sub(lambda m: source(m.group(1)), text)
    return _sources[file]


_SCALARS = {"int": np.int32, "uint": np.uint32, "float": np.float32}


def scalar_arg_dtypes(file: str, name: str) -> list:
    """The argument list of kernel ``name`` in ``cl/<file>`` as PyOpenCL scalar dtypes (None for pointers), read
    from the source. Declaring them lets PyOpenCL pack scalars directly: ~10x cheaper argument setting."""
    m = re.search(r"__kernel\b[^;{]*?\b" + re.escape(name) + r"\s*\(([^)]*)\)", source(file))
    if m is None:
        raise DeviceError(f"kernel {name} not found in cl/{file}")
    out = []
    for arg in m.group(1).split(","):
        words = re.sub(r"\b(const|restrict|__global|__local|__constant|global|local|constant)\b", " ", arg).split()
        if "*" in arg:
            out.append(None)
        elif words and words[0] in _SCALARS:
            out.append(_SCALARS[words[0]])
        else:
            raise DeviceError(f"cl/{file}: cannot map argument {arg.strip()!r} of {name} to a dtype")
    return out


_MAGIC = b"clcnn kernel binary v2\n"   # the entry format; in the key too, so older entries are never read
_warned: list[str] = []   # the cache folders this process has already warned about


def _cache_key(dev: cl.Device, src: str, options: str) -> str:
    h = hashlib.sha256(_MAGIC)
    for part in (dev.platform.name, dev.name, dev.version, dev.driver_version, src, options):
        h.update(part.encode("utf-8", "replace") + b"\0")
    return h.hexdigest()


def _debug(msg: str) -> None:
    if os.environ.get("CLCNN_DEBUG"):
        warnings.warn(msg, stacklevel=3)


def _header(key: str, binary: bytes) -> bytes:
    return _MAGIC + f"{key} {len(binary)} {hashlib.sha256(binary).hexdigest()}\n".encode()


def _unpack(raw: bytes, key: str) -> tuple[bytes | None, str]:
    """(the driver binary, "") when ``raw`` is a whole entry for ``key``, else (None, what is wrong with it)."""
    if not raw.startswith(_MAGIC):
        return None, "not a clcnn cache entry" if raw else "empty"
    head, sep, binary = raw[len(_MAGIC):].partition(b"\n")
    fields = head.decode("ascii", "replace").split(" ")
    if not sep or len(fields) != 3 or not fields[1].isdigit():
        return None, "damaged header"
    if fields[0] != key:
        return None, "holds another program's binary"
    if int(fields[1]) != len(binary) or not binary:
        return None, f"truncated ({len(binary)} of {fields[1]} bytes)"
    if hashlib.sha256(binary).hexdigest() != fields[2]:
        return None, "checksum mismatch"
    return binary, ""


def _discard(path: Path, why: str) -> None:
    """Delete a bad entry; the first one of a cache folder in this process is reported in one line on stderr."""
    try:
        path.unlink()
    except OSError:
        pass
    if str(path.parent) not in _warned:
        _warned.append(str(path.parent))
        print(f"clcnn: warning: kernel cache entry {path.name} {why}: discarded and rebuilt from source "
              f"(any other bad entry in {path.parent} likewise)", file=sys.stderr, flush=True)


def _load_binary(ctx: cl.Context, dev: cl.Device, path: Path, options: str) -> cl.Program | None:
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    binary, why = _unpack(raw, path.stem)
    if binary is None:
        _discard(path, why)
        return None
    try:
        prg = cl.Program(ctx, [dev], [binary]).build(options=options)
        prg._source = None   # cl.Kernel() probes it; unset, Program.__getattr__ makes a bogus clCreateKernel call
        return prg
    except Exception as exc:  # a binary this driver refuses (another driver build): rebuild from source
        _discard(path, f"was refused by the driver ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")
        return None


def _store_binary(prg: cl.Program, path: Path) -> None:
    tmp = None
    try:
        binary = prg.get_info(cl.program_info.BINARIES)[0]
        if not binary:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)   # the mode a plain open() gives (mkstemp's is 0600), as io.write_atomic
        with os.fdopen(fd, "wb") as f:
            f.write(_header(path.stem, bytes(binary)) + bytes(binary))
        os.replace(tmp, path)
    except Exception as exc:  # a read-only home, a full disk or odd driver must not break training
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        _debug(f"clcnn: could not cache kernel binary at {path}: {exc}")


def _build_source(ctx: cl.Context, dev: cl.Device, file: str, src: str, options: str) -> cl.Program:
    try:
        return cl.Program(ctx, src).build(options=options, devices=[dev], cache_dir=False)
    except cl.Error as exc:
        raise DeviceError(f"OpenCL build of cl/{file} (options '{options}') failed on {dev.name.strip()} "
                          f"[{dev.platform.name.strip()}]:\n{exc}") from exc


def _log_build(kind: str, dev: cl.Device, file: str, options: str, seconds: float) -> None:
    """Count one program build (``kind`` "source" or "binary") and, with ``$CLCNN_BUILD_LOG`` set to a path, append
    one tab-separated line to that file: kind, seconds, platform, device, file, options, process id, command."""
    builds[kind] += 1
    log = os.environ.get("CLCNN_BUILD_LOG")
    if log:
        command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv[:4]))
        line = "\t".join((kind, f"{seconds:.3f}", dev.platform.name.strip(), dev.name.strip(), file, options,
                          str(os.getpid()), command))
        try:
            with open(log, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        except OSError as exc:
            _debug(f"clcnn: cannot append to CLCNN_BUILD_LOG={log}: {exc}")


def get_program(ctx: cl.Context, dev: cl.Device, file: str, defines: dict | None = None) -> cl.Program:
    """The built program for ``cl/<file>`` with ``-D`` ``defines``: memoized per (context, file, options),
    loaded from the disk cache when a matching binary exists, else built from source and cached; each build or
    load is counted in ``builds`` (and logged to ``$CLCNN_BUILD_LOG``)."""
    options = build_options(defines)
    memo_key = (ctx.int_ptr, dev.int_ptr, file, options)   # a shared context: one program per device
    prg = _programs.get(memo_key)
    if prg is None:
        src = source(file)
        path = cache_dir() / f"{_cache_key(dev, src, options)}.bin"
        t0 = time.perf_counter()
        prg = _load_binary(ctx, dev, path, options)
        kind = "binary"
        if prg is None:
            prg, kind = _build_source(ctx, dev, file, src, options), "source"
            _store_binary(prg, path)
        _log_build(kind, dev, file, options, time.perf_counter() - t0)
        _programs[memo_key] = prg
    return prg
