// bias_add / bias_grad: per-channel bias broadcast over (N, C, inner) and its deterministic two-pass reduction.
// Build constant: WG = work-group size of bias_grad_partial (a power of two).

// y: (N, C, inner) += bias: (C,); total = N*C*inner work-items
__kernel void bias_add(__global float* restrict y, __global const float* restrict bias,
                       const int c, const int inner, const int total)
{
    const int gid = get_global_id(0);
    if (gid >= total) return;
    y[gid] += bias[(gid / inner) % c];
}

// bias_grad_partial: dy: (N, C, inner) -> part: (C, S); part[ch, s] = sum of channel ch over the flattened
// (n, i) range [s*chunk, min((s+1)*chunk, N*inner)). Work-group (ch, s) of WG: fixed-order strided partial
// sums, then a local tree reduction (deterministic, no atomics). final != 0 (S == 1): part is db itself and
// db = beta*db + sum (one launch for small reductions such as a dense layer's).
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void bias_grad_partial(__global const float* restrict dy, __global float* restrict part,
                       const int n, const int c, const int inner, const int chunk, const int final,
                       const float beta)
{
    __local float red[WG];
    const int lid = get_local_id(0), ch = get_group_id(1), s = get_group_id(0), S = get_num_groups(0);
    const int end = min((s + 1) * chunk, n * inner);
    float acc = 0.0f;
    for (int idx = s * chunk + lid; idx < end; idx += WG)
        acc += dy[((idx / inner) * c + ch) * inner + idx % inner];
    red[lid] = acc;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int step = WG / 2; step > 0; step >>= 1) {
        if (lid < step) red[lid] += red[lid + step];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0) {
        if (final) part[ch] = (beta != 0.0f ? beta * part[ch] : 0.0f) + red[0];
        else part[ch * S + s] = red[0];
    }
}

// bias_grad: part: (C, S) -> db: (C,) = beta*db + sum_s part[ch, s] in order; one work-item per channel
__kernel void bias_grad(__global const float* restrict part, __global float* restrict db, const int c,
                        const int S, const float beta)
{
    const int ch = get_global_id(0);
    if (ch >= c) return;
    float acc = 0.0f;
    for (int s = 0; s < S; ++s)
        acc += part[ch * S + s];
    db[ch] = (beta != 0.0f ? beta * db[ch] : 0.0f) + acc;
}
