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
// Options (absent = 0 = off, the code above unchanged):
// FB: register double-buffering of the per-k fragments: two slots of WM + WN floats; the float4 local reads of
//     step p+1 are issued before the WM*WN FMAs of step p, so they overlap them instead of preceding them.
// ST (1..TK-1): stash the prefetched slab s into local memory after ST of the TK k-steps of slab s-1 instead of
//     after all of them (its registers are freed earlier; the stores overlap the remaining FMAs). Safe: buffer s&1
//     is not read by anyone between the previous barrier and the next one.
// GATHER_A / GATHER_B: fetch_a + stash_a / fetch_b + stash_b are defined by the file that includes this one
// (cl/implicit_conv.cl).
// SUM_A: also the row sums of op(A) over k into the bias argument, bias[i] = beta*bias[i] + sum_p op(A)[i, p]
//     (a dense layer's bias gradient beside its weight gradient; the host passes bias_mode 0 and one entry): the
//     work-items of tile column 0 with tx == 0, which hold every row of their tile, add their A fragment at each
//     k-step, in k order.
#pragma OPENCL FP_CONTRACT ON
#ifndef FB
#define FB 0
#endif
#ifndef ST
#define ST 0
#endif
#ifndef SUM_A
#define SUM_A 0
#endif
#include "_gemm_vec_slabs.cl"   // the slab sizes (shared with cl/implicit_conv.cl)
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

// AR[0..WM-1], BR[0..WN-1] = the work-item's A rows and B columns at k-step P of the slab in as, bs (float4 reads)
#if WM % 4 == 0
#define LOAD_AR(AR, P) _Pragma("unroll") for (int u = 0; u < WM; u += 4) { \
        const float4 q = *(__local const float4*)(as + (P) * LA + ROW(u)); \
        AR[u] = q.x; AR[u + 1] = q.y; AR[u + 2] = q.z; AR[u + 3] = q.w; }
#else
#define LOAD_AR(AR, P) _Pragma("unroll") for (int u = 0; u < WM; ++u) AR[u] = as[(P) * LA + ROW(u)];
#endif
#if WN % 4 == 0
#define LOAD_BR(BR, P) _Pragma("unroll") for (int v = 0; v < WN; v += 4) { \
        const float4 q = *(__local const float4*)(bs + (P) * LB + COL(v)); \
        BR[v] = q.x; BR[v + 1] = q.y; BR[v + 2] = q.z; BR[v + 3] = q.w; }
#else
#define LOAD_BR(BR, P) _Pragma("unroll") for (int v = 0; v < WN; ++v) BR[v] = bs[(P) * LB + COL(v)];
#endif
// acc += AR (column) x BR (row): WM x WN FMAs
#define FMAS(AR, BR) _Pragma("unroll") for (int u = 0; u < WM; ++u) \
        _Pragma("unroll") for (int v = 0; v < WN; ++v) acc[u][v] += AR[u] * BR[v];

#include "_gemm_epilogue.cl"   // write_c: the shared write-out (bias, ReLU)

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

#ifndef GATHER_A   // cl/implicit_conv.cl brings its own fetch and stash
// quad l of the A slab at k-offset p0 of entry a; rows past m, k read as 0
// (ta: A is stored transposed; a constant at every call site, so each is compiled for one layout)
inline float4 fetch_a(__global const float* a, const int lda, const int m, const int k, const int row0,
                      const int p0, const int l, const int ta)
{
    if (ta) {   // stored (k, m): quads run along i
        const int gp = p0 + l / (TM / 4), gi = row0 + (l % (TM / 4)) * 4;
        return load_quad(a + gp * lda + gi, gp < k ? clamp(m - gi, 0, 4) : 0, VEC_A);
    }
    const int gi = row0 + l / (TK / 4), gp = p0 + (l % (TK / 4)) * 4;   // stored (m, k): quads run along p
    return load_quad(a + gi * lda + gp, gi < m ? clamp(k - gp, 0, 4) : 0, VEC_A);
}

// quad l of an A slab -> as (TK x LA, k-major)
inline void stash_a(__local float* as, const int l, const float4 v, const int ta)
{
    if (ta) {
        *(__local float4*)(as + (l / (TM / 4)) * LA + (l % (TM / 4)) * 4) = v;
        return;
    }
    __local float* d = as + (l % (TK / 4)) * 4 * LA + l / (TK / 4);
    d[0] = v.x; d[LA] = v.y; d[2 * LA] = v.z; d[3 * LA] = v.w;
}
#endif

#ifndef GATHER_B
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
#endif

// this work-item's quads of the fetched slab (ra, rb) -> local buffer BUF
#define STASH(BUF) do { \
        _Pragma("unroll") for (int t = 0; t < QA; ++t) \
            if (A_QUADS % NT == 0 || lid + t * NT < A_QUADS) stash_a(As[BUF], lid + t * NT, ra[t], ta); \
        _Pragma("unroll") for (int t = 0; t < QB; ++t) \
            if (B_QUADS % NT == 0 || lid + t * NT < B_QUADS) stash_b(Bs[BUF], lid + t * NT, rb[t]); \
    } while (0)

// One work-group's C tile (rows row0.., columns col0..) of the GEMM above; ta: A is stored transposed (a constant
// at each call); sum_rows: this work-group adds the row sums (SUM_A, tile column 0); As, Bs: the kernel's slabs.
inline void gemm_tile(const int m, const int n, const int k, const float alpha, const float beta,
                      __global const float* restrict A, const int a_off, const int lda, const int stride_a,
                      __global const float* restrict B, const int b_off, const int ldb, const int stride_b,
                      __global float* restrict C, const int c_off, const int ldc, const int stride_c,
                      const int nloop, const int nbatch, __global const float* restrict bias, const int bias_mode,
                      const int relu, const int ta, const int row0, const int sum_rows,
                      __local float (*As)[TK * LA], __local float (*Bs)[TK * LB])
{
    const int lid = get_local_id(1) * NTX + get_local_id(0);
#if WX
    const int lane = lid % 32, w = lid / 32;
    const int tx = (w % (NTX / WX)) * WX + lane % WX, ty = (w / (NTX / WX)) * (32 / WX) + lane / WX;
#else
    const int tx = get_local_id(0), ty = get_local_id(1);
#endif
    const int col0 = get_group_id(0) * TN, z = get_global_id(2);
    const int nslab = (min(z * nloop + nloop, nbatch) - z * nloop) * ((k + TK - 1) / TK);
    float acc[WM][WN];
#pragma unroll
    for (int u = 0; u < WM; ++u)
#pragma unroll
        for (int v = 0; v < WN; ++v)
            acc[u][v] = 0.0f;
#if SUM_A
    const bool sums = sum_rows && tx == 0;
    float rs[WM];
#pragma unroll
    for (int u = 0; u < WM; ++u)
        rs[u] = 0.0f;
#define ROWSUM(AR) if (sums) { _Pragma("unroll") for (int u = 0; u < WM; ++u) rs[u] += AR[u]; }
#else
#define ROWSUM(AR)
#endif
    float4 ra[QA], rb[QB];
    int e = z * nloop, p0 = 0;   // the next slab to fetch: entry e, k-offset p0

    // iteration s: fetch slab s (global -> registers), multiply slab s-1 (local buffer (s-1)&1), stash slab s
    // into buffer s&1 (which nobody reads since the previous barrier; after step ST of the multiply when ST), barrier.
    for (int s = 0; s <= nslab; ++s) {
        if (s < nslab) {
            __global const float* a = A + a_off + e * stride_a;
            __global const float* b = B + b_off + e * stride_b;
#pragma unroll
            for (int t = 0; t < QA; ++t)
                if (A_QUADS % NT == 0 || lid + t * NT < A_QUADS)
                    ra[t] = fetch_a(a, lda, m, k, row0, p0, lid + t * NT, ta);
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
#if FB
            float ar[2][WM], br[2][WN];   // slot p&1: step p's fragments, slot (p+1)&1 being loaded
            LOAD_AR(ar[0], 0)
            LOAD_BR(br[0], 0)
#endif
#pragma unroll
            for (int p = 0; p < TK; ++p) {
#if FB
                if (p + 1 < TK) {
                    LOAD_AR(ar[(p + 1) & 1], p + 1)
                    LOAD_BR(br[(p + 1) & 1], p + 1)
                }
                FMAS(ar[p & 1], br[p & 1])
                ROWSUM(ar[p & 1])
#else
                float ar[WM], br[WN];
                LOAD_AR(ar, p)
                LOAD_BR(br, p)
                FMAS(ar, br)
                ROWSUM(ar)
#endif
#if ST
                if (p + 1 == ST && s < nslab) STASH(s & 1);
#endif
            }
        }
#if ST   // slab s was stashed during the multiply of slab s-1, except slab 0 (nothing to multiply yet)
        if (s == 0 && nslab > 0) STASH(0);
#else
        if (s < nslab) STASH(s & 1);
#endif
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
#if SUM_A
    if (sums) {
        __global float* row_sums = (__global float*)bias;
#pragma unroll
        for (int u = 0; u < WM; ++u) {
            const int i = row0 + ROW(u);
            if (i < m) row_sums[i] = (beta != 0.0f ? beta * row_sums[i] : 0.0f) + rs[u];
        }
    }
#endif
}

#ifndef GEMM_TILE_ONLY   // cl/dense.cl brings its own kernel around gemm_tile
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
    gemm_tile(m, n, k, alpha, beta, A, a_off, lda, stride_a, B, b_off, ldb, stride_b, C, c_off, ldc, stride_c,
              nloop, nbatch, bias, bias_mode, relu, TRANS_A, get_group_id(1) * TM, get_group_id(0) == 0, As, Bs);
}
#endif
