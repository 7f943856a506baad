// gemm: row-major strided-batched C = alpha*op(A)@op(B) + beta*C with a fused bias + ReLU write-out. Three
// variants of one kernel `gemm`, picked at build time by -D VARIANT (0 naive, 1 local, 2 blocked); the fast one,
// "vec", is cl/gemm_vec.cl (same interface). gemm_reduce (below) sums split-K partials for all of them.
// A: (m, k) [or (k, m) when TRANS_A] row stride lda; B: (k, n) [or (n, k) when TRANS_B] row stride ldb;
// C: (m, n) row stride ldc. Work-item z sums batch entries z*nloop .. min(z*nloop + nloop, nbatch) - 1 (entry e
// starts at *_off + e*stride_*) before its single write-out to C + c_off + z*stride_c: nloop = 1 is the plain
// batched GEMM; nloop = nbatch with one z is the batch-reduce; in between, split-K partials that gemm_reduce adds.
// Write-out: r = alpha*acc + beta*C (C unread when beta == 0); bias_mode 1 adds bias[i] (per row, length m),
// 2 adds bias[j] (per column, length n), 0 none (bias is then a dummy buffer); relu != 0 stores max(r, 0).
// Every variant: a TM x TN C tile per work-group of (TN/WN, TM/WM) work-items, WM x WN outputs each;
// NDRange = (ceil(n/TN)*TN/WN, ceil(m/TM)*TM/WM, number of z). Same signature in every variant (the host
// reads the argument types from the first definition). VARIANT -1 builds gemm_reduce alone.
#pragma OPENCL FP_CONTRACT ON
#ifndef VARIANT
#define VARIANT 2
#endif
#ifndef TRANS_A
#define TRANS_A 0
#endif
#ifndef TRANS_B
#define TRANS_B 0
#endif

#if TRANS_A
#define A_AT(i, p) a[(p) * lda + (i)]
#else
#define A_AT(i, p) a[(i) * lda + (p)]
#endif
#if TRANS_B
#define B_AT(p, j) b[(j) * ldb + (p)]
#else
#define B_AT(p, j) b[(p) * ldb + (j)]
#endif

#include "_gemm_epilogue.cl"   // write_c: the shared write-out (bias, ReLU)

#if VARIANT == 0
// naive: one output per work-item read straight from global memory (the textbook baseline).
// Constants: TM x TN = work-group (rows x columns of C), WM = WN = 1.
__kernel __attribute__((reqd_work_group_size(TN, TM, 1)))
void gemm(const int m, const int n, const int k, const float alpha, const float beta,
          __global const float* restrict A, const int a_off, const int lda, const int stride_a,
          __global const float* restrict B, const int b_off, const int ldb, const int stride_b,
          __global float* restrict C, const int c_off, const int ldc, const int stride_c,
          const int nloop, const int nbatch, __global const float* restrict bias, const int bias_mode,
          const int relu)
{
    const int j = get_global_id(0), i = get_global_id(1), z = get_global_id(2);
    if (i >= m || j >= n) return;
    float acc = 0.0f;
    const int e1 = min(z * nloop + nloop, nbatch);
    for (int e = z * nloop; e < e1; ++e) {
        __global const float* a = A + a_off + e * stride_a;
        __global const float* b = B + b_off + e * stride_b;
        for (int p = 0; p < k; ++p)
            acc += A_AT(i, p) * B_AT(p, j);
    }
    write_c(C + c_off + z * stride_c, ldc, i, j, acc, alpha, beta, bias, bias_mode, relu);
}

#elif VARIANT == 1
// local: TS x TS tiles of A and B through local memory, one output per work-item; each work-item loads one element
// of each tile along the matrix's contiguous dimension (coalesced). Constants: TS (TM = TN = TK = TS).
__kernel __attribute__((reqd_work_group_size(TS, TS, 1)))
void gemm(const int m, const int n, const int k, const float alpha, const float beta,
          __global const float* restrict A, const int a_off, const int lda, const int stride_a,
          __global const float* restrict B, const int b_off, const int ldb, const int stride_b,
          __global float* restrict C, const int c_off, const int ldc, const int stride_c,
          const int nloop, const int nbatch, __global const float* restrict bias, const int bias_mode,
          const int relu)
{
    __local float As[TS][TS + 1];   // As[p][i]: +1 keeps the transposed stores conflict-free
    __local float Bs[TS][TS + 1];   // Bs[p][j]
    const int tx = get_local_id(0), ty = get_local_id(1);
    const int row0 = get_group_id(1) * TS, col0 = get_group_id(0) * TS, z = get_global_id(2);
    float acc = 0.0f;
    const int e1 = min(z * nloop + nloop, nbatch);
    for (int e = z * nloop; e < e1; ++e) {
        __global const float* a = A + a_off + e * stride_a;
        __global const float* b = B + b_off + e * stride_b;
        for (int p0 = 0; p0 < k; p0 += TS) {
#if TRANS_A
            As[ty][tx] = (row0 + tx < m && p0 + ty < k) ? A_AT(row0 + tx, p0 + ty) : 0.0f;
#else
            As[tx][ty] = (row0 + ty < m && p0 + tx < k) ? A_AT(row0 + ty, p0 + tx) : 0.0f;
#endif
#if TRANS_B
            Bs[tx][ty] = (p0 + tx < k && col0 + ty < n) ? B_AT(p0 + tx, col0 + ty) : 0.0f;
#else
            Bs[ty][tx] = (p0 + ty < k && col0 + tx < n) ? B_AT(p0 + ty, col0 + tx) : 0.0f;
#endif
            barrier(CLK_LOCAL_MEM_FENCE);
            for (int p = 0; p < TS; ++p)
                acc += As[p][ty] * Bs[p][tx];
            barrier(CLK_LOCAL_MEM_FENCE);
        }
    }
    if (row0 + ty < m && col0 + tx < n)
        write_c(C + c_off + z * stride_c, ldc, row0 + ty, col0 + tx, acc, alpha, beta, bias, bias_mode, relu);
}

#elif VARIANT == 2
// blocked: one local slab pair per k-step, scalar loads, WM x WN outputs per work-item strided by NTY / NTX so
// local reads are conflict-free. Constants: TM, TN, TK, WM, WN.
#define NTX (TN / WN)
#define NTY (TM / WM)
#define NT (NTX * NTY)
__kernel __attribute__((reqd_work_group_size(NTX, NTY, 1)))
void gemm(const int m, const int n, const int k, const float alpha, const float beta,
          __global const float* restrict A, const int a_off, const int lda, const int stride_a,
          __global const float* restrict B, const int b_off, const int ldb, const int stride_b,
          __global float* restrict C, const int c_off, const int ldc, const int stride_c,
          const int nloop, const int nbatch, __global const float* restrict bias, const int bias_mode,
          const int relu)
{
    __local float As[TK][TM + 1];
    __local float Bs[TK][TN + 1];
    const int tx = get_local_id(0), ty = get_local_id(1);
    const int lid = ty * NTX + tx;
    const int row0 = get_group_id(1) * TM, col0 = get_group_id(0) * TN;
    const int z = get_global_id(2);
    float acc[WM][WN];
    for (int u = 0; u < WM; ++u)
        for (int v = 0; v < WN; ++v)
            acc[u][v] = 0.0f;

    const int e1 = min(z * nloop + nloop, nbatch);
    for (int e = z * nloop; e < e1; ++e) {
        __global const float* a = A + a_off + e * stride_a;
        __global const float* b = B + b_off + e * stride_b;
        for (int p0 = 0; p0 < k; p0 += TK) {
            for (int l = lid; l < TM * TK; l += NT) {   // A tile (TM x TK), contiguous-in-memory index fastest
#if TRANS_A
                const int i = l % TM, p = l / TM;
#else
                const int p = l % TK, i = l / TK;
#endif
                const int gi = row0 + i, gp = p0 + p;
                As[p][i] = (gi < m && gp < k) ? A_AT(gi, gp) : 0.0f;
            }
            for (int l = lid; l < TK * TN; l += NT) {   // B tile (TK x TN)
#if TRANS_B
                const int p = l % TK, j = l / TK;
#else
                const int j = l % TN, p = l / TN;
#endif
                const int gp = p0 + p, gj = col0 + j;
                Bs[p][j] = (gp < k && gj < n) ? B_AT(gp, gj) : 0.0f;
            }
            barrier(CLK_LOCAL_MEM_FENCE);
            for (int p = 0; p < TK; ++p) {
                float ar[WM], br[WN];
                for (int u = 0; u < WM; ++u) ar[u] = As[p][ty + u * NTY];
                for (int v = 0; v < WN; ++v) br[v] = Bs[p][tx + v * NTX];
                for (int u = 0; u < WM; ++u)
                    for (int v = 0; v < WN; ++v)
                        acc[u][v] += ar[u] * br[v];
            }
            barrier(CLK_LOCAL_MEM_FENCE);
        }
    }

    __global float* c = C + c_off + z * stride_c;
    for (int u = 0; u < WM; ++u) {
        const int i = row0 + ty + u * NTY;
        if (i >= m) break;
        for (int v = 0; v < WN; ++v) {
            const int j = col0 + tx + v * NTX;
            if (j < n) write_c(c, ldc, i, j, acc[u][v], alpha, beta, bias, bias_mode, relu);
        }
    }
}

#endif

// gemm_reduce: C = epilogue(alpha * sum_s P[s] + beta * C), summing split-K partials in a fixed order
// (deterministic). P: (splits, m, n) dense; C: (m, n) row stride ldc at c_off; one work-item per output element.
__kernel void gemm_reduce(const int m, const int n, const int splits, const float alpha, const float beta,
                          __global const float* restrict P, __global float* restrict C, const int c_off,
                          const int ldc, __global const float* restrict bias, const int bias_mode, const int relu)
{
    const int gid = get_global_id(0);
    if (gid >= m * n) return;
    float s = 0.0f;
    for (int q = 0; q < splits; ++q)
        s += P[q * m * n + gid];
    write_c(C + c_off, ldc, gid / n, gid % n, s, alpha, beta, bias, bias_mode, relu);
}
