// conv_forward / conv_backward: the direct convolution (no unrolled buffer), bias + ReLU + max-pooling in the
// forward's write-out, the pool's and the ReLU's backward and the bias gradient in the backward's passes.
// Semantics: base.Backend.conv_forward / conv_backward; x (N, C, H, W), weight (M, C, K, K), conv (N, M, Ho, Wo).

// ---- conv_forward ---------------------------------------------------------------------------------------
// Sizes: the scalar arguments (one build for every geometry, as on Oclgrind), or the build constants C, H, W, M,
// K, STRIDE, PAD, HO, WO, POOL, HP, WP (all or none; the arguments then repeat them and are unused).
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
#define POOL pool
#define HP hp
#define WP wp
#endif

// One work-item per output element y[n, m, ph, pw] (pool = 1: Hp = Ho, Wp = Wo): the POOL x POOL convolution
// values of its window, each sum_{ci, i, j} x[n, ci, oh*STRIDE - PAD + i, ow*STRIDE - PAD + j] * weight[m, ci, i, j]
// + bias[m], ReLU'd when relu (v < 0 -> 0: NaN stays), the max kept (maxpool_forward's rules) with its index
// oh*WO + ow in argmax (written only when POOL > 1). x: (N, C, H, W), weight: (M, C, K, K), bias: (M,),
// y, argmax: (N, M, HP, WP); total = N*M*HP*WP work-items.
__kernel void conv_forward(__global const float* restrict x, __global const float* restrict weight,
                           __global const float* restrict bias, __global float* restrict y,
                           __global int* restrict argmax, const int relu, const int c, const int h,
                           const int w, const int m, const int k, const int stride, const int pad, const int ho,
                           const int wo, const int pool, const int hp, const int wp, const int total)
{
    const int gid = get_global_id(0);
    if (gid >= total) return;
    const int pw = gid % WP, ph = (gid / WP) % HP, plane = gid / (WP * HP);
    const int mo = plane % M, n = plane / M;
    __global const float* xn = x + n * (C * H * W);
    __global const float* wm = weight + mo * (C * K * K);
    const float b = bias[mo];
    float best = 0.0f;
    int arg = 0;
    for (int a = 0; a < POOL; ++a)
        for (int e = 0; e < POOL; ++e) {
            const int oh = ph * POOL + a, ow = pw * POOL + e;
            const int ih0 = oh * STRIDE - PAD, iw0 = ow * STRIDE - PAD;
            float acc = 0.0f;
            for (int ci = 0; ci < C; ++ci)
                for (int i = 0; i < K; ++i) {
                    const int ih = ih0 + i;
                    if (ih < 0 || ih >= H) continue;
                    __global const float* xr = xn + (ci * H + ih) * W;
                    __global const float* wr = wm + (ci * K + i) * K;
                    for (int j = 0; j < K; ++j) {
                        const int iw = iw0 + j;
                        if (iw >= 0 && iw < W) acc = fma(xr[iw], wr[j], acc);
                    }
                }
            float v = acc + b;
            if (relu && v < 0.0f) v = 0.0f;
            if ((a == 0 && e == 0) || v > best || isnan(v)) { best = v; arg = oh * WO + ow; }
        }
    y[gid] = best;
    if (POOL > 1) argmax[gid] = arg;
}

// ---- end of conv_forward --------------------------------------------------------------------------------


// ---- conv_backward --------------------------------------------------------------------------------------

// ---- end of conv_backward -------------------------------------------------------------------------------
