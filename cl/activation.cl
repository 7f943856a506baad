// relu_* / sigmoid_*: elementwise activations and their gradients over `size` elements (in-place safe).

// x: (size,) -> y: (size,) = 0 where x < 0 else x: NaN and -0.0 pass through as in PyTorch (fmax would drop NaN)
__kernel void relu_forward(__global const float* x, __global float* y, const int size)
{
    const int i = get_global_id(0);
    if (i < size) { const float v = x[i]; y[i] = v < 0.0f ? 0.0f : v; }
}

// y, dy: (size,) -> dx: (size,) = 0 where y <= 0 else dy (a NaN output passes dy, as PyTorch's threshold_backward)
__kernel void relu_backward(__global const float* y, __global const float* dy, __global float* dx,
                            const int size)
{
    const int i = get_global_id(0);
    if (i < size) dx[i] = y[i] <= 0.0f ? 0.0f : dy[i];
}

// x: (size,) -> y: (size,) = 1/(1+exp(-x)), branch on sign so exp never overflows
__kernel void sigmoid_forward(__global const float* x, __global float* y, const int size)
{
    const int i = get_global_id(0);
    if (i >= size) return;
    const float v = x[i];
    if (v >= 0.0f) {
        y[i] = 1.0f / (1.0f + exp(-v));
    } else {
        const float e = exp(v);
        y[i] = e / (1.0f + e);
    }
}

// y, dy: (size,) -> dx: (size,) = dy * y * (1 - y)
__kernel void sigmoid_backward(__global const float* y, __global const float* dy, __global float* dx,
                               const int size)
{
    const int i = get_global_id(0);
    if (i < size) dx[i] = dy[i] * y[i] * (1.0f - y[i]);
}

// x: (size,) -> y: (size,) = tanh(x)
__kernel void tanh_forward(__global const float* x, __global float* y, const int size)
{
    const int i = get_global_id(0);
    if (i < size) y[i] = tanh(x[i]);
}

// y, dy: (size,) -> dx: (size,) = dy * (1 - y^2)
__kernel void tanh_backward(__global const float* y, __global const float* dy, __global float* dx, const int size)
{
    const int i = get_global_id(0);
    if (i < size) dx[i] = dy[i] * (1.0f - y[i] * y[i]);
}

// a, b: (size,) -> y: (size,) = a + b (a residual block's sum; y may be a or b)
__kernel void add(__global const float* a, __global const float* b, __global float* y, const int size)
{
    const int i = get_global_id(0);
    if (i < size) y[i] = a[i] + b[i];
}
