"""PyTorch's side of `clcnn bench layers`, run as a child process: each module of the preset's torch
nn.Sequential (clcnn's initial weights), its forward, backward-data and backward-weights timed apart.

    python -m clcnn.bench_layers_torch MODEL BATCH cuda|cpu REPEATS   -> one JSON line: [{name, forward, ...}]

backward-data is ``autograd.grad(y, x, dy)`` and backward-weights ``autograd.grad(y, params, dy)``: autograd
computes only the gradients asked for (cuDNN's backward-data or backward-filter kernel alone). On CUDA each pass
is timed with CUDA events around it, cudnn.benchmark on and TF32 off, after warm-up runs that let cudnn.benchmark
choose; on the CPU with perf_counter. Times are medians in seconds.
"""
from __future__ import annotations

import json
import statistics
import sys
import time


def _timer(cuda: bool):
    """time(fn) -> seconds of ``fn``: CUDA events on the current stream, else perf_counter."""
    import torch

    def time_cuda(fn):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) * 1e-3   # milliseconds -> seconds

    def time_cpu(fn):
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    return time_cuda if cuda else time_cpu


def layer_times(model_name: str, batch_size: int, device: str, repeats: int) -> list[dict]:
    """[{name, forward, backward_data, backward_weights (None without parameters)}] per module, in seconds."""
    import torch

    from .bench import preset_inputs
    from .bench_torch import to_torch
    from .models import get_model
    cuda = device == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    x, _ = preset_inputs(model_name, batch_size)
    net = to_torch(get_model(model_name, seed=0), device)
    timed, gen = _timer(cuda), torch.Generator(device=device).manual_seed(1)
    h, rows = torch.from_numpy(x).to(device), []
    for i, mod in enumerate(net):
        xin = h.detach().requires_grad_(True)
        y = mod(xin)
        dy = torch.randn(y.shape, generator=gen, device=device)
        params = list(mod.parameters())
        passes = {"forward": lambda: mod(xin),
                  "backward_data": lambda: torch.autograd.grad(y, [xin], dy, retain_graph=True)}
        if params:
            passes["backward_weights"] = lambda: torch.autograd.grad(y, params, dy, retain_graph=True)
        row = {"name": f"({i}) {mod}"[:44], "backward_weights": None}
        for name, fn in passes.items():
            for _ in range(3):   # warm-up: cudnn.benchmark's search, allocations
                fn()
            row[name] = statistics.median(timed(fn) for _ in range(repeats))
        rows.append(row)
        h = y.detach()
    return rows


if __name__ == "__main__":
    print(json.dumps(layer_times(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))), flush=True)
