// conv_forward / conv_backward: the direct convolution (no unrolled buffer), bias + ReLU + max-pooling in the
// forward's write-out, the pool's and the ReLU's backward and the bias gradient in the backward's passes.
// Semantics: base.Backend.conv_forward / conv_backward; x (N, C, H, W), weight (M, C, K, K), conv (N, M, Ho, Wo).

// ---- conv_forward ---------------------------------------------------------------------------------------
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
// ---- end of conv_forward --------------------------------------------------------------------------------


// ---- conv_backward --------------------------------------------------------------------------------------

// ---- end of conv_backward -------------------------------------------------------------------------------
