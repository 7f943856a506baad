// Not an op (a helper of the gemm family): the write-out every GEMM kernel shares (cl/gemm.cl, cl/gemm_vec.cl pull
// it in with #include "_gemm_epilogue.cl", expanded by the host loader so the disk cache key covers it). No kernels.

// c[i, j] = epilogue(alpha*acc + beta*c[i, j]); c is the C_b block, (i, j) inside it; bias_mode 0 none,
// 1 bias[i] (per row), 2 bias[j] (per column); then ReLU when relu == 1; relu == 2 (bias_mode 0, a dense C at
// c_off 0): bias is a ReLU's output y shaped like C, and r is cut to 0 where y <= 0 (relu_backward's rule: a NaN
// passes). beta == 0 never reads C.
inline void write_c(__global float* c, const int ldc, const int i, const int j, const float acc, const float alpha,
                    const float beta, __global const float* bias, const int bias_mode, const int relu)
{
    float r = alpha * acc;
    if (beta != 0.0f) r += beta * c[i * ldc + j];
    if (bias_mode == 1) r += bias[i];
    else if (bias_mode == 2) r += bias[j];
    if (relu == 1 && r < 0.0f) r = 0.0f;   // relu_forward's rule: NaN and -0.0 pass
    else if (relu == 2 && bias[i * ldc + j] <= 0.0f) r = 0.0f;
    c[i * ldc + j] = r;
}
