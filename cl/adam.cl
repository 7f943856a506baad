// adam_update: PyTorch's Adam and AdamW step (torch.optim.Adam / AdamW, amsgrad off), elementwise over `size`.

// param, grad, exp_avg, exp_avg_sq: (size,); hyper: (10,) = [lr, beta1, beta2, eps, weight_decay, step,
// step_size, bias_correction2_sqrt, 1 - beta1, 1 - beta2], written by the host before each step (step_size =
// lr / (1 - beta1^step), bias_correction2_sqrt = sqrt(1 - beta2^step), 1 - beta in float64 as torch: 1 - 0.999f
// in float32 is 1.3e-5 off), so a recorded step replays with the current step count.
// decoupled == 0 (Adam): g = grad + wd*param;  decoupled == 1 (AdamW): param *= 1 - lr*wd, g = grad.
// m = m + (1 - beta1)*(g - m); v = beta2*v + (1 - beta2)*g*g; param -= step_size * m / (sqrt(v)/bc2_sqrt + eps)
__kernel void adam_update(__global float* restrict param, __global const float* restrict grad,
                          __global float* restrict exp_avg, __global float* restrict exp_avg_sq,
                          __global const float* restrict hyper, const int size, const int decoupled)
{
    const int i = get_global_id(0);
    if (i >= size) return;
    const float lr = hyper[0], beta2 = hyper[2], eps = hyper[3], weight_decay = hyper[4];
    const float step_size = hyper[6], bc2_sqrt = hyper[7], one_minus_beta1 = hyper[8], one_minus_beta2 = hyper[9];
    float p = param[i], g = grad[i];
    if (decoupled) p *= 1.0f - lr * weight_decay;
    else g += weight_decay * p;
    const float m0 = exp_avg[i];
    const float m = m0 + one_minus_beta1 * (g - m0);
    const float v = beta2 * exp_avg_sq[i] + one_minus_beta2 * g * g;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    param[i] = p - step_size * (m / (sqrt(v) / bc2_sqrt + eps));
}
