"""The convolution ops of the Backend interface (base.Backend inherits them): im2col + GEMM's unrolling, the
direct convolution and the implicit-GEMM convolution. Conventions as in base.py's docstring."""
from __future__ import annotations

from abc import ABC, abstractmethod


class ConvOps(ABC):
    """Abstract convolution ops; every backend implements them (the same names in cl/ and cpu/)."""

    # ---- convolution unrolling ---------------------------------------------------------------------------
    @abstractmethod
    def im2col(self, x, cols, n0: int, nb: int, c: int, h: int, w: int, kh: int, kw: int,
               stride: int, pad: int) -> None:
        """x: (N, C, H, W) -> cols: (C*kh*kw, nb*Ho*Wo) for images n0 .. n0+nb-1.

        Ho = (H + 2*pad - kh)//stride + 1, Wo likewise, L = Ho*Wo.
        cols[(ci*kh + i)*kw + j, n*L + oh*Wo + ow] = x[n0+n, ci, oh*stride - pad + i, ow*stride - pad + j]
        (0 outside the image). ``cols`` may be larger than needed: only the first (C*kh*kw)*(nb*L) elements
        are written, as a dense matrix with row stride nb*L.
        """

    @abstractmethod
    def col2im(self, cols, x, n0: int, nb: int, c: int, h: int, w: int, kh: int, kw: int,
               stride: int, pad: int) -> None:
        """The adjoint of im2col: x[n0+n, ci, y, x] = sum of every cols entry that im2col read from it.
        Overwrites (does not accumulate into) images n0 .. n0+nb-1 of x; race-free (gather per pixel)."""

    @abstractmethod
    def conv_backward_data(self, weight, dy, dx, dcols, n0: int, nb: int, m: int, c: int, h: int, w: int,
                           kh: int, kw: int, stride: int, pad: int) -> None:
        """A convolution's input gradient: weight: (M, C*kh*kw), dy: (N, M, Ho*Wo) -> dx: (N, C, H, W).

        For n in n0 .. n0+nb-1: dx[n] = col2im(weight.T @ dy[n]) (the geometry as im2col's), overwritten; other
        images of dx are untouched. dcols: a 1-D scratch of >= (C*kh*kw)*(nb*Ho*Wo) floats the backend may use
        as it likes (contents undefined after). Equal to the batched gemm into dcols as (C*kh*kw, nb*Ho*Wo)
        followed by col2im; a backend may instead unroll one image at a time in cache (numba).
        """

    # ---- direct convolution (cl/conv.cl, cpu/conv.py) ---------------------------------------------------
    @abstractmethod
    def conv_forward(self, x, weight, bias, y, argmax, n: int, c: int, h: int, w: int, m: int, k: int,
                     stride: int, pad: int, relu: bool = False, pool: int = 1) -> None:
        """A direct convolution (no unrolled buffer) with its write-out fused. x: (N, C, H, W), weight:
        (M, C, k, k), bias: (M,) -> the convolution (N, M, Ho, Wo), Ho = (H + 2*pad - k)//stride + 1 (zero padding;
        PyTorch's conv2d), + bias[m], then relu_forward's max(., 0) with ``relu``. pool = 1: y is that (argmax is
        unused and may be None). pool = P >= 2: y: (N, M, Hp, Wp) is its P x P max-pooling with stride P, Hp =
        (Ho - P)//P + 1 (maxpool_forward's rules: the first max of the scan wins, a NaN beats every number, the
        last NaN wins), and argmax: int32 (N, M, Hp, Wp) holds oh*Wo + ow of the max inside its (n, m) plane."""

    @abstractmethod
    def conv_backward(self, x, weight, dy, argmax, y, dweight, dbias, dx, n: int, c: int, h: int, w: int, m: int,
                      k: int, stride: int, pad: int, relu: bool = False, pool: int = 1, beta: float = 0.0) -> None:
        """conv_forward's backward. g: (N, M, Ho, Wo), the gradient at the convolution's output, is dy (pool = 1;
        dy: (N, M, Ho, Wo)) or, pool = P, dy: (N, M, Hp, Wp) routed to each window's argmax (0 elsewhere, and in
        the rows and columns no window covers). With ``relu``, g is 0 where y (conv_forward's output, dy's shape)
        is <= 0 (relu_backward's rule, a NaN passes; exact after the pool: the ReLU's output at the arg-max is
        y). Then dweight: (M, C, k, k) = beta*dweight + sum over n, oh, ow of g * the input window, dbias: (M,) =
        beta*dbias + sum of g, and unless dx is None, dx: (N, C, H, W) = the input gradient (overwritten).
        Deterministic: the same inputs give bit-identical outputs (no atomics)."""

    # ---- implicit-GEMM convolution (cl/implicit_conv.cl, cpu/implicit_conv.py) ----------------------------
    # The im2col path's products with the unrolled operand gathered from x (or dy) inside the GEMM: no workspace.
    # Geometry as conv_forward's: x (N, C, H, W), weight (M, C, k, k), Ho = (H + 2*pad - k)//stride + 1, any
    # stride >= 1 and pad >= 0; ValueError when the output is empty.
    @abstractmethod
    def implicit_conv_forward(self, x, weight, bias, y, n: int, c: int, h: int, w: int, m: int, k: int,
                              stride: int, pad: int, relu: bool = False) -> None:
        """y: (N, M, Ho, Wo) = conv2d(x, weight) + bias[m] (PyTorch's conv2d, zero padding), then relu_forward's
        max(., 0) with ``relu``; conv_forward with pool = 1."""

    @abstractmethod
    def implicit_conv_backward_weight(self, x, dy, dweight, n: int, c: int, h: int, w: int, m: int, k: int,
                                      stride: int, pad: int, beta: float = 0.0) -> None:
        """dy: (N, M, Ho, Wo) -> dweight: (M, C, k, k) = beta*dweight + sum over n, oh, ow of dy * the input
        window (beta == 0 does not read dweight). Deterministic (no atomics)."""

    @abstractmethod
    def implicit_conv_backward_data(self, weight, dy, dx, n: int, c: int, h: int, w: int, m: int, k: int,
                                    stride: int, pad: int) -> None:
        """dy: (N, M, Ho, Wo) -> dx: (N, C, H, W) = the input gradient of conv2d (the adjoint of the forward:
        dx[n, c, ih, iw] = sum of weight[o, c, kh, kw] * dy[n, o, oh, ow] over oh*stride - pad + kh = ih and
        ow*stride - pad + kw = iw), overwritten."""
