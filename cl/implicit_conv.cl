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
#include "_gemm_vec_slabs.cl"
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

// A work-item's "quad" l of a slab (gemm_vec.cl's STASH calls: l < the slab's elements / 4) is here the four
// elements l + t*QUADS (t = 0..3) of the slab in its stored order, not four neighbours: neighbouring work-items
// then gather neighbouring tensor elements (coalesced scalar loads; measured on the H200: ...).
// B slab, TRANS_B 0: TK rows p x TN columns j, element f = p*TN + j; TRANS_B 1: f = j*TK + p (along the positions)
#if TRANS_B
#define B_SLAB_P(f) ((f) % TK)
#define B_SLAB_J(f) ((f) / TK)
#else
#define B_SLAB_P(f) ((f) / TN)
#define B_SLAB_J(f) ((f) % TN)
#endif

inline float4 fetch_b(__global const float* b, const int ldb, const int n, const int k, const int col0,
                      const int p0, const int l)
{
    float e[4];
#pragma unroll
    for (int t = 0; t < 4; ++t) {
        const int f = l + t * B_QUADS, gp = p0 + B_SLAB_P(f), gj = col0 + B_SLAB_J(f);
#if TRANS_B   // (n, k): element (gp, gj) of the product is B^T's: tap gj, position gp
        e[t] = (gp < k && gj < n) ? B_ELEMENT(b, gj, gp) : 0.0f;
#else
        e[t] = (gp < k && gj < n) ? B_ELEMENT(b, gp, gj) : 0.0f;
#endif
    }
    return (float4)(e[0], e[1], e[2], e[3]);
}

inline void stash_b(__local float* bs, const int l, const float4 v)
{
    const float e[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int t = 0; t < 4; ++t) {
        const int f = l + t * B_QUADS;
        bs[B_SLAB_P(f) * LB + B_SLAB_J(f)] = e[t];
    }
}

#if MODE == 3
// A slab: TM rows i (input channels) x TK columns p = (o, t), element f = i*TK + p;
// A[ch, (o, t)] = weight[(o*C + ch)*KK + t]
inline float4 fetch_a(__global const float* a, const int lda, const int m, const int k, const int row0,
                      const int p0, const int l, const int ta)   // ta: gemm_vec.cl's, 0 here
{
    float e[4];
#pragma unroll
    for (int t = 0; t < 4; ++t) {
        const int f = l + t * A_QUADS, gi = row0 + f / TK, gp = p0 + f % TK;
        e[t] = (gi < m && gp < k) ? a[((gp / CV_KK) * CV_C + gi) * CV_KK + gp % CV_KK] : 0.0f;
    }
    return (float4)(e[0], e[1], e[2], e[3]);
}

inline void stash_a(__local float* as, const int l, const float4 v, const int ta)
{
    const float e[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int t = 0; t < 4; ++t) {
        const int f = l + t * A_QUADS;
        as[(f % TK) * LA + f / TK] = e[t];
    }
}
#endif

#include "gemm_vec.cl"
