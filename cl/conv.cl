// conv_forward / conv_backward: the direct convolution (no unrolled buffer), bias + ReLU + max-pooling in the
// forward's write-out, the pool's and the ReLU's backward and the bias gradient in the backward's passes.
// Semantics: base.Backend.conv_forward / conv_backward; x (N, C, H, W), weight (M, C, K, K), conv (N, M, Ho, Wo).

// Each build holds one half: the host defines MB (with POOL) for conv_forward, CB_WG for conv_backward's kernels.

// ---- conv_forward ---------------------------------------------------------------------------------------
#ifdef MB
// Sizes: the scalar arguments (one build for every geometry, as on Oclgrind), or the build constants C, H, W, M,
// K, STRIDE, PAD, HO, WO, HP, WP (all or none; the arguments then repeat them and are unused). Always constants:
// POOL (the pool window, 1: none) and MB (output channels per work-item, for the registers' sizes).
#ifndef H
#define C c
#define H h
#define W w
#define M m
#define K k
#define STRIDE stride
#define PAD pad
#define HO ho
#define WO wo
#define HP hp
#define WP wp
#endif
#define MBLOCKS ((M + MB - 1) / MB)

// One work-item per (n, block of MB output channels, ph, pw): the POOL x POOL convolution values of its window for
// each of its channels, sum_{ci, i, j} x[n, ci, oh*STRIDE - PAD + i, ow*STRIDE - PAD + j] * weight[m, ci, i, j]
// (taps in that order), + bias[m], ReLU'd when relu (v < 0 -> 0: NaN stays), the max kept (maxpool_forward's
// rules) with its index oh*WO + ow in argmax (written only when POOL > 1). Each input value loaded feeds MB
// channels, each weight POOL*POOL positions. x: (N, C, H, W), weight: (M, C, K, K), bias: (M,), y, argmax:
// (N, M, HP, WP); total = N*MBLOCKS*HP*WP work-items.
__kernel void conv_forward(__global const float* restrict x, __global const float* restrict weight,
                           __global const float* restrict bias, __global float* restrict y,
                           __global int* restrict argmax, const int relu, const int c, const int h,
                           const int w, const int m, const int k, const int stride, const int pad, const int ho,
                           const int wo, const int hp, const int wp, const int total)
{
    const int gid = get_global_id(0);
    if (gid >= total) return;
    const int pw = gid % WP, ph = (gid / WP) % HP, rest = gid / (WP * HP);
    const int m0 = (rest % MBLOCKS) * MB, n = rest / MBLOCKS;
    __global const float* xn = x + n * (C * H * W);
    float acc[MB][POOL * POOL];
    for (int q = 0; q < MB; ++q)
        for (int t = 0; t < POOL * POOL; ++t) acc[q][t] = 0.0f;
    for (int ci = 0; ci < C; ++ci)
        for (int i = 0; i < K; ++i)
            for (int j = 0; j < K; ++j) {
                float wv[MB];
                for (int q = 0; q < MB; ++q)   // channels past M (the last block) read channel M-1, never stored
                    wv[q] = weight[((min(m0 + q, M - 1) * C + ci) * K + i) * K + j];
                for (int a = 0; a < POOL; ++a)
                    for (int e = 0; e < POOL; ++e) {
                        const int ih = (ph * POOL + a) * STRIDE - PAD + i, iw = (pw * POOL + e) * STRIDE - PAD + j;
                        const float xv = (PAD == 0 || (ih >= 0 && ih < H && iw >= 0 && iw < W))
                                         ? xn[(ci * H + ih) * W + iw] : 0.0f;
                        for (int q = 0; q < MB; ++q) acc[q][a * POOL + e] = fma(xv, wv[q], acc[q][a * POOL + e]);
                    }
            }
    for (int q = 0; q < MB; ++q) {
        const int mo = m0 + q;
        if (mo >= M) break;
        const float b = bias[mo];
        float best = 0.0f;
        int arg = 0;
        for (int a = 0; a < POOL; ++a)
            for (int e = 0; e < POOL; ++e) {
                float v = acc[q][a * POOL + e] + b;
                if (relu && v < 0.0f) v = 0.0f;
                if ((a == 0 && e == 0) || v > best || isnan(v)) { best = v; arg = (ph * POOL + a) * WO + pw * POOL + e; }
            }
        const int o = ((n * M + mo) * HP + ph) * WP + pw;
        y[o] = best;
        if (POOL > 1) argmax[o] = arg;
    }
}
#endif
// ---- end of conv_forward --------------------------------------------------------------------------------


// ---- conv_backward --------------------------------------------------------------------------------------
#ifdef CB_WG
// Sizes: the scalar arguments, or (GPUs, CPUs: one program per layer geometry) the build constants CB_C, CB_H,
// CB_W, CB_M, CB_K, CB_S, CB_PAD, CB_HO, CB_WO, CB_P, CB_HP, CB_WP (all or none; CB_ so they never meet
// conv_forward's names). CB_WG (always defined): the work-group size of the two passes.
// g: (N, M, Ho, Wo) the gradient at the convolution's output (dy routed to the pool's arg-max, cut by the ReLU).
// Pass 1, conv_backward_partial (work-group (block, chunk of images); each image staged in local memory):
//   weight blocks (block < wblocks): work-item pair = block*WG + lid is output o = pair % O (O = M*C*K*K weights,
//   then M biases) and slice s = pair / O of the Q pooled positions (q = s, s+slices, ...); it writes
//   part[(chunk*slices + s)*O + o]. dx blocks (the others): one input pixel of every image of the chunk each.
// Pass 2, conv_backward_reduce: the rows of part summed in a fixed order, beta applied. No atomics anywhere.
#ifndef CB_C
#define CB_C c
#define CB_H h
#define CB_W w
#define CB_M m
#define CB_K k
#define CB_S stride
#define CB_PAD pad
#define CB_HO ho
#define CB_WO wo
#define CB_P pool
#define CB_HP hp
#define CB_WP wp
#endif
#define CB_XH ((CB_HO - 1) * CB_S + CB_K)          // rows of the padded input the windows read
#define CB_XW ((CB_WO - 1) * CB_S + CB_K)
#define CB_XSZ (CB_C * CB_XH * CB_XW)
#define CB_CKK (CB_C * CB_K * CB_K)
#define CB_MCKK (CB_M * CB_CKK)
#define CB_O (CB_MCKK + CB_M)
#define CB_Q (CB_P > 1 ? CB_HP * CB_WP : CB_HO * CB_WO)   // positions of dy per (n, m) plane

// (no restrict on the helpers: Oclgrind's LLVM lacks the noalias intrinsic it inlines to)
// dy[idx] (idx = plane*Q + q) cut by the ReLU (relu_backward's rule: a NaN y passes); *pos = oh*Wo + ow, the
// conv output it lands on (the arg-max with a pool, else q)
inline float cb_grad(__global const float* dy, __global const int* argmax,
                     __global const float* y, const int relu, const int pool, const int idx,
                     const int q, int* pos)
{
    *pos = pool > 1 ? argmax[idx] : q;
    return (relu && y[idx] <= 0.0f) ? 0.0f : dy[idx];
}

// g[plane, oh, ow] (plane = n*M + m): 0 unless it is its window's arg-max (pool > 1) and inside a window
inline float cb_grad_at(__global const float* dy, __global const int* argmax,
                        __global const float* y, const int relu, const int pool, const int plane,
                        const int oh, const int ow, const int ho, const int wo, const int hp, const int wp)
{
    int idx = (plane * ho + oh) * wo + ow;
    if (pool > 1) {
        const int ph = oh / pool, pw = ow / pool;
        if (ph >= hp || pw >= wp) return 0.0f;
        idx = (plane * hp + ph) * wp + pw;
        if (argmax[idx] != oh * wo + ow) return 0.0f;
    }
    return (relu && y[idx] <= 0.0f) ? 0.0f : dy[idx];
}

// dx[img, ci, ih, iw] = sum over m and the taps (i, j) whose output (th - i)/S, (tw - j)/S exists of g * weight;
// gd(m, oh, ow) and wt(m, ci, i, j) are the expressions reading them (local or global)
#define CB_DX_SUM(s, gd, wt)                                                                                   \
    {                                                                                                          \
        const int th = ih + CB_PAD, tw = iw + CB_PAD;                                                          \
        const int hlo = max(0, th - (CB_HO - 1) * CB_S), wlo = max(0, tw - (CB_WO - 1) * CB_S);                \
        const int ilo = hlo + (th - hlo) % CB_S, jlo = wlo + (tw - wlo) % CB_S;                                \
        const int ihi = min(CB_K - 1, th), jhi = min(CB_K - 1, tw);                                            \
        for (int mo = 0; mo < CB_M; ++mo)                                                                      \
            for (int i = ilo; i <= ihi; i += CB_S)                                                             \
                for (int j = jlo; j <= jhi; j += CB_S)                                                         \
                    s += gd(mo, (th - i) / CB_S, (tw - j) / CB_S) * wt(mo, ci, i, j);                          \
    }
#define CB_WT_GLOBAL(mo, ci, i, j) weight[(((mo) * CB_C + (ci)) * CB_K + (i)) * CB_K + (j)]
#define CB_WT_LOCAL(mo, ci, i, j) lf[(((mo) * CB_C + (ci)) * CB_K + (i)) * CB_K + (j)]
#define CB_GD_LOCAL(mo, oh, ow) gd[((mo) * CB_HO + (oh)) * CB_WO + (ow)]
#define CB_GD_GLOBAL(mo, oh, ow) cb_grad_at(dy, argmax, y, relu, CB_P, img * CB_M + (mo), oh, ow, CB_HO, CB_WO, \
                                            CB_HP, CB_WP)

// x: (N, C, H, W), weight: (M, C, K, K), dy/argmax/y: (N, M, Q) -> part: (G*slices, O) partial sums, and dx:
// (N, C, H, W) from the dx blocks. lf: max(C*XH*XW + M*Q, M*C*K*K + M*Ho*Wo) floats, li: M*Q ints (local).
// Range: (wblocks + dx blocks) * WG x G work-groups of WG; chunk g holds images [g*nb, min((g+1)*nb, n)).
__kernel __attribute__((reqd_work_group_size(CB_WG, 1, 1)))
void conv_backward_partial(__global const float* restrict x, __global const float* restrict weight,
                           __global const float* restrict dy, __global const int* restrict argmax,
                           __global const float* restrict y, __global float* restrict part,
                           __global float* restrict dx, __local float* lf, __local int* li, const int n,
                           const int c, const int h, const int w, const int m, const int k, const int stride,
                           const int pad, const int ho, const int wo, const int pool, const int hp, const int wp,
                           const int relu, const int slices, const int wblocks, const int nb)
{
    const int lid = get_local_id(0), blk = get_group_id(0), chunk = get_group_id(1);
    const int n0 = chunk * nb, n1 = min(n0 + nb, n);
    if (blk < wblocks) {
        const int pair = blk * CB_WG + lid, o = pair % CB_O, sl = pair / CB_O;
        const int mo = o < CB_MCKK ? o / CB_CKK : o - CB_MCKK, r = o % CB_CKK;
        const int xoff = (r / (CB_K * CB_K)) * (CB_XH * CB_XW) + ((r / CB_K) % CB_K) * CB_XW + r % CB_K;
        __local const float* gl = lf + CB_XSZ + mo * CB_Q;
        __local const int* gp = li + mo * CB_Q;
        float acc = 0.0f;
        for (int img = n0; img < n1; ++img) {
            barrier(CLK_LOCAL_MEM_FENCE);   // the previous image is done with the stage
            for (int e = lid; e < CB_XSZ; e += CB_WG) {   // the input, zero-padded
                const int ih = (e / CB_XW) % CB_XH - CB_PAD, iw = e % CB_XW - CB_PAD, ci = e / (CB_XW * CB_XH);
                lf[e] = (ih >= 0 && ih < CB_H && iw >= 0 && iw < CB_W)
                    ? x[((img * CB_C + ci) * CB_H + ih) * CB_W + iw] : 0.0f;
            }
            for (int e = lid; e < CB_M * CB_Q; e += CB_WG) {   // g at its positions, and their window offsets
                int pos;
                lf[CB_XSZ + e] = cb_grad(dy, argmax, y, relu, CB_P, img * (CB_M * CB_Q) + e, e % CB_Q, &pos);
                li[e] = (pos / CB_WO) * CB_S * CB_XW + (pos % CB_WO) * CB_S;
            }
            barrier(CLK_LOCAL_MEM_FENCE);
            if (sl < slices) {
                if (o < CB_MCKK)
                    for (int q = sl; q < CB_Q; q += slices) acc += gl[q] * lf[xoff + gp[q]];
                else
                    for (int q = sl; q < CB_Q; q += slices) acc += gl[q];
            }
        }
        if (sl < slices) part[(chunk * slices + sl) * CB_O + o] = acc;
    } else {
        const int e0 = (blk - wblocks) * CB_WG + lid;
        const int iw = e0 % CB_W, ih = (e0 / CB_W) % CB_H, ci = e0 / (CB_W * CB_H);
        __local float* gd = lf + CB_MCKK;
        for (int e = lid; e < CB_MCKK; e += CB_WG) lf[e] = weight[e];
        for (int img = n0; img < n1; ++img) {
            barrier(CLK_LOCAL_MEM_FENCE);
            for (int e = lid; e < CB_M * CB_HO * CB_WO; e += CB_WG)   // g of the image, dense
                gd[e] = cb_grad_at(dy, argmax, y, relu, CB_P, img * CB_M + e / (CB_HO * CB_WO),
                                   (e / CB_WO) % CB_HO, e % CB_WO, CB_HO, CB_WO, CB_HP, CB_WP);
            barrier(CLK_LOCAL_MEM_FENCE);
            if (e0 < CB_C * CB_H * CB_W) {
                float s = 0.0f;
                CB_DX_SUM(s, CB_GD_LOCAL, CB_WT_LOCAL)
                dx[img * (CB_C * CB_H * CB_W) + e0] = s;
            }
        }
    }
}

// Pass 1 where an image does not fit in local memory: work-item (o, chunk) of an (O, G) range reads its images
// from global memory -> part: (G, O)
__kernel void conv_backward_partial_direct(__global const float* restrict x, __global const float* restrict dy,
                                           __global const int* restrict argmax, __global const float* restrict y,
                                           __global float* restrict part, const int n, const int c, const int h,
                                           const int w, const int m, const int k, const int stride, const int pad,
                                           const int ho, const int wo, const int pool, const int hp,
                                           const int wp, const int relu, const int nb)
{
    const int o = get_global_id(0), chunk = get_global_id(1);
    if (o >= CB_O) return;
    const int n0 = chunk * nb, n1 = min(n0 + nb, n);
    const int mo = o < CB_MCKK ? o / CB_CKK : o - CB_MCKK, r = o % CB_CKK;
    const int ci = r / (CB_K * CB_K), i = (r / CB_K) % CB_K - CB_PAD, j = r % CB_K - CB_PAD;
    float acc = 0.0f;
    for (int img = n0; img < n1; ++img)
        for (int q = 0; q < CB_Q; ++q) {
            int pos;
            const float v = cb_grad(dy, argmax, y, relu, CB_P, (img * CB_M + mo) * CB_Q + q, q, &pos);
            const int ih = (pos / CB_WO) * CB_S + i, iw = (pos % CB_WO) * CB_S + j;
            if (o >= CB_MCKK) acc += v;
            else if (ih >= 0 && ih < CB_H && iw >= 0 && iw < CB_W)
                acc += v * x[((img * CB_C + ci) * CB_H + ih) * CB_W + iw];
        }
    part[chunk * CB_O + o] = acc;
}

// dx: (N, C, H, W) where an image does not fit in local memory: one work-item per pixel, g computed from global
// memory; total = N*C*H*W work-items
__kernel void conv_backward_dx_direct(__global const float* restrict weight, __global const float* restrict dy,
                                      __global const int* restrict argmax, __global const float* restrict y,
                                      __global float* restrict dx, const int c, const int h, const int w,
                                      const int m, const int k, const int stride, const int pad, const int ho,
                                      const int wo, const int pool, const int hp, const int wp, const int relu,
                                      const int total)
{
    const int gid = get_global_id(0);
    if (gid >= total) return;
    const int iw = gid % CB_W, ih = (gid / CB_W) % CB_H, ci = (gid / (CB_W * CB_H)) % CB_C;
    const int img = gid / (CB_C * CB_H * CB_W);
    float s = 0.0f;
    CB_DX_SUM(s, CB_GD_GLOBAL, CB_WT_GLOBAL)
    dx[gid] = s;
}

// part: (rows, outs) -> dweight: (mckk,) = beta*dweight + the column sums of its first mckk columns, dbias: (M,)
// likewise of the others (beta == 0: neither is read). Work-group of WG: tout outputs x WG/tout row slices
// (lid = slice*tout + output): strided partial sums in order, then a tree over the slices (deterministic).
__kernel __attribute__((reqd_work_group_size(CB_WG, 1, 1)))
void conv_backward_reduce(__global const float* restrict part, __global float* restrict dweight,
                          __global float* restrict dbias, const int rows, const int outs, const int mckk,
                          const int tout, const float beta)
{
    __local float red[CB_WG];
    const int lid = get_local_id(0), ol = lid % tout, rs = lid / tout, nrs = CB_WG / tout;
    const int o = get_group_id(0) * tout + ol;
    float acc = 0.0f;
    if (o < outs)
        for (int r = rs; r < rows; r += nrs) acc += part[r * outs + o];
    red[lid] = acc;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int step = nrs / 2; step > 0; step >>= 1) {
        if (rs < step) red[lid] += red[lid + step * tout];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (rs == 0 && o < outs) {
        if (o < mckk) dweight[o] = (beta != 0.0f ? beta * dweight[o] : 0.0f) + red[lid];
        else dbias[o - mckk] = (beta != 0.0f ? beta * dbias[o - mckk] : 0.0f) + red[lid];
    }
}

#endif
// ---- end of conv_backward -------------------------------------------------------------------------------
