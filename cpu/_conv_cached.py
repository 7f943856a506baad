"""Not an op (the kernels of cpu/conv.py and cpu/implicit_conv.py where OpenBLAS can be called): a convolution
one image at a time in each core's cache.

Each thread takes a run of the images. Per image it unrolls the input into its own (C*k*k, Ho*Wo) buffer
(cpu/im2col.py's unroll_image: at most a few hundred KiB, inside a core's L2) and multiplies it there with one
single-threaded OpenBLAS sgemm (cpu/_blas.py), so no unrolled batch is ever written to memory:

- forward: z = W (M, C*k*k) @ cols, then bias, ReLU and the max-pool's scan (``pool_plane``) on z in cache;
- backward: g (M, Ho*Wo) = dy routed through the pool's arg-max and cut by the ReLU (``output_grad_plane``), the
  bias gradient's row sums of g, dW += g @ cols^T (one partial sum per thread, added in a fixed order by
  cpu/gemm.py's _finish), and dx = col2im(W^T @ g) (cpu/im2col.py's plane loops).

Results depend on the thread count only through the order of the per-thread partial sums.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from .gemm import _NO_BIAS, _addr, _epilogue, _finish, _scratch
from .im2col import _NO_MASK, _col2im_plane, _col2im_same_plane, _same_mask, unroll_image


@njit(cache=True, fastmath=False, inline="always")
def pool_plane(z, z0, b, relu, y, y0, argmax, pool, wo, hp, wp):
    """y[y0 + ph*wp + pw] = the max of relu(z[z0 + q] + b) over pool window (ph, pw) of the (Ho, Wo) plane at
    z[z0:] (maxpool_forward's rules: the first of equal values wins, a NaN wins), argmax[...] = its q when
    pool > 1 (pool 1: y = relu(z + b)). The 2x2 window (every preset's) as branch-free selects, which
    vectorise (cpu/maxpool.py's _maxpool2_forward), with the same rules."""
    if pool == 2:
        for ph in range(hp):
            r0 = z0 + 2 * ph * wo
            yo = y0 + ph * wp
            for pw in range(wp):
                q = r0 + 2 * pw
                a, bb = z[np.uint64(q)] + b, z[np.uint64(q + 1)] + b
                c, d = z[np.uint64(q + wo)] + b, z[np.uint64(q + wo + 1)] + b
                if relu:
                    a = np.float32(0.0) if a < 0.0 else a
                    bb = np.float32(0.0) if bb < 0.0 else bb
                    c = np.float32(0.0) if c < 0.0 else c
                    d = np.float32(0.0) if d < 0.0 else d
                best, arg = a, 0
                best, arg = (bb, 1) if bb > best or bb != bb else (best, arg)
                best, arg = (c, wo) if c > best or c != c else (best, arg)
                best, arg = (d, wo + 1) if d > best or d != d else (best, arg)
                y[np.uint64(yo + pw)] = best
                argmax[np.uint64(yo + pw)] = 2 * ph * wo + 2 * pw + arg
        return
    for ph in range(hp):
        for pw in range(wp):
            best = np.float32(0.0)
            arg = 0
            for a in range(pool):
                for e in range(pool):
                    q = (ph * pool + a) * wo + pw * pool + e
                    v = z[np.uint64(z0 + q)] + b
                    if relu and v < 0.0:
                        v = np.float32(0.0)
                    if (a == 0 and e == 0) or v > best or v != v:
                        best, arg = v, q
            y[np.uint64(y0 + ph * wp + pw)] = best
            if pool > 1:
                argmax[np.uint64(y0 + ph * wp + pw)] = arg


@njit(cache=True, fastmath=False, inline="always")
def output_grad_plane(dy, argmax, y, q0, g, g0, L, hp, wp, relu, pool):
    """g[g0 : g0 + L] = the gradient at one (Ho*Wo = L) convolution output plane: the plane of dy at q0 (Hp*Wp
    values when pool > 1, else L) routed to its pool's arg-max (windows do not overlap: each written once), cut
    where y <= 0 when relu (a NaN y passes)."""
    if pool > 1:
        for o in range(L):
            g[np.uint64(g0 + o)] = 0.0
        for e in range(hp * wp):
            idx = np.uint64(q0 + e)
            a = argmax[idx]
            if 0 <= a < L:
                g[np.uint64(g0 + a)] = 0.0 if relu and y[idx] <= 0.0 else dy[idx]
    else:
        for o in range(L):
            idx = np.uint64(q0 + o)
            g[np.uint64(g0 + o)] = 0.0 if relu and y[idx] <= 0.0 else dy[idx]


@njit(cache=True, fastmath=False, inline="always")
def _row_sums(src, s0, m, L, out, o0, add):
    # out[o0 + i] (+)= sum_j src[s0 + i*L + j] for i < m, in 4 interleaved partial sums (one dependent chain
    # would cost an add's latency per element)
    for i in range(m):
        r = s0 + i * L
        s_0, s_1, s_2, s_3 = np.float32(0.0), np.float32(0.0), np.float32(0.0), np.float32(0.0)
        for j in range(0, L - 3, 4):
            q = np.uint64(r + j)
            s_0 += src[q]
            s_1 += src[q + 1]
            s_2 += src[q + 2]
            s_3 += src[q + 3]
        for j in range(L - L % 4, L):
            s_0 += src[np.uint64(r + j)]
        s = (s_0 + s_1) + (s_2 + s_3)
        out[o0 + i] = out[o0 + i] + s if add else s


@njit(parallel=True, nogil=True, cache=True, fastmath=False)
def forward(sgemm, x, wt, bias, y, argmax, work, parts, group, n, c, h, w, m, k, stride, pad, ho, wo, relu, pool,
            hp, wp):
    """x: (N, C, H, W), wt: (M, C*k*k) -> y, argmax: (N, M, Hp, Wp). Part p's images in groups of up to ``group``
    side by side: cols (C*k*k, G*Ho*Wo) and z (M, G*Ho*Wo) in work[p * (C*k*k + M) * group * Ho*Wo :]."""
    ckk, L = c * k * k, ho * wo
    per = (ckk + m) * group * L
    for p in prange(parts):
        buf = p * per
        z0 = buf + ckk * group * L
        last = (p + 1) * n // parts
        for g0 in range(p * n // parts, last, group):
            cnt = min(group, last - g0)
            ld = cnt * L
            for i in range(cnt):
                unroll_image(x, (g0 + i) * c * h * w, work, buf + i * L, ld, c, h, w, k, k, stride, pad, ho, wo)
            if pool == 1 and cnt == 1:   # straight into y, bias and ReLU on the block just written
                sgemm(101, 111, 111, m, L, ckk, np.float32(1.0), _addr(wt, 0), ckk, _addr(work, buf), L,
                      np.float32(0.0), _addr(y, g0 * m * L), L)
                _epilogue(y, g0 * m * L, m, L, L, bias, 0, 0, 0, relu)
                continue
            sgemm(101, 111, 111, m, ld, ckk, np.float32(1.0), _addr(wt, 0), ckk, _addr(work, buf), ld,
                  np.float32(0.0), _addr(work, z0), ld)
            if pool > 1:   # bias and ReLU along whole rows first (they vectorise there), then the pool's scan
                _epilogue(work, z0, m, ld, ld, bias, 0, 0, 0, relu)
            for i in range(cnt):
                for mo in range(m):
                    zq = z0 + mo * ld + i * L
                    yq = ((g0 + i) * m + mo) * hp * wp
                    if pool == 1:
                        b = bias[mo]
                        for o in range(L):
                            v = work[np.uint64(zq + o)] + b
                            y[np.uint64(yq + o)] = (np.float32(0.0) if v < 0.0 else v) if relu else v
                    else:
                        pool_plane(work, zq, np.float32(0.0), False, y, yq, argmax, pool, wo, hp, wp)


@njit(parallel=True, nogil=True, cache=True, fastmath=False)
def backward(sgemm, x, wt, dy, argmax, y, dw_part, db_part, dx, work, parts, group, n, c, h, w, m, k, stride, pad,
             ho, wo, relu, pool, hp, wp, want_dw, want_db, want_dx, inside):
    """x: (N, C, H, W), wt: (M, C*k*k), dy (argmax, y): (N, M, Hp, Wp) -> dw_part[p] (C*k*k, M: transposed) and
    db_part[p] (M,): part p's sums over its images; dx (N, C, H, W) overwritten (want_dx). Part p's images in groups of up
    to ``group`` side by side: cols (C*k*k, G*Ho*Wo), then W^T @ g in its place, and g (M, G*Ho*Wo) in
    work[p * (C*k*k + M) * group * Ho*Wo :]; inside: cpu/im2col.py's _same_mask for stride 1, same padding."""
    ckk, L = c * k * k, ho * wo
    per = (ckk + m) * group * L
    same = stride == 1 and ho == h and wo == w
    for p in prange(parts):
        buf = p * per
        gb = buf + ckk * group * L
        first, last = p * n // parts, (p + 1) * n // parts
        for g0 in range(first, last, group):
            cnt = min(group, last - g0)
            ld = cnt * L
            if pool > 1 or relu or cnt > 1:   # g side by side in the buffer
                for i in range(cnt):
                    for mo in range(m):
                        output_grad_plane(dy, argmax, y, ((g0 + i) * m + mo) * hp * wp, work, gb + mo * ld + i * L,
                                          L, hp, wp, relu, pool)
                g_ptr = _addr(work, gb)
                if want_db:
                    _row_sums(work, gb, m, ld, db_part, p * m, g0 != first)
            else:   # g is dy itself
                g_ptr = _addr(dy, g0 * m * L)
                if want_db:
                    _row_sums(dy, g0 * m * L, m, L, db_part, p * m, g0 != first)
            if want_dw:
                for i in range(cnt):
                    unroll_image(x, (g0 + i) * c * h * w, work, buf + i * L, ld, c, h, w, k, k, stride, pad, ho,
                                 wo)
                # dW^T (C*k*k, M) += cols @ g^T: OpenBLAS is faster with the long side as rows (2026-12-04, one
                # Zen 5 core: 16x144x1024 30 GFLOP/s, as 144x16 60; the CIFAR CNN's conv2 64 -> 84)
                sgemm(101, 111, 112, ckk, m, ld, np.float32(1.0), _addr(work, buf), ld, g_ptr, ld,
                      np.float32(0.0 if g0 == first else 1.0), _addr(dw_part, p * m * ckk), m)
            if want_dx:   # the unrolled input is done with: its buffer takes W^T @ g
                sgemm(101, 112, 111, ckk, ld, m, np.float32(1.0), _addr(wt, 0), ckk, g_ptr, ld, np.float32(0.0),
                      _addr(work, buf), ld)
                for i in range(cnt):
                    for ci in range(c):
                        dst = ((g0 + i) * c + ci) * h * w
                        if same:
                            _col2im_same_plane(work, buf + i * L, ld, dx, dst, ci, h, w, k, k, pad, inside)
                        else:
                            _col2im_plane(work, buf + i * L, ld, dx, dst, ci, h, w, k, k, stride, pad, ho, wo)


@njit(parallel=True, nogil=True, cache=True, fastmath=False)
def _finish_t(part, parts, out, m, n, beta):
    # out (m, n) = sum_p part[p] (n, m)^T + beta * out (out not read when beta == 0), parts summed in order
    for i in prange(m):
        for j in range(n):
            v = part[np.uint64(j * m + i)]
            for p in range(1, parts):
                v += part[np.uint64((p * n + j) * m + i)]
            out[np.uint64(i * n + j)] = v + beta * out[np.uint64(i * n + j)] if beta != 0.0 else v


_GROUP_COLUMNS = 256       # images side by side until a group's sgemm has about this many columns ...
_GROUP_FLOATS = 1 << 18    # ... and its buffers stay within 1 MiB (a core's L2)


def _group(c, k, m, L) -> int:
    """Images per sgemm: small planes side by side (the CIFAR CNN's 8x8 conv3: 64 columns alone, 256 as four)."""
    return max(1, min(_GROUP_COLUMNS // L, _GROUP_FLOATS // ((c * k * k + m) * L)))


def _parts(n: int) -> int:
    """Threads that each take a run of the n images (every run non-empty)."""
    return max(1, min(numba.get_num_threads(), n))


def conv(sgemm, x, wt, bias, y, argmax, n, c, h, w, m, k, stride, pad, ho, wo, relu, pool, hp, wp) -> None:
    """``forward`` with its workspace (flat, checked arrays; argmax: a stand-in when pool == 1)."""
    parts, group = _parts(n), _group(c, k, m, ho * wo)
    work = _scratch("conv_cached", parts * (c * k * k + m) * group * ho * wo)
    forward(sgemm, x, wt, bias, y, argmax, work, parts, group, n, c, h, w, m, k, stride, pad, ho, wo, relu, pool,
            hp, wp)


def conv_grads(sgemm, x, wt, dy, argmax, y, dweight, dbias, dx, beta, n, c, h, w, m, k, stride, pad, ho, wo,
               relu, pool, hp, wp) -> None:
    """``backward`` with its workspaces: dweight, dbias = beta * old + the sums over the images (beta == 0 reads
    neither), dx overwritten; each of the three None when not wanted (flat, checked arrays otherwise)."""
    parts, ckk, group = _parts(n), c * k * k, _group(c, k, m, ho * wo)
    work = _scratch("conv_cached", parts * (ckk + m) * group * ho * wo)
    dw_part, db_part = _scratch("conv_cached_dw", parts * m * ckk), _scratch("conv_cached_db", parts * m)
    inside = _same_mask(h, w, k, pad) if stride == 1 and ho == h and wo == w else _NO_MASK
    backward(sgemm, x, wt, dy, argmax, y, dw_part, db_part, _NO_MASK if dx is None else dx, work, parts, group, n,
             c, h, w, m, k, stride, pad, ho, wo, relu, pool, hp, wp, dweight is not None, dbias is not None,
             dx is not None, inside)
    if dweight is not None:
        _finish_t(dw_part, parts, dweight, m, ckk, np.float32(beta))
    if dbias is not None:
        _finish(db_part, parts, dbias, 0, 1, m, m, 1.0, float(beta), _NO_BIAS, -1, False)
