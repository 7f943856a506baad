// maxpool_forward / maxpool_backward: K x K max pooling with stride, no padding (one work-item per output element).
// Sizes: the scalar arguments (one build serves every geometry), or, where the host builds one program per layer
// geometry (GPUs: divisions by constants, unrolled window loops), the build constants H, W, K, STRIDE, HO, WO
// (all or none; the arguments then repeat them and are unused).
#ifndef H
#define H h
#define W w
#define K k
#define STRIDE stride
#define HO ho
#define WO wo
#endif

// x: (N, C, H, W) -> y, argmax: (N, C, Ho, Wo); argmax = hi*W + wi inside its plane, first max wins, a NaN wins
// over any number and the last NaN in scan order over other NaNs (PyTorch's `v > m || isnan(v)`);
// total = N*C*Ho*Wo work-items
__kernel void maxpool_forward(__global const float* restrict x, __global float* restrict y,
                              __global int* restrict argmax, const int h, const int w, const int k,
                              const int stride, const int ho, const int wo, const int total)
{
    const int gid = get_global_id(0);
    if (gid >= total) return;
    const int ow = gid % WO, oh = (gid / WO) % HO, plane = gid / (WO * HO);
    __global const float* xp = x + plane * (H * W);
    int best = (oh * STRIDE) * W + ow * STRIDE;
    float m = xp[best];
    for (int i = 0; i < K; ++i)
        for (int j = 0; j < K; ++j) {
            const int idx = (oh * STRIDE + i) * W + ow * STRIDE + j;
            const float v = xp[idx];
            if (v > m || isnan(v)) { m = v; best = idx; }
        }
    y[gid] = m;
    argmax[gid] = best;
}

// dy, argmax: (N, C, Ho, Wo) -> dx: (N, C, H, W) overwritten; each pixel gathers dy of every window whose
// arg-max it is (race-free with overlapping windows). masked != 0: windows whose pooled output y <= 0 are cut
// (the backward of a ReLU applied before the pooling, fused: relu_backward's rule, a NaN passes); total = N*C*H*W work-items
__kernel void maxpool_backward(__global const float* restrict dy, __global const int* restrict argmax,
                               __global float* restrict dx, __global const float* restrict y, const int masked,
                               const int h, const int w, const int k, const int stride, const int ho,
                               const int wo, const int total)
{
    const int gid = get_global_id(0);
    if (gid >= total) return;
    const int pix = gid % (H * W), plane = gid / (H * W);
    const int hi = pix / W, wi = pix % W;
    const int oh0 = hi < K ? 0 : (hi - K + STRIDE) / STRIDE, oh1 = min(hi / STRIDE, HO - 1);
    const int ow0 = wi < K ? 0 : (wi - K + STRIDE) / STRIDE, ow1 = min(wi / STRIDE, WO - 1);
    const int base = plane * (HO * WO);
    float s = 0.0f;
    for (int oh = oh0; oh <= oh1; ++oh)
        for (int ow = ow0; ow <= ow1; ++ow) {
            const int o = base + oh * WO + ow;
            if (argmax[o] == pix && !(masked && y[o] <= 0.0f)) s += dy[o];
        }
    dx[gid] = s;
}

// maxpool_backward for windows that tile the input exactly (STRIDE == K, H % K == 0, W % K == 0; the host
// checks): one work-item per window writes its K x K pixels (dy at the arg-max, 0 elsewhere), a scatter with no
// overlap; same arguments and result as maxpool_backward; total = N*C*Ho*Wo work-items
__kernel void maxpool_backward_tiled(__global const float* restrict dy, __global const int* restrict argmax,
                                     __global float* restrict dx, __global const float* restrict y,
                                     const int masked, const int h, const int w, const int k, const int stride,
                                     const int ho, const int wo, const int total)
{
    const int gid = get_global_id(0);
    if (gid >= total) return;
    const int ow = gid % WO, oh = (gid / WO) % HO, plane = gid / (WO * HO);
    const float g = (masked && y[gid] <= 0.0f) ? 0.0f : dy[gid];
    const int arg = argmax[gid];
    __global float* xp = dx + plane * (H * W);
    for (int i = 0; i < K; ++i)
        for (int j = 0; j < K; ++j) {
            const int idx = (oh * K + i) * W + ow * K + j;
            xp[idx] = idx == arg ? g : 0.0f;
        }
}
