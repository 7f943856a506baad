"""MPI ranks (clcnn.distributed, clcnn.launch): `mpiexec -n 2` on CPU devices and the automatic launch of a
two-device group both give the single-process weights within 1e-5; only rank 0 writes; errors come through as one
line, also when MPI cannot start."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clcnn import io
from clcnn.distributed import grad_chunks
from conftest import run_on_platform_pair
from test_cli import assert_one_line_error, clcnn as run_cli, make_dataset

MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
needs_mpi = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install 'clcnn[mpi]')")
ENV = {"NUMBA_NUM_THREADS": "1"}
COMMON = ["--model", "lenet5", "--epochs", 1, "--batch-size", 32, "--lr", 0.05, "--momentum", 0.9, "--seed", 0, "--no-progress"]


def weights_diff(a: Path, b: Path) -> float:
    want, _ = io.load_safetensors(a / "model.safetensors")
    got, _ = io.load_safetensors(b / "model.safetensors")
    return max(float(np.abs(got[k] - want[k]).max()) for k in want)


@needs_mpi
def test_mpiexec_two_ranks_match_one_process(tmp_path):
    # The user's own mpiexec on CPU devices (--parallel auto under MPI: the ranks just run); 100 images, the last
    # batch short; rank 0 alone prints and writes.
    data = ["--data-dir", make_dataset(tmp_path / "data", n_train=100, n_test=32)] + COMMON
    one = run_cli("train", *data, "--device", "cpu", "--out", tmp_path / "one", env=ENV)
    assert one.returncode == 0, one.stderr
    exe = [sys.executable, "-m", "clcnn"]
    two = subprocess.run([MPIEXEC, "-n", "2", *exe, "train", *map(str, data), "--device", "cpu", "--out",
                          str(tmp_path / "two")], capture_output=True, text=True, timeout=300,
                         env={**os.environ, **ENV})
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("epoch 1/1") == 1
    rows = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 1 and json.loads(rows[0])["device"] == "cpu,cpu"
    assert weights_diff(tmp_path / "one", tmp_path / "two") <= 1e-5
    bad = subprocess.run([MPIEXEC, "-n", "2", *exe, "train", *map(str, data), "--device", "cpu,cpu,cpu"],
                         capture_output=True, text=True, timeout=120, env={**os.environ, **ENV})
    assert bad.returncode == 2 and "3 devices for 2 MPI ranks" in bad.stderr and "Traceback" not in bad.stderr


LAUNCH_CHILD = r'''
import subprocess, tempfile
from pathlib import Path
from test_cli import clcnn as run_cli, make_dataset
from test_distributed import COMMON, ENV, weights_diff
tmp = Path(tempfile.mkdtemp())
data = ["--data-dir", make_dataset(tmp / "data", n_train=100, n_test=32)] + COMMON
one = run_cli("train", *data, "--device", pair[0], "--out", tmp / "one", env=ENV)
two = run_cli("train", *data, "--device", ",".join(pair), "--parallel", "mpi", "--out", tmp / "two", env=ENV)
broken = make_dataset(tmp / "broken", n_train=8, n_test=8)
(broken / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip")   # every rank fails on it
bad = run_cli("train", *data[2:], "--data-dir", broken, "--device", ",".join(pair), "--parallel", "mpi", env=ENV)
out = {"pair": pair, "codes": [one.returncode, two.returncode, bad.returncode], "err": [one.stderr, two.stderr],
       "epochs": two.stdout.count("epoch 1/1"), "bad": bad.stderr}
if two.returncode == 0:
    out["row"] = json.loads((tmp / "two" / "metrics.jsonl").read_text())
    out["diff"] = weights_diff(tmp / "one", tmp / "two")
print(json.dumps(out))
'''


@needs_mpi
def test_group_of_two_opencl_devices_starts_its_ranks(tmp_path):
    # `clcnn train --device a,b --parallel mpi` (two PoCL devices; they are CPUs, so MPI is asked for) runs
    # mpiexec by itself: the single-process weights within 1e-5; a failure in the ranks comes through once.
    out = run_on_platform_pair(LAUNCH_CHILD)
    assert out["codes"][:2] == [0, 0], out["err"]
    assert out["epochs"] == 1 and out["row"]["device"] == ",".join(out["pair"]), out
    assert set(out["row"]["split"]) == {f"rank{r}:{d}" for r, d in enumerate(out["pair"])}
    assert out["diff"] <= 1e-5, out
    assert out["codes"][2] == 2 and len(out["bad"].strip().splitlines()) == 1, out["bad"]
    assert out["bad"].startswith("clcnn: error:") and "not a gzip file" in out["bad"], out["bad"]


def test_mpi_that_cannot_start_is_one_line(tmp_path):
    # no mpiexec where it is looked for, or no mpi4py: one line that says how to install them
    data = ["--data-dir", make_dataset(tmp_path / "data", n_train=8, n_test=8), "--device", "cpu,cpu",
            "--parallel", "mpi"]
    res = run_cli("train", *data, env={"CLCNN_MPIEXEC": str(tmp_path / "no-mpiexec")})
    assert_one_line_error(res, "mpiexec", "clcnn[mpi]")
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "mpi4py.py").write_text("raise ImportError('mpi4py hidden for this test')\n")
    res = run_cli("train", *data, env={"PYTHONPATH": f"{blocker}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    assert_one_line_error(res, "mpi4py", "clcnn[mpi]")


ONE_RANK = r'''
import json, sys, warnings
import numpy as np
from mpi4py import MPI
import clcnn
from clcnn.distributed import DistributedDataParallel, chunk_index
from clcnn.models import get_model
from clcnn.optim import SGD
warnings.simplefilter("ignore")
out = {}
for device in sys.argv[1:]:
    rng = np.random.default_rng(0)
    single = get_model("lenet5", seed=3).to(device)
    m = DistributedDataParallel(get_model("lenet5", seed=3).to(device), MPI.COMM_WORLD, split="auto")
    m._gather = chunk_index(m.model, m.chunks)   # the path of ranks laid out differently, on one rank
    o1, o2 = SGD(single, lr=0.05, momentum=0.9), SGD(m, lr=0.05, momentum=0.9)
    losses = []
    for i, n in enumerate([20, 20, 7, 20, 20, 13]):
        x = rng.standard_normal((n, 1, 28, 28)).astype(np.float32)
        y = rng.integers(0, 10, n)
        o1.lr = o2.lr = 0.05 / (1 + i)   # a per-step schedule: a deferred update keeps its step's rate
        a, b = single.train_step(x, y, o1, sync=i < 3), m.train_step(x, y, o2, sync=i < 3)
        losses += [[a, b]] if i < 3 else []
    s1, s2 = o1.state_dict(), o2.state_dict()   # the pending update is finished first
    state_err = max(float(np.abs(s1["state"][k]["momentum_buffer"] - s2["state"][k]["momentum_buffer"]).max())
                    for k in s1["state"])
    losses.append([single.read_loss(), m.read_loss()])
    (l1, g1), (l2, g2) = single.gradients(x, y), m.gradients(x, y)
    want, got = single.state_dict(), m.state_dict()
    out[device] = {"losses": losses + [[l1, l2]], "err": max(float(np.abs(want[k] - got[k]).max()) for k in want),
                   "grad_err": max(float(np.abs(g1[k] - g2[k]).max()) for k in g1), "state_err": state_err}
print(json.dumps(out))
'''


def test_one_rank_steps_like_one_process():
    # DistributedDataParallel's chunked exchange in a world of one rank (through the state_dict-order gather of
    # differently laid out ranks, too), with a learning rate changed every step: sync losses, the deferred total,
    # gradients(), the momentum and the weights are the plain model's, on the cpu and on an OpenCL device.
    from conftest import usable_device_ids
    devices = ["cpu"] + [d for d in usable_device_ids(simulators=False) if d != "cpu"][:1]
    res = subprocess.run([sys.executable, "-c", ONE_RANK, *devices], capture_output=True, text=True, timeout=300,
                         env={**os.environ, **ENV})
    assert res.returncode == 0, res.stderr[-2000:]
    for device, case in json.loads(res.stdout.strip().splitlines()[-1]).items():
        for a, b in case["losses"]:
            assert b == pytest.approx(a, rel=1e-5), (device, case)
        assert case["err"] <= 1e-6 and case["grad_err"] <= 1e-6 and case["state_err"] <= 1e-6, (device, case)


def test_grad_chunks_cover_the_buffer_in_backward_order():
    from clcnn.models import cifar
    m = cifar().to("cpu")
    chunks = grad_chunks(m)
    assert len(chunks) > 1 and [c[0] for c in chunks] == sorted((c[0] for c in chunks), reverse=True)
    assert chunks[0][2] == m.flat_grad.size and chunks[-1][1] == 0
    assert all(a[1] == b[2] for a, b in zip(chunks, chunks[1:]))   # contiguous, no gaps
    for layer, a, b in chunks:   # each chunk holds its layer's parameters and those of the later ones it carries
        for p in m.layers[layer].params.values():
            assert a <= m.flat_offsets[id(p)] < b
