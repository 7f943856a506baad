// batchnorm_*: batch normalisation over (N, C, inner), PyTorch's nn.BatchNorm semantics (cpu/batchnorm.py has
// the formulas). M = N*inner values per channel. Build constant: WG = work-group size of the per-channel
// reductions (a power of two); one work-group per channel, fixed-order strided sums then a local tree
// (deterministic, no atomics).

// The loops over one channel's flattened positions idx (n*inner + t) step by WG and keep (n, t) up to date, with
// a division only when a step passes the end of a row: element (n, ch, t) is at (n*c + ch)*inner + t.
#define ADVANCE(nn, t) do { t += WG; if (t >= inner) { nn += t / inner; t %= inner; } } while (0)

// The sum of v over the work-group (every work-item gets it); red: WG floats of local memory.
static float wg_sum(__local float* red, const float v)
{
    const int lid = get_local_id(0);
    barrier(CLK_LOCAL_MEM_FENCE);   // the previous call's readers are done with red
    red[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int step = WG / 2; step > 0; step >>= 1) {
        if (lid < step) red[lid] += red[lid + step];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    return red[0];
}

// x: (N, C, inner) -> smean, sinv: (C,) the mean and 1/sqrt(var + eps) used to normalise. training != 0: the
// batch's (two passes, biased variance), and rmean/rvar updated with momentum (unbiased variance); else the
// running statistics. One work-group of WG per channel (group id 0).
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void batchnorm_stats(__global const float* restrict x, __global float* restrict rmean,
                     __global float* restrict rvar, __global float* restrict smean, __global float* restrict sinv,
                     const int n, const int c, const int inner, const float eps, const float momentum,
                     const int training)
{
    __local float red[WG];
    const int lid = get_local_id(0), ch = get_group_id(0), count = n * inner;
    if (!training) {
        if (lid == 0) {
            smean[ch] = rmean[ch];
            sinv[ch] = 1.0f / sqrt(rvar[ch] + eps);
        }
        return;
    }
    float acc = 0.0f;
    for (int idx = lid, nn = lid / inner, t = lid % inner; idx < count; idx += WG) {
        acc += x[(nn * c + ch) * inner + t];
        ADVANCE(nn, t);
    }
    const float mean = wg_sum(red, acc) / (float)count;
    acc = 0.0f;
    for (int idx = lid, nn = lid / inner, t = lid % inner; idx < count; idx += WG) {
        const float d = x[(nn * c + ch) * inner + t] - mean;
        acc += d * d;
        ADVANCE(nn, t);
    }
    const float q = wg_sum(red, acc);
    if (lid == 0) {
        const float var = q / (float)count;
        smean[ch] = mean;
        sinv[ch] = 1.0f / sqrt(var + eps);
        rmean[ch] = (1.0f - momentum) * rmean[ch] + momentum * mean;
        rvar[ch] = (1.0f - momentum) * rvar[ch] + momentum * (count > 1 ? q / (float)(count - 1) : var);
    }
}

// The split form of batchnorm_stats for big batches (GPUs): work-group (s, ch) reduces the flattened (n, i) range
// [s*chunk, min((s+1)*chunk, M)) of channel ch to part[(ch*S + s)*3 ..] = (count, mean, M2) (two passes over its
// chunk: the mean, then the sum of squared deviations from it). Grid (S*WG, C).
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void batchnorm_stats_partial(__global const float* restrict x, __global float* restrict part, const int n,
                             const int c, const int inner, const int chunk)
{
    __local float red[WG];
    const int lid = get_local_id(0), ch = get_group_id(1), s = get_group_id(0), S = get_num_groups(0);
    const int start = s * chunk, end = min(start + chunk, n * inner);
    const int first = start + lid;
    float acc = 0.0f;
    for (int idx = first, nn = first / inner, t = first % inner; idx < end; idx += WG) {
        acc += x[(nn * c + ch) * inner + t];
        ADVANCE(nn, t);
    }
    const float cnt = (float)(end - start);   // >= 1: the host makes every chunk non-empty
    const float mean = wg_sum(red, acc) / cnt;
    acc = 0.0f;
    for (int idx = first, nn = first / inner, t = first % inner; idx < end; idx += WG) {
        const float d = x[(nn * c + ch) * inner + t] - mean;
        acc += d * d;
        ADVANCE(nn, t);
    }
    const float m2 = wg_sum(red, acc);
    if (lid == 0) {
        part[(ch * S + s) * 3] = cnt;
        part[(ch * S + s) * 3 + 1] = mean;
        part[(ch * S + s) * 3 + 2] = m2;
    }
}

// part: (C, S, 3) -> smean, sinv and the running statistics as batchnorm_stats (training); the S partial
// (count, mean, M2) combined in order by Chan, Golub & LeVeque's pairwise update ("Updating formulae and a
// pairwise algorithm for computing sample variances", 1979). One work-item per channel.
__kernel void batchnorm_stats_final(__global const float* restrict part, __global float* restrict rmean,
                                    __global float* restrict rvar, __global float* restrict smean,
                                    __global float* restrict sinv, const int c, const int S, const float eps,
                                    const float momentum)
{
    const int ch = get_global_id(0);
    if (ch >= c) return;
    float na = 0.0f, mean = 0.0f, m2 = 0.0f;
    for (int s = 0; s < S; ++s) {
        const float nb = part[(ch * S + s) * 3];
        if (nb == 0.0f) continue;
        const float delta = part[(ch * S + s) * 3 + 1] - mean, nab = na + nb;
        mean += delta * (nb / nab);
        m2 += part[(ch * S + s) * 3 + 2] + delta * delta * (na * nb / nab);
        na = nab;
    }
    const float var = m2 / na;
    smean[ch] = mean;
    sinv[ch] = 1.0f / sqrt(var + eps);
    rmean[ch] = (1.0f - momentum) * rmean[ch] + momentum * mean;
    rvar[ch] = (1.0f - momentum) * rvar[ch] + momentum * (na > 1.0f ? m2 / (na - 1.0f) : var);
}

// x: (N, C, inner) -> y = (x - smean[c]) * (sinv[c] * w[c]) + b[c], then with relu != 0 max(y, 0) keeping NaN
// and -0.0 (relu_forward's rule). 2-D range (>= inner, >= rows = N*C): dimension 0 runs along a row, dimension 1
// over the (n, c) rows, so the channel is one division per work-item's row, not per element.
__kernel void batchnorm_apply(__global const float* restrict x, __global float* restrict y,
                              __global const float* restrict w, __global const float* restrict b,
                              __global const float* restrict smean, __global const float* restrict sinv,
                              const int c, const int inner, const int rows, const int relu)
{
    const int t = get_global_id(0), row = get_global_id(1);
    if (t >= inner || row >= rows) return;
    const int ch = row % c, i = row * inner + t;
    const float v = (x[i] - smean[ch]) * (sinv[ch] * w[ch]) + b[ch];
    y[i] = (relu && v < 0.0f) ? 0.0f : v;
}

// The backward kernels read dy through DY(i): with masked != 0, 0 where the fused ReLU's output y <= 0
// (relu_backward's rule: a NaN output passes dy).
#define DY(i) ((masked && y[i] <= 0.0f) ? 0.0f : dy[i])

// x, dy: (N, C, inner) -> sums: (2, C) = [sum(dy), sum(dy * xhat)] per channel, xhat = (x - smean)*sinv;
// dw = beta*dw + sum(dy*xhat), db = beta*db + sum(dy) (beta == 0 does not read them). One work-group per channel.
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void batchnorm_backward_reduce(__global const float* restrict x, __global const float* restrict dy,
                               __global const float* restrict y, __global const float* restrict smean,
                               __global const float* restrict sinv, __global float* restrict sums,
                               __global float* restrict dw, __global float* restrict db, const int n, const int c,
                               const int inner, const float beta, const int masked)
{
    __local float red[WG];
    const int lid = get_local_id(0), ch = get_group_id(0), count = n * inner;
    const float mean = smean[ch], inv = sinv[ch];
    float a = 0.0f, bx = 0.0f;
    for (int idx = lid, nn = lid / inner, t = lid % inner; idx < count; idx += WG) {
        const int i = (nn * c + ch) * inner + t;
        const float g = DY(i);
        a += g;
        bx += g * ((x[i] - mean) * inv);
        ADVANCE(nn, t);
    }
    const float sdy = wg_sum(red, a);
    const float sdyx = wg_sum(red, bx);
    if (lid == 0) {
        sums[ch] = sdy;
        sums[c + ch] = sdyx;
        dw[ch] = (beta != 0.0f ? beta * dw[ch] : 0.0f) + sdyx;
        db[ch] = (beta != 0.0f ? beta * db[ch] : 0.0f) + sdy;
    }
}

// The split form of batchnorm_backward_reduce (GPUs): work-group (s, ch) sums its chunk of channel ch to
// part[(ch*S + s)*2 ..] = (sum(dy), sum(dy*xhat)); grid (S*WG, C). batchnorm_backward_final adds them in order.
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void batchnorm_backward_partial(__global const float* restrict x, __global const float* restrict dy,
                                __global const float* restrict y, __global const float* restrict smean,
                                __global const float* restrict sinv, __global float* restrict part, const int n,
                                const int c, const int inner, const int chunk, const int masked)
{
    __local float red[WG];
    const int lid = get_local_id(0), ch = get_group_id(1), s = get_group_id(0), S = get_num_groups(0);
    const int end = min((s + 1) * chunk, n * inner);
    const float mean = smean[ch], inv = sinv[ch];
    float a = 0.0f, bx = 0.0f;
    const int first = s * chunk + lid;
    for (int idx = first, nn = first / inner, t = first % inner; idx < end; idx += WG) {
        const int i = (nn * c + ch) * inner + t;
        const float g = DY(i);
        a += g;
        bx += g * ((x[i] - mean) * inv);
        ADVANCE(nn, t);
    }
    const float sa = wg_sum(red, a);
    const float sb = wg_sum(red, bx);
    if (lid == 0) {
        part[(ch * S + s) * 2] = sa;
        part[(ch * S + s) * 2 + 1] = sb;
    }
}

// part: (C, S, 2) -> sums (2, C), dw, db as batchnorm_backward_reduce; one work-item per channel
__kernel void batchnorm_backward_final(__global const float* restrict part, __global float* restrict sums,
                                       __global float* restrict dw, __global float* restrict db, const int c,
                                       const int S, const float beta)
{
    const int ch = get_global_id(0);
    if (ch >= c) return;
    float sdy = 0.0f, sdyx = 0.0f;
    for (int s = 0; s < S; ++s) {
        sdy += part[(ch * S + s) * 2];
        sdyx += part[(ch * S + s) * 2 + 1];
    }
    sums[ch] = sdy;
    sums[c + ch] = sdyx;
    dw[ch] = (beta != 0.0f ? beta * dw[ch] : 0.0f) + sdyx;
    db[ch] = (beta != 0.0f ? beta * db[ch] : 0.0f) + sdy;
}

// dx = w*sinv*(dy - (sum(dy) + xhat*sum(dy*xhat))/M) when training, else w*sinv*dy; 2-D range as
// batchnorm_apply's
__kernel void batchnorm_backward_data(__global const float* restrict x, __global const float* restrict dy,
                                      __global const float* restrict y, __global float* restrict dx,
                                      __global const float* restrict w, __global const float* restrict smean,
                                      __global const float* restrict sinv, __global const float* restrict sums,
                                      const int c, const int inner, const int rows, const int count,
                                      const int training, const int masked)
{
    const int t = get_global_id(0), row = get_global_id(1);
    if (t >= inner || row >= rows) return;
    const int ch = row % c, i = row * inner + t;
    const float inv = sinv[ch];
    float g = DY(i);
    if (training) {
        const float xhat = (x[i] - smean[ch]) * inv;
        g -= (sums[ch] + xhat * sums[c + ch]) / (float)count;
    }
    dx[i] = w[ch] * inv * g;
}

// Batch-norm in eval mode folded into the convolution (or dense layer) before it: for each output channel o,
// s = w[o] / sqrt(rvar[o] + eps) (as batchnorm_stats then batchnorm_apply scale), and
// fweight[o, :] = weight[o, :] * s (inner = C*k*k values per channel), fbias[o] = (bias[o] - rmean[o]) * s + b[o].
// One work-item per weight element; the first of each channel also writes its bias.
__kernel void batchnorm_fold(__global const float* restrict weight, __global const float* restrict bias,
                             __global const float* restrict w, __global const float* restrict b,
                             __global const float* restrict rmean, __global const float* restrict rvar,
                             __global float* restrict fweight, __global float* restrict fbias, const int inner,
                             const int size, const float eps)
{
    const int i = get_global_id(0);
    if (i >= size) return;
    const int o = i / inner;
    const float s = (1.0f / sqrt(rvar[o] + eps)) * w[o];
    fweight[i] = weight[i] * s;
    if (i == o * inner) fbias[o] = (bias[o] - rmean[o]) * s + b[o];
}
