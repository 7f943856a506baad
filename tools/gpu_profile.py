"""Where a training step's time goes on an OpenCL device: per-kernel device time, the replayed step's wall time,
and the host time to enqueue it.

    python3 tools/gpu_profile.py --device cl:0 --model cifar --batch-size 256 [--steps 50]
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import clcnn  # noqa: E402
from clcnn.models import INPUT_SHAPES  # noqa: E402
from clcnn.optim import SGD  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cl:0")
    ap.add_argument("--model", default="lenet5")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--all", action="store_true", help="also list every launch of the step in order")
    a = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((a.batch_size, *INPUT_SHAPES[a.model])).astype(np.float32)
    y = rng.integers(0, 10, a.batch_size).astype(np.int32)
    model = clcnn.models.get_model(a.model).to(a.device)
    be, opt = model.backend, SGD(model, lr=0.01, momentum=0.9)
    for _ in range(3):
        model.train_step(x, y, opt, sync=False)
    model.read_loss()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        model.train_step(x, y, opt, sync=False)
    t_host = (time.perf_counter() - t0) / a.steps
    model.read_loss()
    t_wall = (time.perf_counter() - t0) / a.steps
    graph = next(g for g in model._graphs.values() if g is not None)[1]
    be.synchronize()
    t0 = time.perf_counter()
    be.replay(graph)
    t_one = time.perf_counter() - t0   # one replay onto an idle queue
    be.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        be.replay(graph)
    t_replay = (time.perf_counter() - t0) / 10   # host cost of enqueuing one prepared step
    be.synchronize()
    with be.profiling():
        model.capture_steps = False
        mark = be.event_time()
        model.train_step(x, y, opt, sync=False)
        log = be.event_log(mark)
        model.capture_steps = True
    model.read_loss()
    by = collections.defaultdict(lambda: [0, 0.0])
    for name, g, t in log:
        by[name][0] += 1
        by[name][1] += t
    busy = sum(t for _, _, t in log)
    print(f"{a.model} batch {a.batch_size} on {be.info.id} ({be.info.name}): {len(log)} launches per step")
    print(f"  wall per replayed step {t_wall * 1e3:.3f} ms ({a.batch_size / t_wall:,.0f} img/s); host loop "
          f"{t_host * 1e3:.3f} ms; enqueue of the prepared sequence alone {t_replay * 1e3:.3f} ms "
          f"({len(graph)} entries; {t_one * 1e3:.3f} ms onto an idle queue); summed kernel time {busy * 1e3:.3f} ms")
    for name, (cnt, t) in sorted(by.items(), key=lambda kv: -kv[1][1]):
        print(f"  {name:28s} {cnt:4d} launches {t * 1e3:8.3f} ms ({100 * t / busy:5.1f}%)")
    for name, g, t in sorted(log, key=lambda r: -r[2])[:12]:
        print(f"    {name:26s} global {str(g):24s} {t * 1e6:9.1f} us")
    if a.all:
        print("  every launch, in order:")
        for i, (name, g, t) in enumerate(log):
            print(f"  {i:3d} {name:26s} global {str(g):24s} {t * 1e6:9.1f} us")


if __name__ == "__main__":
    main()
