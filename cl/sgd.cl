// sgd_update: PyTorch's SGD step (dampening 0, no Nesterov), elementwise over `size` parameters.

// param, grad, velocity: (size,); hyper: (3,) = [lr, momentum, weight_decay], read from the device so a recorded
// step replays with the current learning rate. g = grad + wd*param; v = momentum*v + g; param -= lr*v
// (momentum == 0: velocity is not touched and param -= lr*g)
__kernel void sgd_update(__global float* restrict param, __global const float* restrict grad,
                         __global float* restrict velocity, __global const float* restrict hyper, const int size)
{
    const int i = get_global_id(0);
    if (i >= size) return;
    const float lr = hyper[0], momentum = hyper[1], weight_decay = hyper[2];
    const float p = param[i];
    float g = grad[i] + weight_decay * p;
    if (momentum != 0.0f) {
        g = momentum * velocity[i] + g;
        velocity[i] = g;
    }
    param[i] = p - lr * g;
}
