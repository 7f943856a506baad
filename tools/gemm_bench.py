"""Benchmark every OpenCL GEMM variant and tile config against NumPy (correctness) and torch.mm (speed).

    python3 tools/gemm_bench.py --device cl:0 [--sizes 4096,2048,1024] [--trans NN,NT] [--json out.json]
    python3 tools/gemm_bench.py --device cl:1 --sizes 256            # a quick local run on PoCL

For each config in gemm_candidates() (all variants): one float64 NumPy check on a --check-size cube, then per size
a spot check of a few full-size rows and the median device time of --iters runs after warm-up (OpenCL profiling
events), as TFLOP/s. Where torch imports with CUDA, torch.mm (TF32 off) is timed in the same run and each row shows
its ratio to it. The table is printed per size, best first; --json writes every row plus, per size, the best
config keyed by clcnn.backends.opencl_gemm.gemm_key (ready for backend.gemm_tuned).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clcnn.backends import get_backend  # noqa: E402
from clcnn.backends.opencl_gemm import gemm_key  # noqa: E402

TOL = 1e-4   # max|got - want| / max|want| (float32 sums of up to 4096 products)


def tag(cfg: dict) -> str:
    return "-".join(f"{k}{v}" if k != "variant" else str(v) for k, v in cfg.items())


def problem(be, rng, m, n, k, ta, tb):
    """Host and device operands: A (m, k) or (k, m), B (k, n) or (n, k), C (m, n); dense, 16-byte aligned."""
    a = rng.standard_normal((k, m) if ta else (m, k), dtype=np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n), dtype=np.float32)
    return a, b, be.upload(a), be.upload(b), be.zeros((m, n))


def run(be, dev_a, dev_b, dev_c, m, n, k, ta, tb):
    be.gemm(dev_a, dev_b, dev_c, m, n, k, trans_a=ta, trans_b=tb)


def rel_err(got, want) -> float:
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-30))


def check_small(be, rng, size, ta, tb) -> float:
    a, b, da, db, dc = problem(be, rng, size, size, size, ta, tb)
    run(be, da, db, dc, size, size, size, ta, tb)
    want = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
    return rel_err(be.download(dc), want)


def spot_check(be, a, b, dc, ta, tb, rows) -> float:
    got = be.download(dc)[rows]
    A = (a.T if ta else a)[rows].astype(np.float64)
    return rel_err(got, A @ (b.T if tb else b).astype(np.float64))


def time_device(be, fn, iters: int) -> float:
    """Median device seconds of one fn() over iters runs, after two warm-ups (profiling events when the backend
    has them, else queue.finish around each run)."""
    fn(), fn()
    be.synchronize()
    times = []
    if hasattr(be, "profiling"):
        with be.profiling():
            for _ in range(iters):
                mark = be.event_time()
                fn()
                times.append(be.event_time(mark))
    else:
        for _ in range(iters):
            t = time.perf_counter()
            fn()
            be.synchronize()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def torch_time(m, n, k, ta, tb, iters: int):
    """Median seconds of torch.mm on CUDA with TF32 off, or None without torch + CUDA."""
    try:
        import torch
        if not torch.cuda.is_available():
            return None
    except Exception:
        return None
    torch.backends.cuda.matmul.allow_tf32 = False
    a = torch.randn((k, m) if ta else (m, k), device="cuda")
    b = torch.randn((n, k) if tb else (k, n), device="cuda")
    aa, bb = (a.t() if ta else a), (b.t() if tb else b)
    for _ in range(3):
        torch.mm(aa, bb)
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.mm(aa, bb)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e-3)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cl:0")
    ap.add_argument("--sizes", default="4096,2048,1024", help="square sizes m = n = k, comma-separated")
    ap.add_argument("--trans", default="NN", help="transposes to run, e.g. NN,NT,TN,TT")
    ap.add_argument("--variants", default="naive,local,blocked,vec")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--check-size", type=int, default=512)
    ap.add_argument("--json", help="write every row and the best config per problem here")
    args = ap.parse_args(argv)
    be = get_backend(args.device)
    if not hasattr(be, "gemm_candidates"):
        ap.error(f"{be.info.id} ({be.info.name}) is not an OpenCL device: nothing to compare")
    sizes = [int(s) for s in args.sizes.split(",")]
    variants = args.variants.split(",")
    rng = np.random.default_rng(0)
    print(f"device {be.info.id}: {be.info.name} [{be.info.platform}] {be.info.version}", flush=True)
    rows, best, failures = [], {}, 0
    for tr in args.trans.split(","):
        ta, tb = tr[0] == "T", tr[1] == "T"
        checked: dict[str, float] = {}
        for size in sizes:
            key = gemm_key(size, size, size, ta, tb, 1, False)
            flop = 2.0 * size ** 3
            t_torch = torch_time(size, size, size, ta, tb, max(args.iters, 20))
            default = be.gemm_config(size, size, size, ta, tb)
            a, b, da, db, dc = problem(be, rng, size, size, size, ta, tb)
            spot = rng.choice(size, size=min(size, 8), replace=False)
            table = []
            for cfg in be.gemm_candidates(size, size, size, ta, tb):
                if cfg["variant"] not in variants:
                    continue
                name = tag(cfg)
                be.gemm_override = cfg
                try:
                    t0 = time.perf_counter()
                    if name not in checked:
                        checked[name] = check_small(be, rng, args.check_size, ta, tb)
                    run(be, da, db, dc, size, size, size, ta, tb)
                    err = max(checked[name], spot_check(be, a, b, dc, ta, tb, spot))
                    secs = time_device(be, lambda: run(be, da, db, dc, size, size, size, ta, tb), args.iters)
                    row = dict(trans=tr, size=size, config=cfg, tflops=flop / secs / 1e12, ms=secs * 1e3,
                               err=err, ok=err <= TOL, default=cfg == default, wall_s=time.perf_counter() - t0,
                               torch_ratio=(t_torch / secs) if t_torch else None)
                except Exception as exc:   # a config that fails to build or run on this device: report, go on
                    row = dict(trans=tr, size=size, config=cfg, tflops=0.0, ms=float("nan"), err=float("nan"),
                               ok=False, default=cfg == default, error=f"{type(exc).__name__}: {exc}"[:300],
                               torch_ratio=None)
                finally:
                    be.gemm_override = None
                failures += not row["ok"]
                table.append(row)
                print(f"  {tr} {size}: {name:52s} {row['tflops']:7.2f} TFLOP/s  err {row['err']:.1e}"
                      f"{'' if row['ok'] else '  FAIL ' + row.get('error', '')}", flush=True)
            rows += table
            good = sorted((r for r in table if r["ok"]), key=lambda r: -r["tflops"])
            if good:
                best[key] = good[0]["config"]
            head = f"== {tr} {size}^3 on {be.info.name}"
            if t_torch:
                head += f" | torch.mm (TF32 off) {flop / t_torch / 1e12:.2f} TFLOP/s"
            print(head)
            print(f"   {'config':52s} {'TFLOP/s':>8s} {'ms':>8s} {'vs torch':>8s}  check")
            for r in sorted(table, key=lambda r: -r["tflops"]):
                ratio = f"{r['torch_ratio']:8.2f}" if r["torch_ratio"] else f"{'-':>8s}"
                mark = " (default)" if r["default"] else ""
                print(f"   {tag(r['config']):52s} {r['tflops']:8.2f} {r['ms']:8.3f} {ratio}  "
                      f"{'ok' if r['ok'] else 'FAIL'} {r['err']:.1e}{mark}")
            rows.append(dict(trans=tr, size=size, torch_tflops=flop / t_torch / 1e12 if t_torch else None))
    if args.json:
        Path(args.json).write_text(json.dumps(dict(device=be.info.name, platform=be.info.platform, rows=rows,
                                                   best=best), indent=1))
    print(f"{failures} failing config(s)" if failures else "all configs correct")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
