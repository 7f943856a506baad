// gemm (variant "vec", the fast one): the interface, batching and write-out of cl/gemm.cl, i.e. row-major
// strided-batched C = epilogue(alpha*op(A)@op(B) + beta*C) with
// A: (m, k) [or (k, m) when TRANS_A] row stride lda; B: (k, n) [or (n, k) when TRANS_B] row stride ldb;
// C: (m, n) row stride ldc; work-item z sums entries z*nloop .. min(z*nloop + nloop, nbatch) - 1 and writes
// C + c_off + z*stride_c once; bias_mode 0 none / 1 bias[i] / 2 bias[j], then ReLU when relu != 0.
// Work-group (TN/WN, TM/WM) computes a TM x TN C tile, WM x WN outputs per work-item;
// NDRange = (ceil(n/TN)*TN/WN, ceil(m/TM)*TM/WM, number of z).
// How: the k-slabs (TK deep) of every entry form one sequence, double-buffered in local memory: the global loads
// of slab s are in flight while slab s-1 is multiplied, one barrier per slab. A and B are read as 4-float quads
// along their contiguous dimension: one 128-bit load per quad when VEC_A / VEC_B (the host checked 16-byte
// alignment of offsets, leading dimensions and batch strides), guarded scalar loads at the matrix edges. Slabs are
// stored k-major (As[p][i], Bs[p][j], rows padded by 4: float4-aligned, transposing stores <= 2-way conflicted)
// so a work-item reads its WM rows and WN columns as float4s: rows (u/4)*4*NTY + 4*ty + u%4, columns likewise
// (strided ty + u*NTY when WM is not a multiple of 4).
// Constants: TM, TN, TK (multiples of 4), WM, WN, TRANS_A, TRANS_B, VEC_A, VEC_B, and WX: 0, or the lanes of each
// 32-wide warp arranged WX x 32/WX over the (tx, ty) grid (fewer distinct local addresses per warp read).
#pragma OPENCL FP_CONTRACT ON
#define NTX (TN / WN)
#define NTY (TM / WM)
#define NT (NTX * NTY)
#define LA (TM + 4)                  // local row lengths
#define LB (TN + 4)
#define A_QUADS (TM * TK / 4)        // quads per slab, and per work-item
#define B_QUADS (TK * TN / 4)
#define QA ((A_QUADS + NT - 1) / NT)
#define QB ((B_QUADS + NT - 1) / NT)
#if WM % 4 == 0
#define ROW(u) (((u) / 4) * 4 * NTY + 4 * ty + (u) % 4)
#else
#define ROW(u) (ty + (u) * NTY)
#endif
#if WN % 4 == 0
#define COL(v) (((v) / 4) * 4 * NTX + 4 * tx + (v) % 4)
#else
#define COL(v) (tx + (v) * NTX)
#endif

// c[i, j] = epilogue(alpha*acc + beta*c[i, j]) (the write_c of cl/gemm.cl)
inline void write_c(__global float* c, const int ldc, const int i, const int j, const float acc, const float alpha,
                    const float beta, __global const float* bias, const int bias_mode, const int relu)
{
    float r = alpha * acc;
    if (beta != 0.0f) r += beta * c[i * ldc + j];   // beta == 0 never reads C
    if (bias_mode == 1) r += bias[i];
    else if (bias_mode == 2) r += bias[j];
    if (relu) r = fmax(r, 0.0f);
    c[i * ldc + j] = r;
}

// src[0..3], of which the first `valid` (0..4) lie inside the matrix (the others read as 0)
inline float4 load_quad(__global const float* src, const int valid, const int vec)
{
    if (vec && valid == 4) return *(__global const float4*)src;   // one 128-bit load
    float4 v = (float4)(0.0f);
    if (valid > 0) v.x = src[0];
    if (valid > 1) v.y = src[1];
    if (valid > 2) v.z = src[2];
    if (valid > 3) v.w = src[3];
    return v;
}

// quad l of the A slab at k-offset p0 of entry a; rows past m, k read as 0
inline float4 fetch_a(__global const float* a, const int lda, const int m, const int k, const int row0,
                      const int p0, const int l)
{
#if TRANS_A   // stored (k, m): quads run along i
    const int gp = p0 + l / (TM / 4), gi = row0 + (l % (TM / 4)) * 4;
    return load_quad(a + gp * lda + gi, gp < k ? clamp(m - gi, 0, 4) : 0, VEC_A);
#else         // stored (m, k): quads run along p
    const int gi = row0 + l / (TK / 4), gp = p0 + (l % (TK / 4)) * 4;
    return load_quad(a + gi * lda + gp, gi < m ? clamp(k - gp, 0, 4) : 0, VEC_A);
#endif
}

// quad l of an A slab -> as (TK x LA, k-major)
inline void stash_a(__local float* as, const int l, const float4 v)
{
#if TRANS_A
    *(__local float4*)(as + (l / (TM / 4)) * LA + (l % (TM / 4)) * 4) = v;
#else
    __local float* d = as + (l % (TK / 4)) * 4 * LA + l / (TK / 4);
    d[0] = v.x; d[LA] = v.y; d[2 * LA] = v.z; d[3 * LA] = v.w;
#endif
}

// quad l of the B slab at k-offset p0 of entry b; columns past n, k read as 0
inline float4 fetch_b(__global const float* b, const int ldb, const int n, const int k, const int col0,
                      const int p0, const int l)
{
#if TRANS_B   // stored (n, k): quads run along p
    const int gj = col0 + l / (TK / 4), gp = p0 + (l % (TK / 4)) * 4;
    return load_quad(b + gj * ldb + gp, gj < n ? clamp(k - gp, 0, 4) : 0, VEC_B);
#else         // stored (k, n): quads run along j
    const int gp = p0 + l / (TN / 4), gj = col0 + (l % (TN / 4)) * 4;
    return load_quad(b + gp * ldb + gj, gp < k ? clamp(n - gj, 0, 4) : 0, VEC_B);
#endif
}

// quad l of a B slab -> bs (TK x LB, k-major)
inline void stash_b(__local float* bs, const int l, const float4 v)
{
#if TRANS_B
    __local float* d = bs + (l % (TK / 4)) * 4 * LB + l / (TK / 4);
    d[0] = v.x; d[LB] = v.y; d[2 * LB] = v.z; d[3 * LB] = v.w;
#else
    *(__local float4*)(bs + (l / (TN / 4)) * LB + (l % (TN / 4)) * 4) = v;
#endif
}

__kernel __attribute__((reqd_work_group_size(NTX, NTY, 1)))
void gemm(const int m, const int n, const int k, const float alpha, const float beta,
          __global const float* restrict A, const int a_off, const int lda, const int stride_a,
          __global const float* restrict B, const int b_off, const int ldb, const int stride_b,
          __global float* restrict C, const int c_off, const int ldc, const int stride_c,
          const int nloop, const int nbatch, __global const float* restrict bias, const int bias_mode,
          const int relu)
{
    __local float As[2][TK * LA] __attribute__((aligned(16)));
    __local float Bs[2][TK * LB] __attribute__((aligned(16)));
    const int lid = get_local_id(1) * NTX + get_local_id(0);
#if WX
    const int lane = lid % 32, w = lid / 32;
    const int tx = (w % (NTX / WX)) * WX + lane % WX, ty = (w / (NTX / WX)) * (32 / WX) + lane / WX;
#else
    const int tx = get_local_id(0), ty = get_local_id(1);
#endif
    const int row0 = get_group_id(1) * TM, col0 = get_group_id(0) * TN, z = get_global_id(2);
    const int nslab = (min(z * nloop + nloop, nbatch) - z * nloop) * ((k + TK - 1) / TK);
    float acc[WM][WN];
#pragma unroll
    for (int u = 0; u < WM; ++u)
#pragma unroll
        for (int v = 0; v < WN; ++v)
            acc[u][v] = 0.0f;
    float4 ra[QA], rb[QB];
    int e = z * nloop, p0 = 0;   // the next slab to fetch: entry e, k-offset p0

    // iteration s: fetch slab s (global -> registers), multiply slab s-1 (local buffer (s-1)&1), stash slab s
    // into buffer s&1 (which nobody reads since the previous barrier), barrier.
    for (int s = 0; s <= nslab; ++s) {
        if (s < nslab) {
            __global const float* a = A + a_off + e * stride_a;
            __global const float* b = B + b_off + e * stride_b;
#pragma unroll
            for (int t = 0; t < QA; ++t)
                if (A_QUADS % NT == 0 || lid + t * NT < A_QUADS)
                    ra[t] = fetch_a(a, lda, m, k, row0, p0, lid + t * NT);
#pragma unroll
            for (int t = 0; t < QB; ++t)
                if (B_QUADS % NT == 0 || lid + t * NT < B_QUADS)
                    rb[t] = fetch_b(b, ldb, n, k, col0, p0, lid + t * NT);
            p0 += TK;
            if (p0 >= k) { p0 = 0; ++e; }
        }
        if (s > 0) {
            __local const float* as = As[(s - 1) & 1];
            __local const float* bs = Bs[(s - 1) & 1];
#pragma unroll
            for (int p = 0; p < TK; ++p) {
                float ar[WM], br[WN];
#pragma unroll
                for (int u = 0; u < WM; u += (WM % 4 == 0 ? 4 : 1)) {
#if WM % 4 == 0
                    const float4 q = *(__local const float4*)(as + p * LA + ROW(u));
                    ar[u] = q.x; ar[u + 1] = q.y; ar[u + 2] = q.z; ar[u + 3] = q.w;
#else
                    ar[u] = as[p * LA + ROW(u)];
#endif
                }
#pragma unroll
                for (int v = 0; v < WN; v += (WN % 4 == 0 ? 4 : 1)) {
#if WN % 4 == 0
                    const float4 q = *(__local const float4*)(bs + p * LB + COL(v));
                    br[v] = q.x; br[v + 1] = q.y; br[v + 2] = q.z; br[v + 3] = q.w;
#else
                    br[v] = bs[p * LB + COL(v)];
#endif
                }
#pragma unroll
                for (int u = 0; u < WM; ++u)
#pragma unroll
                    for (int v = 0; v < WN; ++v)
                        acc[u][v] += ar[u] * br[v];
            }
        }
        if (s < nslab) {
#pragma unroll
            for (int t = 0; t < QA; ++t)
                if (A_QUADS % NT == 0 || lid + t * NT < A_QUADS) stash_a(As[s & 1], lid + t * NT, ra[t]);
#pragma unroll
            for (int t = 0; t < QB; ++t)
                if (B_QUADS % NT == 0 || lid + t * NT < B_QUADS) stash_b(Bs[s & 1], lid + t * NT, rb[t]);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }

    __global float* c = C + c_off + z * stride_c;
#pragma unroll
    for (int u = 0; u < WM; ++u) {
        const int i = row0 + ROW(u);
#pragma unroll
        for (int v = 0; v < WN; ++v) {
            const int j = col0 + COL(v);
            if (i < m && j < n) write_c(c, ldc, i, j, acc[u][v], alpha, beta, bias, bias_mode, relu);
        }
    }
}
