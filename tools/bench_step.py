"""Time the LeNet-5 training step (forward, backward, SGD) of clcnn beside PyTorch on the same hardware.

    python tools/bench_step.py --device cpu --batch-size 256 --steps 30 [--json out.json]

PyTorch runs on CUDA when the clcnn device is an NVIDIA GPU and torch sees CUDA, otherwise on the CPU
(with as many threads as cores). The two alternate in rounds; each round times `steps` steps after a sync and
reports images/s; the table shows the median over rounds.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import clcnn  # noqa: E402
from clcnn.optim import SGD  # noqa: E402


def clcnn_runner(device, x, y):
    model = clcnn.models.lenet5(seed=0).to(device)
    opt = SGD(model, lr=0.01, momentum=0.9)

    def run(steps):
        for _ in range(steps):
            model.train_step(x, y, opt, sync=False)
        model.read_loss()  # one device read: waits for all queued steps
    return run, model.device


def torch_runner(on_cuda, x, y):
    import torch
    from torch import nn
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda" if on_cuda else "cpu")
    model = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84),
                          nn.ReLU(), nn.Linear(84, 10)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    tx, ty = torch.from_numpy(x).to(dev), torch.from_numpy(y.astype(np.int64)).to(dev)

    def run(steps):
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(tx), ty).backward()
            opt.step()
        if on_cuda:
            torch.cuda.synchronize()
    name = torch.cuda.get_device_name() if on_cuda else f"PyTorch CPU ({torch.get_num_threads()} threads)"
    return run, name


def timed(run, steps, batch):
    t0 = time.perf_counter()
    run(steps)
    return steps * batch / (time.perf_counter() - t0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch_size, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, args.batch_size).astype(np.int32)
    ours, info = clcnn_runner(args.device, x, y)
    runners = {"clcnn": ours}
    try:
        import torch
        on_cuda = "nvidia" in info.platform.lower() and torch.cuda.is_available()
        theirs, torch_name = torch_runner(on_cuda, x, y)
        runners["torch"] = theirs
    except ImportError:
        torch_name = None
    for run in runners.values():  # warm-up: compile, allocate, autotune
        run(3)
    results = {k: [] for k in runners}
    for _ in range(args.rounds):
        for k, run in runners.items():
            results[k].append(timed(run, args.steps, args.batch_size))
    med = {k: statistics.median(v) for k, v in results.items()}
    row = {"what": f"lenet5 train step, batch {args.batch_size}", "device": info.id, "card": info.name,
           "clcnn": med["clcnn"], "torch": med.get("torch"), "torch_on": torch_name,
           "ratio": med["clcnn"] / med["torch"] if "torch" in med else None, "unit": "img/s",
           "date": time.strftime("%Y-%m-%d")}
    print(f"{'what':34s} {'device':28s} {'clcnn':>10s} {'torch':>10s} {'ratio':>6s}")
    print(f"{row['what']:34s} {(info.id + ' ' + info.name)[:28]:28s} {row['clcnn']:10,.0f} "
          f"{(row['torch'] or float('nan')):10,.0f} {(row['ratio'] or float('nan')):6.2f}   torch on: {torch_name}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(row, f, indent=1)
    return row


if __name__ == "__main__":
    main()
