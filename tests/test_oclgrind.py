"""Every op under Oclgrind's checkers (tools/oclgrind_ops.py in a subprocess); fails on any Oclgrind report.

Oclgrind prints its reports to stderr and does NOT change the exit status, so stderr is scanned. The patterns
below are exactly what Oclgrind 21.10 prints; test_report_patterns_catch_real_errors proves it by provoking each
report with deliberately broken kernels.

Checkers enabled: OCLGRIND_CHECK_API (API misuse), OCLGRIND_DATA_RACES (+ OCLGRIND_UNIFORM_WRITES, so even
same-value write-write races count); memory bounds checking (MemCheck) is always on. OCLGRIND_UNINITIALIZED is
deliberately OFF: in this Oclgrind build its plugin aborts kernels compiled with optimizations ("OCLGRIND FATAL
ERROR ... Unsupported instruction: freeze"), and with -cl-opt-disable it falsely reports every buffer that was
cleared with clEnqueueFillBuffer and then fully overwritten by a kernel as uninitialized (verified by hand).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import clcnn
from conftest import DEEP

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "oclgrind_ops.py"

# Headlines of Oclgrind's error reports (Oclgrind 21.10); each block of stderr is tested against them.
REPORT_PATTERNS = [re.compile(p) for p in (
    r"Invalid (read|write) of size",                     # MemCheck: out-of-bounds global/local/private access
    r"data race at",                                     # "Read-write data race at ...", "Write-write data race at"
    r"Work-group divergence detected",                   # barrier / async copy not reached by the whole group
    r"Uninitialized (value|address)|depends on (an )?uninitialized",  # Uninitialized plugin, if enabled
    r"Unaligned address",
    r"Invalid memory (load|store) - \w+ pointer is not aligned",   # a float4 load/store at a misaligned address
    r"OpenCL runtime error detected",                    # OCLGRIND_CHECK_API (minus BENIGN_API below)
    r"OCLGRIND FATAL ERROR",
    r"errors generated - suppressing",
)]
# API "errors" that PyOpenCL itself causes and handles: probing optional clGetDeviceInfo queries, and looking up
# the attribute `_source` of a Program built from a binary (it tries a kernel of that name).
BENIGN_API = [re.compile(p, re.S) for p in (
    r"Function: clGetDeviceInfo\s+Error:\s+CL_INVALID_VALUE\s+For argument 'param_name'",
    r"Function: clCreateKernel\s+Error:\s+CL_INVALID_KERNEL_NAME\s+Kernel '_source' not found",
)]


def oclgrind_env(tmp_path: Path) -> dict:
    env = dict(os.environ)
    env.pop("OCLGRIND_UNINITIALIZED", None)  # see the module docstring
    env.update(OCLGRIND_CHECK_API="1", OCLGRIND_DATA_RACES="1", OCLGRIND_UNIFORM_WRITES="1",
               OCLGRIND_MAX_ERRORS="200", CLCNN_CACHE_DIR=str(tmp_path / "kernel-cache"),  # build from source
               PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    return env


def oclgrind_reports(stderr: str) -> list[str]:
    """The Oclgrind error reports in ``stderr`` (one string per report, its first lines)."""
    out = []
    for block in re.split(r"\n\s*\n", stderr):
        if any(p.search(block) for p in REPORT_PATTERNS) and not any(p.search(block) for p in BENIGN_API):
            out.append("\n".join(block.strip("\n").splitlines()[:6]))
    return out


def _require_oclgrind():
    if not any("oclgrind" in d.platform.lower() for d in clcnn.list_devices()):
        pytest.skip("no Oclgrind OpenCL platform installed")


BROKEN_KERNELS = r'''
import numpy as np, pyopencl as cl
plat = [p for p in cl.get_platforms() if "Oclgrind" in p.name][0]
ctx = cl.Context(plat.get_devices()); q = cl.CommandQueue(ctx)
prg = cl.Program(ctx, """
__kernel void oob(__global float* a, int n) { int i = get_global_id(0); a[i + n] = a[i + 2 * n] + 1.0f; }
__kernel void grace(__global float* a) { a[0] = (float)get_global_id(0); }
__kernel void lrace(__global float* a, __local float* s) {
    int l = get_local_id(0); s[l] = l; a[get_global_id(0)] = s[(l + 1) % get_local_size(0)]; }
__kernel void unal(__global float* a) { a[0] = ((__global const float4*)(a + 1))[0].x; }
__kernel void bdiv(__global float* a) {
    if (get_local_id(0) < 2) barrier(CLK_LOCAL_MEM_FENCE); a[get_global_id(0)] = 1.0f; }
""").build()
a = cl.Buffer(ctx, cl.mem_flags.READ_WRITE | cl.mem_flags.COPY_HOST_PTR, hostbuf=np.zeros(8, np.float32))
prg.oob(q, (8,), None, a, np.int32(8)); q.finish(); print("--- oob done", flush=True)
prg.grace(q, (8,), (4,), a); q.finish()
prg.lrace(q, (8,), (4,), a, cl.LocalMemory(16)); q.finish()
prg.bdiv(q, (8,), (4,), a); q.finish()
prg.unal(q, (1,), None, a); q.finish()
try:
    cl.enqueue_copy(q, a, np.zeros(16, np.float32))  # 64 bytes into a 32-byte buffer
except cl.Error:
    pass
q.finish(); print("survived", flush=True)
'''


@pytest.mark.oclgrind
def test_report_patterns_catch_real_errors(tmp_path):
    """Deliberately broken kernels: Oclgrind must report each, exit 0 anyway, and our scanner must see them."""
    _require_oclgrind()
    script = tmp_path / "broken_kernels.py"
    script.write_text(textwrap.dedent(BROKEN_KERNELS))
    proc = subprocess.run([sys.executable, str(script)], env=oclgrind_env(tmp_path), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and "survived" in proc.stdout, proc.stdout + proc.stderr[-3000:]
    found = "\n".join(oclgrind_reports(proc.stderr))
    for expected in ("Invalid read of size", "Invalid write of size", "Write-write data race at",
                     "Read-write data race at", "Work-group divergence detected",
                     "Function: clEnqueueWriteBuffer", "source pointer is not aligned"):
        assert expected in found, f"scanner missed {expected!r}; stderr:\n{proc.stderr[-4000:]}"
    benign = ("\nOclgrind - OpenCL runtime error detected\n\tFunction: clGetDeviceInfo\n\tError:    CL_INVALID_VALUE"
              "\n\tFor argument 'param_name'\n\n")
    assert oclgrind_reports(benign * 2) == []


@pytest.mark.oclgrind
@pytest.mark.slow
@pytest.mark.deep   # 37 s of a warm lean run; every op also runs on Oclgrind in the lean op tests
def test_all_ops_clean_under_oclgrind(tmp_path):
    _require_oclgrind()
    args = [sys.executable, str(SCRIPT)] + (["--deep"] if DEEP else [])   # deep: every tile config
    proc = subprocess.run(args, env=oclgrind_env(tmp_path), capture_output=True, text=True, timeout=1800,
                          cwd=str(ROOT))
    reports = oclgrind_reports(proc.stderr)
    assert proc.returncode == 0 and "ALL OK" in proc.stdout, \
        f"tools/oclgrind_ops.py failed (rc {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert not reports, f"{len(reports)} Oclgrind report(s), first ones:\n\n" + "\n\n".join(reports[:5])
    for variant in ("naive", "local", "blocked", "vec"):   # every GEMM kernel variant ran under the checkers
        assert f"ok   gemm {variant}-" in proc.stdout, f"no gemm {variant} config ran:\n{proc.stdout[-3000:]}"
