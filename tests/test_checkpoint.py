"""The checkpoint file (clcnn.checkpoint): a round trip keeps every value and dtype, a truncated or altered file
is refused with one line, the registry hook, the refusals of a resume (another model, other data, a missing
folder, a changed flag), the run folder's files, and the progress display's plain lines."""
import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from clcnn import checkpoint
from clcnn.checkpoint import CHECKPOINT, Registry
from clcnn.errors import ConfigError, DataError
from clcnn.progress import Progress
from clcnn.train_config import TrainConfig, resume_config
from clcnn.training import train


def tiny_dataset(root: Path, n_train=96, n_test=32, seed=0, bright=255) -> Path:
    """A small learnable Fashion-MNIST-shaped IDX data set (class k lights the k-th band) under root/data."""
    rng = np.random.default_rng(seed)
    d = root / "data" / "fashion-mnist"
    d.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        y = rng.integers(0, 10, n)
        x = rng.integers(0, 60, (n, 28, 28))
        for i, k in enumerate(y):
            x[i, 2 + 2 * k: 4 + 2 * k, :] = bright
        for name, a in ((f"{split}-images-idx3-ubyte.gz", x), (f"{split}-labels-idx1-ubyte.gz", y)):
            header = bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
            (d / name).write_bytes(gzip.compress(header + a.astype(np.uint8).tobytes()))
    return root / "data"


def quiet(*args, **kwargs):
    pass


class Counter:
    """A registered object: a step counter with an array (what a dropout counter or a schedule looks like)."""

    def __init__(self):
        self.n, self.table = 0, np.arange(3, dtype=np.int64)

    def state_dict(self):
        return {"n": self.n, "table": self.table.copy()}

    def load_state_dict(self, state):
        self.n, self.table = state["n"], np.asarray(state["table"])


def _saved(tmp_path) -> Path:
    reg = Registry()
    c = Counter()
    c.n = 7
    reg.register("counter", c)
    state = {"epoch_state": {"epoch": 2, "step": 3, "shuffle": np.random.default_rng(5).bit_generator.state},
             "model": {"0.weight": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4),
                       "1.num_batches_tracked": np.array(9, np.int64)},
             "history": [{"epoch": 1, "train_loss": float("nan")}], "float": 0.1 + 0.2}
    path = tmp_path / CHECKPOINT
    checkpoint.save(path, state, reg)
    return path


def test_round_trip_keeps_values_dtypes_and_registered_state(tmp_path):
    path = _saved(tmp_path)
    got = checkpoint.load(path)
    w = got["model"]["0.weight"]
    assert w.dtype == np.float32 and w.shape == (3, 4) and np.array_equal(w, np.linspace(-1, 1, 12).reshape(3, 4)
                                                                            .astype(np.float32))
    tracked = got["model"]["1.num_batches_tracked"]
    assert tracked.dtype == np.int64 and tracked.shape == () and tracked == 9   # a 0-d buffer stays 0-d
    assert got["float"] == 0.1 + 0.2 and np.isnan(got["history"][0]["train_loss"])
    rng = np.random.default_rng(0)
    rng.bit_generator.state = got["epoch_state"]["shuffle"]
    assert np.array_equal(rng.permutation(50), np.random.default_rng(5).permutation(50))
    reg, c = Registry(), Counter()
    reg.register("counter", c)
    reg.load_state_dict(got["objects"])
    assert c.n == 7 and c.table.dtype == np.int64
    assert got["clcnn_version"]
    with pytest.raises(ConfigError, match="no state for"):
        other = Registry()
        other.register("schedule", Counter())
        other.load_state_dict(got["objects"])


def test_registry_refuses_a_taken_name_and_objects_without_state(tmp_path):
    reg = Registry()
    reg.register("a", Counter())
    with pytest.raises(ValueError, match="registered already"):
        reg.register("a", Counter())
    with pytest.raises(ValueError, match="state_dict"):
        reg.register("b", object())


@pytest.mark.parametrize("damage", ["truncate", "flip_tensor_byte", "flip_state", "empty", "not_clcnn"])
def test_damaged_checkpoint_is_one_line_data_error(tmp_path, damage):
    path = _saved(tmp_path)
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[:len(raw) - 7]
    elif damage == "flip_tensor_byte":
        raw[-3] ^= 0x10
    elif damage == "flip_state":
        i = raw.index(b'\\"epoch\\": 2')   # inside the JSON of the metadata: still valid JSON, other values
        raw[i + 11] = ord("3")
    elif damage == "empty":
        raw = b""
    else:
        from safetensors.numpy import save
        raw = save({"x": np.zeros(2, np.float32)}, metadata={"format": "other"})
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError) as err:
        checkpoint.load(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg
    assert ("not a clcnn checkpoint" if damage == "not_clcnn" else "corrupted") in msg, msg


def test_write_is_atomic_the_previous_checkpoint_survives_a_failed_write(tmp_path, monkeypatch):
    path = _saved(tmp_path)
    before = path.read_bytes()
    import os

    def crash(fd):   # the new file is fully written but the "machine" dies before the rename
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(ConfigError, match="cannot write"):
        checkpoint.save(path, {"epoch_state": {}, "model": {}})
    assert path.read_bytes() == before and not list(tmp_path.glob(".*tmp"))
    checkpoint.load(path)


def _cfg(tmp_path, data, **kw):
    base = dict(data_dir=str(data), model="c4k5-relu-mp2-flat-fc", device="cpu", epochs=1, batch_size=32, limit_train=64,
                lr=0.05, out=str(tmp_path / "run"))
    return TrainConfig(**{**base, **kw})


def test_resume_refusals_name_what_differs(tmp_path, monkeypatch):
    monkeypatch.setenv("CLCNN_CURVES", "0")   # no matplotlib: not what this tests
    data = tiny_dataset(tmp_path)
    train(_cfg(tmp_path, data), log=quiet, show_progress=False)
    run = tmp_path / "run"
    for name in ("checkpoint.safetensors", "metrics.jsonl", "run.json", "model.safetensors"):
        assert (run / name).is_file(), name
    meta = json.loads((run / "run.json").read_text())
    assert meta["config"]["batch_size"] == 32 and meta["command"]
    # a fresh run into the same folder would mix two runs' metrics: refused, with the way out
    with pytest.raises(ConfigError, match="holds a previous run.*--resume"):
        train(_cfg(tmp_path, data), log=quiet, show_progress=False)
    with pytest.raises(ConfigError, match="no such run folder"):
        resume_config(TrainConfig(resume=str(tmp_path / "nowhere")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no checkpoint at"):
        resume_config(TrainConfig(resume=str(tmp_path / "empty")))
    with pytest.raises(ConfigError, match="--lr 0.1: the run .* has --lr 0.05"):
        resume_config(TrainConfig(resume=str(run), lr=0.1), given=["lr", "resume"])
    with pytest.raises(ConfigError, match="--epochs 1: the run .* has done 1 epochs already; pass --epochs 2"):
        train(resume_config(TrainConfig(resume=str(run)), given=["resume"]), log=quiet, show_progress=False)
    # another model behind the same name, other data behind the same folder
    cfg = resume_config(TrainConfig(resume=str(run), epochs=2), given=["resume", "epochs"])
    cfg.model = "c6k5-relu-mp2-flat-fc"
    with pytest.raises(ConfigError, match="another model"):
        train(cfg, log=quiet, show_progress=False)
    tiny_dataset(tmp_path, seed=1)   # the files change under the run
    cfg = resume_config(TrainConfig(resume=str(run), epochs=2), given=["resume", "epochs"])
    with pytest.raises(ConfigError, match="the data set differs"):
        train(cfg, log=quiet, show_progress=False)


def test_progress_plain_lines_every_tenth_with_eta():
    lines = []
    p = Progress(total_steps=40, done=0, desc="epoch 1/2", mode="lines", log=lines.append, min_seconds=0.0)
    for _ in range(40):
        p.update(1, 8)
        p.set_loss(0.5)
    p.close()
    assert len(lines) == 9, lines   # at 4, 8, ..., 36 (the epoch's own line follows the last step)
    assert lines[0].startswith("epoch 1/2  step 4/40") and "img/s" in lines[0] and "ETA " in lines[0]
    assert "loss 0.5000" in lines[1]
    quiet_bar = Progress(total_steps=10, mode="off", log=lines.append, min_seconds=0.0)
    quiet_bar.update(10, 80)
    assert len(lines) == 9


def test_progress_bar_on_stderr_shows_step_loss_rate_and_eta(capsys):
    import io
    out = io.StringIO()
    p = Progress(total_steps=20, done=5, desc="epoch 2/3", mode="bar", file=out)
    p.update(1, 64)
    p.set_loss(0.25)
    p.update(1, 64)
    p._bar.refresh()
    text = out.getvalue()
    p.close()
    assert "epoch 2/3" in text and "7/20" in text and "loss 0.2500" in text and "img/s" in text, text


def _cli(monkeypatch, capsys, *args):
    """`clcnn ARGS` in this process (cli.run: the user's one-line errors and exit codes): (code, stdout, stderr)."""
    import sys
    from clcnn import cli
    monkeypatch.setattr(sys, "argv", ["clcnn", *map(str, args)])
    try:
        cli.run()
        code = 0
    except SystemExit as done:
        code = done.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_resume_refusals_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CLCNN_CURVES", "0")
    data = tiny_dataset(tmp_path)
    run = tmp_path / "run"
    code, out, err = _cli(monkeypatch, capsys, "train", "--data-dir", data, "--model", "c4k5-relu-mp2-flat-fc",
                          "--device", "cpu", "--batch-size", 32, "--limit-train", 64, "--out", run, "--no-progress")
    assert code == 0, err
    cases = [(["--resume", tmp_path / "nowhere"], "no such run folder"),
             (["--resume", run, "--model", "lenet5"], "a resume continues its own settings"),
             (["--resume", run, "--out", tmp_path / "elsewhere"], "drop --out"),
             (["--data-dir", data, "--device", "cpu", "--out", run], "holds a previous run")]
    raw = (run / CHECKPOINT).read_bytes()
    for args, needle in cases:
        code, out, err = _cli(monkeypatch, capsys, "train", *args)
        assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, (args, err)
    (run / CHECKPOINT).write_bytes(raw[:len(raw) // 2])   # cut short: as a full disk or a killed copy leaves it
    code, out, err = _cli(monkeypatch, capsys, "train", "--resume", run)
    assert code == 2 and err.strip().splitlines() == [f"clcnn: error: checkpoint {run / CHECKPOINT} is truncated or "
                                                      "corrupted (not a readable safetensors file)"], err


def test_a_damaged_run_json_is_kept_aside_on_resume(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    checkpoint.write_run(out, {"lr": 0.1}, ["clcnn", "train", "--lr", "0.1"])
    (out / "run.json").write_text("{")   # cut short
    with pytest.warns(RuntimeWarning, match="could not be read"):
        checkpoint.write_run(out, {"lr": 0.1}, ["clcnn", "train", "--resume", "run"], resumed=(2, 10))
    assert (out / "run.json.damaged").read_text() == "{"
    run = json.loads((out / "run.json").read_text())
    assert run["command"] is None and run["resumes"][0]["epoch"] == 2 and run["config"] == {"lr": 0.1}
    (out / "run.json").write_text("[")   # damaged again: the first damaged copy stays
    with pytest.warns(RuntimeWarning, match="run.json.damaged.1"):
        checkpoint.write_run(out, {"lr": 0.1}, ["clcnn", "train", "--resume", "run"], resumed=(3, 20))
    assert (out / "run.json.damaged").read_text() == "{" and (out / "run.json.damaged.1").read_text() == "["
