// maxpool_forward / maxpool_backward: k x k max pooling with stride, no padding (one work-item per output element).

// x: (N, C, H, W) -> y, argmax: (N, C, Ho, Wo); argmax = hi*W + wi inside its plane, first max wins;
// total = N*C*Ho*Wo work-items
__kernel void maxpool_forward(__global const float* restrict x, __global float* restrict y,
                              __global int* restrict argmax, const int h, const int w, const int k,
                              const int stride, const int ho, const int wo, const int total)
{
    const int gid = get_global_id(0);
    if (gid >= total) return;
    const int ow = gid % wo, oh = (gid / wo) % ho, plane = gid / (wo * ho);
    __global const float* xp = x + plane * h * w;
    int best = (oh * stride) * w + ow * stride;
    float m = xp[best];
    for (int i = 0; i < k; ++i)
        for (int j = 0; j < k; ++j) {
            const int idx = (oh * stride + i) * w + ow * stride + j;
            if (xp[idx] > m) { m = xp[idx]; best = idx; }
        }
    y[gid] = m;
    argmax[gid] = best;
}

// dy, argmax: (N, C, Ho, Wo) -> dx: (N, C, H, W) overwritten; each pixel gathers dy of every window whose
// arg-max it is (race-free with overlapping windows); total = N*C*H*W work-items
__kernel void maxpool_backward(__global const float* restrict dy, __global const int* restrict argmax,
                               __global float* restrict dx, const int h, const int w, const int k,
                               const int stride, const int ho, const int wo, const int total)
{
    const int gid = get_global_id(0);
    if (gid >= total) return;
    const int hw = h * w, pix = gid % hw, plane = gid / hw;
    const int hi = pix / w, wi = pix % w;
    const int oh0 = hi < k ? 0 : (hi - k + stride) / stride, oh1 = min(hi / stride, ho - 1);
    const int ow0 = wi < k ? 0 : (wi - k + stride) / stride, ow1 = min(wi / stride, wo - 1);
    const int base = plane * ho * wo;
    float s = 0.0f;
    for (int oh = oh0; oh <= oh1; ++oh)
        for (int ow = ow0; ow <= ow1; ++ow)
            if (argmax[base + oh * wo + ow] == pix) s += dy[base + oh * wo + ow];
    dx[gid] = s;
}
