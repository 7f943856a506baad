// implicit_conv: a convolution as one GEMM whose operand is gathered from the tensor while its slab is loaded,
// so no unrolled (im2col) buffer exists ("implicit GEMM"). The kernel is cl/gemm_vec.cl's `gemm` (tiles, double
// buffering, split-K batch-reduce, bias + ReLU write-out, same arguments) with fetch_b, and in MODE 3 fetch_a,
// replaced below; batch entry e is image e (stride_b: one image of the gathered tensor).
// Geometry constants: CV_C, CV_H, CV_W (the input x: C x H x W), CV_HO, CV_WO (the output), CV_K (square
// kernel), CV_S (stride), CV_P (zero padding); r = (ch*K + kh)*K + kw indexes a kernel tap of input channel ch.
// MODE 1, forward:       y[e] (M, Ho*Wo) = weight (M, C*K*K) @ B,   B[r, q] = im2col's element of x[e]:
//                        x[e][ch, oh*S - P + kh, ow*S - P + kw], q = oh*Wo + ow (0 in the padding). TRANS_B = 0.
// MODE 2, weight grad:   dweight (M, C*K*K) = sum_e dy[e] (M, Ho*Wo) @ B^T, B as in MODE 1 and read as the
//                        (C*K*K, Ho*Wo) matrix stored "(n, k)" (TRANS_B = 1; batch-reduce over the images).
// MODE 3, input grad:    dx[e] (C, H*W) = A @ B, A[ch, (o, t)] = weight[o, ch, t] (t = kh*K + kw) and
//                        B[(o, t), ih*W + iw] = dy[e][o, (ih + P - kh)/S, (iw + P - kw)/S] where both divide
//                        exactly and land inside Ho x Wo, else 0 (the adjoint of im2col). TRANS_A = TRANS_B = 0.
#define CV_KK (CV_K * CV_K)
#define GATHER_B
#if MODE == 3
#define GATHER_A
#endif

// B[r, q] of MODE 1 / 2 from one image x
inline float im2col_at(__global const float* x, const int r, const int q)
{
    const int ch = r / CV_KK, t = r - ch * CV_KK, kh = t / CV_K, kw = t - kh * CV_K;
    const int oh = q / CV_WO, ow = q - oh * CV_WO;
    const int ih = oh * CV_S - CV_P + kh, iw = ow * CV_S - CV_P + kw;
    return ((uint)ih < (uint)CV_H && (uint)iw < (uint)CV_W) ? x[(ch * CV_H + ih) * CV_W + iw] : 0.0f;
}

// B[(o, t), j] of MODE 3 from one image's dy, j = ih*W + iw
inline float col2im_at(__global const float* dy, const int p, const int j)
{
    const int o = p / CV_KK, t = p - o * CV_KK, kh = t / CV_K, kw = t - kh * CV_K;
    const int ih = j / CV_W, iw = j - ih * CV_W;
    const int th = ih + CV_P - kh, tw = iw + CV_P - kw;
#if CV_S == 1
    return ((uint)th < (uint)CV_HO && (uint)tw < (uint)CV_WO) ? dy[(o * CV_HO + th) * CV_WO + tw] : 0.0f;
#else
    if (th < 0 || tw < 0 || th % CV_S || tw % CV_S) return 0.0f;
    const int oh = th / CV_S, ow = tw / CV_S;
    return (oh < CV_HO && ow < CV_WO) ? dy[(o * CV_HO + oh) * CV_WO + ow] : 0.0f;
#endif
}

#if MODE == 3
#define B_ELEMENT col2im_at
#else
#define B_ELEMENT im2col_at
#endif

// quad l of the B slab at k-offset p0 (gemm_vec.cl's contract: 4 elements along the stored matrix's contiguous
// dimension, those past n or k read as 0)
inline float4 fetch_b(__global const float* b, const int ldb, const int n, const int k, const int col0,
                      const int p0, const int l)
{
    float4 v = (float4)(0.0f);
#if TRANS_B   // (n, k): a tap r = gj, quads along the output positions gp..gp+3
    const int gj = col0 + l / (TK / 4), gp = p0 + (l % (TK / 4)) * 4;
    if (gj < n) {
        if (gp < k) v.x = B_ELEMENT(b, gj, gp);
        if (gp + 1 < k) v.y = B_ELEMENT(b, gj, gp + 1);
        if (gp + 2 < k) v.z = B_ELEMENT(b, gj, gp + 2);
        if (gp + 3 < k) v.w = B_ELEMENT(b, gj, gp + 3);
    }
#else         // (k, n): row gp, quads along the columns gj..gj+3
    const int gp = p0 + l / (TN / 4), gj = col0 + (l % (TN / 4)) * 4;
    if (gp < k) {
        if (gj < n) v.x = B_ELEMENT(b, gp, gj);
        if (gj + 1 < n) v.y = B_ELEMENT(b, gp, gj + 1);
        if (gj + 2 < n) v.z = B_ELEMENT(b, gp, gj + 2);
        if (gj + 3 < n) v.w = B_ELEMENT(b, gp, gj + 3);
    }
#endif
    return v;
}

#if MODE == 3
// quad l of the A slab: row gi = input channel, quads along p = (o, t); A[ch, (o, t)] = weight[(o*C + ch)*KK + t]
inline float4 fetch_a(__global const float* a, const int lda, const int m, const int k, const int row0,
                      const int p0, const int l)
{
    float4 v = (float4)(0.0f);
    const int gi = row0 + l / (TK / 4), gp = p0 + (l % (TK / 4)) * 4;
    if (gi < m) {
        if (gp < k) v.x = a[((gp / CV_KK) * CV_C + gi) * CV_KK + gp % CV_KK];
        if (gp + 1 < k) v.y = a[(((gp + 1) / CV_KK) * CV_C + gi) * CV_KK + (gp + 1) % CV_KK];
        if (gp + 2 < k) v.z = a[(((gp + 2) / CV_KK) * CV_C + gi) * CV_KK + (gp + 2) % CV_KK];
        if (gp + 3 < k) v.w = a[(((gp + 3) / CV_KK) * CV_C + gi) * CV_KK + (gp + 3) % CV_KK];
    }
    return v;
}
#endif

#include "gemm_vec.cl"
