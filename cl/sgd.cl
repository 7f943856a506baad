// sgd_update: PyTorch's SGD step (dampening 0, no Nesterov), elementwise over `size` parameters.

// param, grad, velocity: (size,); g = grad + wd*param; v = momentum*v + g; param -= lr*v
// (momentum == 0: velocity is not touched and param -= lr*g)
__kernel void sgd_update(__global float* restrict param, __global const float* restrict grad,
                         __global float* restrict velocity, const int size, const float lr,
                         const float momentum, const float weight_decay)
{
    const int i = get_global_id(0);
    if (i >= size) return;
    const float p = param[i];
    float g = grad[i] + weight_decay * p;
    if (momentum != 0.0f) {
        g = momentum * velocity[i] + g;
        velocity[i] = g;
    }
    param[i] = p - lr * g;
}
