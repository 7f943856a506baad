"""PyTorch's side of `clcnn bench train`: the same preset with the same weights as a torch nn.Sequential, and its
training step in every mode a user would run it (MODES), each set up, timed and measured on its own.

On CUDA the modes run in this process; on the CPU each mode runs in a child process of its own (so PyTorch's
OpenMP pool and Numba's threads never share a process, and a mode that crashes takes only itself down).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import weakref

import numpy as np

from .errors import ConfigError

TORCH_CPU = "PyTorch CPU"
CUDA_MODES = ("eager", "benchmark", "graph", "compile")
CPU_MODES = ("eager", "compile")
MODES = {"eager": "plain", "benchmark": "eager + cudnn.benchmark",
         "graph": "a CUDA graph of the whole step, PyTorch's whole-network capture, cudnn.benchmark on",
         "compile": "torch.compile of the forward + loss and of the optimizer step, default mode; on CUDA "
                    "cudnn.benchmark on"}
MODE_HELP = ", ".join(f"{name} ({what})" for name, what in MODES.items())


def parse_modes(text: str) -> list[str]:
    """``--torch``'s value: "all", "none" or a comma list of modes -> the modes asked for ("all" stays "all",
    resolved per device by ``device_modes``). ConfigError naming --torch for an unknown mode."""
    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    if names in (["all"], ["none"]):
        return names
    bad = [m for m in names if m not in CUDA_MODES]
    if bad or not names:
        raise ConfigError(f"--torch takes all, none or modes of {', '.join(CUDA_MODES)} (got {text!r})")
    return list(dict.fromkeys(names))


def device_modes(asked: list[str], tdev: str) -> tuple[list[str], dict[str, str]]:
    """(modes to run on torch device ``tdev``, {mode: why it is skipped}) for ``parse_modes``' list.
    ConfigError when modes were named and none of them can run there (``--torch graph`` on a CPU)."""
    have = CUDA_MODES if tdev == "cuda" else CPU_MODES
    if asked == ["none"]:
        return [], {}
    if asked == ["all"]:
        return list(have), {}
    run = [m for m in asked if m in have]
    if not run:
        raise ConfigError(f"--torch {','.join(asked)} needs CUDA; PyTorch runs on the {tdev} here, where the "
                          f"modes are {', '.join(have)}")
    return run, {m: "needs CUDA" for m in asked if m not in have}


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
    """The equivalent torch nn.Sequential of the clcnn Sequential ``model`` (clcnn.export's mapping: every layer
    type that `clcnn export --torch` writes), with its weights and buffers, in training mode, on ``device``.
    ConfigError for a layer with no PyTorch equivalent."""
    from .export import torch_module
    return torch_module(model).to(device)


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message``, at most 200 characters: how a failed mode is reported."""
    text = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
    return f"{type(exc).__name__}: {text}"[:200]


def torch_step(mode: str, model_name: str, device: str, x, y):
    """(run(steps), net) for ``mode``: the preset with clcnn's initial weights, SGD (lr 0.01, momentum 0.9) and
    cross-entropy on its own copies of x (N, C, H, W) float32 and y (N,) int. run waits for the device. A graph
    has made 3 warm-up steps when this returns (the capture itself runs nothing)."""
    import torch
    from torch.nn import functional as F

    from .models import get_model
    cuda = device == "cuda"
    if cuda:   # FP32 as clcnn computes it (torch_device sets the same)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    net = to_torch(get_model(model_name, seed=0), device)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    tx, ty = torch.from_numpy(x).to(device), torch.from_numpy(y.astype(np.int64)).to(device)
    loss_of = (lambda a, b: F.cross_entropy(net(a), b))
    opt_step = opt.step
    if mode == "compile":
        loss_of, opt_step = torch.compile(loss_of), torch.compile(opt.step)

    def step():
        opt.zero_grad(set_to_none=True)
        loss_of(tx, ty).backward()
        opt_step()

    def sync():
        if cuda:
            torch.cuda.synchronize()
    replay = _capture(step, opt, loss_of, tx, ty) if mode == "graph" else None
    bench_flag = mode != "eager"

    def run(steps):
        if cuda:   # a global flag: each mode sets its own before it runs
            torch.backends.cudnn.benchmark = bench_flag
        for _ in range(steps):
            replay() if replay else step()
        sync()
    return run, net


def _capture(step, opt, loss_of, tx, ty):
    """A CUDA graph of the whole training step, as PyTorch's CUDA-graphs notes capture a whole network: warm-up
    steps on a side stream (cudnn.benchmark picks its algorithms there), grads set to None so backward allocates
    them from the graph's private pool, then forward, backward and optimizer step captured; returns its replay."""
    import torch
    torch.backends.cudnn.benchmark = True
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        loss_of(tx, ty).backward()
        opt.step()
    return graph.replay


class TorchMode:
    """One PyTorch mode of the training step, set up and warmed up: ``run()`` times ``steps`` steps (waiting
    for the device). ``peak_bytes``: CUDA memory allocated by the mode's setup and first run (its weights,
    gradients, momentum, inputs, activations; a graph's private pool is filled during capture), None on the CPU
    (PyTorch's CPU allocator keeps no peak; an RSS delta of the worker would count the interpreter and
    libraries). ``error``: one line when the mode failed (it then has no ``run``)."""

    def __init__(self, mode: str, model_name: str, device: str, x, y, steps: int):
        self.mode, self.peak_bytes, self.error, self.run = mode, None, None, None
        try:
            if device == "cuda":
                self._setup_cuda(model_name, x, y, steps)
            else:
                self.run = _cpu_worker(mode, model_name, x, y, steps)
                self.run()   # warm-up (compiles)
        except Exception as exc:  # noqa: BLE001 - a mode that fails is reported, the others go on
            self.error, self.run = one_line(exc), None

    def _setup_cuda(self, model_name, x, y, steps):
        import torch
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        run, _ = torch_step(self.mode, model_name, "cuda", x, y)
        run(steps)   # warm-up: cudnn.benchmark's search, the compile
        self.peak_bytes = torch.cuda.max_memory_allocated() - base
        self.run = lambda: run(steps)


def _cpu_worker(mode: str, model_name: str, x, y, steps: int):
    """run() sending one "run" line to a child process that does ``steps`` steps of ``mode`` on the CPU.
    RuntimeError with the child's one-line reason if it fails to start or a run fails."""
    tmp = tempfile.NamedTemporaryFile(suffix=".npz", delete=False)
    np.savez(tmp, x=x, y=y)
    tmp.close()
    child = subprocess.Popen([sys.executable, "-m", "clcnn.bench_torch", mode, model_name, tmp.name, str(steps)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    weakref.finalize(child, _stop_worker, child, tmp.name)

    def answer(want):
        line = child.stdout.readline().strip()
        if line != want:
            raise RuntimeError(line.removeprefix("failed: ") or f"the PyTorch {mode} worker stopped")
    answer("ready")

    def run():
        child.stdin.write("run\n")
        child.stdin.flush()
        answer("done")
    return run


def _stop_worker(child, path):
    try:
        child.stdin.close()
        child.wait(timeout=30)
        child.stdout.close()
    except Exception:   # noqa: BLE001 - best effort at exit
        child.kill()
    os.unlink(path)


def _worker(mode: str, model_name: str, path: str, steps: int) -> None:
    """Child side of _cpu_worker: "ready" (or "failed: ..."), then per "run" line in, ``steps`` steps and one
    "done" (or "failed: ...") line out."""
    try:
        data = np.load(path)
        run, _ = torch_step(mode, model_name, "cpu", data["x"], data["y"])
    except Exception as exc:  # noqa: BLE001 - the parent reports it as the mode's one line
        print(f"failed: {one_line(exc)}", flush=True)
        return
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "run":
            try:
                run(steps)
            except Exception as exc:  # noqa: BLE001
                print(f"failed: {one_line(exc)}", flush=True)
                return
            print("done", flush=True)


if __name__ == "__main__":   # the PyTorch CPU worker: python -m clcnn.bench_torch MODE MODEL DATA.npz STEPS
    _worker(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
