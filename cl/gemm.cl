// gemm: row-major strided-batched C = alpha*op(A)@op(B) + beta*C, tiled through local memory.
// A: (m, k) [or (k, m) when TRANS_A] row stride lda; B: (k, n) [or (n, k) when TRANS_B] row stride ldb;
// C: (m, n) row stride ldc. Work-item z sums batch entries z*nloop .. min(z*nloop + nloop, nbatch) - 1 (entry e
// starts at *_off + e*stride_*) before its single write-out to C + c_off + z*stride_c: nloop = 1 is the plain
// batched GEMM; nloop = nbatch with one z is the batch-reduce; in between, split-K partial sums that
// gemm_reduce adds up.
// Build constants: TM x TN = C tile per work-group, TK = k-slab held in local memory, WM x WN = outputs per
// work-item (strided by NTY / NTX so local reads are conflict-free), TRANS_A / TRANS_B in {0, 1}.
// Work-group = (TN/WN, TM/WM, 1); NDRange = (ceil(n/TN)*TN/WN, ceil(m/TM)*TM/WM, batch or 1).
#define NTX (TN / WN)
#define NTY (TM / WM)
#define NT (NTX * NTY)

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

__kernel __attribute__((reqd_work_group_size(NTX, NTY, 1)))
void gemm(const int m, const int n, const int k, const float alpha, const float beta,
          __global const float* restrict A, const int a_off, const int lda, const int stride_a,
          __global const float* restrict B, const int b_off, const int ldb, const int stride_b,
          __global float* restrict C, const int c_off, const int ldc, const int stride_c,
          const int nloop, const int nbatch)
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
            if (j < n) {
                float r = alpha * acc[u][v];
                if (beta != 0.0f) r += beta * c[i * ldc + j];   // beta == 0 never reads C
                c[i * ldc + j] = r;
            }
        }
    }
}

// gemm_reduce: C = alpha * sum_s P[s] + beta * C, summing split-K partials in a fixed order (deterministic).
// P: (splits, m, n) dense; C: (m, n) row stride ldc at c_off; one work-item per output element.
__kernel void gemm_reduce(const int m, const int n, const int splits, const float alpha, const float beta,
                          __global const float* restrict P, __global float* restrict C, const int c_off,
                          const int ldc)
{
    const int gid = get_global_id(0);
    if (gid >= m * n) return;
    float s = 0.0f;
    for (int q = 0; q < splits; ++q)
        s += P[q * m * n + gid];
    const int i = gid / n, j = gid % n;
    float r = alpha * s;
    if (beta != 0.0f) r += beta * C[c_off + i * ldc + j];   // beta == 0 never reads C
    C[c_off + i * ldc + j] = r;
}
