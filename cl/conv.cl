// conv_forward / conv_backward: the direct convolution (no unrolled buffer), bias + ReLU + max-pooling in the
// forward's write-out, the pool's and the ReLU's backward and the bias gradient in the backward's passes.
// Semantics: base.Backend.conv_forward / conv_backward; x (N, C, H, W), weight (M, C, K, K), conv (N, M, Ho, Wo).

// ---- conv_forward ---------------------------------------------------------------------------------------

// ---- end of conv_forward --------------------------------------------------------------------------------


// ---- conv_backward --------------------------------------------------------------------------------------

// ---- end of conv_backward -------------------------------------------------------------------------------
