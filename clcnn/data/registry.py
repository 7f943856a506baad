"""The known data sets: their files, official download addresses with pinned SHA-256 digests, class names, and
the folders where their files are looked for or downloaded to.

Digests and sizes are those TensorFlow Datasets publishes for the same official files
(tensorflow/datasets, tensorflow_datasets/url_checksums/{mnist,fashion_mnist,cifar10,cifar100}.{txt,csv}); the
sizes of the CIFAR archives also match what torchvision and Keras report while downloading them. No digest here
was computed by clcnn from a download.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Remote:
    """One official file: its name in the cache, the address it is fetched from, its SHA-256 (hex) and size in
    bytes."""
    filename: str
    url: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Spec:
    """A known data set. ``kind`` is "idx" (four IDX files, gzipped or not) or "cifar"; ``remotes`` are the files
    a download fetches (for CIFAR: one release's archive; ``alternatives`` are the other release's); ``counts`` is
    (training images, test images) of the official release."""
    name: str
    kind: str
    summary: str
    remotes: tuple = ()
    alternatives: tuple = ()
    class_names: tuple = ()
    counts: tuple = (0, 0)


_MNIST = "https://storage.googleapis.com/cvdf-datasets/mnist/"   # the CVDF mirror (yann.lecun.com is retired)
_FASHION = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_KRIZ = "https://www.cs.toronto.edu/~kriz/"


def _idx_remotes(base: str, digests: dict) -> tuple:
    return tuple(Remote(f, base + f, sha, size) for f, (sha, size) in digests.items())


SPECS = {
    "mnist": Spec("mnist", "idx", "MNIST handwritten digits, 1x28x28, 10 classes", _idx_remotes(_MNIST, {
        "train-images-idx3-ubyte.gz": ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422),
        "train-labels-idx1-ubyte.gz": ("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881),
        "t10k-images-idx3-ubyte.gz": ("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877),
        "t10k-labels-idx1-ubyte.gz": ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542)}),
        class_names=tuple(str(i) for i in range(10)), counts=(60000, 10000)),
    "fashion-mnist": Spec("fashion-mnist", "idx", "Zalando's Fashion-MNIST, 1x28x28, 10 classes", _idx_remotes(
        _FASHION, {
            "train-images-idx3-ubyte.gz": ("3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                                           26421880),
            "train-labels-idx1-ubyte.gz": ("a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", 29515),
            "t10k-images-idx3-ubyte.gz": ("346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                                          4422102),
            "t10k-labels-idx1-ubyte.gz": ("67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", 5148)}),
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                     "Ankle boot"), counts=(60000, 10000)),
    "cifar10": Spec("cifar10", "cifar", "CIFAR-10, 3x32x32, 10 classes (python or binary release)", (
        Remote("cifar-10-binary.tar.gz", _KRIZ + "cifar-10-binary.tar.gz",
               "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd", 170052171),), (
        Remote("cifar-10-python.tar.gz", _KRIZ + "cifar-10-python.tar.gz",
               "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce", 170498071),),
        counts=(50000, 10000)),
    "cifar100": Spec("cifar100", "cifar", "CIFAR-100, 3x32x32, 100 fine classes (python or binary release)", (
        Remote("cifar-100-binary.tar.gz", _KRIZ + "cifar-100-binary.tar.gz",
               "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec", 168513733),), (
        Remote("cifar-100-python.tar.gz", _KRIZ + "cifar-100-python.tar.gz",
               "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7", 169001437),),
        counts=(50000, 10000)),
    "idx": Spec("idx", "idx", "any four IDX files in --data-dir (classes from the labels)"),
}


def cache_root() -> Path:
    """clcnn's data folder: $CLCNN_DATA, else ~/.cache/clcnn (downloads and decoded image folders go here)."""
    env = os.environ.get("CLCNN_DATA")
    return Path(env) if env else Path.home() / ".cache" / "clcnn"


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


def download_dir(name: str, data_dir=None) -> Path:
    """Where a download of ``name`` goes: --data-dir itself when given, else $CLCNN_DATA/name, else
    ~/.cache/clcnn/name (the first of these that search_dirs looks in)."""
    return Path(data_dir) if data_dir else cache_root() / name


def mirrored(remote: Remote, base_url: str | None = None) -> str:
    """The address ``remote`` is fetched from: ``base_url`` (or $CLCNN_MIRROR) + its file name when one is set
    (a mirror holds the same files; the pinned digests still apply), else the official URL."""
    base = base_url or os.environ.get("CLCNN_MIRROR")
    return f"{base.rstrip('/')}/{remote.filename}" if base else remote.url
