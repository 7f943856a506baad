// im2col / col2im: unroll convolution windows into a dense matrix and back (one work-item per output element).
// x: (N, C, H, W) <-> cols: (C*kh*kw, nb*Ho*Wo) for images n0 .. n0+nb-1; L = Ho*Wo.
// cols[(ci*kh + i)*kw + j, nn*L + oh*Wo + ow] = x[n0+nn, ci, oh*stride - pad + i, ow*stride - pad + j] (0 outside).

// x: (N, C, H, W) -> cols: (C*kh*kw, nb*L); total = C*kh*kw*nb*L work-items
__kernel void im2col(__global const float* restrict x, __global float* restrict cols,
                     const int n0, const int nb, const int c, const int h, const int w,
                     const int kh, const int kw, const int stride, const int pad,
                     const int ho, const int wo, const int total)
{
    const int gid = get_global_id(0);
    if (gid >= total) return;
    const int L = ho * wo, ncols = nb * L;
    const int col = gid % ncols, row = gid / ncols;
    const int j = row % kw, i = (row / kw) % kh, ci = row / (kw * kh);
    const int nn = col / L, r = col % L;
    const int y = (r / wo) * stride - pad + i, xx = (r % wo) * stride - pad + j;
    float v = 0.0f;
    if (y >= 0 && y < h && xx >= 0 && xx < w)
        v = x[((n0 + nn) * c + ci) * h * w + y * w + xx];
    cols[gid] = v;
}

// cols: (C*kh*kw, nb*L) -> x: (N, C, H, W) images n0 .. n0+nb-1 overwritten; gather per pixel (race-free);
// total = nb*C*H*W work-items
__kernel void col2im(__global const float* restrict cols, __global float* restrict x,
                     const int n0, const int nb, const int c, const int h, const int w,
                     const int kh, const int kw, const int stride, const int pad,
                     const int ho, const int wo, const int total)
{
    const int gid = get_global_id(0);
    if (gid >= total) return;
    const int L = ho * wo, ncols = nb * L;
    const int xx = gid % w, y = (gid / w) % h, ci = (gid / (w * h)) % c, nn = gid / (w * h * c);
    float s = 0.0f;
    for (int i = 0; i < kh; ++i) {
        const int ty = y + pad - i;
        if (ty < 0 || ty % stride != 0 || ty / stride >= ho) continue;
        for (int j = 0; j < kw; ++j) {
            const int tx = xx + pad - j;
            if (tx < 0 || tx % stride != 0 || tx / stride >= wo) continue;
            s += cols[((ci * kh + i) * kw + j) * ncols + nn * L + (ty / stride) * wo + tx / stride];
        }
    }
    x[n0 * c * h * w + gid] = s;
}
