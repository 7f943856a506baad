"""What two GPUs of one OpenCL platform can do for a gradient exchange (issue 4 measurements).

    python3 tools/peer_probe.py [--mb 2.5]

Prints, for one context holding both devices and for one context per device: whether kernels on the two queues
overlap, the latency and bandwidth of a device -> pinned host -> other device copy chained by events (no host
wait), of a direct buffer-to-buffer copy across devices, and of a write gated by a user event. On NVIDIA's OpenCL
(driver 580) that last enqueue never returns: the probe ends there through faulthandler after 45 s.
"""
from __future__ import annotations

import argparse
import faulthandler
import sys
import time

import numpy as np
import pyopencl as cl

SRC = """
__kernel void busy(__global float *x, int iters) {
    size_t i = get_global_id(0); float v = x[i];
    for (int k = 0; k < iters; ++k) v = v * 0.999f + 0.001f;
    x[i] = v;
}
__kernel void setv(__global float *x, float v) { x[get_global_id(0)] = v + (float)get_global_id(0); }
"""


def say(row):
    print(f"{row[0]:<84}  {row[1]}", flush=True)


def ms(t0):
    return 1e3 * (time.perf_counter() - t0)


def pinned(ctx, queue, nbytes):
    buf = cl.Buffer(ctx, cl.mem_flags.READ_WRITE | cl.mem_flags.ALLOC_HOST_PTR, nbytes)
    host, _ = cl.enqueue_map_buffer(queue, buf, cl.map_flags.READ | cl.map_flags.WRITE, 0, (nbytes // 4,),
                                    np.float32, is_blocking=True)
    return buf, host


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=2.5)
    ap.add_argument("--reps", type=int, default=50)
    a = ap.parse_args()
    faulthandler.dump_traceback_later(45, exit=True)   # a hang prints where and ends the probe
    gpus = [d for p in cl.get_platforms() for d in p.get_devices() if d.type & cl.device_type.GPU]
    print("GPUs:", [d.name for d in gpus])
    if len(gpus) < 2:
        return
    d0, d1 = gpus[:2]
    n = int(a.mb * (1 << 20) / 4)

    ctx = cl.Context([d0, d1])
    prg = cl.Program(ctx, SRC).build()
    q = [cl.CommandQueue(ctx, d) for d in (d0, d1)]
    cq = [cl.CommandQueue(ctx, d) for d in (d0, d1)]   # copy queues
    mf = cl.mem_flags.READ_WRITE
    G = [cl.Buffer(ctx, mf, 4 * n) for _ in range(2)]
    X = [cl.Buffer(ctx, mf, 4 * n) for _ in range(2)]
    busy = [cl.Kernel(prg, "busy") for _ in range(2)]
    setv = [cl.Kernel(prg, "setv") for _ in range(2)]
    for i in range(2):
        busy[i].set_args(G[i], np.int32(20000))
        setv[i].set_args(G[i], np.float32(i * 1000))
        cl.enqueue_nd_range_kernel(q[i], setv[i], (n,), None)
        q[i].finish()
    # 1. concurrency of the two queues in one context
    for i in range(2):
        cl.enqueue_nd_range_kernel(q[i], busy[i], (n,), None)
        q[i].finish()
    t0 = time.perf_counter()
    cl.enqueue_nd_range_kernel(q[0], busy[0], (n,), None)
    q[0].finish()
    one = ms(t0)
    t0 = time.perf_counter()
    for i in range(2):
        cl.enqueue_nd_range_kernel(q[i], busy[i], (n,), None)
    for i in range(2):
        q[i].finish()
    both = ms(t0)
    say(("shared ctx: busy kernel one GPU / both GPUs at once (ms)", f"{one:.3f} / {both:.3f}"))

    # 2. chained exchange through pinned host buffers, both directions, no host wait
    P = [pinned(ctx, cq[i], 4 * n) for i in range(2)]
    for i in range(2):
        cl.enqueue_nd_range_kernel(q[i], setv[i], (n,), None)

    def flush():   # a wait on another queue's event hangs unless that queue was flushed
        for qq in q + cq:
            qq.flush()

    def exchange():
        m = [cl.enqueue_marker(q[i]) for i in range(2)]
        r = [cl.enqueue_copy(cq[i], P[i][1], G[i], is_blocking=False, wait_for=[m[i]]) for i in range(2)]
        flush()
        return [cl.enqueue_copy(q[i], X[i], P[1 - i][1], is_blocking=False, wait_for=[r[1 - i]]) for i in range(2)]
    ws = exchange()
    flush()
    for w in ws:
        w.wait()
    for i in range(2):
        got = np.empty(n, np.float32)
        cl.enqueue_copy(q[i], got, X[i])
        want = np.float32((1 - i) * 1000) + np.arange(n, dtype=np.float32)
        say((f"pinned exchange correct on GPU{i}", bool(np.array_equal(got, want))))
    t0 = time.perf_counter()
    for _ in range(a.reps):
        ws = exchange()
    flush()
    for w in ws:
        w.wait()
    say((f"shared ctx: pinned-host exchange of {a.mb} MB both ways, per exchange (ms)", f"{ms(t0) / a.reps:.3f}"))
    small = max(1, int(78e3 / 4))
    t0 = time.perf_counter()
    for _ in range(a.reps):
        m = [cl.enqueue_marker(q[i]) for i in range(2)]
        r = [cl.enqueue_copy(cq[i], P[i][1][:small], G[i], is_blocking=False, wait_for=[m[i]])
             for i in range(2)]
        flush()
        ws = [cl.enqueue_copy(q[i], X[i], P[1 - i][1][:small], is_blocking=False,
                              wait_for=[r[1 - i]]) for i in range(2)]
        flush()
        for w in ws:
            w.wait()
    say(("shared ctx: 78 KB exchange latency, waited each time (ms)", f"{ms(t0) / a.reps:.3f}"))

    # 3. direct buffer-to-buffer copy across devices
    try:
        cl.enqueue_nd_range_kernel(q[1], setv[1], (n,), None)
        q[1].finish()
        t0 = time.perf_counter()
        e = cl.enqueue_copy(q[0], X[0], G[1], byte_count=4 * n)
        e.wait()
        first = ms(t0)
        got = np.empty(n, np.float32)
        cl.enqueue_copy(q[0], got, X[0])
        ok = bool(np.array_equal(got, np.float32(1000) + np.arange(n, dtype=np.float32)))
        t0 = time.perf_counter()
        for _ in range(a.reps):
            cl.enqueue_nd_range_kernel(q[1], setv[1], (n,), None)
            m = cl.enqueue_marker(q[1])
            q[1].flush()
            e = cl.enqueue_copy(q[0], X[0], G[1], byte_count=4 * n, wait_for=[m])
        q[0].flush()
        e.wait()
        say(("shared ctx: direct copy GPU1 buffer -> GPU0 buffer (first / per copy ms, correct)",
                     f"{first:.3f} / {ms(t0) / a.reps:.3f}, {ok}"))
    except cl.Error as exc:
        say(("shared ctx: direct copy", f"failed: {exc}"))

    # 4. a user event gating a write and a kernel (separate contexts, as MPI ranks would use)
    ctx1 = cl.Context([d0])
    q1 = cl.CommandQueue(ctx1, d0)
    prg1 = cl.Program(ctx1, SRC).build()
    buf = cl.Buffer(ctx1, mf, 4 * n)
    pb, ph = pinned(ctx1, q1, 4 * n)
    k = cl.Kernel(prg1, "busy")
    k.set_args(buf, np.int32(1))
    lat = []
    for _ in range(a.reps):
        u = cl.UserEvent(ctx1)
        cl.enqueue_copy(q1, buf, ph, is_blocking=False, wait_for=[u])
        e = cl.enqueue_nd_range_kernel(q1, k, (n,), None)
        q1.flush()
        time.sleep(0.002)
        t0 = time.perf_counter()
        u.set_status(cl.command_execution_status.COMPLETE)
        e.wait()
        lat.append(ms(t0))
    t0 = time.perf_counter()
    cl.enqueue_copy(q1, buf, ph, is_blocking=False)
    cl.enqueue_nd_range_kernel(q1, k, (n,), None).wait()
    plain = ms(t0)
    say((f"user event set -> gated {a.mb} MB write + kernel done, median (ms); ungated",
         f"{np.median(lat):.3f}; {plain:.3f}"))


if __name__ == "__main__":
    main()
