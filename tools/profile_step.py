"""Where a training step's time goes, on any device: the wall time of the recorded step, then per kernel (OpenCL:
device time from profiling events, plus the host cost of enqueuing the recorded step) or per op (other backends:
each op synchronised, so their sum exceeds a real step).

    python3 tools/profile_step.py --device cl:0 --model cifar --batch-size 256 [--steps 50] [--all]
    python3 tools/profile_step.py --device cpu --model lenet5 --batch-size 64 --steps 5

The mini-batch has the input shape and class count the preset is built for (clcnn.bench.preset_inputs);
SGD with momentum 0.9, as `clcnn bench train`.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from clcnn.bench import preset_inputs  # noqa: E402
from clcnn.models import get_model  # noqa: E402
from clcnn.optim import SGD  # noqa: E402

OPS = ("gemm", "im2col", "col2im", "conv_backward_data", "maxpool_forward", "maxpool_backward", "bias_add",
       "bias_grad", "relu_forward", "relu_backward", "sigmoid_forward", "sigmoid_backward", "softmax_xent_forward",
       "sigmoid_bce_forward", "conv_forward", "conv_backward", "implicit_conv_forward",
       "implicit_conv_backward_weight", "implicit_conv_backward_data", "dense_backward", "batchnorm_forward",
       "batchnorm_backward", "batchnorm_fold", "add", "avgpool_forward", "avgpool_backward", "dropout_forward",
       "dropout_backward", "tanh_forward", "tanh_backward", "sgd_update", "adam_update", "fill", "copy",
       "upload_into")


def wall_per_step(model, x, y, opt, steps: int) -> tuple[float, float]:
    """(host seconds to enqueue one step, wall seconds per step) over ``steps`` unsynchronised steps."""
    t0 = time.perf_counter()
    for _ in range(steps):
        model.train_step(x, y, opt, sync=False)
    host = (time.perf_counter() - t0) / steps
    model.read_loss()
    return host, (time.perf_counter() - t0) / steps


def per_kernel(model, x, y, opt, show_all: bool) -> None:
    """OpenCL: device time per kernel name over one unrecorded step, the 12 longest launches, and the host cost
    of enqueuing the recorded step alone."""
    be = model.backend
    recorded = getattr(getattr(model, "_steps", None), "recorded", lambda: [])()
    if recorded:
        be.synchronize()
        t0 = time.perf_counter()
        for _ in range(10):
            be.replay(recorded[0])
        print(f"  enqueue of the recorded step alone {(time.perf_counter() - t0) / 10 * 1e3:.3f} ms "
              f"({len(recorded[0])} entries)")
        be.synchronize()
    with be.profiling():
        model.capture_steps = False
        try:
            mark = be.event_time()
            model.train_step(x, y, opt, sync=False)
            log = be.event_log(mark)
        finally:
            model.capture_steps = True
    model.read_loss()
    by = collections.defaultdict(lambda: [0, 0.0])
    for name, _, t in log:
        by[name][0] += 1
        by[name][1] += t
    busy = sum(t for _, _, t in log)
    print(f"  {len(log)} launches, summed kernel time {busy * 1e3:.3f} ms")
    for name, (cnt, t) in sorted(by.items(), key=lambda kv: -kv[1][1]):
        print(f"  {name:28s} {cnt:4d} launches {t * 1e3:8.3f} ms ({100 * t / busy:5.1f}%)")
    for name, g, t in sorted(log, key=lambda r: -r[2])[:12]:
        print(f"    {name:26s} global {str(g):24s} {t * 1e6:9.1f} us")
    if show_all:
        print("  every launch, in order:")
        for i, (name, g, t) in enumerate(log):
            print(f"  {i:3d} {name:26s} global {str(g):24s} {t * 1e6:9.1f} us")


def _op_name(name: str, args, kw) -> str:
    if name != "gemm":
        return name
    return (f"gemm {args[3]}x{args[4]}x{args[5]} {'T' if kw.get('trans_a') else 'N'}"
            f"{'T' if kw.get('trans_b') else 'N'} b{kw.get('batch', 1)}{' reduce' if kw.get('reduce') else ''}")


def per_op(model, x, y, opt, steps: int) -> None:
    """Any backend: wall time of each op (by GEMM shape), each synchronised before and after."""
    be, tot, cnt = model.backend, collections.Counter(), collections.Counter()

    def wrap(name, real):
        def timed(*args, **kw):
            key = _op_name(name, args, kw)
            be.synchronize()
            t = time.perf_counter()
            real(*args, **kw)
            be.synchronize()
            tot[key] += time.perf_counter() - t
            cnt[key] += 1
        return timed
    names = [n for n in OPS if hasattr(be, n)]
    for name in names:
        setattr(be, name, wrap(name, getattr(be, name)))
    model.capture_steps = False
    try:
        t = time.perf_counter()
        for _ in range(steps):
            model.train_step(x, y, opt)
        step = (time.perf_counter() - t) / steps
    finally:
        model.capture_steps = True
        for name in names:
            delattr(be, name)
    print(f"  {step * 1e3:.2f} ms per synchronised step")
    for k, v in sorted(tot.items(), key=lambda kv: -kv[1]):
        print(f"  {k:34s} {v / steps * 1e3:8.3f} ms  ({cnt[k] // steps} calls)")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="lenet5")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20, help="steps timed for the wall time (and per op)")
    ap.add_argument("--all", action="store_true", help="OpenCL: also list every launch of the step in order")
    a = ap.parse_args(argv)
    x, y = preset_inputs(a.model, a.batch_size)
    model = get_model(a.model, seed=0).to(a.device)
    opt = SGD(model, lr=0.01, momentum=0.9)
    for _ in range(3):   # build, allocate, record
        model.train_step(x, y, opt, sync=False)
    model.read_loss()
    host, wall = wall_per_step(model, x, y, opt, a.steps)
    be = model.backend
    print(f"{a.model} batch {a.batch_size} on {be.info.id} ({be.info.name}): wall per step {wall * 1e3:.3f} ms "
          f"({a.batch_size / wall:,.0f} img/s); host loop {host * 1e3:.3f} ms")
    if hasattr(be, "profiling"):
        per_kernel(model, x, y, opt, a.all)
    else:
        per_op(model, x, y, opt, max(1, a.steps // 4))


if __name__ == "__main__":
    main()
