"""The tuner's convolution search: for each convolution geometry of a training step, the algorithm
(capabilities.CONV_ALGORITHMS) with the least device time over the whole step (opencl_tune.tune calls it)."""
from __future__ import annotations

import statistics

from .capabilities import CONV_ALGORITHMS, conv_key


def record_convs(be, step) -> list[str]:
    """The conv_key of every distinct convolution geometry one ``step()`` asks ``conv_algorithm`` about."""
    keys, real = [], be.conv_algorithm

    def spy(*args):
        key = conv_key(*args)
        if key not in keys:
            keys.append(key)
        return real(*args)
    be.conv_algorithm = spy
    try:
        step()
    finally:
        del be.conv_algorithm
    return keys


def tune_convs(be, step, repeats: int, log=print) -> dict[str, str]:
    """For each convolution geometry of ``step()``: the algorithm (CONV_ALGORITHMS) with the least summed
    device time of the whole step (the other layers as they are), inside ``be.profiling()``; applied on ``be``."""
    winners = {}
    for key in record_convs(be, step):
        times = {}
        for algo in CONV_ALGORITHMS:
            be.conv_tuned = {**be.conv_tuned, key: algo}
            runs = []
            for _ in range(repeats + 1):   # the first run builds the kernels: not timed
                mark = be.event_time()
                step()
                runs.append(sum(t for _, _, t in be.event_log(mark)))
            times[algo] = statistics.median(runs[1:])
        winners[key] = best = min(times, key=times.get)
        be.conv_tuned = {**be.conv_tuned, key: best}
        log(f"  {key:44s} " + ", ".join(f"{a} {t * 1e6:.1f} us" for a, t in times.items()) + f" per step -> {best}")
    return winners
