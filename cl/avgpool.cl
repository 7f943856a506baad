// avgpool_forward / avgpool_backward: kh x kw average pooling with stride, no padding (PyTorch's nn.AvgPool2d,
// padding 0); Ho = (H - kh)/stride + 1, Wo = (W - kw)/stride + 1. GlobalAvgPool2D is kh = H, kw = W.

// x: (N, C, H, W) -> y: (N, C, Ho, Wo) = window mean; total = N*C*Ho*Wo work-items
__kernel void avgpool_forward(__global const float* restrict x, __global float* restrict y, const int h,
                              const int w, const int kh, const int kw, const int stride, const int ho,
                              const int wo, const int total)
{
    const int gid = get_global_id(0);
    if (gid >= total) return;
    const int ow = gid % wo, oh = (gid / wo) % ho, plane = gid / (wo * ho);
    __global const float* xp = x + plane * (h * w) + (oh * stride) * w + ow * stride;
    float s = 0.0f;
    for (int i = 0; i < kh; ++i)
        for (int j = 0; j < kw; ++j)
            s += xp[i * w + j];
    y[gid] = s / (float)(kh * kw);
}

// dy: (N, C, Ho, Wo) -> dx: (N, C, H, W) overwritten; each pixel gathers dy/(kh*kw) of every window covering it
// (windows oh with oh*stride <= r < oh*stride + kh); total = N*C*H*W work-items
__kernel void avgpool_backward(__global const float* restrict dy, __global float* restrict dx, const int h,
                               const int w, const int kh, const int kw, const int stride, const int ho,
                               const int wo, const int total)
{
    const int gid = get_global_id(0);
    if (gid >= total) return;
    const int q = gid % w, r = (gid / w) % h, plane = gid / (w * h);
    const int oh0 = max(0, (r - kh + stride) / stride), oh1 = min(ho - 1, r / stride);
    const int ow0 = max(0, (q - kw + stride) / stride), ow1 = min(wo - 1, q / stride);
    __global const float* dyp = dy + plane * (ho * wo);
    float s = 0.0f;
    for (int oh = oh0; oh <= oh1; ++oh)
        for (int ow = ow0; ow <= ow1; ++ow)
            s += dyp[oh * wo + ow];
    dx[gid] = s / (float)(kh * kw);
}
