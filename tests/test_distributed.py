"""`mpiexec -n 2 clcnn train --distributed mpi` gives the single-process weights (up to float rounding); only rank 0
writes; a bad rank/device count is one error line."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clcnn import io
from test_cli import FASHION, assert_one_line_error, clcnn as run_cli, make_dataset

MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install 'clcnn[mpi]')")


def _data_args(tmp_path):
    if (FASHION / "train-images-idx3-ubyte.gz").exists() or (FASHION / "train-images-idx3-ubyte").exists():
        return ["--data-dir", FASHION, "--limit-train", 500]   # a real Fashion-MNIST subset (last batch short)
    return ["--data-dir", make_dataset(tmp_path / "data", n_train=500)]


def _mpi_train(n, args, env=None):
    exe = Path(sys.executable).with_name("clcnn")
    cmd = [MPIEXEC, "-n", str(n), str(exe) if exe.exists() else sys.executable]
    if not exe.exists():
        cmd += ["-m", "clcnn"]
    full_env = {**os.environ, "NUMBA_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd + ["train", "--distributed", "mpi"] + [str(a) for a in args], capture_output=True,
                          text=True, timeout=600, env=full_env)


def test_two_ranks_match_one_process(tmp_path):
    common = _data_args(tmp_path) + ["--device", "cpu", "--epochs", 1, "--batch-size", 64, "--lr", 0.05,
                                     "--momentum", 0.9, "--seed", 0, "--no-progress"]
    one = run_cli("train", *common, "--out", tmp_path / "one")
    assert one.returncode == 0, one.stderr
    two = _mpi_train(2, common + ["--out", tmp_path / "two"])
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("epoch 1/1") == 1   # rank 0 alone prints
    rows = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 1 and json.loads(rows[0])["device"] == "cpu,cpu"
    want, _ = io.load_safetensors(tmp_path / "one" / "model.safetensors")
    got, _ = io.load_safetensors(tmp_path / "two" / "model.safetensors")
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=2e-5, err_msg=k)


def test_device_list_must_match_ranks(tmp_path):
    res = _mpi_train(2, _data_args(tmp_path) + ["--device", "cpu,cpu,cpu", "--epochs", 1])
    assert res.returncode != 0
    assert "3 devices for 2 MPI ranks" in res.stderr and "Traceback" not in res.stderr


def test_without_mpi4py_is_one_line(tmp_path):
    # the module exists here, so hide it: a missing mpi4py must say how to get it
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "mpi4py.py").write_text("raise ImportError('mpi4py hidden for this test')\n")
    res = run_cli("train", "--distributed", "mpi", "--device", "cpu", *_data_args(tmp_path),
                  env={"PYTHONPATH": f"{blocker}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    assert_one_line_error(res, "clcnn[mpi]")


ONE_RANK = r'''
import json, warnings
import numpy as np
from mpi4py import MPI
from clcnn.distributed import MPIParallel
from clcnn.models import get_model
from clcnn.optim import SGD
warnings.simplefilter("ignore")
rng = np.random.default_rng(0)
single = get_model("lenet5", seed=3).to("cpu")
m = MPIParallel(get_model("lenet5", seed=3).to("cpu"), MPI.COMM_WORLD, split="auto")
o1, o2 = SGD(single, lr=0.05, momentum=0.9), SGD(m, lr=0.05, momentum=0.9)
out = {"chunked": m.chunked, "sync": [], "deferred": []}
for i, n in enumerate([20, 20, 7, 20, 20, 13]):
    x = rng.standard_normal((n, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, n)
    sync = i < 3
    a, b = single.train_step(x, y, o1, sync=sync), m.train_step(x, y, o2, sync=sync)
    if sync:
        out["sync"].append([a, b])
out["deferred"] = [single.read_loss(), m.read_loss()]
# state_dict finishes the pending step: the weights after the last update
want, got = single.state_dict(), m.state_dict()
out["err"] = max(float(np.abs(want[k] - got[k]).max()) for k in want)
(l1, g1), (l2, g2) = single.gradients(x, y), m.gradients(x, y)
out["grad_err"] = max(float(np.abs(g1[k] - g2[k]).max()) for k in g1)
out["loss"] = [l1, l2]
print(json.dumps(out))
'''


def test_one_rank_steps_like_one_process():
    # MPIParallel's chunked exchange with its deferred update, in one process (a singleton MPI world): the losses
    # of sync steps, the deferred loss total, the weights (read through state_dict, which finishes the pending
    # step) and gradients() all equal the plain model's.
    res = subprocess.run([sys.executable, "-c", ONE_RANK], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "NUMBA_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["chunked"]
    for a, b in out["sync"] + [out["deferred"], out["loss"]]:
        assert b == pytest.approx(a, rel=1e-5)
    assert out["err"] <= 1e-6 and out["grad_err"] <= 1e-6
