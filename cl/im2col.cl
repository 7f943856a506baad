// im2col / col2im: unroll convolution windows into a dense matrix and back.
// x: (N, C, H, W) <-> cols: (C*KH*KW, nb*Ho*Wo) for images n0 .. n0+nb-1; L = Ho*Wo.
// cols[(ci*KH + i)*KW + j, nn*L + oh*Wo + ow] = x[n0+nn, ci, oh*STRIDE - PAD + i, ow*STRIDE - PAD + j] (0 outside).
// Sizes: the scalar arguments (one build serves every geometry), or, where the host builds one program per layer
// geometry (GPUs: every division below is then by a constant and the window loops unroll), the build constants
// C, H, W, KH, KW, STRIDE, PAD, HO, WO (all or none; the arguments then repeat them and are unused).
#ifndef C
#define C c
#define H h
#define W w
#define KH kh
#define KW kw
#define STRIDE stride
#define PAD pad
#define HO ho
#define WO wo
#endif
#define L (HO * WO)

// x: (N, C, H, W) -> cols: (C*KH*KW, nb*L); 2-D range: dim 0 = column nn*L + r (>= nb*L idle), dim 1 = row
__kernel void im2col(__global const float* restrict x, __global float* restrict cols,
                     const int n0, const int nb, const int c, const int h, const int w,
                     const int kh, const int kw, const int stride, const int pad,
                     const int ho, const int wo, const int total)
{
    const int col = get_global_id(0), row = get_global_id(1);
    const int ncols = nb * L;
    if (col >= ncols) return;
    const int j = row % KW, i = (row / KW) % KH, ci = row / (KW * KH);
    const int nn = col / L, r = col % L;
    const int y = (r / WO) * STRIDE - PAD + i, xx = (r % WO) * STRIDE - PAD + j;
    float v = 0.0f;
    if (y >= 0 && y < H && xx >= 0 && xx < W)
        v = x[((n0 + nn) * C + ci) * (H * W) + y * W + xx];
    cols[row * ncols + col] = v;
}

// cols: (C*KH*KW, nb*L) -> x: (N, C, H, W) images n0 .. n0+nb-1 overwritten; gather per pixel (race-free);
// total = nb*C*H*W work-items
__kernel void col2im(__global const float* restrict cols, __global float* restrict x,
                     const int n0, const int nb, const int c, const int h, const int w,
                     const int kh, const int kw, const int stride, const int pad,
                     const int ho, const int wo, const int total)
{
    const int gid = get_global_id(0);
    if (gid >= total) return;
    const int ncols = nb * L;
    const int xx = gid % W, y = (gid / W) % H, ci = (gid / (W * H)) % C, nn = gid / (W * H * C);
    __global const float* base = cols + ci * (KH * KW) * ncols + nn * L;
    float s = 0.0f;
    for (int i = 0; i < KH; ++i) {
        const int ty = y + PAD - i;
        if (ty < 0 || ty % STRIDE != 0 || ty / STRIDE >= HO) continue;
        for (int j = 0; j < KW; ++j) {
            const int tx = xx + PAD - j;
            if (tx < 0 || tx % STRIDE != 0 || tx / STRIDE >= WO) continue;
            s += base[(i * KW + j) * ncols + (ty / STRIDE) * WO + tx / STRIDE];
        }
    }
    x[n0 * (C * H * W) + gid] = s;
}
