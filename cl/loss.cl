// softmax_xent_* / sigmoid_bce_*: losses (mean over the batch into a (1,) buffer) and their logit gradients.
// Build constant: WG = work-group size of the forward kernels (a power of two); they run as ONE work-group:
// work-item l handles rows l, l+WG, ... then a local tree reduction sums the row losses (deterministic).

// sum part[0 .. WG) into part[0]; every work-item must call it
inline void tree_sum(__local float* part, const int lid)
{
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int step = WG / 2; step > 0; step >>= 1) {
        if (lid < step) part[lid] += part[lid + step];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
}

// logits: (N, C), labels: int (N,) -> probs: (N, C) softmax, loss: (1,) = mean(logsumexp - (1-eps)*logit[label]
// - eps*mean_j logit[j]) (+= when accumulate); eps = smoothing, torch.nn.CrossEntropyLoss(label_smoothing=eps);
// grad != 0: dlogits (N, C) = (probs - y) / N as well, y = (1-eps)*onehot(labels) + eps/C
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void softmax_xent_forward(__global const float* restrict logits, __global const int* restrict labels,
                          __global float* probs, __global float* restrict loss, __global float* dlogits,
                          const int grad, const int n, const int c, const int accumulate, const float smoothing)
{
    __local float part[WG];
    const int lid = get_local_id(0);
    float s = 0.0f;
    for (int row = lid; row < n; row += WG) {
        __global const float* z = logits + row * c;
        __global float* p = probs + row * c;
        float mx = z[0];
        for (int j = 1; j < c; ++j) mx = (z[j] > mx || isnan(z[j])) ? z[j] : mx;   // NaN wins (fmax drops it)
        float se = 0.0f, sz = 0.0f;
        for (int j = 0; j < c; ++j) { const float e = exp(z[j] - mx); p[j] = e; se += e; sz += z[j] - mx; }
        const float inv = 1.0f / se;
        for (int j = 0; j < c; ++j) p[j] *= inv;
        if (grad) {
            __global float* d = dlogits + row * c;
            const int lab = labels[row];
            for (int j = 0; j < c; ++j)
                d[j] = (p[j] - ((j == lab ? 1.0f - smoothing : 0.0f) + smoothing / (float)c)) / (float)n;
        }
        s += log(se) - (1.0f - smoothing) * (z[labels[row]] - mx)
             - (smoothing != 0.0f ? smoothing * (sz / (float)c) : 0.0f);   // 0 * -inf logit would be NaN
    }
    part[lid] = s;
    tree_sum(part, lid);
    if (lid == 0) {
        const float mean = part[0] / (float)n;
        loss[0] = accumulate ? loss[0] + mean : mean;
    }
}

// logits: (N, 1), labels: int (N,) in {0,1} -> probs: (N, 1) sigmoid,
// loss: (1,) = mean(max(z,0) - y*z + log1p(exp(-|z|))) (+= when accumulate); grad != 0: dlogits (N, 1) =
// (probs - labels) / N as well
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void sigmoid_bce_forward(__global const float* restrict logits, __global const int* restrict labels,
                         __global float* probs, __global float* restrict loss, __global float* dlogits,
                         const int grad, const int n, const int accumulate)
{
    __local float part[WG];
    const int lid = get_local_id(0);
    float s = 0.0f;
    for (int row = lid; row < n; row += WG) {
        const float z = logits[row];
        const float e = exp(-fabs(z));   // in (0, 1]: never overflows
        const float p = z >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
        probs[row] = p;
        if (grad) dlogits[row] = (p - (float)labels[row]) / (float)n;
        s += (z < 0.0f ? 0.0f : z) - (float)labels[row] * z + log1p(e);   // a NaN z stays NaN (fmax drops it)
    }
    part[lid] = s;
    tree_sum(part, lid);
    if (lid == 0) {
        const float mean = part[0] / (float)n;
        loss[0] = accumulate ? loss[0] + mean : mean;
    }
}
