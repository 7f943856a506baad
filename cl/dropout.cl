// dropout_* / counter_advance: inverted dropout with the counter-based RNG Philox-4x32-10 (Salmon et al., SC 2011),
// the same integer function as cpu/dropout.py (its docstring has the scheme), so masks are bit-identical on
// every device. Element i of a step: r = philox((i >> 2, step, stream, 0), key)[i & 3], kept when
// (r >> 8) >= threshold; the step is read from the device counter, so a replayed recording draws a fresh mask.

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static uint4 philox4x32_10(uint4 ctr, uint2 key)
{
    for (int r = 0; r < 10; ++r) {
        const uint hi0 = mul_hi(PHILOX_M0, ctr.x), lo0 = PHILOX_M0 * ctr.x;
        const uint hi1 = mul_hi(PHILOX_M1, ctr.z), lo1 = PHILOX_M1 * ctr.z;
        ctr = (uint4)(hi1 ^ ctr.y ^ key.x, lo1, hi0 ^ ctr.w ^ key.y, lo0);
        key += (uint2)(PHILOX_W0, PHILOX_W1);
    }
    return ctr;
}

// x: (size,) -> y, mask: (size,); y = x*scale where kept else 0, mask = scale or 0. One work-item per four
// elements (one Philox call): ceil(size/4) work-items. counter: int32 (1,), the step (read as uint).
__kernel void dropout_forward(__global const float* restrict x, __global float* restrict y,
                              __global float* restrict mask, __global const int* restrict counter,
                              const uint key0, const uint key1, const uint stream, const uint threshold,
                              const float scale, const int size)
{
    const int blk = get_global_id(0);
    if (blk * 4 >= size) return;
    const uint4 r = philox4x32_10((uint4)((uint)blk, (uint)counter[0], stream, 0u), (uint2)(key0, key1));
    const uint words[4] = {r.x, r.y, r.z, r.w};
    for (int j = 0; j < 4; ++j) {
        const int i = blk * 4 + j;
        if (i < size) {
            const int keep = (words[j] >> 8) >= threshold;
            mask[i] = keep ? scale : 0.0f;
            y[i] = keep ? x[i] * scale : 0.0f;
        }
    }
}

// dy, mask: (size,) -> dx = dy * mask
__kernel void dropout_backward(__global const float* restrict dy, __global const float* restrict mask,
                               __global float* restrict dx, const int size)
{
    const int i = get_global_id(0);
    if (i < size) dx[i] = dy[i] * mask[i];
}

// counter[0] += 1 (as uint, wrapping); one work-item
__kernel void counter_advance(__global int* restrict counter)
{
    if (get_global_id(0) == 0) counter[0] = (int)((uint)counter[0] + 1u);
}
