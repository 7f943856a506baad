// The work-group and slab sizes of cl/gemm_vec.cl from its tile constants (TM, TN, TK, WM, WN).
#ifndef GEMM_VEC_SLABS
#define GEMM_VEC_SLABS
#define NTX (TN / WN)
#define NTY (TM / WM)
#define NT (NTX * NTY)
#define LA (TM + 4)                  // local row lengths
#define LB (TN + 4)
#define A_QUADS (TM * TK / 4)        // quads per slab, and per work-item
#define B_QUADS (TK * TN / 4)
#define QA ((A_QUADS + NT - 1) / NT)
#define QB ((B_QUADS + NT - 1) / NT)
#endif
