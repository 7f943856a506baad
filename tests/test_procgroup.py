"""DataParallel with a process per device (clcnn/procgroup.py): the shared-memory collectives between processes;
the single device's gradients, weights and losses; bit-identical replicas; a worker that dies is named; the CLI."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import clcnn
from clcnn.optim import SGD
from clcnn.procgroup import ShmComm
from conftest import run_on_platform_pair, usable_device_ids
from test_parallel import batch, net

CL = [d for d in usable_device_ids(simulators=False) if d != "cpu"]
needs_cl = pytest.mark.skipif(not CL, reason="no usable non-simulator OpenCL device")
ROOT = str(Path(__file__).resolve().parent.parent)


def child_env() -> dict:
    """This environment with the checkout first on PYTHONPATH (kept: it may hold pyopencl, as on the GPU host)."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))

PEER = r'''
import sys, numpy as np
from clcnn.procgroup import ShmComm
comm = ShmComm(sys.argv[1], 1, 2, 1000)
for i in range(60):
    n = 1 + (i * 37) % 1000
    buf = np.full(n, 2.0 + i, np.float32)
    comm.sum_(buf)
    if not np.all(buf == (1.0 + i) + (2.0 + i)):
        comm.fail(f"peer: wrong sum at round {i}"); sys.exit(1)
    got = comm.allgather({"rank": 1, "round": i})
    if got != [{"rank": 0, "round": i}, {"rank": 1, "round": i}]:
        comm.fail(f"peer: wrong allgather at round {i}: {got}"); sys.exit(1)
if comm.allreduce(0.25) != 0.75:
    sys.exit(1)
comm.fail("peer: done")   # instead of joining the next collective
'''


def test_shm_comm_collectives_between_two_processes():
    # 60 rounds back to back (no other synchronisation): every sum and gather is right, so a slot is never
    # overwritten before the peer has read it; then a failure posted by one rank raises in the other's wait.
    env = child_env()

    def peer_alive():
        if peer.poll() not in (None, 0):
            raise RuntimeError(f"the peer exited with {peer.returncode}")
    comm = ShmComm(None, 0, 2, 1000, check=peer_alive)
    peer = subprocess.Popen([sys.executable, "-c", PEER, comm.name], env=env)
    try:
        for i in range(60):
            n = 1 + (i * 37) % 1000
            buf = np.full(n, 1.0 + i, np.float32)
            comm.sum_(buf)
            assert np.all(buf == (1.0 + i) + (2.0 + i)), i
            assert comm.allgather({"rank": 0, "round": i}) == [{"rank": 0, "round": i}, {"rank": 1, "round": i}]
        assert comm.allreduce(0.5) == 0.75
        with pytest.raises(clcnn.DeviceError, match="peer: done"):
            comm.allgather(None)   # the peer posted a failure instead of joining
        assert peer.wait(timeout=60) == 0
    finally:
        peer.kill()
        comm.close()
    with pytest.raises(ValueError, match="holds 1000"):
        ShmComm(None, 0, 1, 1000).sum_(np.zeros(1001, np.float32))


@needs_cl
@pytest.mark.parametrize("split", [[0.6, 0.4], [1.0, 0.0], "auto"])
def test_process_group_matches_single_device(split):
    # SGD with momentum and weight decay over uneven batch sizes (shards of 0 and 1 image), sync and deferred
    # losses: the single device's weights, losses and gradients, on this replica and the worker's.
    single = net(seed=2).to("cpu")
    dp = clcnn.DataParallel(net(seed=2), ["cpu", CL[0]], split=split, processes=True)
    try:
        assert type(dp).__name__ == "ProcessParallel" and CL[0] in dp.device.id
        o1, o2 = SGD(single, lr=0.1, momentum=0.9, weight_decay=1e-3), SGD(dp, lr=0.1, momentum=0.9,
                                                                           weight_decay=1e-3)
        l1 = l2 = 0.0
        for i, n in enumerate([8, 7, 3, 1, 9, 700, 12, 2]):   # 700: the batch slots grow
            x, y = batch(n, seed=10 + i)
            if i == 4:
                o1.lr = o2.lr = 0.05   # a changed hyper-parameter reaches the worker
            sync = i % 2 == 0
            a, b = single.train_step(x, y, o1, sync=sync), dp.train_step(x, y, o2, sync=sync)
            if sync:
                l1, l2 = l1 + a, l2 + b
        assert l2 + dp.read_loss() == pytest.approx(l1 + single.read_loss(), rel=1e-5)
        want, got = single.state_dict(), dp.state_dict()
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5, err_msg=k)
        (worker,) = dp.worker_states()   # the same summed gradients; Numba's and OpenCL's update may round apart
        for k in got:
            np.testing.assert_allclose(worker[k], got[k], rtol=1e-6, atol=1e-7, err_msg=k)
        x, y = batch(10, seed=99)
        (lw, gw), (lg, gg) = single.gradients(x, y), dp.gradients(x, y)
        assert lg == pytest.approx(lw, rel=1e-5)
        for k in gw:
            np.testing.assert_allclose(gg[k], gw[k], rtol=1e-4, atol=1e-5, err_msg=k)
        np.testing.assert_allclose(dp.predict(x), single.predict(x), rtol=1e-4, atol=1e-5)
        dp.load_state_dict(net(seed=5).state_dict())   # reaches every replica
        (worker,) = dp.worker_states()
        fresh = net(seed=5).state_dict()
        assert all(np.array_equal(worker[k], fresh[k]) and np.array_equal(dp.state_dict()[k], fresh[k])
                   for k in fresh)
    finally:
        dp.close()


@needs_cl
def test_worker_that_dies_is_named_and_the_group_stops():
    dp = clcnn.DataParallel(net(seed=1), ["cpu", CL[0]], split=[0.5, 0.5], processes=True)
    opt = SGD(dp, lr=0.05)
    try:
        dp.train_step(*batch(6), opt)
        dp._workers[0][0].kill()
        with pytest.raises(clcnn.DeviceError, match=CL[0]):
            for _ in range(3):
                dp.train_step(*batch(6), opt)
        with pytest.raises(clcnn.DeviceError, match="stopped"):
            dp.train_step(*batch(6), opt)
    finally:
        dp.close()
    assert not dp._workers   # closed: no process left behind


def test_unknown_device_fails_before_any_process_starts():
    with pytest.raises(clcnn.DeviceError, match="cl:99"):
        clcnn.DataParallel(net(), ["cpu", "cl:99"], processes=True)
    with pytest.raises(ValueError, match="split"):
        clcnn.DataParallel(net(), ["cpu", "cl:99"], split="0.5", processes=True)


# PoCL gives two CPU devices of one platform with POCL_DEVICES="pthread pthread" (enumerated once per process, so
# in a child): each process drives one in a context of its own, and the flat layouts match, so gradients move
# chunk by chunk as their layers finish (MPIParallel's chunked path).
CHUNKED_CHILD = r'''
single = net(seed=2).to(pair[0])
dp = clcnn.DataParallel(net(seed=2), pair, split=[0.6, 0.4], processes=True)
o1, o2 = SGD(single, lr=0.1, momentum=0.9), SGD(dp, lr=0.1, momentum=0.9)
l1 = l2 = 0.0
for i, n in enumerate([8, 7, 3, 1, 9]):
    x, y = batch(n, seed=10 + i)
    a, b = single.train_step(x, y, o1, sync=i % 2 == 0), dp.train_step(x, y, o2, sync=i % 2 == 0)
    l1, l2 = l1 + (a or 0.0), l2 + (b or 0.0)
want, got = single.state_dict(), dp.state_dict()
worker = dp.worker_states()[0]
print(json.dumps({"pair": pair, "chunked": dp.chunked, "loss": [l1 + single.read_loss(), l2 + dp.read_loss()],
                  "err": max(float(np.abs(got[k] - want[k]).max()) for k in want),
                  "identical": all(np.array_equal(worker[k], got[k]) for k in got)}))
dp.close()
'''


@needs_cl
def test_chunked_exchange_between_two_processes():
    out = run_on_platform_pair(CHUNKED_CHILD)
    assert out["chunked"] and out["identical"] and out["err"] <= 1e-5, out
    assert out["loss"][1] == pytest.approx(out["loss"][0], rel=1e-5), out


@needs_cl
def test_cli_trains_with_a_process_per_device(tmp_path):
    from test_cli import make_dataset
    make_dataset(tmp_path / "data")
    data_dir = str(tmp_path / "data" / "fashion-mnist")
    res = subprocess.run([sys.executable, "-m", "clcnn", "train", "--data-dir", data_dir,
                          "--device", f"cpu,{CL[0]}", "--processes", "yes", "--split", "0.5,0.5", "--epochs", "1",
                          "--batch-size", "32", "--out", str(tmp_path / "run"), "--no-progress"],
                         capture_output=True, text=True, timeout=600, env=child_env())
    assert res.returncode == 0, res.stderr[-2000:]
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert set(row["split"]) == {"cpu", CL[0]} and (tmp_path / "run" / "model.safetensors").exists()
    assert "worker process" in row["device_name"]


def test_processes_by_default_only_for_groups_of_gpus():
    from clcnn.parallel import use_processes
    gpus = [d.id for d in clcnn.list_devices() if d.type == "gpu"]
    assert use_processes(["cpu"] + CL[:1]) is False   # a CPU in the group: one process
    assert use_processes(["cpu"], True) is False   # one device: nothing to spread
    assert use_processes(["cpu", "cl:0"], False) is False
    assert use_processes(gpus) is (len(gpus) > 1 and sys.platform.startswith("linux"))


@needs_cl
def test_worker_dying_mid_run_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    # Epoch 1 completes and saves; then the worker process dies: the run stops with an error naming its device,
    # and model.safetensors still holds epoch 1's weights, intact.
    from safetensors.numpy import load_file
    from clcnn import procgroup
    from clcnn.training import TrainConfig, train
    from test_cli import make_dataset
    make_dataset(tmp_path / "data")
    out = tmp_path / "run"
    cfg = TrainConfig(data_dir=str(tmp_path / "data" / "fashion-mnist"), device=f"cpu,{CL[0]}", split="0.5,0.5",
                      processes="yes", epochs=2, batch_size=32, out=str(out))
    groups, saved = [], {}
    real_init, real_save = procgroup.ProcessParallel.__init__, clcnn.io.save_safetensors

    def init(self, *a, **k):
        groups.append(self)
        real_init(self, *a, **k)

    def save(path, state, meta):   # epoch 1 saved: remember it, then the worker dies
        saved.update({k: v.copy() for k, v in state.items()})
        real_save(path, state, meta)
        groups[0]._workers[0][0].kill()
    monkeypatch.setattr(procgroup.ProcessParallel, "__init__", init)
    monkeypatch.setattr(clcnn.io, "save_safetensors", save)
    with pytest.raises(clcnn.DeviceError, match=CL[0]):
        train(cfg, log=lambda *a, **k: None, show_progress=False)
    on_disk = load_file(str(out / "model.safetensors"))
    assert saved and set(on_disk) == set(saved) and all(np.array_equal(on_disk[k], saved[k]) for k in saved)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert not groups[0]._workers   # stopped and reaped


class _LocalReLU(clcnn.ReLU):   # defined here: a worker process cannot import this test module
    pass


@needs_cl
def test_a_layer_the_worker_cannot_import_is_named():
    model = clcnn.Sequential([clcnn.Flatten(), clcnn.Dense(64, 8), _LocalReLU(), clcnn.Dense(8, 4)], seed=0)
    with pytest.raises(clcnn.DeviceError, match="could not be rebuilt.*test_procgroup.*processes=False"):
        clcnn.DataParallel(model, ["cpu", CL[0]], processes=True)
