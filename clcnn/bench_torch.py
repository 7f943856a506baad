"""PyTorch's side of `clcnn bench`: the same preset with the same weights as a torch nn.Sequential, its training
steps on CUDA or the CPU, and the CPU worker process that keeps PyTorch's OpenMP pool away from Numba's threads."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import weakref

import numpy as np

TORCH_CPU = "PyTorch CPU"


def torch_device(info):
    """("cuda" | "cpu", a description) for PyTorch beside clcnn device ``info``: CUDA when the clcnn device is
    an NVIDIA GPU and torch sees CUDA (TF32 off), else the CPU; None when torch is not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if info.backend == "opencl" and "nvidia" in info.platform.lower() and torch.cuda.is_available():
        return "cuda", torch.cuda.get_device_name()
    return "cpu", f"{TORCH_CPU} ({torch.get_num_threads()} threads)"


def to_torch(model, device: str):
    """A torch nn.Sequential with the same layers and weights as the clcnn Sequential ``model``, on ``device``.
    ValueError for a layer with no PyTorch equivalent (a programming error: every preset has one)."""
    import torch
    from torch import nn

    from . import layers as L
    mods = []
    for layer in model.layers:
        if isinstance(layer, L.Conv2D):
            mods.append(nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                                  padding=layer.padding))
        elif isinstance(layer, L.Dense):
            mods.append(nn.Linear(layer.in_features, layer.out_features))
        elif isinstance(layer, L.MaxPool2D):
            mods.append(nn.MaxPool2d(layer.kernel_size, layer.stride))
        elif isinstance(layer, L.Flatten):
            mods.append(nn.Flatten())
        elif isinstance(layer, L.ReLU):
            mods.append(nn.ReLU())
        elif isinstance(layer, L.Sigmoid):
            mods.append(nn.Sigmoid())
        else:
            raise ValueError(f"no PyTorch equivalent for {layer!r}")
    net = nn.Sequential(*mods)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    return net.to(device)


def _torch_steps(model_name: str, device: str, x, y):
    """run(steps): PyTorch training steps of the preset (clcnn's initial weights, SGD with momentum 0.9, lr 0.01,
    cross-entropy) on x (N, C, H, W) float32 and y (N,) int labels."""
    import torch
    from torch import nn

    from .models import get_model
    net = to_torch(get_model(model_name, seed=0), device)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    tx, ty = torch.from_numpy(x).to(device), torch.from_numpy(y.astype(np.int64)).to(device)

    def run(steps):
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(net(tx), ty).backward()
            opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
    return run


def torch_train_runner(model_name: str, device: str, x, y, steps: int):
    """A callable running ``steps`` PyTorch steps. On the CPU they run in a child process, so PyTorch's OpenMP pool
    and Numba's threads never share a process (each runs while the other waits, as in one process).
    RuntimeError if the child fails to start or stops."""
    if device == "cuda":
        run = _torch_steps(model_name, device, x, y)
        return lambda: run(steps)
    tmp = tempfile.NamedTemporaryFile(suffix=".npz", delete=False)
    np.savez(tmp, x=x, y=y)
    tmp.close()
    child = subprocess.Popen([sys.executable, "-m", "clcnn.bench_torch", model_name, tmp.name, str(steps)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    weakref.finalize(child, _stop_worker, child, tmp.name)
    if child.stdout.readline().strip() != "ready":
        raise RuntimeError("the PyTorch benchmark worker failed to start")

    def run():
        child.stdin.write("run\n")
        child.stdin.flush()
        if child.stdout.readline().strip() != "done":
            raise RuntimeError("the PyTorch benchmark worker stopped")
    return run


def _stop_worker(child, path):
    try:
        child.stdin.close()
        child.wait(timeout=30)
    except Exception:   # noqa: BLE001 - best effort at exit
        child.kill()
    os.unlink(path)


def _worker(model_name: str, path: str, steps: int) -> None:
    """Child side of torch_train_runner: one "run" line in, ``steps`` steps, one "done" line out."""
    data = np.load(path)
    run = _torch_steps(model_name, "cpu", data["x"], data["y"])
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "run":
            run(steps)
            print("done", flush=True)


if __name__ == "__main__":   # the PyTorch CPU worker: python -m clcnn.bench_torch MODEL DATA.npz STEPS
    _worker(sys.argv[1], sys.argv[2], int(sys.argv[3]))
