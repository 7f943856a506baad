"""`clcnn bench` and `clcnn tune` smoke tests: they run, report what they promise, and a tuned device's next run
loads the saved configs with no search. Timings are never asserted."""
import json
import os

import numpy as np
import pytest

import clcnn
import clcnn.backends as backends
from clcnn import bench, bench_report, bench_torch
from clcnn.backends import opencl_tune as tuner
from clcnn.backends.capabilities import CONV_ALGORITHMS
from conftest import usable_device_ids
from test_cli import assert_one_line_error, clcnn as run_cli

FAST_CL = [d for d in usable_device_ids(simulators=False) if d != "cpu"]


def test_bench_train_rows_and_json(tmp_path):
    """One row per device: clcnn, each PyTorch mode asked for, the ratio against the best, launches per step and
    peak memory, in the table and the JSON (every mode's figure kept)."""
    devs = ",".join(["cpu"] + FAST_CL[:1])
    out = tmp_path / "b.json"
    res = run_cli("bench", "train", "--model", "lenet5", "--batch-size", 4, "--device", devs, "--steps", 1,
                  "--rounds", 1, "--torch", "eager", "--json", out)
    assert res.returncode == 0, res.stderr
    for needle in ("clcnn/best", "launches per clcnn step", "peak device memory", "TF32 off",
                   "uploading the host batch every step as well"):
        assert needle in res.stdout, res.stdout
    rows = json.loads(out.read_text())
    assert [r["device"] for r in rows] == devs.split(",")
    for r in rows:
        assert {"clcnn", "torch", "torch_mode", "torch_modes", "ratio", "unit", "device", "card", "peak_bytes",
                "torch_peak_bytes", "launches", "clcnn_upload"} <= set(r)
        assert r["clcnn"] > 0 and r["clcnn_upload"] > 0 and r["unit"] == "img/s" and r["peak_bytes"] > 0 and r["launches"] > 10
        if r["torch"] is not None:
            assert set(r["torch_modes"]) == {"eager"} and r["torch_mode"] == "eager"
            assert r["torch"] == r["torch_modes"]["eager"]["rate"] > 0
            assert r["ratio"] == pytest.approx(r["clcnn"] / r["torch"])


def test_bench_train_failed_and_skipped_modes_do_not_stop_the_run(monkeypatch, tmp_path):
    """A mode PyTorch cannot run here (graph: no CUDA) is skipped with its reason, a mode that fails (here: the
    PyTorch CPU worker process finds a torch that cannot load) is one line; clcnn's figure stays, and no ratio is
    made up."""
    pytest.importorskip("torch")
    (tmp_path / "torch.py").write_text('raise ImportError("a torch that cannot load\\nsecond line")\n')
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    row = bench.bench_train("lenet5", 2, "cpu", steps=1, rounds=1, warmup=1, torch_modes=["eager", "graph"])
    assert row["clcnn"] > 0 and row["torch"] is None and row["ratio"] is None and row["torch_mode"] is None
    modes = row["torch_modes"]
    assert modes["graph"]["error"] == "needs CUDA" and modes["graph"]["rate"] is None
    assert "a torch that cannot load" in modes["eager"]["error"] and "\n" not in modes["eager"]["error"]
    table = bench_report.format_table([row])
    assert "failed" in table and "torch eager on cpu failed: " in table
    monkeypatch.undo()
    none = bench.bench_train("lenet5", 2, "cpu", steps=1, rounds=1, warmup=1, torch_modes=["none"])
    assert none["torch_modes"] == {} and none["torch"] is None and none["torch_on"] is None


def test_parse_modes():
    assert bench_torch.parse_modes("all") == ["all"] and bench_torch.parse_modes("none") == ["none"]
    assert bench_torch.parse_modes("graph, eager,graph") == ["graph", "eager"]
    assert bench_torch.device_modes(["all"], "cpu") == (["eager", "compile"], {})
    assert bench_torch.device_modes(["all"], "cuda") == (list(bench_torch.CUDA_MODES), {})
    assert bench_torch.device_modes(["benchmark", "compile"], "cpu") == (["compile"], {"benchmark": "needs CUDA"})
    with pytest.raises(clcnn.errors.ConfigError, match="needs CUDA; PyTorch runs on the cpu here"):
        bench_torch.device_modes(["graph", "benchmark"], "cpu")   # nothing asked for can run: an error, not exit 0
    for bad in ("jit", "", "all,eager", "none,graph"):
        with pytest.raises(clcnn.errors.ConfigError, match="--torch"):
            bench_torch.parse_modes(bad)


@pytest.mark.parametrize("device", ["cpu"] + FAST_CL[:1])
def test_launch_counter_counts_every_step_alike(device):
    """Backend.launches: the same count for a plain step, the step that records and a replayed one (OpenCL
    counts the replayed enqueues too), and more launches than the layers with parameters."""
    model = clcnn.models.lenet5().to(device)
    opt, be = clcnn.optim.SGD(model, lr=0.01, momentum=0.9), model.backend
    x, y = bench.preset_inputs("lenet5", 2)
    counts = []
    for _ in range(3):
        be.launches = 0
        model.train_step(x, y, opt)
        counts.append(be.launches)
    assert counts[0] == counts[1] == counts[2] > 2 * len([m for m in model.layers if m.params]), counts


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
    (["bench", "train", "--torch", "jit", "--device", "cpu"], "--torch"),
    (["bench", "layers", "--model", "nope", "--device", "cpu"], "unknown model"),
    (["bench", "layers", "--device", "cpu,cl:1"], "one device"),
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
    # each of LeNet-5's two convolutions got the algorithm measured fastest over the whole step
    assert sorted(doc["conv"]) == ["conv n2 c1 h28 w28 m6 k5 s1 p2 pool2", "conv n2 c6 h14 w14 m16 k5 s1 p0 pool2"]
    assert set(doc["conv"].values()) <= set(CONV_ALGORITHMS) and "hybrid" in res.stdout
    # A fresh backend of the same device loads the winners; training then never searches.
    backends._backends.pop(dev, None)
    monkeypatch.setattr(tuner, "tune_shapes", lambda *a, **k: pytest.fail("a training run searched"))
    be = clcnn.get_backend(dev)
    assert be.gemm_tuned == winners and be.eltwise_wg == doc["eltwise_wg"] and be.conv_tuned == doc["conv"]
    assert be.conv_algorithm(2, 1, 28, 28, 6, 5, 1, 2, 2) == doc["conv"]["conv n2 c1 h28 w28 m6 k5 s1 p2 pool2"]
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


@pytest.mark.deep   # 10 s of a warm lean run (a PNG, every layer timed on two devices)
def test_bench_layers_table_chart_json(tmp_path):
    """`bench layers`: one row per layer with clcnn's and PyTorch's three passes, a PNG chart and the JSON."""
    pytest.importorskip("torch")
    from PIL import Image
    png, out = tmp_path / "layers.png", tmp_path / "layers.json"
    res = run_cli("bench", "layers", "--model", "lenet5", "--batch-size", 4, "--device", "cpu", "--repeats", 1,
                  "--png", png, "--json", out)
    assert res.returncode == 0, res.stderr
    assert "bwd-data" in res.stdout and "bwd-weights" in res.stdout and f"chart: {png}" in res.stdout
    assert Image.open(png).size[0] > 500
    doc = json.loads(out.read_text())
    layers = doc["layers"]
    assert len(layers) == len(clcnn.models.lenet5().layers) and doc["torch_error"] is None
    conv = layers[0]
    assert conv["name"].startswith("(0) Conv2D")
    assert all(conv["torch"][p] > 0 for p in ("forward", "backward_data", "backward_weights")), conv
    mine = conv["clcnn"]   # backward-data: the full backward less backward-weights (medians), >= 0
    assert mine["forward"] > 0 and conv["clcnn_backward"] > 0 and mine["backward_weights"] > 0, conv
    assert mine["backward_data"] == pytest.approx(max(0.0, conv["clcnn_backward"] - mine["backward_weights"]))
    assert conv["ratio"]["forward"] == pytest.approx(conv["torch"]["forward"] / conv["clcnn"]["forward"])
    relu = layers[1]   # no weights; fused into the convolution (forward) and the max-pool (backward)
    assert relu["clcnn"]["backward_weights"] is None and relu["fused"] == ["forward", "backward_data"]
    assert relu["clcnn"]["forward"] is None and relu["ratio"]["forward"] is None and "fused" in res.stdout


def _torch_weights(net):
    return [p.detach().cpu().numpy() for p in net.parameters()]


@pytest.mark.deep
def test_torch_compile_mode_trains_as_eager_on_the_cpu():
    """torch.compile (forward + loss, optimizer step) takes the same steps as eager, and its mode runs in bench."""
    pytest.importorskip("torch")
    x, y = bench.preset_inputs("lenet5", 8)
    runs = {m: bench_torch.torch_step(m, "lenet5", "cpu", x, y) for m in ("eager", "compile")}
    for run, _ in runs.values():
        run(2)
    for a, b in zip(*(_torch_weights(net) for _, net in runs.values())):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    mode = bench_torch.TorchMode("compile", "lenet5", "cpu", x, y, 1)
    assert mode.error is None and mode.run is not None
    mode.run()


def test_cuda_modes_train_as_eager():
    """On CUDA (the lead's GPU run): cudnn.benchmark, the captured whole-step graph and torch.compile take the
    same SGD steps as eager from the same weights (a graph has made 3 warm-up steps before its replays)."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device for PyTorch here")
    x, y = bench.preset_inputs("lenet5", 32)
    run, net = bench_torch.torch_step("eager", "lenet5", "cuda", x, y)
    run(5)
    want = _torch_weights(net)
    for mode, steps in (("benchmark", 5), ("graph", 2), ("compile", 5)):
        run, net = bench_torch.torch_step(mode, "lenet5", "cuda", x, y)
        run(steps)
        for a, b in zip(want, _torch_weights(net)):
            np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-5, err_msg=mode)
        peak = bench_torch.TorchMode(mode, "lenet5", "cuda", x, y, 2)
        assert peak.error is None and peak.peak_bytes > 0, peak.error


def test_to_torch_is_exports_twin_for_every_preset_layer():
    """bench's PyTorch side is clcnn.export's torch twin: batch-norm, dropout and residual presets get one, with
    clcnn's weights and buffers, and in eval mode it computes clcnn's forward."""
    torch = pytest.importorskip("torch")
    import numpy as np

    from clcnn.models import get_model
    for name, shape in (("fashion", (1, 28, 28)), ("resnet8", (3, 32, 32))):
        model = get_model(name, seed=0)
        net = bench_torch.to_torch(model, "cpu")
        assert len(net) == len(model.layers) and net.training
        x = np.random.default_rng(0).standard_normal((3, *shape)).astype(np.float32)
        got = net.eval()(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(got, model.predict(x), rtol=1e-4, atol=1e-4)


def test_bench_refuses_an_unwritable_output_before_timing(tmp_path):
    """--png / --json that could not be written are refused before any timing (nothing is printed to stdout,
    no table is lost at the end): one line, non-zero exit."""
    missing = tmp_path / "no" / "such"
    for args, needle in ((("layers", "--png", missing / "c.png"), "--png"),
                         (("train", "--torch", "none", "--json", missing / "r.json"), "--json"),
                         (("gemm", "--size", 64, "--torch", "none", "--json", tmp_path), "is a folder")):
        res = run_cli("bench", *args, "--device", "cpu")
        assert_one_line_error(res, needle)
        assert res.stdout == ""
