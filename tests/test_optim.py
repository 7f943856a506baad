"""Optimizers (SGD with Nesterov, Adam, AdamW): the update ops on every device against float64 NumPy and under
Oclgrind, the optimizers against torch.optim over several steps (<= 1e-5 relative), state on the device through
state_dict, .to(), data-parallel replicas and an MPI rank, and recorded steps that keep replaying while the
learning rate and the step count change (schedules: test_lr_scheduler.py; label smoothing:
test_label_smoothing.py)."""
import math

import numpy as np
import pytest

import clcnn
from clcnn import Dense, Flatten, ReLU, Sequential
from clcnn.errors import ConfigError
from clcnn.optim import SGD, Adam, AdamW, lr_scheduler
from conftest import _device_params, is_simulator, open_device
from opcheck import GRAD_TOL, check, randn, up
import reference as ref

TORCH_TOL = 1e-5   # max|clcnn - torch| / max|torch| over the parameters after several steps


def tiny_net(seed=0):
    return Sequential([Flatten(), Dense(6, 5), ReLU(), Dense(5, 3)], seed=seed, input_shape=(6,))


# ---- the update ops against float64 NumPy ------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["sgd-nesterov", "adam", "adamw"])
def test_update_op_three_steps_against_float64(device, kind):
    size, rng = 1003, np.random.default_rng(70)
    p, grads = randn(rng, size), [randn(rng, size) for _ in range(3)]
    dp, dgs = up(device, p), [up(device, g) for g in grads]
    s1, s2 = device.zeros((size,)), device.zeros((size,))
    want, m, v = p.astype(np.float64), np.zeros(size), np.zeros(size)
    lr, b1, b2, eps, wd = 0.01, 0.8, 0.99, 1e-6, 0.05
    hypers = []   # alive until the downloads: uploads may be asynchronous
    for t, (dg, g) in enumerate(zip(dgs, grads), start=1):
        if kind == "sgd-nesterov":
            hypers.append(up(device, np.array([0.1, 0.9, wd], np.float32)))
            device.sgd_update(dp, dg, s1, hypers[-1], size, nesterov=True)
            want, m = ref.sgd_update(want, g, m, 0.1, 0.9, wd, nesterov=True)
        else:
            h = [lr, b1, b2, eps, wd, t, lr / (1 - b1 ** t), math.sqrt(1 - b2 ** t), 1 - b1, 1 - b2]
            hypers.append(up(device, np.array(h, np.float32)))
            device.adam_update(dp, dg, s1, s2, hypers[-1], size, decoupled=kind == "adamw")
            want, m, v = ref.adam_update(want, g, m, v, t, lr, b1, b2, eps, wd, decoupled=kind == "adamw")
    check(device.download(dp), want, GRAD_TOL, f"{kind} param")
    check(device.download(s1), m, GRAD_TOL, f"{kind} momentum_buffer/exp_avg")
    if kind != "sgd-nesterov":
        check(device.download(s2), v, GRAD_TOL, f"{kind} exp_avg_sq")


# ---- the optimizers against torch.optim ---------------------------------------------------------------------
OPTIMIZERS = {
    "sgd-nesterov": (lambda m: SGD(m, lr=0.1, momentum=0.9, weight_decay=1e-2, nesterov=True),
                     lambda t, ps: t.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-2, nesterov=True)),
    "adam": (lambda m: Adam(m, lr=1e-2, weight_decay=1e-2),
             lambda t, ps: t.optim.Adam(ps, lr=1e-2, weight_decay=1e-2)),
    "adamw": (lambda m: AdamW(m, lr=1e-2, betas=(0.8, 0.99)),
              lambda t, ps: t.optim.AdamW(ps, lr=1e-2, betas=(0.8, 0.99))),
}


def _torch_twin(torch, model):
    params = {k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in model.state_dict().items()}
    return params


@pytest.mark.parametrize("kind", list(OPTIMIZERS))
def test_optimizer_matches_torch_over_steps(device, kind):
    # The same gradients fed to both for 5 steps: parameters and the state_dict's state as torch's.
    torch = pytest.importorskip("torch")
    model = tiny_net(seed=3).to(device)
    make, make_torch = OPTIMIZERS[kind]
    opt = make(model)
    tparams = _torch_twin(torch, model)
    topt = make_torch(torch, list(tparams.values()))
    rng, keep = np.random.default_rng(71), []
    for _ in range(5):
        for name, p in model.named_parameters():
            g = randn(rng, *p.shape)
            keep.append(g)
            device.upload_into(p.grad, g)
            tparams[name].grad = torch.from_numpy(g.copy())
        opt.step()
        topt.step()
    got = model.state_dict()
    for name, tp in tparams.items():
        check(got[name], tp.detach().numpy(), TORCH_TOL, f"{kind} {name}")
    sd, tsd = opt.state_dict(), topt.state_dict()
    for i, name in enumerate(tparams):
        for key, tv in tsd["state"][i].items():
            check(np.asarray(sd["state"][name][key]), tv.numpy(), TORCH_TOL, f"{kind} state {name}.{key}")


def test_defaults_and_validation_are_pytorchs():
    model = tiny_net()
    assert (Adam(model).betas, Adam(model).eps, Adam(model).weight_decay, Adam(model).lr) == ((0.9, 0.999), 1e-8,
                                                                                              0.0, 1e-3)
    assert AdamW(model).weight_decay == 1e-2
    for bad in ({"betas": (1.0, 0.999)}, {"betas": (0.9, -0.1)}, {"eps": -1.0}, {"lr": 0.0}, {"betas": "x"},
                {"weight_decay": float("nan")}):
        with pytest.raises(ConfigError, match="Invalid"):
            Adam(model, **bad)
    with pytest.raises(ConfigError, match="Nesterov"):
        SGD(model, lr=0.1, nesterov=True)


# ---- state: state_dict, .to(), replicas, recorded steps ----------------------------------------------------------
def _batches(n, bs=6, seed=0):
    rng = np.random.default_rng(seed)
    return [(randn(rng, bs, 6), rng.integers(0, 3, bs).astype(np.int32)) for _ in range(n)]


def _opencl_id():
    for p in _device_params():
        info = clcnn.get_backend(p.values[0]).info
        if info.backend == "opencl" and not is_simulator(info):
            try:
                open_device(info.id)
                return info.id
            except pytest.skip.Exception:
                pass
    return None


def test_adam_state_round_trips_and_follows_to():
    # state_dict -> load_state_dict -> training on equals training on from the original; a model moved with
    # .to() keeps its optimizer's state (the step count and moments).
    data = _batches(5, seed=1)
    model = tiny_net(seed=4).to("cpu")
    opt = AdamW(model, lr=1e-2)
    for x, y in data[:2]:
        model.train_step(x, y, opt)
    sd = opt.state_dict()
    assert set(sd["state"]["1.weight"]) == {"exp_avg", "exp_avg_sq", "step"} and sd["state"]["1.bias"]["step"] == 2
    twin = tiny_net(seed=0).to("cpu")
    twin.load_state_dict(model.state_dict())
    opt2 = AdamW(twin, lr=1.0, weight_decay=0.0)
    opt2.load_state_dict(sd)
    assert opt2.step_count == 2 and opt2.param_group() == opt.param_group()
    with pytest.raises(ConfigError, match="does not keep"):
        SGD(twin, lr=0.1, momentum=0.9).load_state_dict(sd)
    target = _opencl_id() or "cpu"
    twin.to(target)   # the state follows the parameters to another device
    for x, y in data[2:]:
        model.train_step(x, y, opt)
        twin.train_step(x, y, opt2)
    for k, v in model.state_dict().items():
        check(twin.state_dict()[k], v, 1e-5, k)


def test_adam_on_every_data_parallel_replica():
    # Two replicas: each keeps its own device state, and the group equals one device.
    dev = _opencl_id()
    if dev is None:
        pytest.skip("no usable OpenCL device for a second replica")
    data = _batches(4, bs=8, seed=2)
    single = tiny_net(seed=5).to("cpu")
    group = clcnn.DataParallel(tiny_net(seed=5), ["cpu", dev], split="0.5,0.5")
    o1, o2 = Adam(single, lr=1e-2), Adam(group, lr=1e-2)
    for x, y in data:
        single.train_step(x, y, o1)
        group.train_step(x, y, o2)
    for r in group.replicas:
        for k, v in single.state_dict().items():
            check(r.state_dict()[k], v, 1e-5, f"{r.device.id} {k}")
    assert o2.step_count == 4 and len(o2._state) == 2


def test_schedule_and_bias_correction_keep_replaying():
    # A new learning rate and a new step count every step are values in the hyper-parameter buffer: one
    # recording serves every step, and the weights equal running every op each step.
    dev = _opencl_id()
    if dev is None:
        pytest.skip("no usable OpenCL device")
    data, states = _batches(7, seed=3), []
    for capture in (False, True):
        model = tiny_net(seed=6).to(dev)
        model.capture_steps = capture
        opt = Adam(model, lr=1e-2)
        sched = lr_scheduler.SequentialLR(opt, [lr_scheduler.LinearLR(opt, 0.1, total_iters=2),
                                                lr_scheduler.CosineAnnealingLR(opt, T_max=5)], [2])
        for x, y in data:
            model.train_step(x, y, opt, sync=False)
            sched.step()
        states.append(model.state_dict())
    assert model._steps.recordings == 1
    for k in states[0]:
        assert np.array_equal(states[0][k], states[1][k]), k
    assert opt.step_count == 7


def test_bare_step_after_a_replayed_step_uses_the_new_lr():
    # train_step replayed, then a hand-written step with a new learning rate: the value reaches the device
    dev = _opencl_id()
    if dev is None:
        pytest.skip("no usable OpenCL device")
    data, states = _batches(4, seed=4), []
    for capture in (False, True):
        model = tiny_net(seed=8).to(dev)
        model.capture_steps = capture
        opt = SGD(model, lr=0.1, momentum=0.9)
        for x, y in data[:3]:
            model.train_step(x, y, opt)
        opt.lr = 0.5
        model.gradients(*data[3])
        opt.step()
        states.append(model.state_dict())
    assert model._steps.recordings == 1
    for k in states[0]:
        assert np.array_equal(states[0][k], states[1][k]), k


# ---- Oclgrind: the new kernel code under its memory, race and API checkers -----------------------------------
OCLGRIND_SCRIPT = r'''
import math, sys
import numpy as np
import clcnn
sys.path.insert(0, sys.argv[1])
import reference as ref
dev = clcnn.get_backend(next(d.id for d in clcnn.list_devices() if "oclgrind" in d.platform.lower()))
rng, size, bad = np.random.default_rng(0), 300, []
def close(name, got, want, tol=1e-4):
    err = float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))
    print(name, err, flush=True)
    if not err <= tol: bad.append(name)
p, g = rng.standard_normal(size).astype(np.float32), rng.standard_normal(size).astype(np.float32)
dp, dg, dv = dev.upload(p), dev.upload(g), dev.zeros((size,))
hyper = dev.upload(np.array([0.1, 0.9, 1e-3], np.float32))
wp, wv = p, np.zeros(size)
for _ in range(2):
    dev.sgd_update(dp, dg, dv, hyper, size, nesterov=True)
    wp, wv = ref.sgd_update(wp, g, wv, 0.1, 0.9, 1e-3, nesterov=True)
close("sgd_update nesterov", dev.download(dp), wp)
for decoupled in (False, True):
    dp, m, v = dev.upload(p), dev.zeros((size,)), dev.zeros((size,))
    wp, wm, wv, hs = p, np.zeros(size), np.zeros(size), []
    for t in (1, 2):
        hs.append(dev.upload(np.array([1e-2, 0.9, 0.999, 1e-8, 0.1, t, 1e-2 / (1 - 0.9 ** t),
                                       math.sqrt(1 - 0.999 ** t), 0.1, 0.001], np.float32)))
        dev.adam_update(dp, dg, m, v, hs[-1], size, decoupled=decoupled)
        wp, wm, wv = ref.adam_update(wp, g, wm, wv, t, 1e-2, 0.9, 0.999, 1e-8, 0.1, decoupled=decoupled)
    close(f"adam_update decoupled={decoupled}", dev.download(dp), wp)
n, c = 5, 7
z, y = rng.standard_normal((n, c)).astype(np.float32), rng.integers(0, c, n).astype(np.int32)
probs, loss, dl, dy = dev.zeros((n, c)), dev.zeros((1,)), dev.zeros((n, c)), dev.upload(y)
dev.softmax_xent_forward(dev.upload(z), dy, probs, loss, n, c, label_smoothing=0.2, dlogits=dl)
wprobs, wloss = ref.softmax_xent_forward(z, y, n, c, label_smoothing=0.2)
close("softmax_xent_forward smoothed", dev.download(loss), np.array([wloss]))
close("softmax_xent gradient smoothed", dev.download(dl), ref.softmax_xent_backward(wprobs, y, n, c, 0.2))
print("FAILED " + ", ".join(bad) if bad else "ALL OK")
'''


@pytest.mark.oclgrind
def test_new_kernels_clean_under_oclgrind(tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    from test_oclgrind import _require_oclgrind, oclgrind_env, oclgrind_reports
    _require_oclgrind()
    here = str(Path(__file__).resolve().parent)
    proc = subprocess.run([sys.executable, "-c", OCLGRIND_SCRIPT, here], env=oclgrind_env(tmp_path),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "ALL OK" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    reports = oclgrind_reports(proc.stderr)
    assert not reports, f"{len(reports)} Oclgrind report(s):\n\n" + "\n\n".join(reports[:5])


ONE_RANK_ADAM = r'''
import json, sys, warnings
import numpy as np
from mpi4py import MPI
sys.path.insert(0, sys.argv[1])
from clcnn.distributed import DistributedDataParallel
from clcnn.optim import AdamW, lr_scheduler
from test_optim import tiny_net
warnings.simplefilter("ignore")
rng = np.random.default_rng(0)
single = tiny_net(seed=3).to("cpu")
m = DistributedDataParallel(tiny_net(seed=3).to("cpu"), MPI.COMM_WORLD)
o1, o2 = AdamW(single, lr=1e-2), AdamW(m, lr=1e-2)
s1, s2 = lr_scheduler.CosineAnnealingLR(o1, T_max=6), lr_scheduler.CosineAnnealingLR(o2, T_max=6)
for i, n in enumerate([8, 8, 3, 8, 8, 5]):
    x, y = rng.standard_normal((n, 6)).astype(np.float32), rng.integers(0, 3, n)
    single.train_step(x, y, o1, sync=i < 2)
    m.train_step(x, y, o2, sync=i < 2)   # sync=False: the update runs at the next call, with this step's values
    s1.step(); s2.step()
d1, d2 = o1.state_dict(), o2.state_dict()   # the pending update is finished first
want, got = single.state_dict(), m.state_dict()
err = max(float(np.abs(want[k] - got[k]).max()) for k in want)
state_err = max(float(np.abs(d1["state"][k][s] - d2["state"][k][s]).max()) for k in d1["state"] for s in d1["state"][k])
print(json.dumps({"err": err, "state_err": state_err, "steps": [o1.step_count, o2.step_count]}))
'''


@pytest.mark.deep   # ~4 s of a subprocess with MPI; the lean grid covers DataParallel's replicas
def test_adam_under_one_mpi_rank_steps_like_one_process():
    # DistributedDataParallel defers a sync=False step's update to the next call: the step count (bias
    # correction) and the scheduled lr it runs with are still that step's.
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path
    pytest.importorskip("mpi4py")
    res = subprocess.run([sys.executable, "-c", ONE_RANK_ADAM, str(Path(__file__).resolve().parent)],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "NUMBA_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["err"] <= 1e-6 and out["state_err"] <= 1e-6 and out["steps"] == [6, 6], out
