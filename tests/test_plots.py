"""Pictures: a run's curves (train/val/test loss and accuracy per epoch) from metrics.jsonl, several runs overlaid
(`clcnn plot`), the confusion matrix; the metrics reader's rules; matplotlib stays out of `import clcnn`."""
import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from clcnn import plots
from clcnn.errors import DataError
from test_predict import cli, cli_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_run(folder, epochs=3, val=True, offset=0.0):
    """A run folder with metrics.jsonl rows as training writes them (val_* when a validation split is held)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for e in range(1, epochs + 1):
        row = {"epoch": e, "train_loss": 2.0 / e + offset, "test_loss": 2.2 / e + offset,
               "test_accuracy": 1 - 0.5 / e - offset, "device": "cpu"}
        if val:
            row |= {"val_loss": 2.1 / e + offset, "val_accuracy": 1 - 0.45 / e - offset}
        rows.append(row)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def png_size(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_curves_png(tmp_path):
    run = write_run(tmp_path / "run")
    path = plots.save_curves(run)
    assert path == run / "curves.png"
    w, h = png_size(path)
    assert w > 2 * h > 600
    assert not list(run.glob(".*tmp"))


def test_after_epoch_skips_with_clcnn_curves_0(tmp_path, monkeypatch):
    run = write_run(tmp_path / "run", epochs=1)
    monkeypatch.setenv("CLCNN_CURVES", "0")
    assert plots.after_epoch(run) is None and not (run / "curves.png").exists()
    monkeypatch.setenv("CLCNN_CURVES", "1")
    assert plots.after_epoch(run, title="lenet5 on mnist") == run / "curves.png"


def test_read_metrics_rules(tmp_path):
    run = write_run(tmp_path / "run", epochs=2, val=False)
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 2, "train_loss": 9.0, "test_loss": "NaN", "test_accuracy": 0.1}) + "\n")
        f.write('{"epoch": 3, "train_lo')   # a crash in the middle of a write
    rows = plots.read_metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2] and rows[1]["train_loss"] == 9.0   # the last row of an epoch wins
    plots.save_curves(run)   # a "NaN" value is skipped, not an error
    (run / "metrics.jsonl").write_text('{"epoch": 1}\nnot json\n{"epoch": 2}\n')
    with pytest.raises(DataError, match="metrics.jsonl:2"):
        plots.read_metrics(run)
    with pytest.raises(DataError, match="does not exist"):
        plots.read_metrics(tmp_path / "nope")
    with pytest.raises(DataError, match="cannot read"):
        plots.read_metrics(tmp_path)


def test_plot_command_overlays_runs(tmp_path):
    a, b = write_run(tmp_path / "a"), write_run(tmp_path / "b", val=False, offset=0.05)
    out = tmp_path / "both.png"
    assert str(out) in cli("plot", a, b, "--out", out, "--label", "lr 0.1", "--label", "lr 0.01")
    assert png_size(out)[0] > 600
    assert str(a / "curves.png") in cli("plot", a)
    assert "one per run" in cli_error("plot", a, b, "--label", "x")
    assert "does not exist" in cli_error("plot", a, tmp_path / "nope")


@pytest.mark.parametrize("k", [3, 30])
def test_confusion_png(tmp_path, k):
    import numpy as np
    cm = np.random.default_rng(0).integers(0, 50, (k, k)) + np.eye(k, dtype=int) * 100
    path = plots.save_confusion(cm, [f"class {i}" for i in range(k)], tmp_path / "cm.png")
    w, h = png_size(path)
    assert w > 400 and h > 400


def test_import_clcnn_does_not_import_matplotlib_onnx_torch():
    code = "import sys, clcnn, clcnn.cli; print(sorted(m for m in ('matplotlib', 'onnx', 'torch', 'PIL') " \
           "if m in sys.modules))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ,
                         "PYTHONPATH": ROOT})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
