"""The download code against a local HTTP server on 127.0.0.1 (http.server in a thread) serving files in the real
formats, made here: tiny CIFAR archives of both releases and gzipped IDX files. A verified download, a
corrupted file rejected by its checksum, a dropped connection retried or cleanly failed, a 404, no server at
all (the offline message); in every failure nothing is left in the cache, not even a temporary file."""
import gzip
import hashlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from clcnn import data
from clcnn.data import download as dl
from clcnn.data.registry import SPECS
from test_cli import assert_one_line_error, clcnn
from test_datasets import cifar_archive


class _Handler(BaseHTTPRequestHandler):
    """Serves server.files[path]; server.errors[path]: HTTP error codes answered first, one per request;
    server.drops[path] > 0: send the headers and half the body, then close (and count down)."""

    def do_GET(self):  # noqa: N802  (http.server's name)
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        self.server.hits[self.path] = self.server.hits.get(self.path, 0) + 1
        if self.server.errors.get(self.path):   # a server error first (503: worth a retry)
            self.send_error(self.server.errors[self.path].pop(0))
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.server.drops.get(self.path, 0) > 0:
            self.server.drops[self.path] -= 1
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)   # the connection drops mid-body
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):   # keep the test output quiet
        pass


@pytest.fixture()
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.drops, srv.hits, srv.errors = {}, {}, {}, {}
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _leftovers(folder):
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


@pytest.mark.parametrize("release", ["binary", "python"])
def test_cifar_download_verified_unpacked_and_read(tmp_path, server, release):
    archive, ((tr_x, tr_y), _, names) = cifar_archive(tmp_path, "cifar10", release)
    remote = SPECS["cifar10"].remotes[0] if release == "binary" else SPECS["cifar10"].alternatives[0]
    server.files[f"/{remote.filename}"] = archive
    cache = tmp_path / "cache"
    dl.ensure([remote], cache, base_url=server.base, digests={remote.filename: _sha(archive)}, progress=False)
    info, (x, y), _ = data.describe("cifar10", cache)   # the archive found in the cache is unpacked and read
    np.testing.assert_array_equal(x, tr_x)
    np.testing.assert_array_equal(y, tr_y)
    assert info.class_names == names and not [n for n in _leftovers(cache) if n.endswith(".part")]


def test_idx_download_through_data_fetch(tmp_path, server):
    """data.fetch with a base URL and digests (what a test or a private mirror passes) downloads all four files."""
    rng = np.random.default_rng(0)
    digests = {}
    for remote in SPECS["mnist"].remotes:
        n = 12 if remote.filename.startswith("train") else 6
        arr = rng.integers(0, 256, (n, 28, 28)) if "images" in remote.filename else rng.integers(0, 10, n)
        header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
        body = gzip.compress(header + arr.astype(np.uint8).tobytes())
        server.files[f"/{remote.filename}"], digests[remote.filename] = body, _sha(body)
    folder = data.fetch("mnist", tmp_path / "d", base_url=server.base, digests=digests, progress=False)
    info, (x, _), (tx, _) = data.describe("mnist", tmp_path / "d")
    assert folder == tmp_path / "d" and x.shape == (12, 1, 28, 28) and tx.shape == (6, 1, 28, 28)
    assert info.class_names == [str(i) for i in range(10)]


def test_corrupted_file_is_rejected_by_its_checksum(tmp_path, server):
    archive, _ = cifar_archive(tmp_path, "cifar10", "binary")
    server.files["/cifar-10-binary.tar.gz"] = archive[:-1] + bytes([archive[-1] ^ 1])   # one bit flipped
    cache = tmp_path / "cache"
    with pytest.raises(dl.DownloadError, match="SHA-256 mismatch"):
        dl.fetch(f"{server.base}/cifar-10-binary.tar.gz", cache / "cifar-10-binary.tar.gz", _sha(archive),
                 progress=False)
    assert _leftovers(cache) == []


def test_mirror_files_still_checked_against_the_pinned_digest(tmp_path, server, monkeypatch):
    """$CLCNN_MIRROR changes where the files come from, not what they must be: a tiny archive is not the
    official one, so describe(download=True) refuses it and leaves nothing in the cache."""
    archive, _ = cifar_archive(tmp_path, "cifar10", "binary")
    server.files["/cifar-10-binary.tar.gz"] = archive
    monkeypatch.setenv("CLCNN_MIRROR", server.base)
    monkeypatch.setenv("HOME", str(tmp_path))   # a real ~/.cache/clcnn/cifar10 would be found
    with pytest.raises(dl.DownloadError, match=SPECS["cifar10"].remotes[0].sha256):
        data.describe("cifar10", tmp_path / "cache", download=True)
    assert _leftovers(tmp_path / "cache") == []


def test_dropped_connection_is_retried(tmp_path, server):
    body = b"clcnn" * 20000
    server.files["/f.bin"], server.drops["/f.bin"] = body, 2
    dest = tmp_path / "cache" / "f.bin"
    log = []
    dl.fetch(f"{server.base}/f.bin", dest, _sha(body), retries=3, wait=0, progress=True, log=log.append)
    assert dest.read_bytes() == body and server.hits["/f.bin"] == 3 and _leftovers(dest.parent) == ["f.bin"]
    assert log[0] == f"downloading {server.base}/f.bin -> {dest}" and log[2].endswith("(attempt 3/3)")


def test_server_error_is_retried(tmp_path, server):
    server.files["/f.bin"], server.errors["/f.bin"] = b"payload", [503]
    dest = tmp_path / "f.bin"
    dl.fetch(f"{server.base}/f.bin", dest, _sha(b"payload"), wait=0, progress=False)
    assert dest.read_bytes() == b"payload" and server.hits["/f.bin"] == 2


def test_dropped_connection_fails_cleanly_when_it_stays_down(tmp_path, server):
    body = b"clcnn" * 20000
    server.files["/f.bin"], server.drops["/f.bin"] = body, 99
    cache = tmp_path / "cache"
    with pytest.raises(dl.DownloadError, match="failed after 3 attempts.*closed after 50000 of 100000 bytes"):
        dl.fetch(f"{server.base}/f.bin", cache / "f.bin", _sha(body), retries=3, wait=0, progress=False)
    assert server.hits["/f.bin"] == 3 and _leftovers(cache) == []


def test_404_is_one_clear_error(tmp_path, server):
    with pytest.raises(dl.DownloadError, match="HTTP 404"):
        dl.fetch(f"{server.base}/missing.tar.gz", tmp_path / "cache" / "missing.tar.gz", "0" * 64, progress=False)
    assert _leftovers(tmp_path / "cache") == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_cli_names_the_files_and_the_folder(tmp_path):
    """No server: `clcnn train` ends in one line naming the official file and where to put it; with
    --no-download it says how to get it."""
    env = {"CLCNN_MIRROR": f"http://127.0.0.1:{_closed_port()}", "CLCNN_DATA": str(tmp_path / "data"),
           "HOME": str(tmp_path)}   # (a real ~/.cache/clcnn/cifar10 would be found)
    res = clcnn("train", "--dataset", "cifar10", "--device", "cpu", "--out", tmp_path / "run", env=env)
    assert_one_line_error(res, "cannot be downloaded", "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
                          f"put it in {tmp_path / 'data' / 'cifar10'}")
    assert _leftovers(tmp_path / "data") in ([], ["cifar10"])
    res = clcnn("train", "--dataset", "mnist", "--no-download", "--device", "cpu", "--out", tmp_path / "run",
                env=env)
    assert_one_line_error(res, "pass --download", "train-images-idx3-ubyte.gz", str(tmp_path / "data" / "mnist"))


def test_a_set_of_files_is_downloaded_all_or_nothing(tmp_path, server):
    """MNIST's four files: the third one missing on the server (404) removes the two already fetched."""
    remotes = SPECS["mnist"].remotes
    for r in remotes[:2] + remotes[3:]:
        server.files[f"/{r.filename}"] = b"x"
    digests = {r.filename: _sha(b"x") for r in remotes}
    with pytest.raises(dl.DownloadError, match=f"{remotes[2].filename} failed: HTTP 404"):
        dl.ensure(remotes, tmp_path / "d", base_url=server.base, digests=digests, progress=False)
    assert _leftovers(tmp_path / "d") == [] and server.hits == {f"/{r.filename}": 1 for r in remotes[:2]}
