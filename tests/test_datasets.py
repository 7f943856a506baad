"""Data sets: CIFAR-10/100 in both official releases (files the tests write in the documented formats), image
folders against the IDX arrays they were exported from, the decode cache, the validation hold-out, and the
one-line errors of the command line (`clcnn train --dataset folder:PATH`, `clcnn datasets`)."""
import io
import json
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from clcnn import data
from clcnn.data import cifar, folder as image_folder
from clcnn.errors import ConfigError, DataError
from test_cli import FASHION, assert_one_line_error, clcnn

ENV = {"CLCNN_CACHE_DIR": os.environ.get("CLCNN_CACHE_DIR", "")}


def _cifar_names(name):
    k = 10 if name == "cifar10" else 100
    return [f"class-{i}" for i in range(k)]


def make_cifar(root: Path, name: str, release: str, per_file: int = 6, seed: int = 0):
    """Write a tiny ``name`` ("cifar10"/"cifar100") ``release`` ("python"/"binary") folder under ``root`` in the
    official layout; returns ((train x uint8 (N, 3, 32, 32), fine labels), (test x, labels), class names)."""
    rng = np.random.default_rng(seed)
    sub, train_files, test_files, meta = cifar.RELEASES[name][release]
    d = root / sub
    d.mkdir(parents=True, exist_ok=True)
    names = _cifar_names(name)
    out = {}
    for split, files in (("train", train_files), ("test", test_files)):
        xs, ys = [], []
        for f in files:
            x = rng.integers(0, 256, (per_file, 3, 32, 32), dtype=np.uint8)
            y = rng.integers(0, len(names), per_file)
            coarse = y // 5
            if release == "binary":
                labels = y[:, None] if name == "cifar10" else np.stack([coarse, y], 1)
                (d / f).write_bytes(np.concatenate([labels.astype(np.uint8), x.reshape(per_file, -1)], 1).tobytes())
            else:
                batch = {b"batch_label": f"{split} batch".encode(), b"data": x.reshape(per_file, -1),
                         b"filenames": [f"img_{i}.png".encode() for i in range(per_file)]}
                if name == "cifar10":
                    batch[b"labels"] = [int(v) for v in y]
                else:
                    batch[b"fine_labels"], batch[b"coarse_labels"] = [int(v) for v in y], [int(v) for v in coarse]
                (d / f).write_bytes(pickle.dumps(batch, protocol=2))
            xs.append(x)
            ys.append(y)
        out[split] = (np.concatenate(xs), np.concatenate(ys))
    if release == "binary":
        (d / meta).write_text("\n".join(names) + "\n")
        if name == "cifar100":
            (d / "coarse_label_names.txt").write_text("\n".join(f"super-{i}" for i in range(20)) + "\n")
    else:
        key = b"label_names" if name == "cifar10" else b"fine_label_names"
        (d / meta).write_bytes(pickle.dumps({key: [n.encode() for n in names], b"num_vis": 3072}, protocol=2))
    return out["train"], out["test"], names


def cifar_archive(root: Path, name: str, release: str, **kw) -> tuple[bytes, tuple]:
    """(the tar.gz bytes of a tiny release, as make_cifar returns)."""
    made = make_cifar(root / "src", name, release, **kw)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(root / "src" / cifar.RELEASES[name][release][0], arcname=cifar.RELEASES[name][release][0])
    return buf.getvalue(), made


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
@pytest.mark.parametrize("release", ["python", "binary"])
def test_cifar_release_reads_back(tmp_path, name, release):
    (tr_x, tr_y), (te_x, te_y), names = make_cifar(tmp_path, name, release)
    info, (x, y), (tx, ty) = data.describe(name, tmp_path)
    assert info.input_shape == (3, 32, 32) and info.num_classes == len(names) and info.class_names == names
    np.testing.assert_array_equal(x, tr_x)
    np.testing.assert_array_equal(y, tr_y)
    np.testing.assert_array_equal(tx, te_x)
    np.testing.assert_array_equal(ty, te_y)
    ref = tr_x.astype(np.float64) / 255
    np.testing.assert_allclose(info.mean, ref.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(info.std, ref.std(axis=(0, 2, 3)), rtol=1e-9)
    assert info.dir == str(tmp_path / cifar.RELEASES[name][release][0])


@pytest.mark.parametrize("release", ["python", "binary"])
def test_cifar_archive_in_data_dir_is_unpacked(tmp_path, release):
    archive, ((tr_x, _), _, _) = cifar_archive(tmp_path, "cifar10", release)
    d = tmp_path / "data"
    d.mkdir()
    (d / ("cifar-10-python.tar.gz" if release == "python" else "cifar-10-binary.tar.gz")).write_bytes(archive)
    _, (x, _), _ = data.describe("cifar10", d)
    np.testing.assert_array_equal(x, tr_x)
    assert not [p for p in d.iterdir() if p.name.startswith(".")], "the unpacking left a temporary folder"


def test_cifar_damaged_files_name_the_file(tmp_path):
    make_cifar(tmp_path, "cifar10", "binary")
    bad = tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin"
    bad.write_bytes(bad.read_bytes()[:-7])
    with pytest.raises(DataError, match="data_batch_3.bin is truncated"):
        data.describe("cifar10", tmp_path)
    make_cifar(tmp_path / "py", "cifar10", "python")
    evil = tmp_path / "py" / "cifar-10-batches-py" / "test_batch"
    evil.write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")   # a pickle that would run a shell command
    with pytest.raises(DataError, match="test_batch is not a CIFAR python batch.*refusing to load os.system"):
        data.describe("cifar10", tmp_path / "py")


def _fashion_subset(n_train=240, n_test=60):
    if not (FASHION / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    info, (x, y), (tx, ty) = data.describe("fashion-mnist")
    return info, (x[:n_train], y[:n_train]), (tx[:n_test], ty[:n_test])


def export_png(root: Path, split: str, images: np.ndarray, labels: np.ndarray, names: list[str]) -> None:
    """Write uint8 images (N, 1|3, H, W) as PNG files root/split/<class>/<index>.png (ImageFolder layout)."""
    from PIL import Image
    for k, name in enumerate(names):
        (root / split / name.replace("/", "-")).mkdir(parents=True, exist_ok=True)
    for i, (img, label) in enumerate(zip(images, labels)):
        arr = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
        Image.fromarray(arr).save(root / split / names[label].replace("/", "-") / f"{i:05d}.png")


def _by_class(x, y):
    order = np.argsort(y, kind="stable")   # the folder lists class by class, files in index order
    return x[order], y[order]


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CLCNN_DATA", str(tmp_path / "cache"))
    return tmp_path / "cache" / "decoded"


def test_folder_equals_the_idx_arrays(tmp_path, cache):
    info, (x, y), (tx, ty) = _fashion_subset()
    names = [n.replace("/", "-") for n in info.class_names]
    export_png(tmp_path / "f", "train", x, y, info.class_names)
    export_png(tmp_path / "f", "test", tx, ty, info.class_names)
    finfo, (fx, fy), (ftx, fty) = data.describe(f"folder:{tmp_path / 'f'}")
    assert finfo.input_shape == (1, 28, 28) and finfo.class_names == sorted(names)
    perm = [names.index(n) for n in sorted(names)]          # folder label -> Fashion-MNIST label
    for (a, b), (fa, fb) in (((x, y), (fx, fy)), ((tx, ty), (ftx, fty))):
        ea, eb = _by_class(a, np.argsort(perm)[b])
        np.testing.assert_array_equal(fa, ea)
        np.testing.assert_array_equal(fb, eb)
    ref = x.astype(np.float64) / 255
    np.testing.assert_allclose(finfo.mean, [ref.mean()], rtol=1e-12)
    before = list(cache.glob("*.npy"))
    assert len(before) == 1
    os.utime(next((tmp_path / "f" / "train").rglob("*.png")), ns=(1, 1))   # a changed file: a new decode
    data.describe(f"folder:{tmp_path / 'f'}")
    after = list(cache.glob("*.npy"))
    assert len(after) == 1 and after != before and not list(cache.glob(".*")), "not decoded again, or kept stale"
    data.describe(f"folder:{tmp_path / 'f'}", channels=3)   # another shape: its own entry beside
    assert len(list(cache.glob("*.npy"))) == 2


def test_folder_conversion_cut_and_cache(tmp_path, cache):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 3, 20, 24), dtype=np.uint8)
    y = np.arange(40) % 2
    export_png(tmp_path / "f", "train", x, y, ["cat", "dog"])
    log = []
    info, (fx, _), (ftx, _) = data.describe(f"folder:{tmp_path / 'f'}", image_size="16x12", channels=1,
                                            test_fraction=0.25, log=log.append)
    assert info.input_shape == (1, 16, 12) and len(fx) == 30 and len(ftx) == 10 and len(log) == 1
    info3, (gx, _), _ = data.describe(f"folder:{tmp_path / 'f'}", test_fraction=0.25, log=log.append)
    assert info3.input_shape == (3, 20, 24) and len(log) == 2   # another shape: another decode
    data.describe(f"folder:{tmp_path / 'f'}", test_fraction=0.25, log=log.append)
    assert len(log) == 2, "an unchanged folder was decoded again"
    np.testing.assert_array_equal(gx, _by_class(x, y)[0][~image_folder._cut(40, 0.25)])
    with pytest.raises(ConfigError, match="--image-size"):
        data.describe(f"folder:{tmp_path / 'f'}", image_size="0x3")
    with pytest.raises(ConfigError, match="--channels"):
        data.describe(f"folder:{tmp_path / 'f'}", channels=2)
    with pytest.raises(ConfigError, match="--test-fraction"):
        data.describe(f"folder:{tmp_path / 'f'}", test_fraction=1.0)


def test_hold_out_is_seeded_and_disjoint():
    split = data.Split(np.arange(50, dtype=np.float32).reshape(50, 1, 1, 1), np.arange(50, dtype=np.int32))
    rest, val = data.hold_out(split, 0.2, seed=3)
    assert len(rest) == 40 and len(val) == 10
    assert sorted(np.concatenate([rest.labels, val.labels]).tolist()) == list(range(50))
    assert np.all(np.diff(val.labels) > 0) and np.all(np.diff(rest.labels) > 0)   # original order kept
    np.testing.assert_array_equal(data.hold_out(split, 0.2, seed=3)[1].labels, val.labels)
    assert not np.array_equal(data.hold_out(split, 0.2, seed=4)[1].labels, val.labels)
    with pytest.raises(ConfigError, match="--val-fraction"):
        data.hold_out(split, 0.001)


def test_cli_folder_with_validation_and_bad_image(tmp_path):
    """`clcnn train --dataset folder:PATH --val-fraction` reports val and test; an unreadable image is one line;
    `clcnn datasets` lists every data set."""
    rng = np.random.default_rng(0)
    y = np.arange(48) % 3
    x = rng.integers(0, 40, (48, 1, 28, 28), dtype=np.uint8)
    for i, k in enumerate(y):
        x[i, 0, 8 * k:8 * k + 8] = 255
    export_png(tmp_path / "f", "train", x, y, ["a", "b", "c"])
    env = {**ENV, "CLCNN_DATA": str(tmp_path / "cache")}
    res = clcnn("train", "--dataset", f"folder:{tmp_path / 'f'}", "--val-fraction", "0.25", "--test-fraction",
                "0.25", "--model", "lenet5", "--device", "cpu", "--epochs", 1, "--batch-size", 8, "--out",
                tmp_path / "run", env=env)
    assert res.returncode == 0, res.stderr
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    assert {"val_loss", "val_accuracy", "test_loss", "test_accuracy"} <= set(row), row
    (tmp_path / "f" / "train" / "b" / "broken.png").write_bytes(b"\x89PNG not really")
    res = clcnn("train", "--dataset", f"folder:{tmp_path / 'f'}", "--device", "cpu", "--out", tmp_path / "r2",
                env=env)
    assert_one_line_error(res, "broken.png", "not an image")
    res = clcnn("datasets", env=env)
    assert res.returncode == 0, res.stderr
    assert all(n in res.stdout for n in ("mnist", "fashion-mnist", "cifar10", "cifar100", "folder:"))


def test_datasets_json_says_where(tmp_path, monkeypatch):
    from click.testing import CliRunner
    from clcnn.cli_datasets import datasets
    monkeypatch.setenv("CLCNN_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path))   # a CIFAR-10 in the real ~/.cache/clcnn would be found
    make_cifar(tmp_path / "d", "cifar100", "binary")
    rows = {r["name"]: r for r in json.loads(CliRunner().invoke(datasets, ["--data-dir", tmp_path / "d",
                                                                            "--json"]).output)}
    assert rows["cifar100"]["found"] and rows["cifar100"]["where"] == str(tmp_path / "d")
    assert rows["cifar100"]["bytes"] == 2 * 6 * 3074 + sum(f.stat().st_size for f in (tmp_path / "d").rglob("*.txt"))
    assert not rows["cifar10"]["found"] and rows["cifar10"]["where"] == str(tmp_path / "d")   # downloads go there
    assert rows["cifar10"]["bytes"] == 170052171 and rows["cifar10"]["download"][0].endswith("cifar-10-binary.tar.gz")


def test_parallel_decode_matches_and_names_a_bad_file(tmp_path):
    """The worker processes fill the shared .npy exactly as a serial decode does; a file no worker can read is
    one DataError naming it."""
    from clcnn.data import decode
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (30, 3, 9, 7), dtype=np.uint8)
    export_png(tmp_path / "f", "train", x, np.arange(30) % 3, ["a", "b", "c"])
    _, files, _ = image_folder.list_split(tmp_path / "f" / "train")
    out = {}
    for workers in (1, 2):
        npy = tmp_path / f"w{workers}.npy"
        np.lib.format.open_memmap(npy, mode="w+", dtype=np.uint8, shape=(30, 3, 9, 7)).flush()
        decode.decode_all(files, (9, 7), 3, npy, workers=workers, min_parallel=0)
        out[workers] = np.load(npy)
    np.testing.assert_array_equal(out[2], out[1])
    np.testing.assert_array_equal(out[1], _by_class(x, np.arange(30) % 3)[0])
    Path(files[25]).write_bytes(b"GIF89a broken")
    with pytest.raises(DataError, match=f"{files[25]}: not an image Pillow can read"):
        decode.decode_all(files, (9, 7), 3, tmp_path / "w2.npy", workers=2, min_parallel=0)


@pytest.fixture(scope="module")
def fashion_png(tmp_path_factory):
    """All of Fashion-MNIST (60,000 + 10,000 images) exported as PNG class folders (root/train, root/test), and
    the same images as IDX files in the order and with the labels the folder gives them (root/idx: class by
    class, classes numbered in sorted-name order)."""
    from test_cli import write_idx
    _fashion_subset()
    info, (x, y), (tx, ty) = data.describe("fashion-mnist")
    root = tmp_path_factory.mktemp("fashion-png")
    export_png(root, "train", x, y, info.class_names)
    export_png(root, "test", tx, ty, info.class_names)
    names = [n.replace("/", "-") for n in info.class_names]
    relabel = np.argsort(np.argsort(names))   # Fashion-MNIST label -> the folder's (sorted names) label
    (root / "idx").mkdir()
    for stem, (images, labels) in (("train", (x, y)), ("t10k", (tx, ty))):
        images, labels = _by_class(images, relabel[labels])
        write_idx(root / "idx" / f"{stem}-images-idx3-ubyte.gz", images[:, 0])
        write_idx(root / "idx" / f"{stem}-labels-idx1-ubyte.gz", labels)
    return root


@pytest.mark.deep
def test_one_epoch_from_the_folder_reaches_the_idx_accuracy(tmp_path, fashion_png):
    """The issue's recipe (LeNet-5, 1 epoch, batch 64, lr 0.05, seed 0, numba) from the PNG folder and from IDX
    files of the same images: test accuracies within 0.5 points, and 0.83 reached (the recipe's bar of 0.84 is for
    the IDX files in their original order: this order is another shuffle, which lands on either side of 0.84).

    The IDX files hold the images in the folder's order (class by class) with the folder's label numbers: the
    same seed then draws the same batches. Against the original IDX order the same seed is another shuffle:
    measured 0.8518 (IDX order) vs 0.8411 (folder order) on 2026-12-02, a 1.07-point gap of two shuffles
    (seeds 1 and 2 in IDX order: 0.8093 and 0.8476); 0.8390 for both on 2026-12-03 (the deep grid's CI failure,
    another host)."""
    acc = {}
    for name, flags in (("idx", ["--dataset", "fashion-mnist", "--data-dir", fashion_png / "idx"]),
                        ("folder", ["--dataset", f"folder:{fashion_png}"])):
        res = clcnn("train", *flags, "--model", "lenet5", "--device", "cpu", "--epochs", 1, "--batch-size", 64,
                    "--lr", 0.05, "--seed", 0, "--out", tmp_path / name,
                    env={**ENV, "CLCNN_DATA": str(tmp_path / "cache")})
        assert res.returncode == 0, res.stderr
        acc[name] = json.loads((tmp_path / name / "metrics.jsonl").read_text())["test_accuracy"]
    assert abs(acc["folder"] - acc["idx"]) <= 0.005, acc
    assert acc["folder"] >= 0.83, acc
