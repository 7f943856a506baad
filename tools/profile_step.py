"""Per-op time of one training step of a preset on a device (each op synchronised, so totals exceed a real step).

    python tools/profile_step.py --device cl:0 --batch-size 256 --steps 3
    python tools/profile_step.py --device cpu --model cifar --batch-size 64 --steps 5
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import clcnn  # noqa: E402
from clcnn.optim import SGD  # noqa: E402

OPS = ["gemm", "im2col", "col2im", "conv_backward_data", "maxpool_forward", "maxpool_backward", "bias_add", "bias_grad", "relu_forward",
       "relu_backward", "softmax_xent_forward", "softmax_xent_backward", "sgd_update", "fill", "upload_into"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--model", default="lenet5", choices=sorted(clcnn.models.MODELS))
    args = ap.parse_args()
    b = args.batch_size
    model = clcnn.models.get_model(args.model).to(args.device)
    opt = SGD(model, lr=0.01, momentum=0.9)
    x = np.random.default_rng(0).standard_normal((b, *clcnn.models.INPUT_SHAPES[args.model])).astype(np.float32)
    y = (np.arange(b) % 10).astype(np.int32)
    for _ in range(2):
        model.train_step(x, y, opt)
    be, tot, cnt = model.backend, {}, {}
    for name in OPS:
        def timed(*a, _f=getattr(be, name), _n=name, **k):
            if _n == "gemm":  # break GEMMs down by shape: (m, n, k, transposes, batch, reduce)
                _n = (f"gemm {a[3]}x{a[4]}x{a[5]} {'T' if k.get('trans_a') else 'N'}"
                      f"{'T' if k.get('trans_b') else 'N'} b{k.get('batch', 1)}{' reduce' if k.get('reduce') else ''}")
            be.synchronize()
            t = time.perf_counter()
            _f(*a, **k)
            be.synchronize()
            tot[_n] = tot.get(_n, 0.0) + time.perf_counter() - t
            cnt[_n] = cnt.get(_n, 0) + 1
        setattr(be, name, timed)
    t = time.perf_counter()
    for _ in range(args.steps):
        model.train_step(x, y, opt)
    step = (time.perf_counter() - t) / args.steps
    print(f"{args.model} on {args.device} ({model.device.name}) batch {b}: {step * 1e3:.2f} ms per synchronised step")
    if model.device.backend == "numba":
        from clcnn.cpu import blas
        print(f"  (OpenBLAS kernels: {blas.core() or 'n/a'}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')})")
    for k, v in sorted(tot.items(), key=lambda kv: -kv[1]):
        print(f"  {k:34s} {v / args.steps * 1e3:8.3f} ms  ({cnt[k] // args.steps} calls)")


if __name__ == "__main__":
    main()
