"""The issue-13 layers in whole networks: PyTorch as an oracle (a residual network's logits, gradients and running
statistics on every device; BatchNorm's running statistics after several SGD steps; torch's state_dict loads by
name) and data parallelism (each replica or MPI rank normalises its own shard, the running statistics stay
those of the lead / rank 0, as DDP's broadcast_buffers). The ops themselves: tests/test_layers_new.py.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from opcheck import check, check_exact, randn  # noqa: E402
from test_layers_new import _lean_params, _sgd  # noqa: E402

from clcnn.layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten,  # noqa: E402
                          GlobalAvgPool2D, ReLU, Residual, Tanh)


@pytest.fixture(scope="module", params=_lean_params(0))   # OpenCL: the deep grid (PoCL GEMM builds, 5-25 s)
def dev(request):
    from conftest import open_device
    return open_device(request.param)


def test_data_parallel_keeps_running_stats_identical():
    # DDP without SyncBN: each replica normalises its own shard; after each step every replica holds the lead's
    # running statistics
    from conftest import usable_device_ids
    from clcnn import DataParallel
    from clcnn.model import Sequential
    ids = [d for d in usable_device_ids(simulators=False)][:2]
    if len(ids) < 2:
        pytest.skip("needs two devices")
    m = Sequential([Conv2D(1, 3, 3), BatchNorm2D(3), ReLU(), Flatten(), Dropout(0.2), Dense(12, 2)],
                   input_shape=(1, 4, 4))
    net = DataParallel(m, ids, split=[0.5, 0.5])
    assert [r.layers[4].stream for r in net.replicas] == [0, 1]   # independent masks for the two shards
    opt = _sgd(net)
    rng = np.random.default_rng(0)
    for _ in range(3):
        net.train_step(randn(rng, 8, 1, 4, 4) + 1.0, rng.integers(0, 2, 8), opt)
    a, b = (r.state_dict() for r in net.replicas)
    for k in ("1.running_mean", "1.running_var", "1.num_batches_tracked"):
        check_exact(b[k], a[k], k)
    assert int(a["1.num_batches_tracked"]) == 3 and not np.allclose(a["1.running_mean"], 0)


# ---- PyTorch as an oracle -----------------------------------------------------------------------------------
def _torch_residual(nn, layers, shortcut=None):
    class R(nn.Module):   # the module Residual's state_dict names and forward are those of
        def __init__(self):
            super().__init__()
            self.layers = nn.Sequential(*layers)
            self.shortcut = None if shortcut is None else nn.Sequential(*shortcut)

        def forward(self, x):
            return self.layers(x) + (x if self.shortcut is None else self.shortcut(x))
    return R()


def _close(got, want, rtol, what):
    """max|got - want| <= rtol * max|want| + 1e-6: a conv bias before a BN has a zero gradient (rounding noise
    on both sides), so a small absolute floor."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    err = float(np.abs(got - want).max())
    scale = float(np.abs(want).max())
    assert err <= rtol * scale + 1e-6, f"{what}: max err {err:.3g} (max|want| {scale:.3g})"


def _pair(torch):
    """A small ResNet-like network in clcnn and the equivalent torch module."""
    from clcnn.model import Sequential
    nn = torch.nn
    ours = Sequential([Conv2D(2, 4, 3, padding=1), BatchNorm2D(4), ReLU(),
                       Residual([Conv2D(4, 4, 3, padding=1), BatchNorm2D(4), ReLU(), Conv2D(4, 4, 3, padding=1),
                                 BatchNorm2D(4)]), ReLU(),
                       Residual([Conv2D(4, 6, 3, stride=2, padding=1), BatchNorm2D(6), Tanh()],
                                shortcut=[Conv2D(4, 6, 1, stride=2), BatchNorm2D(6)]),
                       AvgPool2D(2), GlobalAvgPool2D(), BatchNorm1D(6), Dense(6, 5)], input_shape=(2, 8, 8), seed=4)
    theirs = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                           _torch_residual(nn, [nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                                nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)]), nn.ReLU(),
                           _torch_residual(nn, [nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.BatchNorm2d(6), nn.Tanh()],
                                           [nn.Conv2d(4, 6, 1, stride=2), nn.BatchNorm2d(6)]),
                           nn.AvgPool2d(2), nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),   # GlobalAvgPool2D
                           nn.BatchNorm1d(6), nn.Linear(6, 5))
    return ours, theirs


def test_residual_network_matches_torch(dev):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    ours, theirs = _pair(torch)
    # torch's own (random, non-trivial) weights and running statistics load by name, as they are
    with torch.no_grad():
        for name, t in theirs.state_dict().items():
            if "running" in name or (name.endswith("weight") and t.ndim == 1):
                t.uniform_(0.5, 1.5)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    ours.to(dev)
    rng = np.random.default_rng(0)
    x, y = randn(rng, 6, 2, 8, 8), rng.integers(0, 5, 6)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    theirs.eval()
    want_eval = theirs(tx).detach().numpy()
    check(ours.predict(x), want_eval, 1e-4, "eval logits")
    theirs.train()
    loss_t = torch.nn.functional.cross_entropy(theirs(tx), ty)
    loss_t.backward()
    loss, grads = ours.gradients(x, y)
    assert abs(loss - loss_t.item()) <= 1e-4 * max(1.0, abs(loss_t.item()))
    for name, p in theirs.named_parameters():
        _close(grads[name], p.grad.numpy(), 2e-4, f"grad {name}")
    sd = ours.state_dict()
    for name, t in theirs.state_dict().items():   # running statistics after one training forward
        check(sd[name], t.numpy(), 1e-4, name)


def test_batchnorm_running_stats_match_torch_after_steps(dev):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(2)
    ours, theirs = _pair(torch)
    theirs.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.state_dict().items()})
    ours.to(dev)
    opt, topt = _sgd(ours, 0.05, 0.9), torch.optim.SGD(theirs.parameters(), lr=0.05, momentum=0.9)
    rng = np.random.default_rng(1)
    for _ in range(3):
        x, y = randn(rng, 6, 2, 8, 8, scale=2.0) + 0.3, rng.integers(0, 5, 6)
        ours.train_step(x, y, opt)
        topt.zero_grad()
        torch.nn.functional.cross_entropy(theirs(torch.from_numpy(x)), torch.from_numpy(y.astype(np.int64))).backward()
        topt.step()
    sd = ours.state_dict()
    for name, t in theirs.state_dict().items():
        if "num_batches" in name:
            assert int(sd[name]) == int(t) == 3, name
        else:
            _close(sd[name], t.numpy(), 2e-4, name)


MPI_BN = r'''
import json, sys
import numpy as np
from clcnn.distributed import DistributedDataParallel, mpi_world
from clcnn.layers import BatchNorm2D, Conv2D, Dense, Flatten, ReLU
from clcnn.model import Sequential
from clcnn.optim import SGD
comm = mpi_world()
m = Sequential([Conv2D(1, 3, 3), BatchNorm2D(3), ReLU(), Flatten(), Dense(12, 2)], input_shape=(1, 4, 4),
               seed=comm.rank).to("cpu")   # different seeds: the constructor must broadcast rank 0's state
net = DistributedDataParallel(m, comm, split=[0.25, 0.75])
opt, rng = SGD(net, lr=0.1), np.random.default_rng(0)
for _ in range(3):
    net.train_step((rng.standard_normal((8, 1, 4, 4)) + 1).astype(np.float32), rng.integers(0, 2, 8), opt)
sd = m.state_dict()
with open(f"{sys.argv[1]}/rank{comm.rank}.json", "w") as f:   # one file each: the ranks' stdout interleave
    json.dump({k: sd[k].tolist() for k in ("1.running_mean", "1.running_var", "1.num_batches_tracked")}, f)
'''


@pytest.mark.deep
def test_mpi_ranks_keep_running_stats_identical(tmp_path):
    # two ranks normalise shards of 2 and 6 images each with their own statistics; rank 0's buffers win
    import shutil
    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent))
    if mpiexec is None:
        pytest.skip("no mpiexec (pip install 'clcnn[mpi]')")
    script = tmp_path / "bn.py"
    script.write_text(MPI_BN)
    res = subprocess.run([mpiexec, "-n", "2", sys.executable, str(script), str(tmp_path)], capture_output=True,
                         text=True, timeout=300, env={**__import__("os").environ, "NUMBA_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [(tmp_path / f"rank{r}.json").read_text() for r in (0, 1)]
    assert rows[0] == rows[1], rows
    got = __import__("json").loads(rows[0])
    assert got["1.num_batches_tracked"] == 3 and got["1.running_mean"] != [0.0, 0.0, 0.0]
