"""The prepared training step: flat parameter views, one-launch zeroing/update, capture and replay."""
import numpy as np
import pytest

import clcnn
from clcnn import Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sequential
from clcnn.optim import SGD
from conftest import _device_params, open_device

DEVICE_PARAMS = _device_params()


@pytest.fixture(params=DEVICE_PARAMS)
def device_id(request):
    open_device(request.param)
    return request.param


def small_net(seed=0):
    return Sequential([Conv2D(1, 3, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(3 * 4 * 4, 8), ReLU(),
                       Dense(8, 4)], seed=seed)


def batches(n, bs=5, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((bs, 1, 8, 8)).astype(np.float32), rng.integers(0, 4, bs).astype(np.int32))
            for _ in range(n)]


def test_view_shares_storage(device_id):
    # Views at aligned offsets read and write the same storage as the flat array.
    be = clcnn.get_backend(device_id)
    al = be.view_align
    flat = be.zeros((2 * al + 8,))
    v = be.view(flat, al, (2, 3))
    be.upload_into(v, np.arange(6, dtype=np.float32).reshape(2, 3))
    got = be.download(flat)
    assert np.array_equal(got[al:al + 6], np.arange(6)) and not got[:al].any() and not got[al + 6:].any()
    be.fill(flat, 2.0)
    assert np.array_equal(be.download(v), np.full((2, 3), 2.0))
    with pytest.raises(ValueError):
        be.view(flat, 0, (flat.size + 1,))


def test_parameters_live_in_one_flat_buffer(device_id):
    # Every parameter is a view of model.flat_data; one fill zeroes every gradient.
    model = small_net().to(device_id)
    be = model.backend
    be.fill(model.flat_grad, 1.0)
    model.zero_grad()
    for _, p in model.named_parameters():
        assert not be.download(p.grad).any()
    flat = be.download(model.flat_data)
    for name, p in model.named_parameters():
        off = model.flat_offsets[id(p)]
        assert np.array_equal(flat[off:off + p.size].reshape(p.shape), model.state_dict()[name])
    assert [pb.data is model.flat_data for pb in model.parameter_buffers()] == [True]


@pytest.mark.parametrize("sync", [True, False])
def test_replayed_steps_equal_plain_steps(device_id, sync):
    # Steps 3.. are replays of a step recorded once (where the backend can); weights and losses must be
    # bit-identical to running every op each step.
    data = batches(5)
    results = []
    for capture in (False, True):
        model = small_net(seed=3).to(device_id)
        model.capture_steps = capture
        opt = SGD(model, lr=0.1, momentum=0.9, weight_decay=1e-3)
        losses = [model.train_step(x, y, opt, sync=sync) for x, y in data]
        if not sync:
            losses = [model.read_loss()]
        results.append((losses, model.state_dict(), opt.state_dict()["state"]))
    (l0, s0, v0), (l1, s1, v1) = results
    assert l0 == l1
    for k in s0:
        assert np.array_equal(s0[k], s1[k]), k
        assert np.array_equal(v0[k]["momentum_buffer"], v1[k]["momentum_buffer"]), k


def test_replay_follows_changes(device_id):
    # A new learning rate, another batch size or predict() in between must not replay a stale step.
    data = batches(4) + batches(3, bs=3, seed=1)
    states = []
    for capture in (False, True):
        model = small_net(seed=4).to(device_id)
        model.capture_steps = capture
        opt = SGD(model, lr=0.1, momentum=0.5)
        for i, (x, y) in enumerate(data):
            if i == 3:
                opt.lr = 0.02
            model.train_step(x, y, opt)
            if i == 4:
                model.predict(np.ones((7, 1, 8, 8), np.float32))
        states.append(model.state_dict())
    for k in states[0]:
        assert np.array_equal(states[0][k], states[1][k]), k


def test_opencl_capture_records_and_replays():
    # On an OpenCL device the third step is a replay of recorded launches (not a re-run of the layer code).
    ids = [d.id for d in clcnn.list_devices() if d.backend == "opencl" and "oclgrind" not in d.platform.lower()]
    usable = []
    for i in ids:
        try:
            open_device(i)
            usable.append(i)
        except pytest.skip.Exception:
            pass
    if not usable:
        pytest.skip("no usable OpenCL device")
    model = small_net().to(usable[0])
    opt = SGD(model, lr=0.1)
    (x, y), = batches(1)
    model.train_step(x, y, opt)
    model.train_step(x, y, opt)
    graph, = model._steps.recorded()
    assert len(graph) > 10
    calls = []
    model.layers[0].forward = lambda *a, **k: calls.append(a)   # would break a non-replayed step
    model.train_step(x, y, opt)
    assert calls == []


def _opencl_ids():
    ids = []
    for info in clcnn.list_devices():
        if info.backend == "opencl" and "oclgrind" not in info.platform.lower():
            try:
                open_device(info.id)
                ids.append(info.id)
            except pytest.skip.Exception:
                pass
    return ids


def test_learning_rate_schedule_keeps_replaying():
    # A new learning rate every step is a value in the optimizer's device buffer: one recording serves every
    # step, and the weights equal those of running every op each step with the same schedule.
    usable = _opencl_ids()
    if not usable:
        pytest.skip("no usable OpenCL device")
    data, states = batches(8), []
    for capture in (False, True):
        model = small_net(seed=6).to(usable[0])
        model.capture_steps = capture
        opt = SGD(model, lr=0.1, momentum=0.9)
        for i, (x, y) in enumerate(data):
            opt.lr = 0.1 * 0.7 ** i
            model.train_step(x, y, opt, sync=False)
        states.append(model.state_dict())
    assert model._steps.recordings == 1
    for k in states[0]:
        assert np.array_equal(states[0][k], states[1][k]), k
    frozen = small_net(seed=6).to(usable[0])   # the schedule really reached the device: a fixed lr differs
    opt = SGD(frozen, lr=0.1, momentum=0.9)
    for x, y in data:
        frozen.train_step(x, y, opt, sync=False)
    assert not np.array_equal(frozen.state_dict()["0.weight"], states[1]["0.weight"])


def test_optimizer_state_dict_round_trips_bit_exactly(device_id):
    # state_dict -> load_state_dict into a fresh optimizer -> state_dict is bit-exact, and training on from the
    # loaded state equals training on from the original.
    data = batches(4, seed=2)
    model = small_net(seed=7).to(device_id)
    opt = SGD(model, lr=0.05, momentum=0.9, weight_decay=1e-3)
    for x, y in data[:2]:
        model.train_step(x, y, opt)
    sd, weights = opt.state_dict(), model.state_dict()
    assert sd["param_groups"][0]["params"] == [k for k, _ in model.named_parameters()]
    twin = small_net(seed=0).to(device_id)
    twin.load_state_dict(weights)
    opt2 = SGD(twin, lr=1.0)
    opt2.load_state_dict(sd)
    sd2 = opt2.state_dict()
    assert sd2["param_groups"] == sd["param_groups"]
    for k, v in sd["state"].items():
        assert np.array_equal(v["momentum_buffer"], sd2["state"][k]["momentum_buffer"]), k
    for x, y in data[2:]:
        model.train_step(x, y, opt)
        twin.train_step(x, y, opt2)
    for k, v in model.state_dict().items():
        assert np.array_equal(v, twin.state_dict()[k]), k
    with pytest.raises(clcnn.errors.ConfigError):
        SGD(small_net().to(device_id), lr=0.1).load_state_dict({"state": {}, "param_groups": [{"params": ["x"]}]})


@pytest.mark.parametrize("copy_threads", [0, 2])
def test_staged_uploads_keep_every_batch(monkeypatch, copy_threads):
    # The pinned staging rings (used on GPUs) deliver each batch intact, even when batches are enqueued back to
    # back without waiting.
    ids = [d.id for d in clcnn.list_devices() if d.backend == "opencl" and "oclgrind" not in d.platform.lower()]
    for i in ids:
        try:
            be = open_device(i)
            break
        except pytest.skip.Exception:
            continue
    else:
        pytest.skip("no usable OpenCL device")
    monkeypatch.setattr(be, "stage_uploads", True)
    from clcnn.backends import opencl_memory as opencl
    monkeypatch.setattr(opencl, "_copy_threads", copy_threads)   # 2: large copies on Numba threads
    rng = np.random.default_rng(0)
    hosts = [rng.standard_normal(40000).astype(np.float32) for _ in range(5)]   # 160 KB each: a ring per size
    hosts += [rng.standard_normal(n).astype(np.float32) for n in (1, 7, 1000, 16383, 5, 64, 3, 9, 11, 2, 4096, 1)]
    hosts += [rng.standard_normal(300001).astype(np.float32) for _ in range(3)]   # > 1 MB: the parallel copy
    dsts = [be.zeros(h.size) for h in hosts]   # small ones share one ring of slots, reused more than once here
    for d, h in zip(dsts, hosts):
        be.upload_into(d, h)
    for d, h in zip(dsts, hosts):
        assert np.array_equal(be.download(d), h)


def test_step_overwrites_gradients_without_zeroing(device_id):
    # A step writes every gradient with beta = 0 (no zeroing pass): garbage (NaN) left in the gradient buffer
    # must not leak into the result, and accumulate-mode (fresh=False) must add to what is there.
    model = small_net(seed=5).to(device_id)
    (x, y), = batches(1)
    _, want = model.gradients(x, y)
    model.backend.fill(model.flat_grad, float("nan"))
    _, got = model.gradients(x, y)
    for k in want:
        assert np.array_equal(got[k], want[k]), k
    dx, dy = model._upload_batch(x, y)
    model._forward_backward(dx, dy, fresh=False)   # accumulate a second copy of the same batch's gradients
    for name, p in model.named_parameters():
        np.testing.assert_allclose(model.backend.download(p.grad).reshape(p.shape), 2 * want[name], rtol=1e-5,
                                   atol=1e-6)


def test_a_forced_conv_algorithm_is_not_replayed_stale(device_id):
    # Setting conv_algo after steps were recorded records anew: a bad name is refused, not replayed past.
    from clcnn.errors import ConfigError
    model = small_net(seed=6).to(device_id)
    opt = SGD(model, lr=0.1)
    (x, y), = batches(1)
    be = model.backend
    try:
        for algo in ("im2col", "im2col", "im2col", "direct"):
            be.conv_algo = algo
            model.train_step(x, y, opt)
            assert model.layers[0].algorithm == algo
        be.conv_algo = "bogus"
        with pytest.raises(ConfigError, match="conv_algo"):
            model.train_step(x, y, opt)
    finally:
        be.conv_algo = None
