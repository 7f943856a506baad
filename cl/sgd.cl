// sgd_update: PyTorch's SGD step (torch.optim.SGD, dampening 0), elementwise over `size` parameters.

// param, grad, velocity: (size,); hyper: (3,) = [lr, momentum, weight_decay], read from the device so a recorded
// step replays with the current learning rate. g = grad + wd*param; then while momentum != 0:
// v = momentum*v + g and g = v (nesterov: g = g + momentum*v); param -= lr*g
// (momentum == 0: velocity is not touched and param -= lr*g)
__kernel void sgd_update(__global float* restrict param, __global const float* restrict grad,
                         __global float* restrict velocity, __global const float* restrict hyper, const int size,
                         const int nesterov)
{
    const int i = get_global_id(0);
    if (i >= size) return;
    const float lr = hyper[0], momentum = hyper[1], weight_decay = hyper[2];
    const float p = param[i];
    float g = grad[i] + weight_decay * p;
    if (momentum != 0.0f) {
        const float v = momentum * velocity[i] + g;
        velocity[i] = v;
        g = nesterov ? g + momentum * v : v;
    }
    param[i] = p - lr * g;
}
