"""Verified downloads: stream one file to a temporary name beside its destination, check its SHA-256, and
rename it into place only when it is whole and right; retry a dropped connection; extract archives atomically.

    fetch("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", Path("~/.cache/clcnn/cifar10/..."), sha)

Nothing half-written is ever left under the destination's name: a failure (checksum, HTTP error, a connection
that stays down, Ctrl-C) removes the temporary file.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import DataError
from .registry import Remote, mirrored

CHUNK = 1 << 16   # bytes read per call


class DownloadError(DataError):
    """A download failed: an HTTP error, a wrong checksum, or a connection dropped on every attempt."""


class Unreachable(DownloadError):
    """The server could not be reached at all (no network, no DNS, connection refused): the caller tells the
    user which files to fetch by hand and where to put them."""


class _Dropped(Exception):
    """The connection closed or failed before the whole body arrived (retried)."""


def sha256_of(path) -> str:
    """The SHA-256 (hex) of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _stream(url: str, out, timeout: float, progress: bool, desc: str) -> str:
    """Write the body of ``url`` to the open file ``out``; returns its SHA-256. Raises _Dropped for a connection
    lost mid-body (or a body shorter than its Content-Length), DownloadError for an HTTP 4xx,
    _Dropped for a 5xx (worth retrying), Unreachable when no connection can be made."""
    from tqdm import tqdm
    try:
        resp = urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code >= 500:
            raise _Dropped(f"HTTP {exc.code} {exc.reason}") from None
        raise DownloadError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise Unreachable(f"cannot reach {url} ({exc.reason})") from None
    except (OSError, http.client.HTTPException) as exc:
        raise _Dropped(str(exc) or type(exc).__name__) from None
    h, got = hashlib.sha256(), 0
    length = resp.headers.get("Content-Length")
    total = int(length) if length and length.isdigit() else None
    with resp, tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=False,
                    disable=None if progress else True) as bar:   # disable=None: off when stderr is no TTY
        while True:
            try:
                block = resp.read(CHUNK)
            except (OSError, http.client.HTTPException) as exc:
                raise _Dropped(f"connection lost after {got} bytes ({exc or type(exc).__name__})") from None
            if not block:
                break
            out.write(block)
            h.update(block)
            got += len(block)
            bar.update(len(block))
    if total is not None and got != total:
        raise _Dropped(f"connection closed after {got} of {total} bytes")
    return h.hexdigest()


def fetch(url: str, dest, sha256: str, *, retries: int = 3, wait: float = 1.0, timeout: float = 60.0,
          progress: bool = True, log=None) -> Path:
    """Download ``url`` to ``dest`` (a Path), checked against ``sha256`` (hex).

    The body goes to a temporary ``.DEST.*.part`` in dest's folder, is fsynced, hashed, and renamed to ``dest``
    only when the digest matches. A dropped connection, a short body or an HTTP 5xx is retried up to ``retries``
    attempts in all, ``wait`` * attempt seconds apart, each from the start. Raises DownloadError (HTTP 4xx,
    checksum mismatch, attempts exhausted) or Unreachable (no connection at all); in every case, Ctrl-C
    included, the temporary file is removed and ``dest`` is untouched."""
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    except OSError as exc:
        raise DownloadError(f"cannot write into {dest.parent}: {exc.strerror or exc}") from None
    os.close(fd)
    try:
        for attempt in range(1, retries + 1):
            if log:
                log(f"downloading {url} -> {dest}" + (f" (attempt {attempt}/{retries})" if attempt > 1 else ""))
            try:
                with open(tmp, "wb") as out:
                    digest = _stream(url, out, timeout, progress, dest.name)
                    out.flush()
                    os.fsync(out.fileno())
                break
            except _Dropped as exc:
                if attempt == retries:
                    raise DownloadError(f"download of {url} failed after {retries} attempts: {exc}; nothing was "
                                        f"written to {dest.parent}") from None
                time.sleep(wait * attempt)
        if digest != sha256.lower():
            raise DownloadError(f"{url}: SHA-256 mismatch (got {digest}, expected {sha256}): the file is damaged "
                                f"or not the official one; nothing was written to {dest.parent}")
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dest


def ensure(remotes, folder, *, base_url: str | None = None, digests: dict | None = None, progress: bool = True,
           log=None, **fetch_args) -> list[Path]:
    """Fetch each of ``remotes`` (registry.Remote) that ``folder`` lacks; returns their paths. When one fails, the
    files this call fetched before it are removed again (the error is raised). ``base_url``
    replaces the official host (else $CLCNN_MIRROR, else the official URL); ``digests`` (file name -> SHA-256)
    replaces the pinned digests (for tests serving their own files). Other keywords go to fetch."""
    folder, paths, fetched = Path(folder), [], []
    try:
        for remote in remotes:
            dest = folder / remote.filename
            if not dest.is_file():
                sha = (digests or {}).get(remote.filename, remote.sha256)
                fetched.append(fetch(mirrored(remote, base_url), dest, sha, progress=progress, log=log,
                                     **fetch_args))
            paths.append(dest)
    except BaseException:   # all or nothing: a data set half downloaded would be found, and fail, next time
        for path in fetched:
            path.unlink(missing_ok=True)
        raise
    return paths


def extract(archive, folder) -> None:
    """Unpack the tar(.gz) ``archive`` into ``folder``: into a temporary folder first (tarfile's "data" filter:
    no absolute paths, links out or devices), then each top-level entry is renamed into place, so a damaged
    archive leaves nothing half-unpacked. DataError naming the archive when it cannot be read."""
    archive, folder = Path(archive), Path(folder)
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix=f".{archive.name}.", suffix=".unpack"))
    try:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"{archive} is not a readable tar archive ({exc})") from None
        for entry in tmp.iterdir():
            try:
                if not (folder / entry.name).exists():
                    os.replace(entry, folder / entry.name)
            except OSError as exc:   # another process (an MPI rank) unpacked the same archive first
                if not (folder / entry.name).exists():
                    raise DataError(f"cannot unpack {archive} into {folder}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def manual_hint(remotes: tuple[Remote, ...], folder) -> str:
    """"fetch URL (SIZE MB, SHA-256 X) and put it in FOLDER", or for several files of one server "fetch A, B
    from BASE (SIZE MB in all) and put them in FOLDER", for the offline message."""
    if len(remotes) == 1:
        r = remotes[0]
        return f"fetch {r.url} ({r.size / 1e6:.1f} MB, SHA-256 {r.sha256}) and put it in {folder}"
    bases = sorted({r.url[:-len(r.filename)] for r in remotes})
    names = ", ".join(r.filename for r in remotes)
    total = sum(r.size for r in remotes) / 1e6
    return f"fetch {names} from {' or '.join(bases)} ({total:.1f} MB in all) and put them in {folder}"
