"""A data-parallel group on two devices against one device, on the CIFAR CNN: after SGD-with-momentum steps over
uneven batches (256, 256, 200, 1, 256, 97 images; split 0.55/0.45), the weights and the summed losses must match
the single device's, and every replica must hold the same weights (bit for bit where they sum in one order).

    python3 tools/check_group.py cl:0,cl:1 --processes no    # one process: the shared context's exchange
    python3 tools/check_group.py cl:0,cl:1 --processes yes   # a worker process for the second device
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import clcnn  # noqa: E402
from clcnn.models import get_model  # noqa: E402
from clcnn.optim import SGD  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("devices", help="two device ids, comma-separated")
    ap.add_argument("--processes", choices=["yes", "no"], default="no")
    a = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    devs = a.devices.split(",")
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    dp = clcnn.DataParallel(get_model("cifar", seed=5), devs, split=[0.55, 0.45], processes=a.processes == "yes")
    started = time.perf_counter() - t0
    single = get_model("cifar", seed=5).to(devs[0])
    o1, o2 = SGD(single, lr=0.02, momentum=0.9), SGD(dp, lr=0.02, momentum=0.9)
    total = 0.0
    for i, n in enumerate([256, 256, 200, 1, 256, 97]):
        x = rng.standard_normal((n, 3, 32, 32)).astype(np.float32)
        y = rng.integers(0, 10, n)
        single.train_step(x, y, o1, sync=False)
        total += dp.train_step(x, y, o2, sync=False) or 0.0
    l1, l2 = single.read_loss(), total + dp.read_loss()
    want = single.state_dict()
    if a.processes == "yes":
        reps, how = [dp.state_dict()] + dp.worker_states(), f"chunked={dp.chunked}, workers up in {started:.1f} s"
        dp.close()
    else:
        reps, how = [r.state_dict() for r in dp.replicas], f"linked={dp.linked}"
    err = max(float(np.abs(r[k] - want[k]).max() / (np.abs(want[k]).max() + 1e-12)) for r in reps for k in want)
    same = all(np.array_equal(reps[0][k], r[k]) for r in reps[1:] for k in want)
    ok = err < 1e-4 and same and abs(l1 - l2) < 1e-4 * abs(l1)
    print(f"{'OK' if ok else 'FAIL'} {a.devices} processes={a.processes} ({how}): weights {err:.1e} (relative), "
          f"replicas identical {same}, losses {l1:.6f} vs {l2:.6f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
