"""clcnn predict and clcnn eval as a user types them, on one tiny training run (session-scoped, a synthetic
"fashion-mnist" so the class names are Fashion-MNIST's): training leaves curves.png; image files are converted
like the training data (the PNG of a test image gives the logits of that image in the IDX file); eval's
per-class accuracy and confusion matrix; one-line errors. The commands run in-process (click's runner) but for
one of each kind as a real subprocess: a clcnn process costs ~1 s of imports and kernel loading."""
import json

import numpy as np
import pytest
from PIL import Image

from clcnn import data, predict
from clcnn.data import read_idx
from test_cli import assert_one_line_error, clcnn, make_dataset

FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"]


def cli(*args) -> str:
    """The output of `clcnn ARGS` run in-process; it must succeed."""
    from click.testing import CliRunner
    from clcnn.cli import main
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == 0 and res.exception is None, (res.exception, res.output)
    return res.output


def cli_error(*args) -> str:
    """The user error `clcnn ARGS` stops with, in-process (cli.run prints it as one line, as the subprocess
    cases here and test_cli check)."""
    from click.testing import CliRunner
    from clcnn.cli import main
    from clcnn.errors import ClcnnError
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert isinstance(res.exception, ClcnnError), (res.exception, res.output)
    return str(res.exception)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """(data folder, run folder) of `clcnn train` on 256 synthetic images, 2 epochs on cpu."""
    root = tmp_path_factory.mktemp("predict")
    folder = make_dataset(root / "data", n_train=256, n_test=128)
    out = root / "run"
    res = clcnn("train", "--dataset", "fashion-mnist", "--data-dir", folder, "--model", "lenet5", "--device", "cpu",
                "--epochs", 2, "--batch-size", 32, "--momentum", 0.9, "--out", out, "--no-progress",
                env={"CLCNN_CURVES": "1"})
    assert res.returncode == 0, res.stderr
    return folder, out


def test_training_writes_curves_png(trained):
    _, out = trained
    with Image.open(out / "curves.png") as im:
        assert im.format == "PNG" and im.size[0] > 800 and im.size[1] > 300
    assert not list(out.glob(".*tmp"))


def test_test_images_as_png_files_give_the_idx_logits(trained, tmp_path):
    folder, out = trained
    x = read_idx(folder / "t10k-images-idx3-ubyte.gz")[:6]
    y = read_idx(folder / "t10k-labels-idx1-ubyte.gz")[:6]
    files = []
    for i, img in enumerate(x):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(img).save(files[-1])
    run = predict.load_run(out)
    info, _, _ = data.describe("fashion-mnist", folder)   # the training split's normalisation
    assert np.allclose(run.info.mean, info.mean) and np.allclose(run.info.std, info.std)
    want = predict.probabilities(run.model.to("cpu").predict(info.normalise(x[:, None])))
    res = clcnn("predict", out, *files, "--top", 3, "--json", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert [r["file"] for r in rows] == [str(f) for f in files]
    for r, p, label in zip(rows, want, y):
        got = [c["probability"] for c in r["predictions"]]
        assert [c["index"] for c in r["predictions"]] == list(np.argsort(-p)[:3])
        np.testing.assert_allclose(got, np.sort(p)[::-1][:3], rtol=1e-6)
        assert all(c["class"] == FASHION_NAMES[c["index"]] for c in r["predictions"])
    assert sum(r["predictions"][0]["index"] == label for r, label in zip(rows, y)) >= 5   # it learnt the bands
    line, = cli("predict", out, files[0], "--top", 2, "--device", "cpu").strip().splitlines()
    assert line.startswith(str(files[0])) and rows[0]["predictions"][1]["class"] in line and "%" in line


def test_images_are_converted_to_the_models_channels_and_size(tmp_path):
    grey = tmp_path / "grey.png"
    Image.new("RGB", (40, 30), (90, 90, 90)).save(grey)   # RGB, 40 wide, 30 high, of one grey
    assert (predict.load_image(grey, (1, 28, 28)) == 90).all()
    assert predict.load_image(grey, (1, 28, 28)).shape == (1, 28, 28)
    rgb = tmp_path / "rgb.png"
    Image.new("RGB", (32, 32), (10, 20, 30)).save(rgb)
    assert predict.load_image(rgb, (3, 32, 32))[:, 5, 7].tolist() == [10, 20, 30]   # (C, H, W) order


def test_eval_dir_per_class_and_confusion(trained, tmp_path):
    _, out = trained
    r = json.loads(cli("eval", out, "--device", "cpu", "--json", "--confusion", tmp_path / "cm.png"))
    cm = np.array(r["confusion"])
    assert cm.shape == (10, 10) and cm.sum() == r["images"] == 128
    assert r["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert r["accuracy"] == pytest.approx(last["test_accuracy"]) and r["loss"] == pytest.approx(last["test_loss"])
    for i, c in enumerate(r["per_class"]):
        assert c["class"] == FASHION_NAMES[i] and c["images"] == cm[i].sum()
        assert c["accuracy"] == (pytest.approx(cm[i, i] / cm[i].sum()) if cm[i].sum() else None)
    with Image.open(tmp_path / "cm.png") as im:
        assert im.format == "PNG"
    text = cli("eval", out, "--device", "cpu")
    assert f"test accuracy {last['test_accuracy']:.4f}" in text and "Ankle boot" in text
    assert (out / "confusion.png").is_file()


def test_one_line_errors(trained, tmp_path):
    _, out = trained
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    assert_one_line_error(clcnn("predict", out, bad, "--device", "cpu"), str(bad))
    assert "nope.png" in cli_error("predict", out, tmp_path / "nope.png")
    assert "does not exist" in cli_error("predict", tmp_path / "nope", bad)
    assert "no model.safetensors" in cli_error("predict", tmp_path, bad)
    assert "--top" in cli_error("predict", out, bad, "--top", 0)
    assert "run folder DIR or --weights" in cli_error("eval")
    assert "does not exist" in cli_error("eval", tmp_path / "nope")
    assert "--confusion" in cli_error("eval", out, "--confusion", tmp_path / "no" / "cm.png")
    assert "one of them" in cli_error("eval", out, "--weights", out / "model.safetensors")
