"""Does an enqueue whose wait list holds an unfinished event of another queue block the host? (NVIDIA, issue 4)"""
import time

import numpy as np
import pyopencl as cl

SRC = "__kernel void busy(__global float *x, int it) { size_t i = get_global_id(0); float v = x[i];" \
      " for (int k = 0; k < it; ++k) v = v * 0.999f + 0.001f; x[i] = v; }"
gpus = [d for p in cl.get_platforms() for d in p.get_devices() if d.type & cl.device_type.GPU][:2]
ctx = cl.Context(gpus)
prg = cl.Program(ctx, SRC).build()
q = [cl.CommandQueue(ctx, d) for d in gpus]
cq = [cl.CommandQueue(ctx, d) for d in gpus]
n = 1 << 20
buf = [cl.Buffer(ctx, cl.mem_flags.READ_WRITE, 4 * n) for _ in gpus]
dst = [cl.Buffer(ctx, cl.mem_flags.READ_WRITE, 4 * n) for _ in gpus]
pb = cl.Buffer(ctx, cl.mem_flags.READ_WRITE | cl.mem_flags.ALLOC_HOST_PTR, 4 * n)
host, _ = cl.enqueue_map_buffer(q[0], pb, cl.map_flags.READ | cl.map_flags.WRITE, 0, (n,), np.float32, is_blocking=True)
k = [cl.Kernel(prg, "busy") for _ in gpus]
for i in range(2):
    k[i].set_args(buf[i], np.int32(200000))
    cl.enqueue_nd_range_kernel(q[i], k[i], (n,), None)
    q[i].finish()


def timed(label, src_q, make):
    t0 = time.perf_counter()
    cl.enqueue_nd_range_kernel(src_q, k[0 if src_q in (q[0], cq[0]) else 1], (n,), None)
    m = cl.enqueue_marker(src_q)
    src_q.flush()
    t1 = time.perf_counter()
    e = make(m)
    t2 = time.perf_counter()
    e.wait()
    t3 = time.perf_counter()
    print(f"{label:60s} enqueue {1e3 * (t2 - t1):8.3f} ms   until done {1e3 * (t3 - t0):8.3f} ms", flush=True)


timed("busy kernel alone (reference)", q[0], lambda m: m)
timed("same device: copy queue read waits on compute marker", q[0],
      lambda m: cl.enqueue_copy(cq[0], host, buf[0], is_blocking=False, wait_for=[m]))
timed("same device: compute queue barrier waits on copy queue", cq[0],
      lambda m: cl.enqueue_barrier(q[0], wait_for=[m]))
timed("other device: write on GPU0 waits on GPU1 marker", q[1],
      lambda m: cl.enqueue_copy(q[0], dst[0], host, is_blocking=False, wait_for=[m]))
timed("other device: copy queue write on GPU0 waits on GPU1 marker", q[1],
      lambda m: cl.enqueue_copy(cq[0], dst[0], host, is_blocking=False, wait_for=[m]))
timed("other device: barrier on GPU0 waits on GPU1 marker", q[1],
      lambda m: cl.enqueue_barrier(q[0], wait_for=[m]))
timed("other device: kernel on GPU0 waits on GPU1 marker", q[1],
      lambda m: cl.enqueue_nd_range_kernel(q[0], k[0], (n,), None, wait_for=[m]))
