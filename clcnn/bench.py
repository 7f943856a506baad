"""`clcnn bench`: clcnn beside PyTorch on the same hardware, alternating, with warm-up and medians.

    clcnn bench train --model lenet5 --batch-size 256 --device cl:0 [--steps 20] [--rounds 5] [--json out.json]
    clcnn bench gemm --size 4096 --device cl:0 [--variant all] [--json out.json]

PyTorch runs on CUDA when the clcnn device is an NVIDIA GPU and torch sees CUDA (TF32 off), otherwise on the CPU
with as many threads as this process may use. Each round times both in turn; a row reports medians over rounds.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import weakref

import numpy as np

from .backends import get_backend

TORCH_CPU = "PyTorch CPU"


def torch_device(info):
    """("cuda"|"cpu", card name) PyTorch should use beside clcnn device ``info``; None when torch is missing."""
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
    """A torch nn.Sequential with the same layers and weights as the clcnn ``model``."""
    import torch
    from torch import nn

    from . import layers as L
    mods = []
    for layer in model.layers:
        if isinstance(layer, L.Conv2D):
            mods.append(nn.Conv2d(layer.c, layer.m, layer.k, stride=layer.stride, padding=layer.pad))
        elif isinstance(layer, L.Dense):
            mods.append(nn.Linear(layer.in_features, layer.out_features))
        elif isinstance(layer, L.MaxPool2D):
            mods.append(nn.MaxPool2d(layer.k, layer.stride))
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


def _median_rate(samples):
    return statistics.median(samples) if samples else None


def _alternate(runners: dict, rounds: int, work: float) -> dict:
    """Run each runner once per round, in turn; returns name -> median of work / seconds."""
    rates = {k: [] for k in runners}
    for _ in range(rounds):
        for k, run in runners.items():
            t0 = time.perf_counter()
            run()
            rates[k].append(work / (time.perf_counter() - t0))
    return {k: _median_rate(v) for k, v in rates.items()}


def _row(what, info, ours, theirs, torch_on, unit, **extra):
    return {"what": what, "device": info.id, "card": info.name, "clcnn": ours, "torch": theirs,
            "ratio": (ours / theirs) if theirs else None, "unit": unit, "torch_on": torch_on,
            "date": time.strftime("%Y-%m-%d"), **extra}


SETTLE_STEPS = 200   # at most this many extra warm-up steps for a group whose split="auto" is still deciding


def bench_train(model_name: str, batch_size: int, device: str, steps: int = 20, rounds: int = 5,
                warmup: int = 3, use_torch: bool = True, split="auto", comm=None,
                processes=None) -> dict:
    """Images/s of one training step (forward, backward, SGD with momentum) of a preset, clcnn vs PyTorch.
    ``device`` "cl:0+cl:1" trains one data-parallel group (DataParallel, ``split``); with an MPI ``comm`` each
    rank drives ``device`` (or its own, see distributed.rank_device) and the group is the ranks. ``processes``:
    see DataParallel."""
    from .models import INPUT_SHAPES, get_model
    from .optim import SGD
    if model_name not in INPUT_SHAPES:
        raise ValueError(f"unknown model {model_name!r} (known: {', '.join(sorted(INPUT_SHAPES))})")
    if batch_size < 1 or steps < 1 or rounds < 1:
        raise ValueError("--batch-size, --steps and --rounds must be positive")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch_size, *INPUT_SHAPES[model_name])).astype(np.float32)
    y = rng.integers(0, 10, batch_size).astype(np.int32)
    if comm is not None:
        from .distributed import MPIParallel, rank_device
        model = MPIParallel(get_model(model_name, seed=0).to(rank_device(device, comm)), comm, split=split)
    elif "+" in device:
        from .parallel import DataParallel
        model = DataParallel(get_model(model_name, seed=0), device.split("+"), split=split, processes=processes)
    else:
        model = get_model(model_name, seed=0).to(device)
    be, info = model.backend, model.device
    opt = SGD(model, lr=0.01, momentum=0.9)

    def ours():
        for _ in range(steps):
            model.train_step(x, y, opt, sync=False)
        model.read_loss()   # one device read: waits for every queued step

    runners = {"clcnn": ours}
    tdev = torch_device(be.info) if use_torch else None   # PyTorch on (the first of) the same hardware
    if tdev:
        runners["torch"] = torch_train_runner(model_name, tdev[0], x, y, steps)
    for _ in range(warmup):   # compile, allocate, capture
        model.train_step(x, y, opt, sync=False)
    for _ in range(SETTLE_STEPS):   # a data-parallel group's auto split still deciding: time what it settles on
        if not getattr(model, "settling", False):
            break
        model.train_step(x, y, opt, sync=False)
    model.read_loss()
    if tdev:
        runners["torch"]()
    cuda = tdev is not None and tdev[0] == "cuda"
    if cuda:
        import torch
        torch.cuda.reset_peak_memory_stats()
    be.reset_peak_memory()
    rates = _alternate(runners, rounds, steps * batch_size)
    torch_peak = torch.cuda.max_memory_allocated() if cuda else None
    extra = {"split": model.split()} if hasattr(model, "split") else {}
    if hasattr(model, "close"):   # a group with worker processes
        model.close()
    return _row(f"{model_name} train step, batch {batch_size}", info, rates["clcnn"], rates.get("torch"),
                tdev[1] if tdev else None, "img/s", peak_bytes=be.memory_stats()["peak_bytes"],
                torch_peak_bytes=torch_peak, **extra)


def _torch_steps(model_name: str, device: str, x, y):
    """run(steps): PyTorch training steps of the preset (same initial weights as clcnn's, SGD with momentum)."""
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
    and Numba's threads never share a process (each runs while the other waits, as in one process)."""
    if device == "cuda":
        run = _torch_steps(model_name, device, x, y)
        return lambda: run(steps)
    tmp = tempfile.NamedTemporaryFile(suffix=".npz", delete=False)
    np.savez(tmp, x=x, y=y)
    tmp.close()
    child = subprocess.Popen([sys.executable, "-m", "clcnn.bench", model_name, tmp.name, str(steps)],
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


def bench_gemm(size: int, device: str, variant: str | None = None, rounds: int = 5, reps: int | None = None,
               use_torch: bool = True) -> list[dict]:
    """TFLOP/s of C = A @ B, all size x size FP32, clcnn (per GEMM variant) vs torch.mm, one row per variant."""
    if size < 1:
        raise ValueError("--size must be positive")
    be = get_backend(device)
    info = be.info
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((size, size)).astype(np.float32) for _ in range(2))
    da, db, dc = be.upload(a), be.upload(b), be.zeros((size, size))
    flop = 2.0 * size ** 3
    reps = reps or max(3, min(50, int(2e11 / flop)))   # ~0.2 TFLOP per timed run
    variants = be.gemm_variants(size, size, size, variant)
    tdev = torch_device(be.info) if use_torch else None   # PyTorch on (the first of) the same hardware
    rows = []
    if tdev:
        import torch
        ta, tb = torch.from_numpy(a).to(tdev[0]), torch.from_numpy(b).to(tdev[0])

        def theirs():
            for _ in range(reps):
                torch.mm(ta, tb)
            if tdev[0] == "cuda":
                torch.cuda.synchronize()
        theirs()
    for name, config in variants:
        def ours(config=config):
            with be.gemm_forced(config):
                for _ in range(reps):
                    be.gemm(da, db, dc, size, size, size)
                be.synchronize()
        ours()   # build + warm-up
        err = _gemm_error(be, dc, a, b, size)
        runners = {"clcnn": ours, **({"torch": theirs} if tdev else {})}
        rates = _alternate(runners, rounds, flop * reps / 1e12)
        rows.append(_row(f"gemm {size}^3 fp32, {name}", info, rates["clcnn"], rates.get("torch"),
                         tdev[1] if tdev else None, "TFLOP/s", variant=name, max_rel_err=err))
    return rows


def _gemm_error(be, dc, a, b, size) -> float:
    """Max relative error of a few rows of the device result against float64 NumPy."""
    c = be.download(dc)
    rows = np.linspace(0, size - 1, min(size, 8)).astype(int)
    ref = a[rows].astype(np.float64) @ b.astype(np.float64)
    return float(np.abs(c[rows] - ref).max() / max(np.abs(ref).max(), 1e-30))


def format_table(rows: list[dict]) -> str:
    """The rows as an aligned text table with a ratio column."""
    head = f"{'what':40s} {'device':30s} {'clcnn':>12s} {'torch':>12s} {'ratio':>6s}  unit"
    out = [head, "-" * len(head)]
    for r in rows:
        dev = f"{r['device']} {r['card']}"[:30]
        fmt = (lambda v: f"{v:12,.0f}") if r["unit"] == "img/s" else (lambda v: f"{v:12.2f}")
        theirs = fmt(r["torch"]) if r["torch"] else f"{'-':>12s}"
        ratio = f"{r['ratio']:6.2f}" if r["ratio"] else f"{'-':>6s}"
        out.append(f"{r['what'][:40]:40s} {dev:30s} {fmt(r['clcnn'])} {theirs} {ratio}  {r['unit']}")
    torch_on = sorted({r["torch_on"] for r in rows if r.get("torch_on")})
    if torch_on:
        out.append("torch on: " + "; ".join(torch_on))
    peaks = [f"{r['device']} {r['peak_bytes'] / 2**20:.1f} MiB" for r in rows if r.get("peak_bytes") is not None]
    if peaks:
        out.append("peak device memory of the clcnn step: " + ", ".join(peaks))
    return "\n".join(out)



if __name__ == "__main__":   # the PyTorch CPU worker: python -m clcnn.bench MODEL DATA.npz STEPS
    _worker(sys.argv[1], sys.argv[2], int(sys.argv[3]))
