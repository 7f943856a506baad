"""DataParallel in one process: Numba + PoCL give the single-device gradients and weights; splits, empty shards,
the auto split, leaving out a slow device, a failing device."""
import warnings

import numpy as np
import pytest

import clcnn
from clcnn import Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sequential
from clcnn.optim import SGD
from clcnn.parallel import cut, parse_split
from conftest import run_on_platform_pair, usable_device_ids

CL = [d for d in usable_device_ids(simulators=False) if d != "cpu"]
needs_cl = pytest.mark.skipif(not CL, reason="no usable non-simulator OpenCL device")


def net(seed=0):
    return Sequential([Conv2D(1, 3, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(3 * 4 * 4, 8), ReLU(),
                       Dense(8, 4)], seed=seed)


def batch(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 8, 8)).astype(np.float32), rng.integers(0, 4, n).astype(np.int32)


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
    with pytest.raises(ValueError, match="split"):
        parse_split(bad, 2)


@needs_cl
@pytest.mark.parametrize("split,n", [([0.7, 0.3], 10), ([0.5, 0.5], 7), ([0.0, 1.0], 6), ([1.0, 0.0], 5),
                                     ([0.5, 0.5], 1), ([0.25, 0.75], 9)])
def test_gradients_equal_single_device(split, n):
    # Shard-size-weighted mean of the shard gradients == the single device's mean gradient of the batch.
    x, y = batch(n, seed=n)
    want_loss, want = net(seed=1).to("cpu").gradients(x, y)
    dp = clcnn.DataParallel(net(seed=1), ["cpu", CL[0]], split=split)
    loss, got = dp.gradients(x, y)
    assert loss == pytest.approx(want_loss, rel=1e-5, abs=1e-6)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5, err_msg=k)


@needs_cl
@pytest.mark.parametrize("devices", [["cpu", "CL"], ["CL", "cpu"]])
def test_momentum_steps_match_single_device(devices):
    # Several SGD-with-momentum steps with uneven, changing batch sizes: the same weights as one device, and
    # every replica holds them.
    devices = [CL[0] if d == "CL" else d for d in devices]
    single = net(seed=2).to("cpu")
    dp = clcnn.DataParallel(net(seed=2), devices, split=[0.6, 0.4])
    o1 = SGD(single, lr=0.1, momentum=0.9, weight_decay=1e-3)
    o2 = SGD(dp, lr=0.1, momentum=0.9, weight_decay=1e-3)
    for i, n in enumerate([8, 7, 3, 1, 9]):
        x, y = batch(n, seed=10 + i)
        l1, l2 = single.train_step(x, y, o1), dp.train_step(x, y, o2)
        assert l2 == pytest.approx(l1, rel=1e-4, abs=1e-5)
    want = single.state_dict()
    for r in dp.replicas:
        got = r.state_dict()
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5, err_msg=f"{r.device.id} {k}")
    a, b = (r.state_dict() for r in dp.replicas)
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) <= 1e-6


@needs_cl
def test_auto_split_measures_and_leaves_out_a_slow_device(monkeypatch):
    dp = clcnn.DataParallel(net(), ["cpu", CL[0]], split="auto")
    real = dp._run_shards

    def slow_second(x, y, shards):   # make the OpenCL replica look 1000x slower than it is (a busy machine
        # can slow the Numba shard 10x or more: 100x was once not enough)
        done = real(x, y, shards)
        return {i: ((t * 1000 if i == 1 else t), loss, g) for i, (t, loss, g) in done.items()}
    monkeypatch.setattr(dp, "_run_shards", slow_second)
    opt = SGD(dp, lr=0.05)
    x, y = batch(16)
    seen = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(12):
            dp.train_step(x, y, opt)
            seen.append((dp._last_shards, list(dp.ms_per_image), list(dp.fractions), list(dp.active)))
    assert any(issubclass(w.category, RuntimeWarning) and "left out of the split" in str(w.message)
               for w in caught), seen
    info = dp.split()
    assert info[CL[0]]["active"] is False and info[CL[0]]["fraction"] == 0.0
    assert info["cpu"]["fraction"] == 1.0 and info["cpu"]["ms_per_image"] > 0
    assert dp.notes and CL[0] in dp.notes[0]
    # from then on the remaining device runs its own (prepared) steps; losses still add up
    assert dp._alone is dp.replicas[0]
    before = dp.state_dict()
    dp.train_step(x, y, opt, sync=False)
    assert dp.read_loss() > 0 and not np.array_equal(dp.state_dict()["0.weight"], before["0.weight"])


@needs_cl
def test_failing_device_names_it(monkeypatch):
    dp = clcnn.DataParallel(net(), ["cpu", CL[0]], split=[0.5, 0.5])
    be = dp.replicas[1].backend

    def broken(*a, **k):   # the read-back of the shard's result fails, as a lost device's would
        def wait():
            raise RuntimeError("CL_OUT_OF_RESOURCES")
        return wait
    monkeypatch.setattr(be, "download_async", broken)
    x, y = batch(4)
    with pytest.raises(clcnn.DeviceError, match=CL[0]):
        dp.gradients(x, y)


def test_bad_devices():
    with pytest.raises(ValueError, match="once"):
        clcnn.DataParallel(net(), ["cpu", "cpu"])
    with pytest.raises(ValueError, match="at least one"):
        clcnn.DataParallel(net(), [])


def test_clone_leaves_the_original_alone():
    # Regression: a clone's re-initialisation once wrote into the original's host weights.
    m = net(seed=1)
    before = m.state_dict()
    twin = m.clone()
    for k, v in m.state_dict().items():
        assert np.array_equal(v, before[k]) and np.array_equal(twin.state_dict()[k], before[k])


@needs_cl
def test_cli_trains_over_two_devices(tmp_path):
    # `clcnn train --device cpu,cl:N --split 0.6,0.4` end to end on a tiny synthetic dataset; the metrics carry the
    # split; a bad split is one error line.
    import json
    from test_cli import assert_one_line_error, clcnn as run_cli, make_dataset
    make_dataset(tmp_path / "data")
    out = tmp_path / "run"
    res = run_cli("train", "--data-dir", tmp_path / "data" / "fashion-mnist", "--device", f"cpu,{CL[0]}",
                  "--split", "0.6,0.4", "--epochs", 1, "--batch-size", 16, "--lr", 0.05, "--out", out,
                  "--no-progress")
    assert res.returncode == 0, res.stderr
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["device"] == f"cpu,{CL[0]}" and set(row["split"]) == {"cpu", CL[0]}
    assert row["split"]["cpu"]["fraction"] == pytest.approx(0.6)
    assert_one_line_error(run_cli("train", "--device", f"cpu,{CL[0]}", "--split", "0.6", "--data-dir",
                                  tmp_path / "data" / "fashion-mnist"), "split")


def test_settle_keeps_the_split_unless_it_pays():
    from clcnn.parallel import settle
    cur = np.array([0.5, 0.5])
    assert np.array_equal(settle(cur, [1.0, 1.02]), cur)          # 1% apart: the shapes stay
    new = settle(cur, [1.0, 2.0])                                  # 2x apart: rebalance toward 1/3 : 2/3
    assert new[1] > 0.6 and new.sum() == pytest.approx(1.0)
    assert np.array_equal(settle(cur, [1.0, 0.0]), [1.0, 0.0])     # left out: at once


def test_grad_chunks_cover_the_buffer_in_backward_order():
    from clcnn.parallel import grad_chunks
    from clcnn.models import cifar
    m = cifar().to("cpu")
    chunks = grad_chunks(m)
    assert [c[0] for c in chunks] == sorted((c[0] for c in chunks), reverse=True)   # last layers first
    assert chunks[0][2] == m.flat_grad.size and chunks[-1][1] == 0
    assert all(a[1] == b[2] for a, b in zip(chunks, chunks[1:]))                      # contiguous, no gaps
    # each chunk holds the parameters of its layer and of the later ones it carries
    for layer, a, b in chunks:
        for p in m.layers[layer].params.values():
            assert a <= m.flat_offsets[id(p)] < b


# Two OpenCL devices of one platform share a context and exchange gradients on the devices (no host combine).
# Two devices of one platform (conftest.run_on_platform_pair: PoCL's two under POCL_DEVICES, in a child process).
LINKED_CHILD = r'''
out = {"pair": pair, "cases": []}
for split, sizes in [([0.6, 0.4], [8, 7, 3, 1, 9]), ([1.0, 0.0], [5, 6]), ([0.5, 0.5], [1, 2, 7])]:
    single = net(seed=2).to("cpu")
    dp = clcnn.DataParallel(net(seed=2), pair, split=split, processes=False)
    o1, o2 = SGD(single, lr=0.1, momentum=0.9, weight_decay=1e-3), SGD(dp, lr=0.1, momentum=0.9, weight_decay=1e-3)
    l1 = l2 = 0.0
    for i, n in enumerate(sizes):
        x, y = batch(n, seed=10 + i)
        sync = i % 2 == 0
        a, b = single.train_step(x, y, o1, sync=sync), dp.train_step(x, y, o2, sync=sync)
        if sync:
            l1, l2 = l1 + a, l2 + b
    l1, l2 = l1 + single.read_loss(), l2 + dp.read_loss()
    want, reps = single.state_dict(), [r.state_dict() for r in dp.replicas]
    out["cases"].append({
        "linked": dp.linked, "loss": [l1, l2],
        "err": max(float(np.abs(r[k] - want[k]).max()) for r in reps for k in want),
        "identical": all(np.array_equal(reps[0][k], reps[1][k]) for k in want)})
x, y = batch(12)
dp = clcnn.DataParallel(net(seed=3), pair, split="auto", processes=False)
opt = SGD(dp, lr=0.05)
for _ in range(12):
    dp.train_step(x, y, opt, sync=False)
dp.read_loss()
for _ in range(3):
    dp.train_step(x, y, opt, sync=False)
dp.read_loss()
out["auto"] = dp.split()
# the auto split's trial (group against lead alone, the clock faked) on linked devices: the group wins and stays
# together with identical replicas, or the lead alone wins and goes on by itself, moved to its device's own backend
from clcnn import parallel
for name, seed, alone_takes in [("trial", 7, 2.0), ("alone", 8, 0.5)]:
    dp = clcnn.DataParallel(net(seed=seed), pair, split="auto", processes=False)
    dp._rebalance = lambda *a, **k: None
    now = [0.0]
    def clock():
        now[0] += 1.0 if dp._trial is None or dp._trial["phase"] == "group" else alone_takes
        return now[0]
    dp._clock = clock
    single = net(seed=seed).to("cpu")
    o1, o2 = SGD(single, lr=0.05, momentum=0.9), SGD(dp, lr=0.05, momentum=0.9)
    total = 0.0
    for i in range(parallel.TRIAL_AFTER + 2 * parallel.TRIAL_STEPS + 6):
        x, y = batch(12, seed=100 * seed + i)
        single.train_step(x, y, o1, sync=False)
        total += dp.train_step(x, y, o2, sync=i % 4 == 0) or 0.0
        if i % 9 == 0:
            total += dp.read_loss()
    want, reps = single.state_dict(), [r.state_dict() for r, a in zip(dp.replicas, dp.active) if a]
    out[name] = {"done": dp._trial_done, "active": dp.active, "loss": [single.read_loss(), total + dp.read_loss()],
                 "err": max(float(np.abs(r[k] - want[k]).max()) for r in reps for k in want),
                 "identical": all(np.array_equal(reps[0][k], r[k]) for r in reps for k in want),
                 "own": dp.backend is clcnn.backends.get_backend(pair[0])}
dp = clcnn.DataParallel(net(seed=4), pair, split=[0.5, 0.5], processes=False)
def broken(*a, **k):   # the second device's gradient read-back fails, as a lost device's would
    raise RuntimeError("CL_OUT_OF_RESOURCES")
dp.replicas[1].backend.read_async = broken
try:
    dp.gradients(*batch(6))
    out["failure"] = None
except clcnn.DeviceError as exc:
    out["failure"] = str(exc)
print(json.dumps(out))
'''


@pytest.mark.skipif(not CL, reason="no usable non-simulator OpenCL device")
def test_linked_devices_of_one_context_match_single_device():
    # SGD with momentum over uneven and changing batch sizes, empty and one-image shards, sync and deferred
    # losses: the single device's weights and loss, and both replicas bit-identical (same sums in the same order).
    out = run_on_platform_pair(LINKED_CHILD)
    for case in out["cases"]:
        assert case["linked"], case
        assert case["err"] <= 1e-5, case
        assert case["identical"], case
        assert case["loss"][1] == pytest.approx(case["loss"][0], rel=1e-5), case
    trial = out["trial"]
    assert trial["done"] and trial["active"] == [True, True] and trial["identical"] and trial["err"] <= 1e-5, trial
    assert trial["loss"][1] == pytest.approx(trial["loss"][0], rel=1e-5), trial
    alone = out["alone"]
    assert alone["done"] and alone["active"] == [True, False] and alone["own"] and alone["err"] <= 1e-5, alone
    assert alone["loss"][1] == pytest.approx(alone["loss"][0], rel=1e-5), alone
    assert out["failure"] and out["pair"][1] in out["failure"] and "CL_OUT_OF_RESOURCES" in out["failure"]
    auto = out["auto"]
    assert sum(v["fraction"] for v in auto.values()) == pytest.approx(1.0)
    assert all(v["ms_per_image"] is not None and v["ms_per_image"] > 0 for v in auto.values()), auto


@needs_cl
def test_device_failing_mid_run_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    # Epoch 1 completes and saves; the OpenCL device then fails inside epoch 2: the run stops with an error that
    # names the device, and model.safetensors still holds epoch 1's weights, intact.
    from safetensors.numpy import load_file
    from clcnn.training import TrainConfig, train
    from test_cli import make_dataset
    make_dataset(tmp_path / "data")
    out = tmp_path / "run"
    cfg = TrainConfig(data_dir=str(tmp_path / "data" / "fashion-mnist"), device=f"cpu,{CL[0]}", split="0.5,0.5",
                      epochs=2, batch_size=32, out=str(out))
    saved = {}
    real_save = clcnn.io.save_safetensors

    def save(path, state, meta):   # remember what epoch 1 wrote
        saved.update({k: v.copy() for k, v in state.items()})
        real_save(path, state, meta)
    monkeypatch.setattr(clcnn.io, "save_safetensors", save)
    steps = {"n": 0}
    real_shards = clcnn.DataParallel._run_shards

    def failing(self, x, y, shards):   # 8 steps per epoch here; the 11th step's device work fails
        steps["n"] += 1
        if steps["n"] == 11:
            be = self.replicas[1].backend
            monkeypatch.setattr(be, "download_async", lambda *a, **k: (_ for _ in ()).throw(
                RuntimeError("CL_DEVICE_NOT_AVAILABLE")))
        return real_shards(self, x, y, shards)
    monkeypatch.setattr(clcnn.DataParallel, "_run_shards", failing)
    with pytest.raises(clcnn.DeviceError, match=CL[0]):
        train(cfg, log=lambda *a, **k: None, show_progress=False)
    assert steps["n"] == 11 and saved
    on_disk = load_file(str(out / "model.safetensors"))
    assert set(on_disk) == set(saved) and all(np.array_equal(on_disk[k], saved[k]) for k in saved)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


@needs_cl
@pytest.mark.parametrize("alone_wins", [False, True])
def test_auto_trial_of_the_group_against_its_lead_alone(monkeypatch, alone_wins):
    # After TRIAL_AFTER steps the group's measured step rate is put against its lead device alone (the clock is
    # faked here: the group takes 1 s per window, the lead alone 2 s, or 0.5 s). Either way the run computes the
    # single device's weights: the group resumes with the lead's weights and momentum, or the lead goes on alone.
    from clcnn import parallel
    dp = clcnn.DataParallel(net(seed=6), ["cpu", CL[0]], split="auto")
    monkeypatch.setattr(dp, "_rebalance", lambda *a, **k: None)   # keep 0.5/0.5: only the trial decides
    assert dp.settling   # benchmarks warm up until the trial has decided
    now = [0.0]

    def clock():
        phase = dp._trial["phase"] if dp._trial else "group"
        now[0] += {"group": 1.0, "alone": 0.5 if alone_wins else 2.0}[phase]
        return now[0]
    monkeypatch.setattr(dp, "_clock", clock)
    single = net(seed=6).to("cpu")
    o1, o2 = SGD(single, lr=0.05, momentum=0.9), SGD(dp, lr=0.05, momentum=0.9)
    steps = parallel.TRIAL_AFTER + parallel.TRIAL_STEPS + parallel.TRIAL_STEPS + 2 + 5
    total = 0.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(steps):
            x, y = batch(16, seed=100 + i)
            single.train_step(x, y, o1, sync=False)
            total += dp.train_step(x, y, o2, sync=i % 3 == 0) or 0.0
            if i % 7 == 0:
                total += dp.read_loss()
    assert total + dp.read_loss() == pytest.approx(single.read_loss(), rel=1e-5)   # every step's loss, once
    left_out = [w for w in caught if "left out of the split: measured" in str(w.message)]
    assert dp._trial is None and dp._trial_done and not dp.settling
    if alone_wins:
        assert len(left_out) == 1 and CL[0] in str(left_out[0].message) and dp.active == [True, False]
    else:
        assert not left_out and dp.active == [True, True] and "stays together" in dp.notes[-1]
        a, b = (r.state_dict() for r in dp.replicas)
        assert max(float(np.abs(a[k] - b[k]).max()) for k in a) <= 1e-6
    want, got = single.state_dict(), dp.state_dict()
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5, err_msg=k)
