"""Layers: thin classes that hold parameters and saved activations, with the maths delegated to Backend ops.

Every layer is written once against the Backend interface: ``forward`` keeps what ``backward`` needs,
``backward`` returns the input gradient (or None when the input needs none) and accumulates parameter gradients.
"""
from __future__ import annotations

import copy
import math

import numpy as np



class Parameter:
    """A trainable tensor: host initial value, then device ``data`` and accumulated ``grad`` after placement.

    A model places all its parameters in one flat data buffer and one flat gradient buffer (``bind``), so zeroing
    the gradients and the optimizer update are one launch each; a layer used alone places its own (``to``).
    """

    def __init__(self, value: np.ndarray):
        self.host = np.array(value, dtype=np.float32, order="C", copy=True)   # its own copy: init() writes in place
        self.shape = self.host.shape
        self.size = self.host.size
        self.data = self.grad = None
        self._backend = None

    def current(self) -> np.ndarray:
        """The value as float32 NumPy: from the device once placed, else the host initial value."""
        return self.host if self.data is None else self._backend.download(self.data).reshape(self.shape)

    def to(self, backend):
        src = self.current()
        self._backend = backend
        self.data = backend.upload(src)
        self.grad = backend.zeros(self.shape)

    def bind(self, backend, data, grad, value: np.ndarray) -> None:
        """Use the device arrays ``data``/``grad`` (views of a model's flat buffers), uploading ``value``."""
        self._backend, self.data, self.grad = backend, data, grad
        backend.upload_into(data, np.ascontiguousarray(value, dtype=np.float32))


class Layer:
    """Base class. Subclasses set ``params`` (name -> Parameter) and implement forward/backward."""

    params: dict[str, Parameter] = {}

    def init(self, rng: np.random.Generator) -> None:
        """(Re)initialise parameters from ``rng`` on the host (He-normal weights, zero biases)."""

    def output_shape(self, shape: tuple) -> tuple:
        return shape

    fuse_relu = False   # set by Sequential when a ReLU follows: forward writes max(y, 0) itself
    grad_beta = 1.0     # backward: param.grad = grad_beta * param.grad + this batch's gradient (0: overwrite,
                        # so a model need not zero its gradients before a step)

    def to(self, backend, place_params: bool = True) -> None:
        """Run on ``backend``; ``place_params=False`` when the owning model places the parameters."""
        self.backend = backend
        self._bufs = {}
        if place_params:
            for p in self.params.values():
                p.to(backend)

    _RUNTIME = ("backend", "_bufs", "x", "y", "argmax", "kept_cols", "xshape")   # device state, not configuration

    def clone(self) -> "Layer":
        """An unplaced copy with the same configuration and the current parameter values (model replicas)."""
        twin = copy.copy(self)
        for key in self._RUNTIME:
            twin.__dict__.pop(key, None)
        twin.params = {k: Parameter(p.current()) for k, p in self.params.items()}
        return twin

    def _buffer(self, name: str, shape, dtype=np.float32):
        """A device array kept on the layer and reused by later steps of the same shape (every op that writes
        one overwrites it completely, so no re-zeroing is needed)."""
        shape = tuple(int(s) for s in shape)
        a = self._bufs.get(name)
        if a is None or tuple(a.shape) != shape or a.dtype != dtype:
            a = self._bufs[name] = self.backend.zeros(shape, dtype)
        return a

    def forward(self, x, train: bool = True):
        raise TypeError(f"{type(self).__name__} must implement forward")

    def backward(self, dy, need_dx: bool = True):
        raise TypeError(f"{type(self).__name__} must implement backward")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def extra_repr(self) -> str:
        return ""


def _he_normal(rng, shape, fan_in):
    return rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)


class Dense(Layer):
    """Fully connected layer, y = x @ W.T + b, one GEMM over the mini-batch.

    Args:
        in_features, out_features: sizes of the input and output vectors.
    Shape:
        x: (N, in_features) -> y: (N, out_features). weight: (out, in), bias: (out,) as PyTorch's nn.Linear.
    """

    def __init__(self, in_features: int, out_features: int):
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.params = {"weight": Parameter(np.zeros((self.out_features, self.in_features))),
                       "bias": Parameter(np.zeros(self.out_features))}

    def init(self, rng):
        self.params["weight"].host[...] = _he_normal(rng, self.params["weight"].shape, self.in_features)
        self.params["bias"].host[...] = 0.0

    def output_shape(self, shape):
        if shape[-1] != self.in_features:
            raise ValueError(f"Dense expects {self.in_features} input features, got shape {shape}")
        return (shape[0], self.out_features)

    def forward(self, x, train=True):
        # x: (N, in) -> y: (N, out) (max(y, 0) when fuse_relu); keeps x for the weight gradient.
        be, w, b = self.backend, self.params["weight"], self.params["bias"]
        n = x.shape[0]
        y = self._buffer("y", (n, self.out_features))
        be.gemm(x, w.data, y, n, self.out_features, self.in_features, trans_b=True, bias=b.data, bias_axis=1,
                relu=self.fuse_relu)
        self.x = x
        return y

    def backward(self, dy, need_dx=True):
        # dy: (N, out) -> dx: (N, in); dW = grad_beta*dW + dy.T @ x, db likewise with sum_n dy.
        be, w, b = self.backend, self.params["weight"], self.params["bias"]
        n = dy.shape[0]
        be.gemm(dy, self.x, w.grad, self.out_features, self.in_features, n, trans_a=True, beta=self.grad_beta)
        be.bias_grad(dy, b.grad, n, self.out_features, 1, beta=self.grad_beta)
        dx = None
        if need_dx:
            dx = self._buffer("dx", (n, self.in_features))
            be.gemm(dy, w.data, dx, n, self.in_features, self.out_features)
        self.x = None
        return dx

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}"


class Conv2D(Layer):
    """2-D convolution as im2col + GEMM, the mini-batch processed in chunks so the unrolled buffer stays bounded.

    Args:
        in_channels, out_channels: C and M.
        kernel_size, stride, padding: square kernel k, stride s, zero padding p.
        workspace_bytes: cap of the shared unrolled workspace (default: the backend's ``workspace_bytes``,
            64 MiB on CPUs, more on GPUs with the memory for it); a chunk holds at least one image.
    Shape:
        x: (N, C, H, W) -> y: (N, M, Ho, Wo), Ho = (H + 2p - k)//s + 1. weight: (M, C, k, k), bias: (M,).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, workspace_bytes=None):
        self.c, self.m, self.k = int(in_channels), int(out_channels), int(kernel_size)
        self.stride, self.pad = int(stride), int(padding)
        if min(self.c, self.m, self.k, self.stride) < 1 or self.pad < 0:
            raise ValueError("Conv2D sizes must be positive and padding non-negative")
        self.workspace_bytes = int(workspace_bytes) if workspace_bytes else None
        self.params = {"weight": Parameter(np.zeros((self.m, self.c, self.k, self.k))),
                       "bias": Parameter(np.zeros(self.m))}

    def init(self, rng):
        fan_in = self.c * self.k * self.k
        self.params["weight"].host[...] = _he_normal(rng, self.params["weight"].shape, fan_in)
        self.params["bias"].host[...] = 0.0

    def output_shape(self, shape):
        n, c, h, w = shape
        if c != self.c:
            raise ValueError(f"Conv2D expects {self.c} input channels, got shape {shape}")
        ho, wo = (h + 2 * self.pad - self.k) // self.stride + 1, (w + 2 * self.pad - self.k) // self.stride + 1
        if ho < 1 or wo < 1:
            raise ValueError(f"Conv2D kernel {self.k} does not fit input {h}x{w} with padding {self.pad}")
        return (n, self.m, ho, wo)

    def _chunk(self, n, ckk, l):
        """Images per chunk: the two unrolled (ckk, nb*l) workspaces (backward's cols and dcols; forward uses the
        first) together stay within the cap, unless a single image needs more."""
        cap = self.workspace_bytes or self.backend.workspace_bytes
        return max(1, min(n, cap // (4 * 2 * ckk * l)))

    def forward(self, x, train=True):
        # x: (N, C, H, W) -> y: (N, M, Ho, Wo); per chunk: cols (CKK, nb*L) = im2col(x),
        # y[n] = W @ cols[:, n] + b (then max(., 0) when fuse_relu), bias and ReLU in the GEMM's write-out.
        be, w, b = self.backend, self.params["weight"], self.params["bias"]
        n, c, h, wd = x.shape
        _, m, ho, wo = self.output_shape(x.shape)
        ckk, l = c * self.k * self.k, ho * wo
        y = self._buffer("y", (n, m, ho, wo))
        nb = self._chunk(n, ckk, l)
        # One chunk in training: the layer keeps its unrolled input (<= half the cap) and backward reuses it.
        keep = train and nb >= n
        cols = self._buffer("cols", (ckk * n * l,)) if keep else be.scratch("cols", ckk * nb * l)
        self.kept_cols = cols if keep else None
        for n0 in range(0, n, nb):
            cnt = min(nb, n - n0)
            be.im2col(x, cols, n0, cnt, c, h, wd, self.k, self.k, self.stride, self.pad)
            be.gemm(w.data, cols, y, m, l, ckk, ldb=cnt * l, c_off=n0 * m * l,
                    batch=cnt, stride_a=0, stride_b=l, stride_c=m * l, bias=b.data, bias_axis=0,
                    relu=self.fuse_relu)
        self.x = x
        return y

    def backward(self, dy, need_dx=True):
        # dy: (N, M, Ho, Wo) -> dx: (N, C, H, W); dW = grad_beta*dW + sum_n dy[n] @ cols[:, n].T (cols kept from
        # forward, or unrolled again per chunk); dx[n] = col2im(W.T @ dy[n]) (conv_backward_data, dcols its scratch).
        be, w, b, x = self.backend, self.params["weight"], self.params["bias"], self.x
        n, c, h, wd = x.shape
        _, m, ho, wo = dy.shape
        ckk, l = c * self.k * self.k, ho * wo
        be.bias_grad(dy, b.grad, n, m, l, beta=self.grad_beta)
        dx = self._buffer("dx", x.shape) if need_dx else None
        nb = self._chunk(n, ckk, l)
        cols = self.kept_cols if self.kept_cols is not None else be.scratch("cols", ckk * nb * l)
        dcols = be.scratch("dcols", ckk * nb * l) if need_dx else None
        for n0 in range(0, n, nb):
            cnt = min(nb, n - n0)
            if self.kept_cols is None:
                be.im2col(x, cols, n0, cnt, c, h, wd, self.k, self.k, self.stride, self.pad)
            be.gemm(dy, cols, w.grad, m, ckk, l, trans_b=True, beta=self.grad_beta if n0 == 0 else 1.0,
                    a_off=n0 * m * l, ldb=cnt * l, batch=cnt, stride_a=m * l, stride_b=l, reduce=True)
            if need_dx:
                be.conv_backward_data(w.data, dy, dx, dcols, n0, cnt, m, c, h, wd, self.k, self.k, self.stride,
                                      self.pad)
        self.x = self.kept_cols = None
        return dx

    def extra_repr(self):
        return f"{self.c}, {self.m}, kernel_size={self.k}, stride={self.stride}, padding={self.pad}"


class MaxPool2D(Layer):
    """Max pooling without padding; the gradient goes to the arg-max kept from forward.

    Shape: x: (N, C, H, W) -> y: (N, C, Ho, Wo), Ho = (H - k)//s + 1, s defaults to k.
    """

    relu_mask = False   # set by Sequential when a ReLU precedes: backward also applies the ReLU's backward

    def __init__(self, kernel_size, stride=None):
        self.k = int(kernel_size)
        self.stride = int(stride) if stride is not None else self.k
        self.params = {}

    def output_shape(self, shape):
        n, c, h, w = shape
        if h < self.k or w < self.k:
            raise ValueError(f"MaxPool2D window {self.k} larger than input {h}x{w}")
        return (n, c, (h - self.k) // self.stride + 1, (w - self.k) // self.stride + 1)

    def forward(self, x, train=True):
        # x: (N, C, H, W) -> y: (N, C, Ho, Wo); keeps the int32 arg-max (N, C, Ho, Wo) for backward.
        be = self.backend
        n, c, h, w = x.shape
        oshape = self.output_shape(x.shape)
        y, self.argmax = self._buffer("y", oshape), self._buffer("argmax", oshape, np.int32)
        be.maxpool_forward(x, y, self.argmax, n, c, h, w, self.k, self.stride)
        self.xshape, self.y = x.shape, y
        return y

    def backward(self, dy, need_dx=True):
        # dy: (N, C, Ho, Wo) -> dx: (N, C, H, W), each dy routed to its window's arg-max (only where the pooled
        # value is > 0 when relu_mask: the preceding ReLU's backward, exact since its output at the arg-max is y).
        if not need_dx:
            return None
        n, c, h, w = self.xshape
        dx = self._buffer("dx", self.xshape)
        self.backend.maxpool_backward(dy, self.argmax, dx, n, c, h, w, self.k, self.stride,
                                      y=self.y if self.relu_mask else None)
        return dx

    def extra_repr(self):
        return f"kernel_size={self.k}, stride={self.stride}"


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W), a view."""

    def __init__(self):
        self.params = {}

    def output_shape(self, shape):
        return (shape[0], int(np.prod(shape[1:])))

    def forward(self, x, train=True):
        # x: (N, C, H, W) -> (N, C*H*W), a view of the same storage.
        self.xshape = x.shape
        return x.reshape(self.output_shape(x.shape))

    def backward(self, dy, need_dx=True):
        return dy.reshape(self.xshape) if need_dx else None


class _Activation(Layer):
    op = ""
    fused = False   # ReLU only: the previous layer's GEMM already applied it (Sequential decides)
    backward_in_next = False   # ReLU only: the next layer's backward (a max-pool's) already applied this one's

    def __init__(self):
        self.params = {}

    def forward(self, x, train=True):
        # x: any shape -> y: same shape; keeps y (both derivatives are functions of the output).
        if self.fused:
            self.y = x
            return x
        y = self._buffer("y", x.shape)
        getattr(self.backend, f"{self.op}_forward")(x, y, x.size)
        self.y = y
        return y

    def backward(self, dy, need_dx=True):
        # dy: same shape as y -> dx: same shape.
        if not need_dx:
            return None
        if self.backward_in_next:
            return dy
        dx = self._buffer("dx", dy.shape)
        getattr(self.backend, f"{self.op}_backward")(self.y, dy, dx, dy.size)
        self.y = None
        return dx


class ReLU(_Activation):
    """y = max(x, 0); backward passes dy where y > 0. Shape: any, unchanged."""
    op = "relu"


class Sigmoid(_Activation):
    """y = 1 / (1 + exp(-x)); backward dy * y * (1 - y). Shape: any, unchanged."""
    op = "sigmoid"
