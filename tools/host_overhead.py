"""Host-side cost of enqueueing ops (no waiting): python tools/host_overhead.py cl:1"""
import time, numpy as np, clcnn, cProfile, pstats, sys
be = clcnn.get_backend(sys.argv[1])
a = be.upload(np.ones((10, 84), np.float32)); b = be.upload(np.ones((84, 256), np.float32)); c = be.zeros((10, 256))
be.gemm(a, b, c, 10, 256, 84); be.synchronize()
N=2000
t=time.perf_counter()
for _ in range(N): be.gemm(a, b, c, 10, 256, 84)
t1=time.perf_counter(); be.synchronize(); t2=time.perf_counter()
print(f"host per gemm call {(t1-t)/N*1e6:.1f} us; drain {(t2-t1)*1e3:.1f} ms")
x = be.zeros((1000,))
t=time.perf_counter()
for _ in range(N): be.relu_forward(x, x, 1000)
t1=time.perf_counter(); be.synchronize()
print(f"host per relu call {(t1-t)/N*1e6:.1f} us")
cProfile.run("for _ in range(500): be.gemm(a, b, c, 10, 256, 84)", "/tmp/p.out")
pstats.Stats("/tmp/p.out").sort_stats("tottime").print_stats(8)
