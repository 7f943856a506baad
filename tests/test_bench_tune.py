"""`clcnn bench` and `clcnn tune` smoke tests: they run, report what they promise, and a tuned device's next run
loads the saved configs with no search. Timings are never asserted."""
import json

import numpy as np
import pytest

import clcnn
import clcnn.backends as backends
from clcnn import bench
from clcnn.backends import opencl_tune as tuner
from conftest import usable_device_ids
from test_cli import assert_one_line_error, clcnn as run_cli

FAST_CL = [d for d in usable_device_ids(simulators=False) if d != "cpu"]


def test_bench_train_rows_and_json(tmp_path):
    devs = ",".join(["cpu"] + FAST_CL[:1])
    out = tmp_path / "b.json"
    res = run_cli("bench", "train", "--model", "lenet5", "--batch-size", 4, "--device", devs, "--steps", 1,
                  "--rounds", 1, "--json", out)
    assert res.returncode == 0, res.stderr
    assert "ratio" in res.stdout and "peak device memory" in res.stdout
    rows = json.loads(out.read_text())
    assert [r["device"] for r in rows] == devs.split(",")
    for r in rows:
        assert {"clcnn", "torch", "ratio", "unit", "device", "card", "peak_bytes"} <= set(r)
        assert r["clcnn"] > 0 and r["unit"] == "img/s" and r["peak_bytes"] > 0
        if r["torch"] is not None:
            assert r["ratio"] == pytest.approx(r["clcnn"] / r["torch"])


def test_bench_gemm_variants(tmp_path):
    dev = FAST_CL[0] if FAST_CL else "cpu"
    out = tmp_path / "g.json"
    res = run_cli("bench", "gemm", "--size", 48, "--device", dev, "--variant", "all", "--rounds", 1,
                  "--json", out)
    assert res.returncode == 0, res.stderr
    rows = json.loads(out.read_text())
    assert rows and all(r["unit"] == "TFLOP/s" and r["clcnn"] > 0 for r in rows)
    assert all(r["max_rel_err"] < 1e-5 for r in rows), rows


@pytest.mark.parametrize("args,needle", [
    (["bench", "train", "--model", "nope", "--device", "cpu"], "unknown model"),
    (["bench", "train", "--batch-size", "0", "--device", "cpu"], "positive"),
    (["bench", "gemm", "--size", "-3", "--device", "cpu"], "positive"),
    (["bench", "gemm", "--size", "8", "--device", "cpu", "--variant", "warp"], "variant"),
    (["tune", "--device", "cl:99"], "unknown device"),
    (["tune", "--device", "cpu", "--batch-size", "x"], "--batch-size"),
    (["tune", "--device", "cpu", "--model", "nope"], "unknown model"),
    (["tune", "--device", "cpu", "--repeats", "0"], "--repeats"),
])
def test_bench_tune_bad_input_one_line(args, needle):
    assert_one_line_error(run_cli(*args), needle)


@pytest.mark.skipif(not FAST_CL, reason="no usable non-simulator OpenCL device")
def test_tune_saves_and_next_run_loads_without_search(tmp_path, monkeypatch):
    monkeypatch.setenv("CLCNN_TUNING_DIR", str(tmp_path))
    dev = FAST_CL[0]
    # one candidate per GEMM shape: the first ones are 128x128 tiles, seconds of PoCL build each
    res = run_cli("tune", "--device", dev, "--model", "lenet5", "--batch-size", 2, "--repeats", 1,
                  "--max-candidates", 1, env={"CLCNN_TUNING_DIR": str(tmp_path)})
    assert res.returncode == 0, res.stderr
    assert "tuned" in res.stdout and " s:" in res.stdout   # how long it took and what it won
    saved = list(tmp_path.glob("*.json"))
    assert len(saved) == 1
    doc = json.loads(saved[0].read_text())
    winners = doc["gemm"]
    assert winners and doc["eltwise_wg"] in (64, 128, 256, 512, 1024)
    assert "elementwise work-group size" in res.stdout
    # A fresh backend of the same device loads the winners; training then never searches.
    backends._backends.pop(dev, None)
    monkeypatch.setattr(tuner, "tune_shapes", lambda *a, **k: pytest.fail("a training run searched"))
    be = clcnn.get_backend(dev)
    assert be.gemm_tuned == winners and be.eltwise_wg == doc["eltwise_wg"]
    model = clcnn.models.lenet5().to(dev)
    opt = clcnn.optim.SGD(model, lr=0.01)
    used = []
    real = be.gemm_config
    monkeypatch.setattr(be, "gemm_config", lambda *a, **k: used.append(real(*a, **k)) or used[-1])
    x, y = bench.preset_inputs("lenet5", 2)
    model.train_step(x, y, opt)
    assert any(c in winners.values() for c in used)
    backends._backends.pop(dev, None)


def test_cpu_has_nothing_to_tune():
    res = run_cli("tune", "--device", "cpu")
    assert res.returncode == 0 and "nothing to tune" in res.stdout


def test_bench_gemm_sweep_times_every_candidate(tmp_path):
    """`--variant sweep` (the GEMM config sweep): auto first, then every candidate config, fastest first."""
    if not FAST_CL:
        pytest.skip("no usable non-simulator OpenCL device")
    dev = FAST_CL[0]
    rows = bench.bench_gemm(16, dev, "sweep", rounds=1, reps=1, use_torch=False)   # 13 candidates (24: 24)
    names = [r["variant"] for r in rows]
    assert names[0] == "auto" and len(names) == len(set(names)) > 3
    assert len(names) - 1 == len(clcnn.get_backend(dev).gemm_candidates(16, 16, 16))
    assert all(r["max_rel_err"] < 1e-5 for r in rows)
    assert [r["clcnn"] for r in rows[1:]] == sorted((r["clcnn"] for r in rows[1:]), reverse=True)


def test_preset_inputs_follow_the_preset():
    """bench and tune take the input shape and class count from the preset, not 1x28x28 and 10."""
    x, y = bench.preset_inputs("cifar", 3)
    model = clcnn.models.get_model("cifar")
    assert bench.preset_shape("cifar") == (model.input_shape, model.num_classes) == ((3, 32, 32), 10)
    assert x.shape == (3, 3, 32, 32) and x.dtype == np.float32
    assert y.dtype == np.int32 and 0 <= y.min() and y.max() < model.num_classes
    with pytest.raises(clcnn.errors.ConfigError, match="unknown model"):
        bench.preset_shape("nope")
