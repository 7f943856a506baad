// weighted_sum: combining the gradients of data-parallel shards, bit-identically on every device that runs it.

// Products are rounded and added left to right with no fused multiply-add, so every replica that sums the same
// parts in the same order gets the same bits (an FMA here on one device and not another would split the replicas).
#pragma OPENCL FP_CONTRACT OFF

// out[i] = (acc ? out[i] : 0) + w0*a0[i] + w1*a1[i] + w2*a2[i] + w3*a3[i], the first `count` (1..4) terms;
// out may be one of a0..a3 (each work-item reads its element before writing it); unused pointers may repeat a0.
__kernel void weighted_sum(__global float* out, __global const float* a0, __global const float* a1,
                           __global const float* a2, __global const float* a3, const float w0, const float w1,
                           const float w2, const float w3, const int count, const int acc, const int size)
{
    const int i = get_global_id(0);
    if (i >= size) return;
    float s = acc ? out[i] : 0.0f;
    float t = w0 * a0[i];
    s = s + t;
    if (count > 1) { t = w1 * a1[i]; s = s + t; }
    if (count > 2) { t = w2 * a2[i]; s = s + t; }
    if (count > 3) { t = w3 * a3[i]; s = s + t; }
    out[i] = s;
}
