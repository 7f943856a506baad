"""Issue 11's seven cases, each with the right value written down, and the kinds they stand for: nothing a user
passes or a disk holds reaches a kernel unchecked, special values as in PyTorch on every device, numbers users
read are per-image means, files written are strict JSON. What clcnn checks: docs/CHECKS.md."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import reference as ref
from conftest import _device_params
from test_cli import assert_one_line_error, clcnn, make_dataset

from clcnn import data, io, models
from clcnn.errors import ConfigError, DataError, ShapeError
from clcnn.layers import Conv2D, Dense, Flatten
from clcnn.model import Sequential
from clcnn.optim import SGD
from clcnn.train_config import TrainConfig
from clcnn.trainer import train_epoch
from clcnn.training import train

ROOT = Path(__file__).resolve().parent.parent
FAST = [p for p in _device_params() if not p.id.endswith("-oclgrind")]   # numba and PoCL: cheap, every one
POCL = [p.values[0] for p in FAST if p.id.endswith("-pocl")]
# cpu and the first PoCL device; the other PoCL devices (the same check again, cold builds of a whole model) deep
FIRST = [p if i < 2 else pytest.param(*p.values, id=p.id, marks=pytest.mark.deep) for i, p in enumerate(FAST)]
NAN, INF = float("nan"), float("inf")


def _refuse_constant(name):
    raise ValueError(f"non-standard JSON constant {name}")


def strict_loads(text: str):
    """json.loads that refuses NaN, Infinity and -Infinity (what JavaScript's and Go's parsers do)."""
    return json.loads(text, parse_constant=_refuse_constant)


# ---- case 1: a wrong input size is refused before any kernel runs, naming the layer and the shapes ----------
@pytest.mark.parametrize("dev", FAST)
@pytest.mark.parametrize("hw", [32, 27, 24])
def test_case1_lenet_refuses_other_input_sizes(dev, hw):
    # PyTorch: "shapes cannot be multiplied (2x576 and 400x120)" for 32x32; clcnn before the fix: (2, 10) logits
    m = models.lenet5(seed=0).to(dev)
    with pytest.raises(ShapeError, match=rf"\(N, 1, 28, 28\), got \(2, 1, {hw}, {hw}\)"):
        m.predict(np.zeros((2, 1, hw, hw), np.float32))


@pytest.mark.parametrize("dev", FAST)
def test_case1_dense_after_conv_names_layer_and_shapes(dev):
    # Conv2D(k=3) -> Flatten -> Dense(9, 2) on 4x4: the flattened features are 4, not 9 (once [[1.7e13, 5.2e13]])
    m = Sequential([Conv2D(1, 1, 3), Flatten(), Dense(9, 2)]).to(dev)
    with pytest.raises(ShapeError, match=r"layer 2 \(Dense\(in_features=9, out_features=2\)\) expects input "
                                         r"\(N, 9\), got \(1, 4\)"):
        m.predict(np.ones((1, 1, 4, 4), np.float32))
    # the CLI form (28x28 train, 32x32 test: one line, exit 2) is test_cli's test_mismatched_train_and_test_...


# ---- case 2: an empty training set is one line naming the file (the CLI form: test_cli's test_empty_...) ----
def test_case2_empty_training_set_names_the_file(tmp_path):
    from test_cli import write_idx
    d = make_dataset(tmp_path / "data", n_train=8, n_test=8)
    write_idx(d / "train-images-idx3-ubyte.gz", np.zeros((0, 28, 28)))
    write_idx(d / "train-labels-idx1-ubyte.gz", np.zeros(0))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz.*empty|empty.*train-images-idx3-ubyte\.gz"):
        data.load("fashion-mnist", str(d))


# ---- case 4: the epoch's train loss is the per-image mean, steps weighted by their batch size ---------------
def test_case4_train_loss_is_the_per_image_mean():
    rng = np.random.default_rng(4)
    split = data.Split(rng.standard_normal((65, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, 65).astype(np.int32))

    def net():
        return Sequential([Flatten(), Dense(64, 3)], seed=1, input_shape=(1, 8, 8)).to("cpu")
    m = net()
    loss, ips, _ = train_epoch(m, SGD(m, lr=10.0), split, 64, np.random.default_rng(0), show_progress=False)
    twin = net()   # the same steps one by one: the batch-mean loss of each
    opt = SGD(twin, lr=10.0)
    steps = [(len(y), twin.train_step(x, y, opt)) for x, y in data.batches(split, 64, np.random.default_rng(0))]
    assert [n for n, _ in steps] == [64, 1]
    per_image = (64 * steps[0][1] + steps[1][1]) / 65
    step_mean = (steps[0][1] + steps[1][1]) / 2   # what was reported before
    assert loss == pytest.approx(per_image, rel=1e-5)
    assert abs(per_image - step_mean) > 0.5, (per_image, step_mean)   # the test can tell the two apart
    # the values (this seed): 1.3449 per image against 0.7328, the mean of the two steps, reported before
    assert per_image == pytest.approx(1.3449, abs=1e-3) and step_mean == pytest.approx(0.7328, abs=1e-3)
    assert ips > 0


# ---- case 6: metrics.jsonl is strict JSON once a run diverges ------------------------------------------------
def test_case6_strict_json_spells_non_finite_values():
    text = io.dumps({"train_loss": NAN, "b": [np.float32(INF), -INF, 1.5], "c": np.array([np.nan, 2.0])})
    assert strict_loads(text) == {"train_loss": "NaN", "b": ["Infinity", "-Infinity", 1.5], "c": ["NaN", 2.0]}
    assert math.isnan(float(strict_loads(text)["train_loss"]))   # float() reads the strings back


def test_case6_diverging_run_writes_strict_metrics(tmp_path):
    # `clcnn train --lr 1e10` wrote {"train_loss": NaN, ...} before: not JSON for JavaScript, Go or strict Python
    d = make_dataset(tmp_path / "data", n_train=32, n_test=16)
    cfg = TrainConfig(data_dir=str(d), device="cpu", lr=1e10, batch_size=16, out=str(tmp_path / "run"),
                      model="lenet5")
    train(cfg, log=lambda *a, **k: None, show_progress=False)
    rows = [strict_loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows and rows[0]["train_loss"] == "NaN", rows   # the run diverged, and says so in standard JSON
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]


def test_failed_atomic_write_leaves_no_temp_file(tmp_path, monkeypatch):
    def full_disk(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(ConfigError, match="No space left on device"):
        io.write_json(tmp_path / "x.json", {"a": 1})
    assert list(tmp_path.iterdir()) == []


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        io.write_json(tmp_path / "x.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o640


# ---- case 7 and the kind: every option is range-checked, the message names it --------------------------------
@pytest.mark.parametrize("field, value, needle", [
    ("seed", -1, "--seed"), ("lr", INF, "--lr"), ("lr", NAN, "--lr"), ("lr", 0.0, "--lr"),
    ("momentum", INF, "--momentum"), ("momentum", -0.1, "--momentum"), ("weight_decay", NAN, "--weight-decay"),
    ("epochs", 0, "--epochs"), ("batch_size", 0, "--batch-size"), ("limit_train", 0, "--limit-train"),
    ("split", "0.5", "--split"), ("parallel", "fork", "parallel"), ("epochs", 2.5, "--epochs"),
    ("batch_size", "64", "--batch-size"), ("seed", True, "--seed"), ("split", "1e308,1e308", "--split")])
def test_case7_train_config_names_the_option(field, value, needle):
    # before: --seed -1 ended in numpy's "expected non-negative integer"
    with pytest.raises(ConfigError, match=needle):
        TrainConfig(device="cpu,cpu" if field == "split" and value != "0.5" else "cpu",
                    **{field: value}).validate()


@pytest.mark.parametrize("args, needle", [
    (["train", "--seed", "-1"], "--seed"), (["train", "--lr", "inf"], "--lr"),
    (["eval", "--weights", "w.safetensors", "--batch-size", "0"], "--batch-size"),
    (["tune", "--max-candidates", "0"], "--max-candidates"), (["bench", "gemm", "--rounds", "0"], "--rounds"),
    (["bench", "train", "--steps", "0"], "--steps")])   # bench --size, tune --repeats: test_bench_tune
def test_case7_cli_options_one_line_naming_the_option(tmp_path, args, needle):
    assert_one_line_error(clcnn(*args, "--device", "cpu"), needle)


# ---- case 5: a damaged, truncated or foreign kernel cache entry is discarded and rebuilt, one warning -----
CACHE_SCRIPT = """
import sys
import numpy as np
import clcnn
from clcnn.backends import opencl_programs as P
be = clcnn.get_backend(sys.argv[1])
x = be.upload(np.array([np.nan, -1.0, 2.0, 0.5], np.float32)); y = be.zeros((4,))
be.relu_forward(x, y, 4)
be.bias_add(y, be.upload(np.array([1.0, 2.0], np.float32)), 1, 2, 2)
out = be.download(y)
assert np.isnan(out[0]) and out[1:].tolist() == [1.0, 4.0, 2.5], out
keys = sorted((file, P._cache_key(be.device, P.source(file), opts)) for (_, _, file, opts) in P._programs)
print(" ".join(k for _, k in keys))
"""


def _cache_run(dev, cache: Path):
    env = {**os.environ, "CLCNN_CACHE_DIR": str(cache)}
    return subprocess.run([sys.executable, "-c", CACHE_SCRIPT, dev], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.mark.skipif(not POCL, reason="no PoCL device")
def test_case5_damaged_kernel_cache_is_rebuilt_with_one_warning(tmp_path):
    # before: PoCL's "deserialize_file: Assertion `len > 0' failed" (exit 134) for a cut entry, a segfault for a
    # foreign one, and no clcnn line
    shared = Path(os.environ.get("CLCNN_CACHE_DIR", tmp_path / "warm"))
    first = _cache_run(POCL[0], shared)   # fills (or reuses) the usual cache: no build in a warm tree
    assert first.returncode == 0, first.stderr
    keys = first.stdout.split()
    assert len(keys) == 2, first.stdout   # activation.cl and bias.cl
    cache = tmp_path / "cache"
    cache.mkdir()
    whole = {k: (shared / f"{k}.bin").read_bytes() for k in keys}
    for k, raw in whole.items():
        (cache / f"{k}.bin").write_bytes(raw[:len(raw) // 2])   # cut to half its size
    (cache / f"{keys[1]}.bin").write_bytes(whole[keys[0]])      # another program's valid entry
    again = _cache_run(POCL[0], cache)
    assert again.returncode == 0, again.stderr
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("clcnn: warning: kernel cache entry"), again.stderr
    assert all((cache / f"{k}.bin").read_bytes() != b"" for k in keys)
    assert _cache_run(POCL[0], cache).stderr.strip() == ""   # rebuilt entries load without a word


def test_kernel_cache_entry_checks():
    pytest.importorskip("pyopencl")
    from clcnn.backends import opencl_programs as P
    key, other, binary = "a" * 64, "b" * 64, b"\x7fELF driver bytes"
    entry = P._header(key, binary) + binary
    assert P._unpack(entry, key) == (binary, "")
    assert "another program" in P._unpack(entry, other)[1]
    assert "truncated" in P._unpack(entry[:-3], key)[1]
    assert "checksum" in P._unpack(entry[:-1] + b"X", key)[1]
    assert "not a clcnn cache entry" in P._unpack(binary, key)[1]   # a bare driver binary
    assert P._unpack(b"", key) == (None, "empty")


# ---- case 3 and the kind: special values as in PyTorch, identically on every device (the rule: base.py) ----
SPECIAL = np.array([NAN, -1.0, 2.0, INF, -INF, -0.0, 3.4e38, -3.4e38, 1e-45], np.float32)


@pytest.mark.parametrize("dev", FAST)
def test_case3_relu_keeps_nan_and_negative_zero(dev):
    # before: [nan, 0, 2, inf, 0] on cpu but [0, 0, 2, inf, 0] on PoCL (OpenCL's fmax drops NaN)
    from clcnn.backends import get_backend
    be = get_backend(dev)
    y = be.zeros(SPECIAL.shape)
    be.relu_forward(be.upload(SPECIAL), y, SPECIAL.size)
    out = be.download(y)
    want = np.array([NAN, 0, 2, INF, 0, -0.0, 3.4e38, 0, 1e-45], np.float32)   # torch.relu on the CPU
    np.testing.assert_array_equal(out, want)
    assert np.signbit(out[5]) and not np.signbit(out[1])
    dx = be.zeros(SPECIAL.shape)
    be.relu_backward(y, be.upload(np.ones_like(SPECIAL)), dx, SPECIAL.size)
    np.testing.assert_array_equal(be.download(dx), [1, 0, 1, 1, 0, 0, 1, 0, 1])   # a NaN output passes dy


@pytest.mark.parametrize("dev", FAST)
def test_case3_maxpool_picks_nan_as_torch(dev):
    from clcnn.backends import get_backend
    be = get_backend(dev)
    x = np.array([[1, NAN, 2, 3], [5, 6, -INF, -INF], [NAN, NAN, 0, 0], [0, 0, 0, 0]], np.float32)
    # 2x2 windows: a NaN wins (index 1), -inf loses (3 at 3), the last NaN of a window wins (9), first of ties (10)
    for k, stride, want_y, want_arg in ((2, 2, [[NAN, 3], [NAN, 0]], [[1, 3], [9, 10]]), (3, 1, None, None)):
        ho = (4 - k) // stride + 1
        y, arg = be.zeros((1, 1, ho, ho)), be.zeros((1, 1, ho, ho), np.int32)
        be.maxpool_forward(be.upload(x.reshape(1, 1, 4, 4)), y, arg, 1, 1, 4, 4, k, stride)
        ref_y, ref_arg = ref.maxpool_forward(x, 1, 1, 4, 4, k, stride)
        if want_y is not None:
            np.testing.assert_array_equal(ref_y.reshape(ho, ho), want_y)
            np.testing.assert_array_equal(ref_arg.reshape(ho, ho), want_arg)
        np.testing.assert_array_equal(be.download(y).reshape(ho, ho), ref_y.reshape(ho, ho).astype(np.float32))
        np.testing.assert_array_equal(be.download(arg).reshape(ho, ho), ref_arg.reshape(ho, ho))
        try:
            import torch
        except ImportError:
            continue
        ty, targ = torch.nn.functional.max_pool2d(torch.from_numpy(x).view(1, 1, 4, 4), k, stride,
                                                  return_indices=True)
        np.testing.assert_array_equal(ref_arg.reshape(ho, ho), targ.numpy().reshape(ho, ho))


@pytest.mark.parametrize("dev", FAST)
def test_case3_cross_entropy_of_special_logits(dev):
    m = Sequential([Flatten()], input_shape=(3,)).to(dev)
    z = np.array([[NAN, 1, 2], [INF, 1, 2], [-INF, 1, 2], [0, 1, 2]], np.float32)
    rows = [m.gradients(z[i:i + 1], np.array([1]))[0] for i in range(4)]
    # torch.nn.functional.cross_entropy: nan, nan, 1.3133, 1.4076
    assert math.isnan(rows[0]) and math.isnan(rows[1])
    assert rows[2] == pytest.approx(1.3133, abs=1e-4) and rows[3] == pytest.approx(1.4076, abs=1e-4)
    assert rows[0] != rows[0] and math.isnan(m.gradients(z, np.array([1, 1, 1, 1]))[0])   # one NaN row: NaN mean


@pytest.mark.parametrize("dev", FIRST)
def test_case3_lenet_nan_pixel_gives_nan_logits_as_torch(dev):
    # before: NaN logits on cpu but finite ones and a finite loss (8.406) on PoCL, with NaN in the gradients
    m = models.lenet5(seed=0).to(dev)
    x = np.zeros((2, 1, 28, 28), np.float32)
    x[0, 0, 3, 3] = NAN
    logits = m.predict(x)
    assert np.isnan(logits[0]).all() and np.isfinite(logits[1]).all(), logits
    loss, grads = m.gradients(x, np.array([1, 2]))
    assert math.isnan(loss) and np.isnan(grads["0.weight"]).any()
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 6, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Conv2d(6, 16, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
                              torch.nn.Linear(400, 120), torch.nn.ReLU(), torch.nn.Linear(120, 84), torch.nn.ReLU(),
                              torch.nn.Linear(84, 10))
    net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in m.state_dict().items()})
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(np.isnan(logits), np.isnan(want))
    np.testing.assert_allclose(logits[1], want[1], rtol=1e-4, atol=1e-5)


# ---- the tuning cache is read back untrusted -------------------------------------------------------------
def test_tuning_file_hand_edited_or_damaged_is_ignored_with_one_warning(tmp_path, monkeypatch, capsys):
    pytest.importorskip("pyopencl")
    from clcnn.backends import opencl_tune as T
    from clcnn.backends.base import DeviceInfo
    monkeypatch.setenv("CLCNN_TUNING_DIR", str(tmp_path))
    monkeypatch.setattr(T, "_warned", set())
    info = DeviceInfo("cl:9", "Test Device", "opencl", "cpu", "Test Platform", "OpenCL 3.0 test")
    gemm = {"64x64x64:NN:b1": {"variant": "tiled", "TM": 16}}
    conv = {"conv n8 c1 h28 w28 m6 k5 s1 p2 pool2": "direct"}
    path = T.save_tuning(info, gemm, 128, 1.5, conv)
    assert T.load_tuning(info) == {"gemm": gemm, "eltwise_wg": 128, "conv": conv}
    good = path.read_text()
    cases = [good.replace('"eltwise_wg": 128', '"eltwise_wg": 100000'),   # hand-edited: the checksum fails
             good[:len(good) // 2], "<html>not json</html>", "[1, 2]"]
    for text in cases:
        T._warned.clear()
        path.write_text(text)
        assert T.load_tuning(info) == {}
        T.load_tuning(info)   # the second read of the same file in one process says nothing more
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("clcnn: warning: tuning file"), (text[:40], err)
    doc = json.loads(good)   # a valid checksum but a value of the wrong kind is refused too
    doc["eltwise_wg"] = 3
    doc["checksum"] = T._checksum(doc)
    path.write_text(json.dumps(doc))
    T._warned.clear()
    assert T.load_tuning(info) == {} and "eltwise_wg" in capsys.readouterr().err
    doc["eltwise_wg"], doc["conv"] = 128, {"conv n8 c1 h28 w28 m6 k5 s1 p2 pool2": "fastest"}   # not an algorithm
    doc["checksum"] = T._checksum(doc)
    path.write_text(json.dumps(doc))
    T._warned.clear()
    assert T.load_tuning(info) == {} and "conv table" in capsys.readouterr().err
    path.unlink()
    assert T.load_tuning(info) == {} and capsys.readouterr().err == ""   # untuned: no word


# ---- the kind: every rejected input is refused before any kernel runs (Oclgrind shows no access) -----------
def rejected_inputs(dev):
    """[(what, call, error type)] for inputs every public entry point must refuse; the models are placed on
    ``dev`` first (uploads only), so the calls themselves must not launch anything."""
    from clcnn.backends import get_backend
    from clcnn.parallel import DataParallel
    lenet = models.lenet5(seed=0).to(dev)
    small = Sequential([Conv2D(1, 1, 3), Flatten(), Dense(9, 2)]).to(dev)
    conv = Conv2D(1, 2, 3, stride=2, padding=1)
    conv.init(np.random.default_rng(0))
    conv.to(get_backend(dev))
    x28, y2 = np.zeros((2, 1, 28, 28), np.float32), np.array([1, 2])
    be = get_backend(dev)
    cases = [
        ("lenet 32x32", lambda: lenet.predict(np.zeros((2, 1, 32, 32), np.float32)), ShapeError),
        ("lenet 27x27", lambda: lenet.predict(np.zeros((2, 1, 27, 27), np.float32)), ShapeError),
        ("lenet 24x24", lambda: lenet.gradients(np.zeros((2, 1, 24, 24), np.float32), y2), ShapeError),
        ("dense after conv 4x4", lambda: small.predict(np.ones((1, 1, 4, 4), np.float32)), ShapeError),
        ("label 10 of 10 classes", lambda: lenet.gradients(x28, np.array([1, 10])), ShapeError),
        ("label -1", lambda: lenet.gradients(x28, np.array([-1, 0])), ShapeError),
        ("label 2**32 + 1 (wraps to 1)", lambda: lenet.gradients(x28, np.array([2**32 + 1, 0])), ShapeError),
        ("label 1.5", lambda: lenet.gradients(x28, np.array([1.5, 0.0])), ShapeError),
        ("label NaN", lambda: lenet.gradients(x28, np.array([NAN, 0.0])), ShapeError),
        ("3 labels for 2 images", lambda: lenet.gradients(x28, np.array([1, 2, 3])), ShapeError),
        ("train_step labels", lambda: lenet.train_step(x28, np.array([0, 99]), SGD(lenet, lr=0.1)), ShapeError),
        ("gradients of an empty batch", lambda: lenet.gradients(x28[:0], np.array([], np.int32)), ShapeError),
        ("gradients without labels", lambda: lenet.gradients(x28, None), ShapeError),
        ("predict batch_size 0", lambda: lenet.predict(x28, batch_size=0), ConfigError),
        ("predict batch_size -5", lambda: lenet.predict(x28, batch_size=-5), ConfigError),
        ("a conv layer alone, 2 channels", lambda: conv.forward(be.zeros((1, 2, 5, 5))), ShapeError),
        ("a conv layer alone, 3-D input", lambda: conv.forward(be.zeros((1, 5, 5))), ShapeError),
    ]
    other = "cpu" if dev != "cpu" else (POCL[0] if POCL else None)
    if other is not None:   # a data-parallel group of two devices: the whole batch is checked before any shard
        group = DataParallel(models.lenet5(seed=0), [dev, other])
        cases += [
            ("a group's split overflows", lambda: DataParallel(models.lenet5(seed=0), [dev, other],
                                                                split="1e308,1e308"), ConfigError),
            ("a group's label 10", lambda: group.gradients(np.zeros((4, 1, 28, 28), np.float32),
                                                           np.array([0, 1, 2, 10])), ShapeError),
            ("a group's 32x32 batch", lambda: group.train_step(np.zeros((4, 1, 32, 32), np.float32),
                                                               np.array([0, 1, 2, 3]), SGD(group, lr=0.1)), ShapeError),
        ]
    return cases


def run_rejected(dev) -> int:
    """Call every rejected input on ``dev`` with kernel launches forbidden; returns how many were refused."""
    from clcnn.backends import get_backend
    cases = rejected_inputs(dev)
    be = get_backend(dev)
    watched = [get_backend(d) for d in {dev, "cpu", *POCL}]   # Backend.launches: enqueues (Numba: op calls)
    before = [w.launches for w in watched]
    if hasattr(be, "_run"):
        be.synchronize()

        def forbidden(*a, **k):
            raise AssertionError("a kernel was launched for a rejected input")
        be._run = be.replay = forbidden
    try:
        for what, call, error in cases:
            try:
                call()
            except error:
                continue
            raise AssertionError(f"{dev}: {what} was not refused with {error.__name__}")
        assert [w.launches for w in watched] == before, "a rejected input reached a device"
    finally:
        for name in ("_run", "replay"):
            be.__dict__.pop(name, None)
    return len(cases)


@pytest.mark.parametrize("dev", FIRST)
def test_rejected_inputs_launch_no_kernel(dev):
    grouped = dev != "cpu" or bool(POCL)   # the 3 data-parallel cases need a second device (cpu, or a PoCL)
    assert run_rejected(dev) == 17 + 3 * grouped


def test_rejected_inputs_under_oclgrind_show_no_invalid_access(tmp_path):
    # before: Oclgrind reported invalid reads in `gemm` for 27x27 and 24x24 LeNet-5 inputs
    from test_oclgrind import oclgrind_env, oclgrind_reports
    grind = [p.values[0] for p in _device_params() if p.id.endswith("-oclgrind")]
    if not grind:
        pytest.skip("no Oclgrind OpenCL platform installed")
    script = (f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r}); from test_reliability import run_rejected;"
              f" print('refused', run_rejected({grind[0]!r}))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          env=oclgrind_env(tmp_path), cwd=ROOT)
    assert proc.returncode == 0 and "refused 20" in proc.stdout, proc.stdout + proc.stderr[-3000:]
    assert oclgrind_reports(proc.stderr) == [], proc.stderr[-3000:]


def test_sizes_past_32_bit_indices_are_refused_naming_the_layer():
    # 10**6 images of 28x28: conv 0's output has 4.7e9 elements, past what the kernels' int32 indices reach
    m = models.lenet5(seed=0)
    with pytest.raises(ShapeError, match=r"layer 0 .*4,704,000,000 elements.*smaller batch"):
        m.output_shape((10**6, 1, 28, 28))
    assert m.output_shape((4000, 1, 28, 28)) == (4000, 10)


def _special_gemm_operands():
    rng = np.random.default_rng(11)
    a, b = rng.standard_normal((3, 7)).astype(np.float32), rng.standard_normal((7, 5)).astype(np.float32)
    a[0, 2], a[1, 6], b[3, 4] = INF, NAN, -INF
    return a, b, rng.standard_normal(5).astype(np.float32)


@pytest.mark.deep
@pytest.mark.parametrize("dev", POCL[:1])
def test_special_values_through_every_gemm_config(dev):
    # every tile config the device runs (each pads 3x5x7 differently): a build each, so the deep grid only
    from test_hypothesis import same_values
    from conftest import open_device
    be = open_device(dev)
    a, b, bias = _special_gemm_operands()
    want = ref.gemm(a, b, np.zeros((3, 5)), 3, 5, 7, bias=bias, bias_axis=1, relu=True).reshape(3, 5)
    for cfg in be.gemm_configs:
        c = be.zeros((3, 5))
        with be.gemm_forced(cfg):
            be.gemm(be.upload(a), be.upload(b), c, 3, 5, 7, bias=be.upload(bias), bias_axis=1, relu=True)
        same_values(be.download(c), want, f"gemm {cfg}")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")   # the float64 reference's own inf - inf
@pytest.mark.parametrize("dev", FAST)
def test_special_values_through_gemm_sigmoid_and_bce_as_the_reference(dev):
    # GEMM tiles pad odd sizes with zeros: an inf entry must never meet a padded 0 (inf * 0 = NaN) and NaN must
    # reach exactly the outputs whose row or column hold it; the fused bias + ReLU keep NaN (relu's rule)
    from clcnn.backends import get_backend
    from test_hypothesis import same_values
    be = get_backend(dev)
    m, n, k = 3, 5, 7
    a, b, bias = _special_gemm_operands()
    for relu in (False, True):
        c = be.zeros((m, n))
        be.gemm(be.upload(a), be.upload(b), c, m, n, k, bias=be.upload(bias), bias_axis=1, relu=relu)
        want = ref.gemm(a, b, np.zeros((m, n)), m, n, k, bias=bias, bias_axis=1, relu=relu).reshape(m, n)
        same_values(be.download(c), want, f"gemm relu={relu}")
    y = be.zeros(SPECIAL.shape)
    be.sigmoid_forward(be.upload(SPECIAL), y, SPECIAL.size)
    same_values(be.download(y), ref.sigmoid_forward(SPECIAL), "sigmoid")   # 1 at 3.4e38, 0 at -3.4e38, no NaN
    dx = be.zeros(SPECIAL.shape)
    be.sigmoid_backward(y, be.upload(np.ones_like(SPECIAL)), dx, SPECIAL.size)
    same_values(be.download(dx), ref.sigmoid_backward(be.download(y), np.ones(SPECIAL.size)), "sigmoid backward")
    z = np.array([NAN, INF, -INF, 100.0, -100.0, -0.0], np.float32)
    lab = np.array([1, 0, 1, 1, 0, 1], np.int32)
    for i in range(len(z)):   # one row at a time: each row's own loss (a NaN row would hide the others)
        probs, loss = be.zeros((1, 1)), be.zeros((1,))
        be.sigmoid_bce_forward(be.upload(z[i:i + 1].reshape(1, 1)), be.upload(lab[i:i + 1]), probs, loss, 1)
        want_p, want_l = ref.sigmoid_bce_forward(z[i:i + 1], lab[i:i + 1], 1)
        same_values(be.download(probs), want_p, f"bce probs z={z[i]}")
        same_values(be.download(loss), [want_l], f"bce loss z={z[i]}")


def test_kernel_cache_entries_follow_the_umask(tmp_path, monkeypatch):
    pytest.importorskip("pyopencl")
    from clcnn.backends import opencl_programs as P

    class Program:   # what _store_binary reads of a built program
        def get_info(self, what):
            return [b"driver bytes"]
    old = os.umask(0o027)
    try:
        P._store_binary(Program(), tmp_path / f"{'c' * 64}.bin")
    finally:
        os.umask(old)
    entry = tmp_path / f"{'c' * 64}.bin"
    assert entry.stat().st_mode & 0o777 == 0o640 and P._unpack(entry.read_bytes(), "c" * 64)[0] == b"driver bytes"
    assert [p.name for p in tmp_path.iterdir()] == [entry.name]


def test_failed_append_leaves_no_partial_line(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    io.append_jsonl(path, {"epoch": 1, "train_loss": 0.5})
    before = path.read_bytes()

    def full_disk(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(ConfigError, match="No space left"):
        io.append_jsonl(path, {"epoch": 2, "train_loss": NAN})
    assert path.read_bytes() == before and [strict_loads(x) for x in before.decode().splitlines()]
