// dense_backward: a dense layer's three gradients in one launch, as two GEMMs side by side (cl/gemm_vec.cl's
// gemm_tile, one tile config and one TK-slab pipeline for both):
//   work-group rows [0, tiles1):  grad_weight (out, in) = beta*grad_weight + dy^T @ x   (k = n, A = dy stored (n, out))
//                                 grad_bias (out) = beta*grad_bias + sum_n dy[n, :]      (SUM_A, tile column 0)
//   the rows after them:          dx (n, in) = dy @ weight                               (k = out), then 0 where
//                                 x <= 0 when relu_mask (x is a ReLU's output: relu_backward's rule, a NaN passes)
// All dense and row-major: dy (n, out), x and dx (n, in), weight and grad_weight (out, in). beta == 0 never reads
// the gradients. Constants: cl/gemm_vec.cl's tile constants, TRANS_B = 0, VEC_A (out % 4 == 0), VEC_B (in % 4 == 0).
// NDRange = (ceil(in/TN)*TN/WN, (tiles1 + ceil(n/TM))*TM/WM), tiles1 = ceil(out/TM).
#define GEMM_TILE_ONLY
#define SUM_A 1
#include "gemm_vec.cl"

__kernel __attribute__((reqd_work_group_size(NTX, NTY, 1)))
void dense_backward(const int n, const int in_features, const int out_features, const float beta,
                    __global const float* restrict dy, __global const float* restrict x,
                    __global const float* restrict weight, __global float* restrict grad_weight,
                    __global float* restrict grad_bias, __global float* restrict dx, const int relu_mask,
                    const int tiles1)
{
    __local float As[2][TK * LA] __attribute__((aligned(16)));
    __local float Bs[2][TK * LB] __attribute__((aligned(16)));
    const int g = get_group_id(1);
    if (g < tiles1)   // the weight and bias gradients
        gemm_tile(out_features, in_features, n, 1.0f, beta, dy, 0, out_features, 0, x, 0, in_features, 0,
                  grad_weight, 0, in_features, 0, 1, 1, grad_bias, 0, 0, 1, g * TM, get_group_id(0) == 0, As, Bs);
    else              // the input gradient
        gemm_tile(n, in_features, out_features, 1.0f, 0.0f, dy, 0, out_features, 0, weight, 0, in_features, 0,
                  dx, 0, in_features, 0, 1, 1, x, 0, relu_mask ? 2 : 0, 0, (g - tiles1) * TM, 0, As, Bs);
}
