"""A group with a worker process per device (DataParallel(..., processes=True)) against one device: after SGD-with-
momentum steps over uneven batches (one of a single image), the weights, the summed losses and one batch's
gradients must match the single device's.

    python3 tools/check_procgroup.py cl:0,cl:1 [--split 0.6,0.4]
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


def net():
    return clcnn.Sequential([clcnn.Conv2D(1, 4, 3, padding=1), clcnn.ReLU(), clcnn.MaxPool2D(2), clcnn.Flatten(),
                             clcnn.Dense(4 * 4 * 4, 10)], seed=3)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("devices")
    ap.add_argument("--split", default="0.6,0.4")
    a = ap.parse_args(argv)
    devs = a.devices.split(",")
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    dp = clcnn.DataParallel(net(), devs, split=a.split, processes=True)
    started = time.perf_counter() - t0
    single = net().to(devs[0])
    o1, o2 = SGD(single, lr=0.05, momentum=0.9), SGD(dp, lr=0.05, momentum=0.9)
    total = 0.0
    for i, bs in enumerate([16, 7, 1, 2, 33, 16]):
        x = rng.standard_normal((bs, 1, 8, 8)).astype(np.float32)
        y = rng.integers(0, 10, bs)
        single.train_step(x, y, o1, sync=False)
        total += dp.train_step(x, y, o2, sync=i % 2 == 0) or 0.0
    losses = (total + dp.read_loss(), single.read_loss())
    want, got = single.state_dict(), dp.state_dict()
    wdiff = max(float(np.abs(want[k] - got[k]).max() / (np.abs(want[k]).max() + 1e-30)) for k in want)
    g1, g2 = single.gradients(x, y)[1], dp.gradients(x, y)[1]
    gdiff = max(float(np.abs(g1[k] - g2[k]).max() / (np.abs(g1[k]).max() + 1e-30)) for k in g1)
    dp.close()
    ok = wdiff < 1e-5 and gdiff < 1e-5 and abs(losses[0] - losses[1]) <= 1e-5 * abs(losses[1])
    print(f"{'OK' if ok else 'FAIL'} {a.devices} (workers up in {started:.1f} s): weights {wdiff:.1e}, gradients "
          f"{gdiff:.1e} (relative), losses {losses[0]:.6f} vs {losses[1]:.6f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
