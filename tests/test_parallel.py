"""Data parallelism in one process (DataParallel) and the one split policy (clcnn.split): Numba + PoCL give the
single-device gradients and weights; splits, empty shards, leaving out a slow device, a failing device, the CLI."""
import json
import warnings

import numpy as np
import pytest

import clcnn
from clcnn import Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sequential
from clcnn.errors import ConfigError
from clcnn.optim import SGD
from clcnn.split import PRUNE_AFTER, SplitPolicy, cut, parse_split, settle
from conftest import usable_device_ids

CL = [d for d in usable_device_ids(simulators=False) if d != "cpu"]
needs_cl = pytest.mark.skipif(not CL, reason="no usable non-simulator OpenCL device")


def net(seed=0):
    return Sequential([Conv2D(1, 3, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(3 * 4 * 4, 8), ReLU(),
                       Dense(8, 4)], seed=seed)


def batch(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 8, 8)).astype(np.float32), rng.integers(0, 4, n).astype(np.int32)


def max_diff(a: dict, b: dict) -> float:
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


# ---- the split policy (no device) --------------------------------------------------------------------------------
def test_cut_sizes():
    assert cut(10, [0.7, 0.3]) == [(0, 7), (7, 10)]
    assert cut(7, [1, 1]) == [(0, 4), (4, 7)]
    assert cut(1, [0.5, 0.5]) == [(0, 1), (1, 1)]
    assert cut(5, [0, 1]) == [(0, 0), (0, 5)]
    for n in range(0, 23):
        shards = cut(n, [0.2, 0.5, 0.3])
        assert shards[0][0] == 0 and shards[-1][1] == n and all(a <= b for a, b in shards)


@pytest.mark.parametrize("bad", ["0.5", "a,b", "-1,2", "0,0", [1, 2, 3]])
def test_parse_split_rejects(bad):
    with pytest.raises(ConfigError, match="split"):
        parse_split(bad, 2)


def test_settle_keeps_the_split_unless_it_pays():
    cur = np.array([0.5, 0.5])
    assert np.array_equal(settle(cur, [1.0, 1.02]), cur)          # 1% apart: the shapes stay
    new = settle(cur, [1.0, 2.0])                                  # 2x apart: rebalance toward 1/3 : 2/3
    assert new[1] > 0.6 and new.sum() == pytest.approx(1.0)
    assert np.array_equal(settle(cur, [1.0, 0.0]), [1.0, 0.0])     # left out: at once


def test_policy_follows_speeds_and_leaves_out_a_device_that_does_not_help():
    policy = SplitPolicy("auto", ["a (fast)", "b (slow)"])
    for _ in range(12):
        shards = policy.shards(300)
        if policy.measurable:   # a shard size's first steps record: not measured
            policy.update([1.0, 2.0], 300)   # ms per image: a twice as fast as b
    assert policy.fractions[0] == pytest.approx(2 / 3, abs=1 / 64) and policy.active == [True, True]
    with pytest.warns(RuntimeWarning, match="b .slow. is left out"):
        for _ in range(12):
            shards = policy.shards(300)
            if policy.measurable:
                policy.update([1.0, 500.0], 300)   # b now helps by less than MIN_GAIN: left out, once
    assert policy.measured_steps >= PRUNE_AFTER and policy.active == [True, False] and not policy.settling
    assert shards == [(0, 300), (300, 300)] and list(policy.fractions) == [1.0, 0.0]
    assert len(policy.notes) == 1 and "b (slow) is left out" in policy.notes[0]
    fixed = SplitPolicy("0.25,0.75", ["a", "b"])
    assert fixed.shards(8) == [(0, 2), (2, 8)] and not fixed.measurable and not fixed.settling


# ---- DataParallel over Numba + OpenCL ---------------------------------------------------------------------------
@needs_cl
@pytest.mark.parametrize("split,n", [([0.7, 0.3], 10), ([0.0, 1.0], 6), ([0.5, 0.5], 1)])
def test_gradients_equal_single_device(split, n):
    # Shard-size-weighted mean of the shard gradients == the single device's mean gradient of the batch.
    x, y = batch(n, seed=n)
    want_loss, want = net(seed=1).to("cpu").gradients(x, y)
    dp = clcnn.DataParallel(net(seed=1), ["cpu", CL[0]], split=split)
    loss, got = dp.gradients(x, y)
    assert loss == pytest.approx(want_loss, rel=1e-5, abs=1e-6)
    assert max_diff(got, want) <= 1e-5


@needs_cl
@pytest.mark.parametrize("devices", [["cpu", 0], [0, "cpu"], [0, 1]])
def test_momentum_steps_match_single_device(devices):
    # SGD with momentum and weight decay over uneven, changing batch sizes (shards of 0 and 1 images), sync and
    # deferred losses: `--device cpu,cl:N` equals one device within float rounding, on every replica.
    if len(CL) < 2 and 1 in devices:
        pytest.skip("one usable non-simulator OpenCL device")
    devices = [CL[d] if isinstance(d, int) else d for d in devices]
    single = net(seed=2).to("cpu")
    dp = clcnn.DataParallel(net(seed=2), devices, split=[0.6, 0.4])
    o1 = SGD(single, lr=0.1, momentum=0.9, weight_decay=1e-3)
    o2 = SGD(dp, lr=0.1, momentum=0.9, weight_decay=1e-3)
    l1 = l2 = 0.0
    for i, n in enumerate([8, 7, 3, 1, 9]):
        x, y = batch(n, seed=10 + i)
        a, b = single.train_step(x, y, o1, sync=i % 2 == 0), dp.train_step(x, y, o2, sync=i % 2 == 0)
        l1, l2 = l1 + (a or 0.0), l2 + (b or 0.0)
    assert l2 + dp.read_loss() == pytest.approx(l1 + single.read_loss(), rel=1e-5)
    want = single.state_dict()
    assert max(max_diff(r.state_dict(), want) for r in dp.replicas) <= 1e-5
    assert max_diff(*(r.state_dict() for r in dp.replicas)) <= 1e-6   # one sum uploaded to both
    assert max_diff(o2.state_dict()["state"]["0.weight"], o1.state_dict()["state"]["0.weight"]) <= 1e-5


@needs_cl
def test_auto_split_leaves_out_a_slow_device_then_steps_alone(monkeypatch):
    dp = clcnn.DataParallel(net(), ["cpu", CL[0]], split="auto")
    real = dp._run_shards

    def slow_second(x, y, shards):   # the OpenCL replica looks 1000x slower than it is
        return {i: ((t * 1000 if i == 1 else t), loss, g) for i, (t, loss, g) in real(x, y, shards).items()}
    monkeypatch.setattr(dp, "_run_shards", slow_second)
    single = net().to("cpu")
    o1, o2 = SGD(single, lr=0.05, momentum=0.9), SGD(dp, lr=0.05, momentum=0.9)
    x, y = batch(16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(12):
            single.train_step(x, y, o1, sync=False)
            dp.train_step(x, y, o2, sync=False)
    assert any("left out of the split" in str(w.message) for w in caught)
    info = dp.split()
    assert info[CL[0]]["active"] is False and info[CL[0]]["fraction"] == 0.0
    assert info["cpu"]["fraction"] == 1.0 and info["cpu"]["ms_per_image"] > 0
    assert dp.notes and CL[0] in dp.notes[0] and dp._alone_steps > 0   # then cpu runs its own recorded steps
    assert dp.read_loss() == pytest.approx(single.read_loss(), rel=1e-5)
    assert max_diff(dp.state_dict(), single.state_dict()) <= 1e-5


@needs_cl
def test_failing_device_names_it(monkeypatch):
    dp = clcnn.DataParallel(net(), ["cpu", CL[0]], split=[0.5, 0.5])

    def broken(*a, **k):   # the read-back of the shard's result fails, as a lost device's would
        def wait():
            raise RuntimeError("CL_OUT_OF_RESOURCES")
        return wait
    monkeypatch.setattr(dp.replicas[1].backend, "download_async", broken)
    with pytest.raises(clcnn.DeviceError, match=f"{CL[0]}.*CL_OUT_OF_RESOURCES"):
        dp.gradients(*batch(4))


def test_bad_devices():
    for bad in (["cpu", "cpu"], []):
        with pytest.raises(ConfigError, match="at least one device, each at most once"):
            clcnn.DataParallel(net(), bad)


@needs_cl
def test_cli_trains_over_two_devices(tmp_path):
    # `clcnn train --device cpu,cl:N --split 0.6,0.4` end to end (threads: a CPU is in the group); the metrics
    # carry the split; a bad split is one error line.
    from test_cli import assert_one_line_error, clcnn as run_cli, make_dataset
    data_dir = make_dataset(tmp_path / "data", n_train=64, n_test=32)
    out = tmp_path / "run"
    res = run_cli("train", "--data-dir", data_dir, "--device", f"cpu,{CL[0]}", "--split", "0.6,0.4",
                  "--epochs", 1, "--batch-size", 16, "--lr", 0.05, "--out", out, "--no-progress")
    assert res.returncode == 0, res.stderr
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["device"] == f"cpu,{CL[0]}" and set(row["split"]) == {"cpu", CL[0]}
    assert row["split"]["cpu"]["fraction"] == pytest.approx(0.6)
    assert_one_line_error(run_cli("train", "--device", f"cpu,{CL[0]}", "--split", "0.6", "--data-dir", data_dir),
                          "split")
