"""Convolution unrolling for the Numba backend: im2col (image patches -> matrix columns), its adjoint col2im, and
conv_backward_data (a convolution's input gradient: W^T @ dy then col2im, one image at a time in each core's cache)."""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from . import _blas as blas
from ._arrays import flat
from .gemm import _addr, gemm

_NO_MASK = np.zeros(1, np.float32)   # conv_backward_data's unused `inside` off the same-padding path

# Indices are cast to np.uint64 where they are used: Numba then skips its negative-index wraparound branch and
# LLVM can vectorize the inner loops (3-8x faster here). Every such index is >= 0 by construction.


@njit(cache=True)
def _span(pad, j, stride, w, wo):
    """The range [lo, hi) of output columns ow whose input column ow*stride - pad + j lies inside [0, w)."""
    lo = 0 if pad <= j else (pad - j + stride - 1) // stride
    hi = (w - 1 + pad - j) // stride + 1
    lo = min(lo, wo)
    return lo, max(lo, min(hi, wo))


@njit(cache=True, fastmath=False, inline="always")
def _unroll_row(x, cols, img, d0, r, c, h, w, kh, kw, stride, pad, ho, wo):
    # cols[d0 : d0 + Ho*Wo] = row r (channel r // (kh*kw), tap (r // kw % kh, r % kw)) of the image at x[img:]
    ci = r // (kh * kw)
    i = (r // kw) % kh
    j = r % kw
    lo, hi = _span(pad, j, stride, w, wo)
    src = img + ci * h * w
    for oh in range(ho):
        iy = oh * stride - pad + i
        d = d0 + oh * wo
        if iy < 0 or iy >= h:
            for ow in range(wo):
                cols[np.uint64(d + ow)] = 0.0
            continue
        s = src + iy * w - pad + j
        for ow in range(lo):
            cols[np.uint64(d + ow)] = 0.0
        if stride == 1:  # a contiguous copy: its own loop so it vectorises
            for ow in range(lo, hi):
                cols[np.uint64(d + ow)] = x[np.uint64(s + ow)]
        else:
            for ow in range(lo, hi):
                cols[np.uint64(d + ow)] = x[np.uint64(s + ow * stride)]
        for ow in range(hi, wo):
            cols[np.uint64(d + ow)] = 0.0


@njit(cache=True, fastmath=False, inline="always")
def _unroll_row_same(x, cols, img, d0, r, c, h, w, kh, kw, pad):
    # _unroll_row for stride 1 and "same" padding (output H x W): the row is the image plane shifted by
    # (i-pad)*W + (j-pad) in flat index: one long copy, zeros where the shift leaves the plane, then zeros on the
    # |j-pad| columns that wrapped around a row edge.
    L = h * w
    ci = r // (kh * kw)
    dj = r % kw - pad
    shift = ((r // kw) % kh - pad) * w + dj
    src = img + ci * L + shift
    qlo = min(L, max(0, -shift))
    qhi = max(qlo, min(L, L - shift))
    for q in range(qlo):
        cols[np.uint64(d0 + q)] = 0.0
    for q in range(qlo, qhi):
        cols[np.uint64(d0 + q)] = x[np.uint64(src + q)]
    for q in range(qhi, L):
        cols[np.uint64(d0 + q)] = 0.0
    lo, hi = (0, -dj) if dj < 0 else (w - dj, w)
    for oh in range(h):
        for ow in range(lo, hi):
            cols[np.uint64(d0 + oh * w + ow)] = 0.0


@njit(cache=True, fastmath=False, inline="always")
def unroll_image(x, img, cols, d0, ld, c, h, w, kh, kw, stride, pad, ho, wo):
    """cols[d0 + r*ld :][: Ho*Wo] for r < C*kh*kw = im2col of the one image at x[img:] (C, H, W), single-threaded
    (for a thread's own buffer: cpu/_conv_cached.py)."""
    same = stride == 1 and ho == h and wo == w
    for r in range(c * kh * kw):
        if same:
            _unroll_row_same(x, cols, img, d0 + r * ld, r, c, h, w, kh, kw, pad)
        else:
            _unroll_row(x, cols, img, d0 + r * ld, r, c, h, w, kh, kw, stride, pad, ho, wo)


@njit(parallel=True, nogil=True, cache=True, fastmath=False)
def _im2col(x, cols, n0, nb, c, h, w, kh, kw, stride, pad, ho, wo):
    # x: (N, C, H, W) -> cols: (C*kh*kw, nb*Ho*Wo); one (row, image) strip of Ho*Wo outputs per iteration
    L = ho * wo
    for t in prange(c * kh * kw * nb):
        r = t // nb
        n = t - r * nb
        _unroll_row(x, cols, (n0 + n) * c * h * w, r * nb * L + n * L, r, c, h, w, kh, kw, stride, pad, ho, wo)


@njit(parallel=True, nogil=True, cache=True, fastmath=False)
def _im2col_same(x, cols, n0, nb, c, h, w, kh, kw, pad):
    # x: (N, C, H, W) -> cols: (C*kh*kw, nb*H*W) for stride 1 and "same" padding (output H x W)
    L = h * w
    for t in prange(c * kh * kw * nb):
        r = t // nb
        n = t - r * nb
        _unroll_row_same(x, cols, (n0 + n) * c * L, r * nb * L + n * L, r, c, h, w, kh, kw, pad)


@njit(cache=True, fastmath=False, inline="always")
def _col2im_plane(cols, src0, ncols, x, dst, ci, h, w, kh, kw, stride, pad, ho, wo):
    # One (image, channel) plane: x[dst : dst + H*W] = the sum of the cols entries im2col read from it, where row r
    # of the image's strip is cols[r*ncols + src0 :][: Ho*Wo] (rows of channel ci only)
    for q in range(h * w):
        x[np.uint64(dst + q)] = 0.0
    for i in range(kh):
        for j in range(kw):
            lo, hi = _span(pad, j, stride, w, wo)
            src = ((ci * kh + i) * kw + j) * ncols + src0
            for oh in range(ho):
                iy = oh * stride - pad + i
                if iy < 0 or iy >= h:
                    continue
                d = dst + iy * w - pad + j
                s = src + oh * wo
                if stride == 1:
                    for ow in range(lo, hi):
                        x[np.uint64(d + ow)] += cols[np.uint64(s + ow)]
                else:
                    for ow in range(lo, hi):
                        x[np.uint64(d + ow * stride)] += cols[np.uint64(s + ow)]


@njit(parallel=True, nogil=True, cache=True, fastmath=False)
def _col2im(cols, x, n0, nb, c, h, w, kh, kw, stride, pad, ho, wo):
    # cols: (C*kh*kw, nb*Ho*Wo) -> x: (N, C, H, W); each (image, channel) plane is owned by one iteration
    L = ho * wo
    for p in prange(nb * c):
        n = p // c
        ci = p - n * c
        _col2im_plane(cols, n * L, nb * L, x, ((n0 + n) * c + ci) * h * w, ci, h, w, kh, kw, stride, pad, ho, wo)


@njit(cache=True, fastmath=False)
def _same_mask(h, w, kw, pad):
    """inside[j*H*W + p] = 1 if pixel p's column minus (j - pad) is in [0, W), else 0 (for _col2im_same_plane)."""
    L = h * w
    inside = np.empty(kw * L, np.float32)
    for j in range(kw):
        for p in range(L):
            inside[j * L + p] = 1.0 if 0 <= p % w - (j - pad) < w else 0.0
    return inside


@njit(cache=True, fastmath=False, inline="always")
def _col2im_same_plane(cols, src0, ncols, x, dst, ci, h, w, kh, kw, pad, inside):
    # _col2im_plane for stride 1 and "same" padding: pixel p of the plane gathers cols[strip(i, j), p - shift] over
    # the whole plane at once, masked (inside, from _same_mask) where column p%W - (j-pad) leaves the row.
    # The mask multiplies by 0/1 (a select does not vectorise here: 3x slower): bit-identical to _col2im for finite
    # cols; an inf/NaN in a padded tap (a diverged gradient) would reach its wrapped neighbour pixel.
    L = h * w
    for p in range(L):
        x[np.uint64(dst + p)] = 0.0
    for i in range(kh):
        for j in range(kw):
            shift = (i - pad) * w + (j - pad)
            src = ((ci * kh + i) * kw + j) * ncols + src0 - shift
            plo = min(L, max(0, shift))
            phi = max(plo, min(L, L + shift))
            m = j * L
            for p in range(plo, phi):
                v = cols[np.uint64(src + p)]
                x[np.uint64(dst + p)] += v * inside[np.uint64(m + p)]


@njit(parallel=True, nogil=True, cache=True, fastmath=False)
def _col2im_same(cols, x, n0, nb, c, h, w, kh, kw, pad):
    # cols: (C*kh*kw, nb*H*W) -> x: (N, C, H, W) for stride 1 and "same" padding (output H x W), plane by plane
    L = h * w
    inside = _same_mask(h, w, kw, pad)
    for t in prange(nb * c):
        n = t // c
        ci = t - n * c
        _col2im_same_plane(cols, n * L, nb * L, x, ((n0 + n) * c + ci) * L, ci, h, w, kh, kw, pad, inside)


@njit(parallel=True, nogil=True, cache=True, fastmath=False)
def _conv_backward_data(sgemm, wt, dy, dx, work, n0, nb, parts, m, c, h, w, kh, kw, stride, pad, ho, wo, inside):
    # wt: (M, C*kh*kw), dy: (N, M, Ho*Wo) -> dx: (N, C, H, W) for images n0 .. n0+nb-1. Part p (one per thread)
    # takes its run of images and its own (C*kh*kw, Ho*Wo) buffer work[p*C*kh*kw*Ho*Wo:]; per image:
    # buffer = W^T @ dy[n] (one single-threaded sgemm), then col2im of the buffer while it is still in cache.
    ckk, L = c * kh * kw, ho * wo
    same = stride == 1 and ho == h and wo == w
    for p in prange(parts):
        buf = p * ckk * L
        for n in range(n0 + p * nb // parts, n0 + (p + 1) * nb // parts):
            sgemm(101, 112, 111, ckk, L, m, np.float32(1.0), _addr(wt, 0), ckk, _addr(dy, n * m * L), L,
                  np.float32(0.0), _addr(work, buf), L)
            for ci in range(c):
                dst = (n * c + ci) * h * w
                if same:
                    _col2im_same_plane(work, buf, L, dx, dst, ci, h, w, kh, kw, pad, inside)
                else:
                    _col2im_plane(work, buf, L, dx, dst, ci, h, w, kh, kw, stride, pad, ho, wo)


def _geometry(n0, nb, c, h, w, kh, kw, stride, pad):
    """Checked (Ho, Wo) and the element counts of x (images 0..n0+nb-1) and of cols."""
    if min(nb, c, h, w, kh, kw, stride) < 1 or n0 < 0 or pad < 0:
        raise ValueError("im2col: sizes must be positive, n0 and pad non-negative")
    ho, wo = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"im2col: kernel {kh}x{kw} larger than padded input {h}x{w} (pad {pad})")
    return ho, wo, (n0 + nb) * c * h * w, c * kh * kw * nb * ho * wo


def im2col(x, cols, n0, nb, c, h, w, kh, kw, stride, pad) -> None:
    """x: (N, C, H, W) -> cols: (C*kh*kw, nb*Ho*Wo) for images n0 .. n0+nb-1 (zeros outside the image)."""
    ho, wo, nx, ncol = _geometry(n0, nb, c, h, w, kh, kw, stride, pad)
    args = flat(x, nx, "im2col x"), flat(cols, ncol, "im2col cols"), int(n0), int(nb), int(c), int(h), int(w)
    if stride == 1 and ho == h and wo == w:
        _im2col_same(*args, int(kh), int(kw), int(pad))
    else:
        _im2col(*args, int(kh), int(kw), int(stride), int(pad), ho, wo)


def col2im(cols, x, n0, nb, c, h, w, kh, kw, stride, pad) -> None:
    """cols: (C*kh*kw, nb*Ho*Wo) -> x: (N, C, H, W), the adjoint of im2col; overwrites images n0 .. n0+nb-1."""
    ho, wo, nx, ncol = _geometry(n0, nb, c, h, w, kh, kw, stride, pad)
    args = flat(cols, ncol, "col2im cols"), flat(x, nx, "col2im x"), int(n0), int(nb), int(c), int(h), int(w)
    if stride == 1 and ho == h and wo == w:
        _col2im_same(*args, int(kh), int(kw), int(pad))
    else:
        _col2im(*args, int(kh), int(kw), int(stride), int(pad), ho, wo)


def conv_backward_data(weight, dy, dx, dcols, n0, nb, m, c, h, w, kh, kw, stride, pad) -> None:
    """weight: (M, C*kh*kw), dy: (N, M, Ho*Wo) -> dx: (N, C, H, W), images n0 .. n0+nb-1 overwritten with
    col2im(W^T @ dy[n]); dcols (>= C*kh*kw*nb*Ho*Wo floats) is scratch, its contents undefined after.

    Each thread takes a run of images and unrolls one at a time into its own (C*kh*kw, Ho*Wo) slice of dcols, which
    col2im then reads from the core's cache. With fewer images than threads (or no OpenBLAS) it runs the batched
    gemm into dcols and then col2im, which spread a single image over the threads.
    """
    ho, wo, nx, ncol = _geometry(n0, nb, c, h, w, kh, kw, stride, pad)
    m = int(m)
    if m < 1:
        raise ValueError("conv_backward_data: m must be positive")
    ckk, L = c * kh * kw, ho * wo
    fw, fdy = flat(weight, m * ckk, "conv_backward_data weight"), flat(dy, (n0 + nb) * m * L, "conv_backward_data dy")
    fdx, work = flat(dx, nx, "conv_backward_data dx"), flat(dcols, ncol, "conv_backward_data dcols")
    sgemm, threads = blas.sgemm(), numba.get_num_threads()
    if sgemm is None or nb < threads:
        gemm(fw, fdy, work, ckk, L, m, trans_a=True, b_off=n0 * m * L, ldc=nb * L, batch=nb, stride_a=0,
             stride_b=m * L, stride_c=L)
        col2im(work, fdx, n0, nb, c, h, w, kh, kw, stride, pad)
        return
    same = stride == 1 and ho == h and wo == w
    inside = _same_mask(int(h), int(w), int(kw), int(pad)) if same else _NO_MASK
    _conv_backward_data(sgemm, fw, fdy, fdx, work, int(n0), int(nb), threads, m, int(c), int(h), int(w), int(kh),
                        int(kw), int(stride), int(pad), ho, wo, inside)
