// bias_add / bias_grad: per-channel bias broadcast over (N, C, inner) and its deterministic reduction.
// Build constant: WG = work-group size of bias_grad (a power of two).

// y: (N, C, inner) += bias: (C,); total = N*C*inner work-items
__kernel void bias_add(__global float* restrict y, __global const float* restrict bias,
                       const int c, const int inner, const int total)
{
    const int gid = get_global_id(0);
    if (gid >= total) return;
    y[gid] += bias[(gid / inner) % c];
}

// dy: (N, C, inner) -> db: (C,) = beta*db + sum over n, inner; one work-group of WG per channel,
// fixed-order strided partial sums then a local tree reduction (deterministic, no atomics)
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void bias_grad(__global const float* restrict dy, __global float* restrict db,
               const int n, const int c, const int inner, const float beta)
{
    __local float part[WG];
    const int lid = get_local_id(0), ch = get_group_id(0);
    const int count = n * inner;
    float s = 0.0f;
    for (int idx = lid; idx < count; idx += WG)
        s += dy[((idx / inner) * c + ch) * inner + idx % inner];
    part[lid] = s;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int step = WG / 2; step > 0; step >>= 1) {
        if (lid < step) part[lid] += part[lid + step];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0) db[ch] = (beta != 0.0f ? beta * db[ch] : 0.0f) + part[0];
}
