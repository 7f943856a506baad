"""Host-side cost of enqueueing ops without waiting (the per-op Python + driver overhead of a training step).

    python tools/host_overhead.py cl:1
"""
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import clcnn  # noqa: E402


def per_call_us(fn, n=2000):
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e6


def main(device):
    be = clcnn.get_backend(device)
    a, b = be.upload(np.ones((10, 84), np.float32)), be.upload(np.ones((84, 256), np.float32))
    c, x = be.zeros((10, 256)), be.zeros((1000,))
    be.gemm(a, b, c, 10, 256, 84)
    be.relu_forward(x, x, 1000)
    be.synchronize()
    print(f"{device}: gemm enqueue {per_call_us(lambda: be.gemm(a, b, c, 10, 256, 84)):.1f} us, "
          f"relu enqueue {per_call_us(lambda: be.relu_forward(x, x, 1000)):.1f} us (host time, no waiting)")
    be.synchronize()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "auto")
