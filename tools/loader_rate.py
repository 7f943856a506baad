"""The training loader's own rate: images/s that clcnn.loader's thread delivers over a data set's training split,
with and without augmentation (no model: the ceiling a device step must stay under for the loader never to stall
it). Best of --rounds passes.

    python tools/loader_rate.py --dataset fashion-mnist --batch-size 128,1024 --augment none,crop,flip,erase
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> None:
    from clcnn import data, loader
    from clcnn.augment import Augment
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--batch-size", default="128,1024")
    p.add_argument("--augment", default="none,crop,flip,erase", help="'none' and/or one --augment text")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    train, _, info = data.load(args.dataset, args.data_dir)
    specs = ["none", args.augment.partition("none,")[2]] if args.augment.startswith("none,") else [args.augment]
    for spec in specs:
        for bs in (int(b) for b in args.batch_size.split(",")):
            best = float("inf")
            for _ in range(args.rounds):
                aug = None if spec == "none" else Augment(spec, 0, fill=[-m / s for m, s in zip(info.mean, info.std)])
                t0 = time.perf_counter()
                for _x, _y in loader.batches(train, bs, np.random.default_rng(0), aug):
                    pass
                best = min(best, time.perf_counter() - t0)
            print(f"augment {spec:<16} batch {bs:>5}: {len(train) / best:>11,.0f} img/s ({best:.2f} s an epoch of "
                  f"{len(train)} {'x'.join(map(str, info.input_shape))} images)")


if __name__ == "__main__":
    main()
